"""`orchestrator diagram [--config FILE] [--out DIR]`: writes the generated diagrams: the call machine, or
the routing of a config."""
from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

from orchestrator.config import (
    FlexRoute,
    RoutingConfig,
    StudioRoute,
    load_routing_config,
)

DEFAULT_DIAGRAM_DIR = Path("diagrams")
CALL_MERMAID_FILE = "call.mmd"
CALL_SVG_FILE = "call.svg"


def add_diagram_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="draw the routing of this config instead of the call machine")
    parser.add_argument("--out", type=Path, default=DEFAULT_DIAGRAM_DIR, help="output folder (default: diagrams)")


def run_diagram(args: argparse.Namespace) -> int:
    if args.config is None:
        for message in write_call_diagrams(args.out):
            print(message)
        return 0
    config = load_routing_config(args.config)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"routing-{Path(args.config).stem}.mmd"
    path.write_text(routing_mermaid(config), encoding="utf-8")
    print(f"wrote {path}")
    return 0


def write_call_diagrams(out_dir: Path) -> list[str]:
    """Write call.mmd (always) and call.svg (when Graphviz's `dot` is installed). Returns messages."""
    from machines import call_graph, call_mermaid

    out_dir.mkdir(parents=True, exist_ok=True)
    mermaid_path = out_dir / CALL_MERMAID_FILE
    mermaid_path.write_text(call_mermaid(), encoding="utf-8")
    messages = [f"wrote {mermaid_path}"]
    if shutil.which("dot") is None:
        messages.append(
            f"skipped {out_dir / CALL_SVG_FILE}: Graphviz 'dot' is not installed "
            "(apt-get install graphviz, then run this again)"
        )
        return messages
    svg = call_graph("graphviz").draw(None, format="svg", prog="dot")
    svg_path = out_dir / CALL_SVG_FILE
    svg_path.write_bytes(svg if isinstance(svg, bytes) else svg.encode())
    messages.append(f"wrote {svg_path}")
    return messages


def routing_mermaid(config: RoutingConfig) -> str:
    """Intents → routes → targets (Studio nodes, Flex workflows, …) as a Mermaid flowchart; a route's
    per-language targets hang off it on edges labelled with the language code."""
    lines = ["flowchart LR"]
    triage = config.triage
    for intent in config.intents:
        lines.append(f'  {_node_id("intent", intent.name)}(["{_label(intent.name)}"]) --> {_node_id("route", intent.route)}')
    lines.append(f'  unclear(["anything else"]) --> {_node_id("route", triage.fallback_route)}')
    lines.append(f'  reentry(["re-entry refused"]) --> {_node_id("route", triage.human_route)}')
    for name, route in config.routes.items():
        route_id = _node_id("route", name)
        lines.append(f'  {route_id}["{_label(name)}<br/>{route.kind}"]')
        lines.append(f'  {route_id} --> {_node_id("target", name)}[("{_label(_target_label(route))}")]')
        for code, language_route in route.language_routes.items():
            # "__" cannot occur in a route name, so this id never meets another route's target.
            target_id = _node_id("target", f"{name}__{code}")
            lines.append(f'  {route_id} -->|{code}| {target_id}[("{_label(_target_label(language_route))}")]')
    return "\n".join(lines) + "\n"


def _target_label(route) -> str:
    if isinstance(route, StudioRoute):
        return f"Studio {route.flow_sid} / {route.node or 'Trigger'} ({route.mode})"
    if isinstance(route, FlexRoute):
        return f"Flex {route.workflow_sid} priority {route.priority}"
    return route.target()


def _node_id(kind: str, name: str) -> str:
    return f"{kind}_{re.sub(r'[^A-Za-z0-9_]', '_', name)}"


def _label(text: str) -> str:
    # Mermaid labels are quoted; a double quote inside would end them early.
    return text.replace('"', "'")

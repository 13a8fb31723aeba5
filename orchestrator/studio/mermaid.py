"""A Studio flow drawn as a Mermaid flowchart (flow.before.mmd, flow.after.mmd): widgets and transitions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from orchestrator.studio.flow_text import one_line, truncate


def flow_mermaid(
    definition: Mapping[str, Any], *, added: Iterable[str] = (), changed: Iterable[str] = (), legacy: Iterable[str] = ()
) -> str:
    """A Studio flow definition (already validated) as a Mermaid flowchart: widgets and their transitions."""
    states = definition["states"]
    ids = {state["name"]: f"w{index}" for index, state in enumerate(states)}
    lines = ["flowchart TD"]
    for state in states:
        lines.append(f'  {ids[state["name"]]}["{_mermaid_text(state["name"])}<br/>{_mermaid_text(state["type"])}"]')
    missing: dict[str, str] = {}
    for state in states:
        for transition in state.get("transitions", []):
            target = transition.get("next")
            if not target:
                continue
            if target not in ids and target not in missing:
                missing[target] = f"missing{len(missing)}"
                lines.append(f'  {missing[target]}["{_mermaid_text(target)}<br/>(no such widget)"]')
            label = _mermaid_text(truncate(_edge_label(transition), 32))
            lines.append(f'  {ids[state["name"]]} -->|"{label}"| {ids.get(target) or missing[target]}')
    for css, names in (("added", added), ("changed", changed), ("legacy", legacy)):
        members = [ids[name] for name in names if name in ids]
        if members:
            lines.append(f"  class {','.join(members)} {css}")
    lines += [
        "  classDef added fill:#d9f2d9,stroke:#2e7d32,stroke-width:2px",
        "  classDef changed fill:#fff3cd,stroke:#b7791f",
        "  classDef legacy fill:#eeeeee,stroke:#777777,stroke-dasharray:4 3",
    ]
    return "\n".join(lines) + "\n"


def _edge_label(transition: Mapping[str, Any]) -> str:
    conditions = transition.get("conditions") or []
    if transition.get("event") == "match" and conditions and isinstance(conditions[0], dict):
        first = conditions[0]
        name = first.get("friendly_name")
        if isinstance(name, str) and name.strip():
            return name
        return f"{first.get('type', '')} {first.get('value', '')}"
    return str(transition.get("event", ""))


def _mermaid_text(text: str) -> str:
    # Mermaid entity codes: a quote, pipe or angle bracket would end or change the label.
    text = one_line(text).replace("#", "#35;")
    for char, code in (('"', "#quot;"), ("|", "#124;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(char, code)
    return text

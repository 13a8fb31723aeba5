"""The `orchestrator` command."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.routing_config import ConfigError, describe_config, load_routing_config

DEFAULT_DIAGRAM_DIR = Path("diagrams")


def check_config(args: argparse.Namespace) -> int:
    config = load_routing_config(args.config_file)
    print(describe_config(config))
    print(f"{args.config_file}: OK")
    return 0


def draw_diagrams(args: argparse.Namespace) -> int:
    from orchestrator.diagrams import routing_mermaid, write_call_diagrams

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator", description="AI front desk for Twilio Studio and Flex.")
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check-config", help="validate a routing config and print a summary")
    check.add_argument("config_file")
    check.set_defaults(run=check_config)

    diagram = commands.add_parser("diagram", help="regenerate diagrams/call.mmd (and .svg), or draw a config's routing")
    diagram.add_argument("--config", help="draw the routing of this config instead of the call machine")
    diagram.add_argument("--out", type=Path, default=DEFAULT_DIAGRAM_DIR, help="output folder (default: diagrams)")
    diagram.set_defaults(run=draw_diagrams)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

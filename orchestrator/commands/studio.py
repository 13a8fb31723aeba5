"""`orchestrator studio import FLOW.json --out DIR [--flow-sid FW…] [--public-url URL]`: the arguments of the
Studio importer, whose work is `orchestrator/studio/`."""
from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.studio.importer import DEFAULT_PUBLIC_URL, run_studio_import


def add_studio_arguments(subparsers: argparse._SubParsersAction) -> None:
    studio = subparsers.add_parser("studio", help="migrate a Twilio Studio flow to the AI front desk")
    commands = studio.add_subparsers(dest="studio_command", required=True)
    command = commands.add_parser(
        "import", help="turn a Studio flow's menu into a routing config and a flow patched for the AI"
    )
    command.add_argument("flow", type=Path, metavar="FLOW.json", help="the flow definition Studio exports")
    command.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the generated files")
    command.add_argument("--flow-sid", metavar="FW…", help="the flow's SID (the exported JSON does not hold it)")
    command.add_argument(
        "--public-url",
        metavar="URL",
        help=f"the URL Twilio reaches our server at (default: $ORCHESTRATOR_PUBLIC_URL, else {DEFAULT_PUBLIC_URL})",
    )
    command.set_defaults(run=run_studio_import)

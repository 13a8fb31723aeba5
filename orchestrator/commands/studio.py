"""`orchestrator studio import FLOW.json --out DIR`: its arguments, and the files, report and exit code it gives."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from orchestrator.studio import DEFAULT_PUBLIC_URL, StudioImportError, import_flow, write_import


def add_studio_arguments(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `studio import FLOW.json --out DIR [--flow-sid FW…] [--public-url URL]`."""
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


def run_studio_import(args: argparse.Namespace) -> int:
    """Import, write the files and print the report: 0; or `error: <reason>` on stderr: 2."""
    public_url = args.public_url or os.environ.get("ORCHESTRATOR_PUBLIC_URL") or DEFAULT_PUBLIC_URL
    try:
        text = Path(args.flow).read_bytes().decode("utf-8-sig")
        result = import_flow(text, source=str(args.flow), public_url=public_url, flow_sid=args.flow_sid)
        written = write_import(result, args.out)
    except StudioImportError as error:
        print(f"error: {args.flow}: {error}", file=sys.stderr)
        return 2
    except UnicodeDecodeError:
        print(f"error: {args.flow}: not UTF-8 text", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: {error.filename or args.flow}: {error.strerror or error}", file=sys.stderr)
        return 2
    print(result.report.render())
    for path in written:
        print(f"wrote {path}")
    return 0

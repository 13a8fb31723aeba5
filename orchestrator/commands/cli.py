"""The `orchestrator` command: one subcommand per module of this package."""
from __future__ import annotations

import argparse
import sys

from orchestrator.commands.call import add_call_arguments, run_call
from orchestrator.commands.check_config import (
    add_check_config_arguments,
    run_check_config,
)
from orchestrator.commands.diagram import add_diagram_arguments, run_diagram
from orchestrator.commands.engine import add_engine_arguments
from orchestrator.commands.eval import add_eval_arguments, run_eval
from orchestrator.commands.report import add_report_arguments, run_report
from orchestrator.commands.rollout import add_rollout_arguments
from orchestrator.commands.serve import add_serve_arguments, run_serve
from orchestrator.commands.studio import add_studio_arguments
from orchestrator.config import ConfigError
from orchestrator.engines.offline import IntentModelError
from orchestrator.replay import CorpusError, EvalReportError
from orchestrator.store import CallStoreError
from orchestrator.telemetry import quiet_state_machine_library


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator", description="AI front desk for Twilio Studio and Flex.")
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check-config", help="validate a routing config and print a summary")
    add_check_config_arguments(check)
    check.set_defaults(run=run_check_config)

    diagram = commands.add_parser("diagram", help="regenerate diagrams/call.mmd (and .svg), or draw a config's routing")
    add_diagram_arguments(diagram)
    diagram.set_defaults(run=run_diagram)

    server = commands.add_parser("serve", help="run the front desk server (Twilio webhooks and Media Streams)")
    add_serve_arguments(server)
    server.set_defaults(run=run_serve)

    caller = commands.add_parser("call", help="simulate one phone call against a running server")
    add_call_arguments(caller)
    caller.set_defaults(run=run_call)

    engine = commands.add_parser("engine", help="the offline engine's intent model")
    add_engine_arguments(engine)

    replay = commands.add_parser("eval", help="replay past calls through the triage and report intent parity")
    add_eval_arguments(replay)
    replay.set_defaults(run=run_eval)

    report = commands.add_parser("report", help="figures per rollout arm: containment, AHT, CSAT, engine cost")
    add_report_arguments(report)
    report.set_defaults(run=run_report)

    add_studio_arguments(commands)
    add_rollout_arguments(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_state_machine_library()
    try:
        return args.run(args)
    except (ConfigError, CorpusError, IntentModelError, EvalReportError, CallStoreError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

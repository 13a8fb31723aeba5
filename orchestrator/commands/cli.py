"""The `orchestrator` command."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.replay.corpus import CorpusError
from orchestrator.store import CallStoreError
from orchestrator.replay.html_report import EvalReportError
from orchestrator.engines.offline.intent_model import IntentModelError
from orchestrator.config.routing import ConfigError, describe_config, load_routing_config

DEFAULT_DIAGRAM_DIR = Path("diagrams")


def check_config(args: argparse.Namespace) -> int:
    config = load_routing_config(args.config_file)
    print(describe_config(config))
    print(f"{args.config_file}: OK")
    return 0


def draw_diagrams(args: argparse.Namespace) -> int:
    from orchestrator.commands.diagram import routing_mermaid, write_call_diagrams

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


def serve(args: argparse.Namespace) -> int:
    import functools

    import structlog
    import trio

    from orchestrator.telemetry.logs import configure_logging
    from orchestrator.config.server_settings import load_server_settings
    from orchestrator.composition import listening_socket, serve_until_signalled
    from orchestrator.server.workers import this_worker

    settings = load_server_settings(
        config=args.config,
        engine=args.engine,
        public_url=args.public_url,
        data_dir=args.data_dir,
        insecure_skip_signature_check=True if args.insecure_skip_signature_check else None,
        workers=args.workers,
    )
    configure_logging()
    worker = this_worker()
    if worker is not None:
        structlog.contextvars.bind_contextvars(worker=worker)  # every log line says which worker
        listening = listening_socket(args.host, args.port, shared_port=True)
        trio.run(functools.partial(
            serve_until_signalled, settings, args.host, args.port, args.access_log,
            listening=listening, worker=worker, announce=worker.startswith("1/"),
        ))
        return 0
    if settings.workers == 1:
        trio.run(serve_until_signalled, settings, args.host, args.port, args.access_log)
        return 0
    return _serve_with_workers(args, settings)


async def _check_store(settings) -> None:
    from orchestrator.store.location import open_call_store

    store = await open_call_store(
        settings.store, data_dir=settings.data_dir, retention_seconds=settings.retention_days * 86400
    )
    await store.aclose()


def _serve_with_workers(args: argparse.Namespace, settings) -> int:
    import trio

    from orchestrator.config.server_settings import development_auth_token
    from orchestrator.composition import listening_socket
    from orchestrator.server.workers import run_workers

    load_routing_config(settings.config)  # a broken config or store fails once, here, not in every worker
    trio.run(_check_store, settings)
    if settings.twilio_auth_token is None:
        development_auth_token(settings.data_dir)  # made once, before the workers could race to make it
    # Held (bound, not listening) so the port stays ours while workers start and restart.
    holding = listening_socket(args.host, args.port, shared_port=True, listen=False)
    host, port = holding.getsockname()[:2]
    print(f"{settings.workers} workers sharing {host}:{port}; the call store is where they meet", flush=True)
    serve_args = ["--host", args.host, "--port", str(port)]
    for flag, value in (("--config", args.config), ("--engine", args.engine),
                        ("--public-url", args.public_url), ("--data-dir", args.data_dir)):
        if value is not None:
            serve_args += [flag, str(value)]
    for flag, on in (("--insecure-skip-signature-check", args.insecure_skip_signature_check),
                     ("--access-log", args.access_log)):
        if on:
            serve_args.append(flag)
    try:
        return run_workers(serve_args, settings.workers, grace_s=settings.graceful_shutdown_seconds)
    finally:
        holding.close()


def call(args: argparse.Namespace) -> int:
    from orchestrator.commands.call import run_call

    return run_call(args)


def fit_engine(args: argparse.Namespace) -> int:
    from orchestrator.replay.corpus import read_corpus
    from orchestrator.engines.offline.intent_model import IntentModel
    from orchestrator.engines.offline.engine import model_file_for

    config = load_routing_config(args.config)
    corpus = read_corpus(args.corpus)
    for problem in corpus.problems:
        print(f"{args.corpus}:{problem.line_number}: skipped: {problem.reason}", file=sys.stderr)
    known = {intent.name for intent in config.intents}
    used = [call for call in corpus.calls if call.expected_intent in known]
    model = IntentModel.fit(config, used, use_asr=args.use_asr)
    out = args.out or model_file_for(Path(args.config))
    model.save(out)
    print(f"fit on {len(config.intents)} intents of {args.config} and {len(used)} of {len(corpus.calls)} calls "
          f"({len(corpus.calls) - len(used)} with no or another intent); wrote {out}")
    print(f'point the config at it:  [engine]\nintent_model = "{_relative_to(out, Path(args.config).parent)}"')
    return 0


def _relative_to(path: Path, folder: Path) -> str:
    try:
        return str(path.resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(path.resolve())


def evaluate(args: argparse.Namespace) -> int:
    from orchestrator.commands.eval import run_eval

    return run_eval(args)


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

    server = commands.add_parser("serve", help="run the front desk server (Twilio webhooks and Media Streams)")
    server.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    server.add_argument("--port", type=int, default=8080, help="port to listen on (default: %(default)s)")
    server.add_argument("--config", type=Path, help="routing config (default: $ORCHESTRATOR_CONFIG, else the example)")
    server.add_argument("--engine", choices=["auto", "realtime", "offline", "fake"],
                        help="who listens to the caller (default auto: realtime with OPENAI_API_KEY, else offline)")
    server.add_argument("--public-url", help="the URL Twilio reaches this server at (default: the listen address)")
    server.add_argument("--data-dir", type=Path, help="where the call store lives (default: var)")
    server.add_argument("--insecure-skip-signature-check", action="store_true",
                        help="development only: accept requests without a valid X-Twilio-Signature")
    server.add_argument("--access-log", action="store_true", help="log every HTTP request")
    server.add_argument("--workers", type=int,
                        help="server processes sharing the port, e.g. one per core (default: $ORCHESTRATOR_WORKERS, else 1)")
    server.set_defaults(run=serve)

    from orchestrator.commands.call import add_call_arguments

    caller = commands.add_parser("call", help="simulate one phone call against a running server")
    add_call_arguments(caller)
    caller.set_defaults(run=call)

    engine = commands.add_parser("engine", help="the offline engine's intent model")
    engine_commands = engine.add_subparsers(dest="engine_command", required=True)
    fit = engine_commands.add_parser("fit", help="fit the intent model on a config and a corpus of past calls")
    fit.add_argument("corpus", type=Path, help="past calls, JSON Lines (see the README)")
    fit.add_argument("--config", type=Path, required=True, help="the routing config whose intents are learnt")
    fit.add_argument("--out", type=Path, help="model file (default: next to the config, .model.json)")
    fit.add_argument("--use-asr", action="store_true", help="learn from the recognised text (asr) of each turn")
    fit.set_defaults(run=fit_engine)

    replay = commands.add_parser("eval", help="replay past calls through the triage and report intent parity")
    from orchestrator.commands.eval import add_eval_arguments

    add_eval_arguments(replay)
    replay.set_defaults(run=evaluate)

    from orchestrator.commands.report import add_report_arguments, run_report

    report = commands.add_parser("report", help="figures per rollout arm: containment, AHT, CSAT, engine cost")
    add_report_arguments(report)
    report.set_defaults(run=run_report)

    from orchestrator.studio.importer import add_studio_arguments

    add_studio_arguments(commands)

    from orchestrator.commands.rollout import add_rollout_arguments

    add_rollout_arguments(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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

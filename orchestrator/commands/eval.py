"""`orchestrator eval CORPUS --config FILE [--engine realtime|offline] [--report FILE.html] [--summary FILE.json]`."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import trio
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from orchestrator.config import RoutingConfig, load_routing_config
from orchestrator.replay import (
    Corpus,
    print_summary,
    read_corpus,
    replay_calls,
    scorable_calls,
    score,
    write_summary,
)


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("corpus", type=Path, help="past calls, JSON Lines (see the README), or a Studio "
                        "executions export with --studio-executions")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--engine", choices=["realtime", "offline"],
                        help="who triages the replayed calls (default: realtime with OPENAI_API_KEY, else offline)")
    parser.add_argument("--asr", action="store_true", help="replay each turn's recognised text (asr) when present")
    parser.add_argument("--audio", action="store_true", help="stream each call's recording (expected.audio) "
                        "through the live path: a local server, a simulated Twilio caller; calls without one "
                        "are replayed as text")
    parser.add_argument("--studio-executions", action="store_true",
                        help="the corpus is an export of Studio executions (SpeechResult/Digits and the next widget)")
    parser.add_argument("--gather", help="with --studio-executions: the Gather widget's name (default: found)")
    parser.add_argument("--flow", type=Path, help="with --studio-executions: the flow's JSON (its menu's Gather and Splits)")
    parser.add_argument("--summary", type=Path, metavar="FILE.json", help="write the figures as JSON")
    parser.add_argument("--report", type=Path, metavar="FILE.html", help="write a self-contained HTML report")
    parser.add_argument("--min-parity", type=float, default=0.90, help="exit 1 below this (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=8, help="calls replayed at once (default %(default)s)")


def run_eval(args: argparse.Namespace) -> int:
    from orchestrator.composition import replay_engine

    config = load_routing_config(args.config)
    corpus = _read(args, config)
    for problem in corpus.problems:
        print(f"{args.corpus}:{problem.line_number}: skipped: {problem.reason}", file=sys.stderr)
    calls, skipped = scorable_calls(corpus, config)
    if not calls:
        print("error: no call of the corpus has an intent of this config", file=sys.stderr)
        return 2
    engine = args.engine or ("realtime" if os.environ.get("OPENAI_API_KEY") else "offline")
    text_connector = replay_engine(engine, config, listens=False)
    console = Console(stderr=True)
    with Progress(TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("calls", total=len(calls))
        recorded = [call for call in calls if args.audio and call.audio is not None]
        typed = [call for call in calls if call not in recorded]
        live = replay_engine(engine, config, listens=True) if recorded else None

        async def replay() -> list:
            done = lambda _: progress.advance(task)  # noqa: E731
            outcomes = await replay_calls(text_connector, config, typed, use_asr=args.asr,
                                          concurrency=args.concurrency, on_done=done)
            if live is not None:
                from orchestrator.replay import replay_recordings

                with tempfile.TemporaryDirectory() as data_dir:
                    outcomes += await replay_recordings(live, config, recorded, Path(data_dir), on_done=done)
            return outcomes

        outcomes = trio.run(replay)
    mode = "audio" if recorded and not typed else "audio and text" if recorded else "text"
    if args.audio and not recorded:
        print("note: no call of the corpus has a recording (expected.audio); replayed as text", file=sys.stderr)
    summary = score(calls, outcomes, config, engine=engine, mode=mode, min_parity=args.min_parity, skipped=skipped)
    print_summary(summary)
    if args.summary is not None:
        write_summary(summary, args.summary)
        print(f"wrote {args.summary}")
    if args.report is not None:
        from orchestrator.replay import write_eval_html

        write_eval_html(summary.to_json(), args.report, title=f"Intent parity: {args.corpus.name} on {args.config.name}")
        print(f"wrote {args.report}")
    return 0 if summary.parity >= args.min_parity else 1


def _read(args: argparse.Namespace, config: RoutingConfig) -> Corpus:
    if not args.studio_executions:
        return read_corpus(args.corpus)
    from orchestrator.studio import read_studio_executions

    return with_intents_from_routes(read_studio_executions(args.corpus, gather=args.gather, flow=args.flow), config)


def with_intents_from_routes(corpus: Corpus, config: RoutingConfig) -> Corpus:
    """A Studio export names the widget the flow went to, not an intent: the config says which intent
    leads there (a route named after the widget, or a Studio route to that node)."""
    from dataclasses import replace

    intent_of_target: dict[str, str] = {}
    for intent in config.intents:
        route = config.routes.get(intent.route)
        intent_of_target.setdefault(intent.route, intent.name)
        node = getattr(route, "node", None)
        if node:
            intent_of_target.setdefault(node, intent.name)
    calls = [
        call if call.expected_intent or not call.expected_route
        else replace(call, expected_intent=intent_of_target.get(call.expected_route))
        for call in corpus.calls
    ]
    return Corpus(calls, corpus.problems, corpus.path)

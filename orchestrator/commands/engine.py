"""`orchestrator engine fit CORPUS --config FILE`: fit the offline engine's intent model on a config's
intents and a corpus of past calls, and write the model file the config points at."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.config import load_routing_config


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    engine_commands = parser.add_subparsers(dest="engine_command", required=True)
    fit = engine_commands.add_parser("fit", help="fit the intent model on a config and a corpus of past calls")
    fit.add_argument("corpus", type=Path, help="past calls, JSON Lines (see the README)")
    fit.add_argument("--config", type=Path, required=True, help="the routing config whose intents are learnt")
    fit.add_argument("--out", type=Path, help="model file (default: next to the config, .model.json)")
    fit.add_argument("--use-asr", action="store_true", help="learn from the recognised text (asr) of each turn")
    fit.set_defaults(run=run_engine_fit)


def run_engine_fit(args: argparse.Namespace) -> int:
    from orchestrator.engines.offline import IntentModel, model_file_for
    from orchestrator.replay import labelled_calls, read_corpus

    config = load_routing_config(args.config)
    corpus = read_corpus(args.corpus)
    for problem in corpus.problems:
        print(f"{args.corpus}:{problem.line_number}: skipped: {problem.reason}", file=sys.stderr)
    known = {intent.name for intent in config.intents}
    used = [call for call in corpus.calls if call.expected_intent in known]
    model = IntentModel.fit(config, labelled_calls(used, use_asr=args.use_asr))
    out = args.out or model_file_for(Path(args.config))
    model.save(out)
    print(f"fit on {len(config.intents)} intents of {args.config} and {len(used)} of {len(corpus.calls)} calls "
          f"({len(corpus.calls) - len(used)} with no or another intent), "
          f"sentence embedding: {model.embedding_model or 'none (words only: the speech extra brings one)'}; "
          f"wrote {out}")
    print(f'point the config at it:  [engine]\nintent_model = "{_relative_to(out, Path(args.config).parent)}"')
    return 0


def _relative_to(path: Path, folder: Path) -> str:
    try:
        return str(path.resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(path.resolve())

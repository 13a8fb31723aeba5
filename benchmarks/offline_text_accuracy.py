"""How well the offline intent classifier understands callers' words: accuracy, calibration, latency.

Run: .venv/bin/python benchmarks/offline_text_accuracy.py [--corpus PATH] [--config FILE] [--json OUT]
     [--banking77 DIR] [--lexical-only]

`--lexical-only`: the classifier without its sentence embedding (the TF-IDF model alone), for an A/B.

(a) the config alone on every call of the corpus; (b) 2-fold: config + half A scored on half B and the
reverse (halves alternate over calls sorted by call_id); (c) the same on the `asr` transcripts; (d) the
confusion matrix of the held-out predictions; (e) expected calibration error and what the
`min_confidence` guard does with them; (f) predict latency. With BANKING77 present, the config alone is
also scored on the BANKING77 test utterances of the few categories that mean one of the bank's intents.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from orchestrator.config.routing import ConfigError, RoutingConfig, load_routing_config
from orchestrator.engines.offline.intent_model import IntentModel, IntentPrediction
from orchestrator.replay.corpus import CorpusCall, CorpusError, caller_text, labelled_calls, read_corpus

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "examples" / "harper_valley_bank.toml"
# BANKING77 categories that are plainly one of the Harper Valley intents (most of its 77 are not).
BANKING77_INTENTS = {
    "lost_or_stolen_card": "replace_card",
    "card_about_to_expire": "replace_card",
    "passcode_forgotten": "reset_password",
}
CONFIDENCE_BINS = 10
# Intent-neutral things a caller says: their confidence should stay near 1 / number of intents.
NEUTRAL_TEXTS = ("", "[noise]", "hello", "yes", "okay thank you", "hi my name is mary smith", "um sorry")
LONG_TEXT = (
    "hi my name is patricia wilson and um i was calling because i think i lost my debit card somewhere "
    "downtown yesterday and i was wondering if you could cancel it and send me a new one to my home "
    "address please because i really need it for the weekend thank you so much for your help today"
)


@dataclass(frozen=True)
class Outcome:
    expected: str
    prediction: IntentPrediction

    @property
    def right(self) -> bool:
        return self.prediction.intent == self.expected


def score(model: IntentModel, calls: list[CorpusCall], use_asr: bool) -> list[Outcome]:
    return [Outcome(c.expected_intent or "", model.predict(caller_text(c, use_asr=use_asr))) for c in calls]


def accuracy(outcomes: list[Outcome]) -> float:
    return sum(o.right for o in outcomes) / len(outcomes) if outcomes else float("nan")


def expected_calibration_error(outcomes: list[Outcome]) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by their size."""
    bins: dict[int, list[Outcome]] = {}
    for outcome in outcomes:
        bins.setdefault(min(int(outcome.prediction.confidence * CONFIDENCE_BINS), CONFIDENCE_BINS - 1), []).append(
            outcome
        )
    return sum(
        len(members) / len(outcomes)
        * abs(accuracy(members) - statistics.fmean(o.prediction.confidence for o in members))
        for members in bins.values()
    )


def guard_figures(outcomes: list[Outcome], min_confidence: float) -> dict[str, float]:
    above = [o for o in outcomes if o.prediction.confidence >= min_confidence]
    return {
        "ece": expected_calibration_error(outcomes),
        "mean_confidence": statistics.fmean(o.prediction.confidence for o in outcomes),
        "below_min_confidence": len(outcomes) - len(above),
        "accuracy_above_min_confidence": accuracy(above),
    }


def two_fold(
    config: RoutingConfig, calls: list[CorpusCall], use_asr: bool, lexical_only: bool
) -> tuple[list[float], list[Outcome]]:
    ordered = sorted(calls, key=lambda c: c.call_id)
    halves = (ordered[0::2], ordered[1::2])
    accuracies, outcomes = [], []
    for train, test in (halves, halves[::-1]):
        model = IntentModel.fit(config, labelled_calls(train, use_asr=use_asr), lexical_only=lexical_only)
        held_out = score(model, test, use_asr)
        accuracies.append(accuracy(held_out))
        outcomes += held_out
    return accuracies, outcomes


def latency_ms(model: IntentModel, texts: list[str], repeat: int = 20) -> dict[str, float]:
    timings = []
    for _ in range(repeat):
        for text in texts:
            start = time.perf_counter()
            model.predict(text)
            timings.append((time.perf_counter() - start) * 1000)
    timings.sort()
    return {"p50": timings[len(timings) // 2], "p95": timings[int(len(timings) * 0.95)]}


def banking77_outcomes(model: IntentModel, folder: Path) -> list[Outcome]:
    with (folder / "test.csv").open(newline="", encoding="utf-8") as file:
        rows = [row for row in csv.DictReader(file) if row["category"] in BANKING77_INTENTS]
    return [Outcome(BANKING77_INTENTS[row["category"]], model.predict(row["text"])) for row in rows]


def confusion_table(intents: tuple[str, ...], outcomes: list[Outcome]) -> Table:
    table = Table(title="(d) 2-fold held-out confusion, transcripts (rows: expected; columns: predicted)")
    table.add_column("expected")
    for number in range(1, len(intents) + 1):
        table.add_column(str(number), justify="right")
    for number, expected in enumerate(intents, start=1):
        counts = [sum(o.expected == expected and o.prediction.intent == p for o in outcomes) for p in intents]
        cells = (f"[bold]{n}[/]" if p == expected else str(n or "·") for n, p in zip(counts, intents))
        table.add_row(f"{number} {expected}", *cells)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, required=True, help="a labelled corpus (JSONL, see README)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--banking77", type=Path, default=None, help="BANKING77 folder (skipped if absent)"
    )
    parser.add_argument("--lexical-only", action="store_true", help="without the sentence embedding")
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 130))
    try:
        config = load_routing_config(args.config)
        corpus = read_corpus(args.corpus)
    except (ConfigError, CorpusError) as exc:
        console.print(f"[red]{exc}[/]", highlight=False)
        return 2
    for problem in corpus.problems:
        console.print(f"{args.corpus}: line {problem.line_number}: {problem.reason} (skipped)", highlight=False)
    known = {intent.name for intent in config.intents}
    calls = [c for c in corpus.calls if c.expected_intent in known]
    if len(calls) < 4:
        console.print(f"[red]{args.corpus}: only {len(calls)} calls labelled with the config's intents[/]")
        return 2
    min_confidence = config.triage.min_confidence
    figures: dict[str, object] = {"corpus": str(args.corpus), "config": str(args.config), "calls": len(calls),
                                  "min_confidence": min_confidence, "lexical_only": args.lexical_only}

    start = time.perf_counter()
    config_model = IntentModel.fit(config, lexical_only=args.lexical_only)
    figures["fit_seconds_config_only"] = time.perf_counter() - start
    model_name = "lexical only" if args.lexical_only else f"+ {config_model.embedding_model or 'no embedding'}"
    results = Table(
        title=f"Intent from text: {len(calls)} calls of {args.corpus.name}, config {args.config.name}, {model_name}"
    )
    results.add_column("evaluation")
    for column in ("accuracy", "ECE", "mean conf.", f"< {min_confidence:g}", f"acc. ≥ {min_confidence:g}"):
        results.add_column(column, justify="right")

    def report(key: str, label: str, outcomes: list[Outcome], shown_accuracy: str | None = None) -> None:
        guard = guard_figures(outcomes, min_confidence)
        figures[key] = {"accuracy": accuracy(outcomes), **guard}
        results.add_row(
            label,
            shown_accuracy or f"{accuracy(outcomes):.3f}",
            f"{guard['ece']:.3f}",
            f"{guard['mean_confidence']:.3f}",
            f"{guard['below_min_confidence']}/{len(outcomes)}",
            f"{guard['accuracy_above_min_confidence']:.3f}",
        )

    for use_asr, name in ((False, "transcripts"), (True, "asr")):
        report(f"config_only_{name}", f"(a) config only, {name}", score(config_model, calls, use_asr))
    held_out_text: list[Outcome] = []
    for use_asr, name, letter in ((False, "transcripts", "b"), (True, "asr", "c")):
        fold_accuracies, outcomes = two_fold(config, calls, use_asr, args.lexical_only)
        figures[f"two_fold_{name}_folds"] = fold_accuracies
        shown = f"{fold_accuracies[0]:.3f} / {fold_accuracies[1]:.3f} → {statistics.fmean(fold_accuracies):.3f}"
        report(f"two_fold_{name}", f"({letter}) 2-fold config + calls, {name}", outcomes, shown)
        held_out_text = held_out_text or outcomes
    if args.banking77 is not None and (args.banking77 / "test.csv").exists():
        report("banking77_config_only", "BANKING77 test, 3 mapped categories, config only",
               banking77_outcomes(config_model, args.banking77))
    results.caption = (
        f"(e) ECE: expected calibration error over {CONFIDENCE_BINS} confidence bins; "
        f"< {min_confidence:g}: calls the min_confidence guard would ask about; acc. ≥: accuracy of the others"
    )
    console.print(results)
    console.print(confusion_table(config_model.intents, held_out_text))

    start = time.perf_counter()
    full_model = IntentModel.fit(config, labelled_calls(calls), lexical_only=args.lexical_only)
    figures["fit_seconds_all_calls"] = time.perf_counter() - start
    texts = [caller_text(c) for c in calls]
    figures["latency_ms_call_texts"] = latency_ms(full_model, texts)
    figures["latency_ms_300_chars"] = latency_ms(full_model, [(LONG_TEXT * 2)[:300]], repeat=200)
    figures["model_file_bytes"] = len(orjson.dumps(full_model.to_json()))
    figures["neutral_confidence"] = {text: full_model.predict(text).confidence for text in NEUTRAL_TEXTS}
    summary = full_model.summary
    calls_latency, long_latency = figures["latency_ms_call_texts"], figures["latency_ms_300_chars"]
    console.print(
        f"(f) predict latency, model fitted on config + {summary.corpus_calls} calls: "
        f"call texts p50 {calls_latency['p50']:.2f} ms, p95 {calls_latency['p95']:.2f} ms; "
        f"300-char text p50 {long_latency['p50']:.2f} ms, p95 {long_latency['p95']:.2f} ms",
        highlight=False,
    )
    console.print(
        f"    fit {figures['fit_seconds_all_calls']:.2f} s (config only {figures['fit_seconds_config_only']:.2f} s), "
        f"model file {figures['model_file_bytes'] / 1024:.0f} KiB, temperature {summary.temperature:g} "
        f"(cross-validated over {summary.calibration_texts} {summary.calibration})",
        highlight=False,
    )
    neutral = ", ".join(f"{text!r} {confidence:.2f}" for text, confidence in figures["neutral_confidence"].items())
    console.print(
        f"    intent-neutral texts (uniform = {1 / len(full_model.intents):.3f}): {neutral}",
        highlight=False, markup=False,
    )
    if args.json:
        args.json.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

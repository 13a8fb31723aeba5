"""Paraphrases and needs no intent serves: the offline classifier with its sentence embedding against the
lexical one alone (A/B, same process, same texts).

Run: .venv/bin/python benchmarks/offline_paraphrase_accuracy.py [--json OUT] [--banking77 DIR]

(a) The persona set's needs (benchmarks/outcomes/*.toml, the `need` lines): what the offline dialogue would
propose on the opening line, and on the opening line with the rephrasing a caller gives when asked again;
right = the intent of the persona's expected route with a confidence at or above the config's
`min_confidence`, or `unknown` for a persona whose route is the fallback route.
(b) BANKING77 test utterances of categories none of the configs' intents serve: the share taken for a need
no intent serves (`unknown`), and the share proposed as an intent with confidence above the guard.
(c) Start-up cost (fitting at start), predict latency per caller turn, and the process RSS the embedding adds.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import orjson
from offline_text_accuracy import latency_ms  # beside this script
from rich.console import Console
from rich.table import Table

from orchestrator.config.routing import RoutingConfig, load_routing_config
from orchestrator.engines.offline.intent_model import IntentModel
from orchestrator.engines.offline.sentence_embedding import installed_embedder
from orchestrator.testing.personas import Persona, load_personas

REPO = Path(__file__).resolve().parents[1]
PERSONAS = REPO / "benchmarks" / "outcomes"
# BANKING77 categories that none of the three example configs serves (cards, balances, transfers, bills,
# passwords, appointments, cheques and opening hours are left out).
BANKING77_UNSERVED = (
    "exchange_rate", "fiat_currency_support", "country_support", "age_limit", "apple_pay_or_google_pay",
    "verify_my_identity", "edit_personal_details", "terminate_account", "lost_or_stolen_phone", "exchange_charge",
    "top_up_limits", "atm_support",
)
UNKNOWN = "unknown"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def proposal(model: IntentModel, text: str) -> tuple[str, float]:
    """What the offline dialogue proposes for these words (see OfflineDialogue._classify)."""
    prediction = model.predict(text)
    if prediction.needs_no_intent:
        return UNKNOWN, prediction.unknown
    return prediction.intent, prediction.confidence


def right(config: RoutingConfig, persona: Persona, proposed: tuple[str, float]) -> bool:
    intent, confidence = proposed
    if persona.expect.route == config.triage.fallback_route:
        return intent == UNKNOWN
    route = next((i.route for i in config.intents if i.name == intent), None)
    return route == persona.expect.route and confidence >= config.triage.min_confidence


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--banking77", type=Path, default=None)
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 140))
    before = rss_mb()
    start = time.perf_counter()
    if installed_embedder() is None:
        console.print("[red]no sentence embedding installed (the speech extra): nothing to compare[/]")
        return 2
    figures: dict[str, object] = {
        "embedding_load_seconds": time.perf_counter() - start,
        "embedding_rss_mb": rss_mb() - before,
    }
    personas = load_personas(PERSONAS)
    by_config: dict[str, list[Persona]] = defaultdict(list)
    for persona in personas:
        by_config[persona.config].append(persona)
    unserved: list[str] = []
    if args.banking77 is not None and (args.banking77 / "test.csv").exists():
        with (args.banking77 / "test.csv").open(newline="", encoding="utf-8") as file:
            unserved = [row["text"] for row in csv.DictReader(file) if row["category"] in BANKING77_UNSERVED]

    table = Table(title="(a) persona needs, text: right proposal (b) BANKING77 unserved needs")
    for column in ("config", "model", "fit s", "opening line", "with rephrasing", "B77: unknown", "B77: ≥ guard",
                   "predict p50/p95 ms"):
        table.add_column(column, justify="left" if column in ("config", "model") else "right")
    misses: list[str] = []
    for name, group in sorted(by_config.items()):
        config = load_routing_config(REPO / "examples" / f"{name}.toml")
        for label, lexical_only in (("lexical", True), ("+ embedding", False)):
            start = time.perf_counter()
            model = IntentModel.fit(config, lexical_only=lexical_only)
            fit_seconds = time.perf_counter() - start
            opening = [right(config, p, proposal(model, p.need.lines[0])) for p in group]
            rephrased = [right(config, p, proposal(model, " ".join(p.need.lines[:2]))) for p in group]
            for persona, ok in zip(group, opening):
                if not ok:
                    intent, confidence = proposal(model, persona.need.lines[0])
                    misses.append(f"{label:12s} {persona.name}: {intent} {confidence:.2f} "
                                  f"(expected route {persona.expect.route})")
            taken = [proposal(model, text) for text in unserved]
            unknown_share = sum(intent == UNKNOWN for intent, _ in taken) / len(taken) if taken else float("nan")
            guarded = sum(intent != UNKNOWN and c >= config.triage.min_confidence for intent, c in taken)
            guarded_share = guarded / len(taken) if taken else float("nan")
            latency = latency_ms(model, [line for p in group for line in p.need.lines])
            figures[f"{name}/{label}"] = {
                "personas": len(group), "opening_right": sum(opening), "rephrased_right": sum(rephrased),
                "banking77_unserved": len(taken), "banking77_unknown": unknown_share,
                "banking77_above_guard": guarded_share, "fit_seconds": fit_seconds, "predict_ms": latency,
                "temperature": model.summary.temperature, "off_topic_texts": model.summary.off_topic_texts,
            }
            table.add_row(
                name, label, f"{fit_seconds:.2f}", f"{sum(opening)}/{len(group)}", f"{sum(rephrased)}/{len(group)}",
                f"{unknown_share:.2f}", f"{guarded_share:.2f}", f"{latency['p50']:.2f} / {latency['p95']:.2f}",
            )
    console.print(table)
    console.print(
        f"(c) sentence embedding: loaded in {figures['embedding_load_seconds']:.2f} s, "
        f"process RSS +{figures['embedding_rss_mb']:.0f} MB",
        highlight=False,
    )
    console.print("misses on the opening line:", highlight=False)
    for miss in misses:
        console.print(f"  {miss}", highlight=False, markup=False)
    figures["misses"] = misses
    figures["mean_fit_seconds"] = statistics.fmean(
        value["fit_seconds"] for key, value in figures.items() if isinstance(value, dict) and "fit_seconds" in value
    )
    if args.json:
        args.json.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

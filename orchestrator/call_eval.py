"""`orchestrator eval` (offline engine, text mode) and `orchestrator engine fit`.

Eval replays each past call's caller turns (those starting in its first 30 s, as a caller would say them
to the front desk) through the offline engine's intent classifier and compares the intent with the one
the old system recorded. A call whose confidence is below the config's minimum would not be dispatched
on that intent: the machine would ask again or send it to a human; the summary counts those apart.

Not built yet (the migration kit issue): Realtime replay, `--audio` through the live path, Studio
execution exports, Flex task parity and the HTML report.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.call_corpus import Corpus, caller_text
from orchestrator.intent_model import IntentModel
from orchestrator.routing_config import RoutingConfig


@dataclass(frozen=True, slots=True)
class ReplayedCall:
    call_id: str
    expected: str
    predicted: str
    confidence: float
    words: str
    decide_ms: float


@dataclass
class EvalSummary:
    calls: list[ReplayedCall]
    min_confidence: float
    skipped: dict[str, int] = field(default_factory=dict)  # reason → calls not scored

    @property
    def parity(self) -> float:
        return sum(c.expected == c.predicted for c in self.calls) / len(self.calls) if self.calls else 0.0

    def per_intent(self) -> dict[str, dict[str, float]]:
        labels = sorted({c.expected for c in self.calls} | {c.predicted for c in self.calls})
        result = {}
        for label in labels:
            true_positive = sum(c.expected == label and c.predicted == label for c in self.calls)
            predicted = sum(c.predicted == label for c in self.calls)
            support = sum(c.expected == label for c in self.calls)
            result[label] = {
                "precision": round(true_positive / predicted, 4) if predicted else 0.0,
                "recall": round(true_positive / support, 4) if support else 0.0,
                "support": support,
            }
        return result

    def confusion(self) -> dict[str, dict[str, int]]:
        """expected → predicted → calls."""
        table: dict[str, Counter[str]] = {}
        for call in self.calls:
            table.setdefault(call.expected, Counter())[call.predicted] += 1
        return {expected: dict(sorted(row.items())) for expected, row in sorted(table.items())}

    def to_json(self) -> dict[str, Any]:
        confident = [c for c in self.calls if c.confidence >= self.min_confidence]
        latencies = sorted(c.decide_ms for c in self.calls)
        return {
            "engine": "offline",
            "mode": "text",
            "calls": len(self.calls),
            "parity": round(self.parity, 4),
            "per_intent": self.per_intent(),
            "confusion": self.confusion(),
            "min_confidence": self.min_confidence,
            "below_min_confidence": len(self.calls) - len(confident),
            "parity_when_confident": round(
                sum(c.expected == c.predicted for c in confident) / len(confident), 4
            ) if confident else 0.0,
            "decide_ms_p50": _percentile(latencies, 0.50),
            "decide_ms_p95": _percentile(latencies, 0.95),
            "skipped": self.skipped,
            "disagreements": [
                {"call_id": c.call_id, "expected": c.expected, "predicted": c.predicted,
                 "confidence": round(c.confidence, 3), "words": c.words[:300]}
                for c in self.calls if c.expected != c.predicted
            ],
        }


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def evaluate_offline(corpus: Corpus, config: RoutingConfig, model: IntentModel, *, use_asr: bool = False) -> EvalSummary:
    known = {intent.name for intent in config.intents}
    summary = EvalSummary([], config.triage.min_confidence)
    for call in corpus.calls:
        if call.expected_intent is None:
            summary.skipped["no expected intent"] = summary.skipped.get("no expected intent", 0) + 1
            continue
        if call.expected_intent not in known:
            summary.skipped["intent not in the config"] = summary.skipped.get("intent not in the config", 0) + 1
            continue
        words = caller_text(call, use_asr=use_asr)
        started = time.perf_counter()
        prediction = model.predict(words)
        decide_ms = (time.perf_counter() - started) * 1000
        summary.calls.append(
            ReplayedCall(call.call_id, call.expected_intent, prediction.intent, prediction.confidence, words, decide_ms)
        )
    if corpus.problems:
        summary.skipped["unreadable lines"] = len(corpus.problems)
    return summary


def write_summary(summary: EvalSummary, path: Path) -> None:
    path.write_text(json.dumps(summary.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")

"""`orchestrator eval`: replay past calls through the triage and measure parity with the old system.

Each call is replayed by `call_replay` through the engine interface and the call machine, as a live
call is. Parity compares the intent the call would have been routed on (a call the machine sends to
the fallback route counts as "(fallback: …)", a disagreement) with the one the old system took.
"Would Flex have seen the same task" builds the `<Enqueue>` the decision makes and compares it with
the past task's attributes, for calls whose corpus line has them.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from machines import RouteKind
from orchestrator.call import CallFacts, dispatch_twiml
from orchestrator.config import RoutingConfig
from orchestrator.replay.corpus import Corpus, CorpusCall
from orchestrator.replay.text_replay import ReplayOutcome

PLACEHOLDER_CALLER = "+15555550100"  # when the corpus does not say who called
MAX_WORDS_SHOWN = 300


@dataclass(frozen=True, slots=True)
class ScoredCall:
    call_id: str
    expected: str
    predicted: str
    proposed: str | None
    confidence: float | None
    route: str | None
    reason: str | None
    words: str
    decide_ms: float | None
    problem: str | None
    flex: dict[str, Any] | None  # the task comparison, when the corpus has the past task
    language: str | None = None  # from the corpus


@dataclass
class EvalSummary:
    calls: list[ScoredCall]
    min_confidence: float
    engine: str
    mode: str
    min_parity: float = 0.90
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

    def per_language(self) -> dict[str, dict[str, float]]:
        """Parity per caller language (calls whose corpus line names none count as "(unknown)")."""
        groups: dict[str, list[ScoredCall]] = {}
        for call in self.calls:
            groups.setdefault(call.language or "(unknown)", []).append(call)
        return {
            language: {"calls": len(calls), "parity": round(sum(c.expected == c.predicted for c in calls) / len(calls), 4)}
            for language, calls in sorted(groups.items())
        }

    def confusion(self) -> dict[str, dict[str, int]]:
        """expected → predicted → calls."""
        table: dict[str, Counter[str]] = {}
        for call in self.calls:
            table.setdefault(call.expected, Counter())[call.predicted] += 1
        return {expected: dict(sorted(row.items())) for expected, row in sorted(table.items())}

    def to_json(self) -> dict[str, Any]:
        proposals = [c for c in self.calls if c.proposed is not None]
        latencies = sorted(c.decide_ms for c in self.calls if c.decide_ms is not None)
        compared = [c.flex for c in self.calls if c.flex is not None]
        return {
            "engine": self.engine,
            "mode": self.mode,
            "calls": len(self.calls),
            "parity": round(self.parity, 4),
            "min_parity": self.min_parity,
            "passed": self.parity >= self.min_parity,
            # What the engine proposed, before the machine's guards (a classifier-level figure).
            "proposal_parity": round(sum(c.proposed == c.expected for c in proposals) / len(self.calls), 4)
            if self.calls else 0.0,
            "min_confidence": self.min_confidence,
            "fallbacks": Counter(c.reason for c in self.calls if c.reason and c.reason != "accepted"),
            "no_decision": sum(c.route is None for c in self.calls),
            "per_intent": self.per_intent(),
            "confusion": self.confusion(),
            "time_to_decision_ms": {
                "p50": _percentile(latencies, 0.50), "p90": _percentile(latencies, 0.90),
                "p95": _percentile(latencies, 0.95), "max": latencies[-1] if latencies else 0.0,
            },
            "flex": {
                "compared": len(compared),
                "same_task": sum(item["same"] for item in compared),
                "mismatches": [item for item in compared if not item["same"]][:50],
            },
            "skipped": self.skipped,
            **({"per_language": self.per_language()} if any(c.language for c in self.calls) else {}),
            "disagreements": [
                {"call_id": c.call_id, "expected": c.expected, "predicted": c.predicted, "proposed": c.proposed,
                 "confidence": None if c.confidence is None else round(c.confidence, 3), "route": c.route,
                 "reason": c.reason, "problem": c.problem, "words": c.words[:MAX_WORDS_SHOWN]}
                for c in self.calls if c.expected != c.predicted
            ],
        }


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def scorable_calls(corpus: Corpus, config: RoutingConfig) -> tuple[list[CorpusCall], dict[str, int]]:
    """The calls whose expected intent is one of the config's; the others counted by reason."""
    known = {intent.name for intent in config.intents}
    skipped: Counter[str] = Counter()
    calls = []
    for call in corpus.calls:
        if call.expected_intent is None:
            skipped["no expected intent"] += 1
        elif call.expected_intent not in known:
            skipped["intent not in the config"] += 1
        else:
            calls.append(call)
    if corpus.problems:
        skipped["unreadable lines"] = len(corpus.problems)
    return calls, dict(skipped)


def score(calls: list[CorpusCall], outcomes: list[ReplayOutcome], config: RoutingConfig, *, engine: str,
          mode: str, min_parity: float, skipped: dict[str, int]) -> EvalSummary:
    by_id = {call.call_id: call for call in calls}
    scored = []
    for outcome in outcomes:
        call = by_id[outcome.call_id]
        decision = outcome.decision
        scored.append(ScoredCall(
            call.call_id, call.expected_intent or "", outcome.intent, outcome.proposed_intent,
            outcome.proposed_confidence, decision.route if decision else None,
            str(decision.reason) if decision else None, outcome.words, outcome.decide_ms, outcome.problem,
            flex_comparison(call, outcome, config), call.language,
        ))
    return EvalSummary(scored, config.triage.min_confidence, engine, mode, min_parity, skipped)


def flex_comparison(call: CorpusCall, outcome: ReplayOutcome, config: RoutingConfig) -> dict[str, Any] | None:
    """Would Flex have seen the same task: intent, workflow, priority, and a caller ID. None without a past task."""
    past = call.task_attributes
    if not past:
        return None
    ours = _our_task(call, outcome, config)
    checks = {
        "intent": ours.get("intent") == (past.get("intent") or call.expected_intent),
        "caller_id": bool(ours.get("from")),
    }
    workflow = past.get("workflow_sid") or past.get("workflow") or (
        call.expected_route if (call.expected_route or "").startswith("WW") else None)
    if workflow:
        checks["workflow"] = ours.get("workflow_sid") == workflow
    if "priority" in past:
        checks["priority"] = str(ours.get("priority")) == str(past["priority"])
    return {"call_id": call.call_id, "same": all(checks.values()), "checks": checks,
            "ours": {k: ours.get(k) for k in ("intent", "workflow_sid", "priority", "from")}}


def _our_task(call: CorpusCall, outcome: ReplayOutcome, config: RoutingConfig) -> dict[str, Any]:
    decision = outcome.decision
    if decision is None or decision.route_kind != RouteKind.FLEX:
        return {}
    caller = str((call.meta or {}).get("caller") or (call.meta or {}).get("from") or PLACEHOLDER_CALLER)
    facts = CallFacts(call_sid="CA" + "0" * 32, caller=caller, called="", account_sid="")
    twiml = dispatch_twiml(decision, config, facts, public_url="https://replay.invalid")
    enqueue = ElementTree.fromstring(twiml).find("Enqueue")
    task = enqueue.find("Task") if enqueue is not None else None
    if enqueue is None or task is None or not task.text:
        return {}
    attributes = json.loads(task.text)
    return {**attributes, "workflow_sid": enqueue.get("workflowSid"), "priority": task.get("priority")}


def write_summary(summary: EvalSummary, path: Path) -> None:
    path.write_text(json.dumps(summary.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")

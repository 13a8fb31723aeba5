"""Prometheus counters of the running server, on a registry of its own (no process-wide globals)."""
from __future__ import annotations

import math

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
# Time-to-decision buckets as shares of the triage budget: the last one is the budget itself.
_DECISION_BUCKET_SHARES = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0)
_LABEL_LIMIT = 64
_FALLBACK_REASONS = ("engine_failed", "budget_expired")


def _label(value: object) -> str:
    return (str(value) if value is not None else "none")[:_LABEL_LIMIT] or "none"


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


class ServerMetrics:
    def __init__(self, triage_budget_s: float = 20.0) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.calls_started = Counter("calls_started", "Media streams that began triage", registry=registry)
        self.calls_finished = Counter(
            "calls_finished", "Triage passes that ended, by outcome", ["outcome"], registry=registry
        )
        self.active_calls = Gauge("active_calls", "Calls being triaged now", registry=registry)
        self.trio_tasks = Gauge(
            "trio_tasks", "Trio tasks alive in this worker when scraped (growing while idle: a leak)", registry=registry
        )
        self.decisions = Counter(
            "dispatch_decisions", "Dispatch decisions, by route kind and reason", ["kind", "reason"],
            registry=registry,
        )
        self.after_answers = Counter(
            "action_answers", "Answers of the <Connect action> URL, by source", ["source"], registry=registry
        )
        self.media_errors = Counter(
            "media_stream_errors", "Twilio frames that could not be used, by kind", ["kind"], registry=registry
        )
        self.media_unknown_events = Counter(
            "media_stream_unknown_events", "Twilio frames with an event we do not know", registry=registry
        )
        self.engine_problems = Counter(
            "engine_problems", "Errors reported by the engine, by code and whether fatal", ["code", "fatal"],
            registry=registry,
        )
        self.engine_unavailable = Counter(
            "engine_unavailable", "Calls whose engine could not be opened", registry=registry
        )
        self.engine_connect_failures = Counter(
            "engine_connect_failures", "Engine connections that failed, by kind (certificate, hostname, dns, "
            "refused, http_status, timeout, ...)", ["kind"], registry=registry,
        )
        self.engine_failovers = Counter(
            "engine_failovers", "Calls taken over by the failover engine after the first was refused or lost",
            registry=registry,
        )
        self.media_streams_silent = Counter(
            "media_streams_silent", "Media Streams that went silent while the call was up (a dead peer)",
            registry=registry,
        )
        self.live_call_redirects = Counter(
            "live_call_redirects", "Calls moved to their route over Twilio's REST API, by result", ["result"],
            registry=registry,
        )
        self.tool_rejections = Counter(
            "tool_rejections", "Tool calls refused for invalid arguments, by tool", ["tool"], registry=registry
        )
        self.barge_ins = Counter("barge_ins", "Times the caller interrupted the agent", registry=registry)
        self.signature_failures = Counter(
            "signature_failures", "Requests refused for a bad X-Twilio-Signature, by endpoint", ["endpoint"],
            registry=registry,
        )
        self.store_errors = Counter(
            "store_errors", "Call store operations that failed, by kind (timeout, unavailable, locked, closed, "
            "refused, error)", ["kind"], registry=registry,
        )
        self.rollout_calls = Counter(
            "rollout_calls", "Calls at the voice webhook, by the rollout arm they were assigned", ["arm"],
            registry=registry,
        )
        self.rollout_brake_trips = Counter(
            "rollout_brake_trips", "Times the rollout brake dropped the AI arm to 0 %", registry=registry
        )
        self.calls_by_arm = Counter(
            "calls_by_arm", "Triage passes that ended, by rollout arm, route and outcome", ["arm", "route", "outcome"],
            registry=registry,
        )
        self.decision_seconds = Histogram(
            "decision_seconds", "Seconds from the start of triage to the dispatch decision, by arm", ["arm"],
            buckets=[round(share * triage_budget_s, 3) for share in _DECISION_BUCKET_SHARES], registry=registry,
        )
        self.engine_minutes = Counter(
            "engine_minutes", "Minutes an AI engine (Realtime or offline) was connected: the cost, by arm", ["arm"],
            registry=registry,
        )
        self.errors = Counter("errors", "Things that went wrong, by kind", ["kind"], registry=registry)
        self.taskrouter_events = Counter(
            "taskrouter_events", "TaskRouter event callbacks, by what was done with them", ["result"],
            registry=registry,
        )
        self.call_feedback = Counter(
            "call_feedback", "Facts learnt after triage (CSAT, call status), by kind and result", ["kind", "result"],
            registry=registry,
        )

    def observe_finished_pass(
        self,
        arm: str,
        route: str | None,
        outcome: str,
        decided_after_s: float | None,
        engine_seconds: float,
        *,
        reason: str | None = None,
        faults: int = 0,
    ) -> None:
        """A triage pass ended. Called from the session's teardown, so it never raises on odd values."""
        arm_label = _label(arm)
        self.calls_by_arm.labels(arm_label, _label(route), _label(outcome)).inc()
        decided_after = _seconds(decided_after_s) if route is not None else None
        if decided_after is not None:
            self.decision_seconds.labels(arm_label).observe(decided_after)
        minutes = (_seconds(engine_seconds) or 0.0) / 60
        if minutes:
            self.engine_minutes.labels(arm_label).inc(minutes)
        if reason in _FALLBACK_REASONS:
            self.errors.labels(reason).inc()
        if isinstance(faults, int) and not isinstance(faults, bool) and faults > 0:
            self.errors.labels("machine_fault").inc(faults)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

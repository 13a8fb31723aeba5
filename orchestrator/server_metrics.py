"""Prometheus counters of the running server, on a registry of its own (no process-wide globals)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.calls_started = Counter("calls_started", "Media streams that began triage", registry=registry)
        self.calls_finished = Counter(
            "calls_finished", "Triage passes that ended, by outcome", ["outcome"], registry=registry
        )
        self.active_calls = Gauge("active_calls", "Calls being triaged now", registry=registry)
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
        self.engine_failovers = Counter(
            "engine_failovers", "Calls taken over by the failover engine after the first was refused or lost",
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
        self.store_errors = Counter("store_errors", "Call store operations that failed", registry=registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

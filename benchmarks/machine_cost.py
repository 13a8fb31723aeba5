"""Per-call cost of the call machine: create+dispose, and a whole typical call.

Run: .venv/bin/python benchmarks/machine_cost.py
"""
from __future__ import annotations

import gc
import time

from machines import events as ev
from machines.call_machine import CallFlow
from machines.policy import CallHistory, RouteRule, TriagePolicy
from orchestrator.telemetry.logs import quiet_state_machine_library

POLICY = TriagePolicy(
    intents={"billing": "billing_desk", "schedule": "schedule_visit"},
    routes={
        "billing_desk": RouteRule("billing_desk", "flex", frozenset({"caller_name"})),
        "schedule_visit": RouteRule("schedule_visit", "studio", studio_node="FW0/schedule_visit"),
        "voicemail": RouteRule("voicemail", "voicemail"),
        "front_desk": RouteRule("front_desk", "flex"),
    },
    fallback_route="voicemail",
    human_route="front_desk",
)

TYPICAL_CALL = [
    ev.RealtimeOpened(),
    ev.GreetingPlayed(),
    ev.CallerSpoke("I have a question about my bill"),
    ev.IntentProposed("billing", 0.9, "bill question", "call_1"),
    ev.DetailsCaptured({"caller_name": "Ada"}, "call_2"),
    ev.IntentProposed("billing", 0.9, "bill question", "call_3"),
    ev.HandoffPlayed(),
    ev.RealtimeClosed(),
    ev.MediaClosed(),
]


def per_call_microseconds(body, rounds: int) -> float:
    gc.collect()
    best = float("inf")
    for _ in range(5):  # best of five: the figure is the machine's cost, not the noise of the host
        start = time.perf_counter()
        for _ in range(rounds):
            body()
        best = min(best, (time.perf_counter() - start) / rounds)
    return best * 1e6


def main() -> None:
    quiet_state_machine_library()  # as the server does: absorbed events are the trail's, not the log's
    flow = CallFlow(POLICY, time.monotonic)
    history = CallHistory()

    def create_and_dispose() -> None:
        flow.dispose(flow.start_call("CA0", history))

    def whole_call() -> None:
        call = flow.start_call("CA0", history)
        call.start()
        for event in TYPICAL_CALL:
            call.handle(event)
        assert call.is_finished
        flow.dispose(call)

    rounds = 20_000
    print(f"create + dispose one call's machine: {per_call_microseconds(create_and_dispose, rounds):7.1f} µs (target < 150 µs)")
    print(f"whole typical call ({len(TYPICAL_CALL)} events):  {per_call_microseconds(whole_call, rounds // 4):7.1f} µs")
    print(f"models left attached after the runs: {flow.active_calls}")


if __name__ == "__main__":
    main()

"""What a triage pass leaves behind: its decision, stored before the TwiML that depends on it is answered,
and its outcome (states visited, notes, engine time), with the server's figures for the finished pass.
A store that fails is counted and logged, never raised: the caller still gets TwiML (the fallback route
when no decision was stored)."""
from __future__ import annotations

import structlog
import trio

from machines import CallMachine, DispatchDecision
from orchestrator.store import CallStore, PassOutcome, TriagePass, store_error_kind
from orchestrator.telemetry import ServerMetrics

KEPT_NOTES = 20  # trail notes a finished pass keeps in the store
STORE_TIMEOUT_S = 5.0


class PassRecords:
    def __init__(
        self, store: CallStore, triage_pass: TriagePass, *, metrics: ServerMetrics, log: structlog.stdlib.BoundLogger
    ) -> None:
        self._store = store
        self._pass = triage_pass
        self._metrics = metrics
        self._log = log

    async def save_decision(self, decision: DispatchDecision) -> None:
        self._metrics.decisions.labels(decision.route_kind, str(decision.reason)).inc()
        self._log.info(
            "decision", route=decision.route, kind=decision.route_kind, reason=str(decision.reason),
            intent=decision.intent, confidence=decision.confidence,
        )
        try:
            with trio.fail_after(STORE_TIMEOUT_S):
                stored = await self._store.save_decision(self._pass.call_sid, self._pass.number, decision)
        except Exception as error:  # /voice/after then answers the fallback route: the caller is not dropped
            self._metrics.store_errors.labels(store_error_kind(error)).inc()
            self._log.error("could not persist the decision", error=repr(error))
            return
        if stored != decision:
            self._log.warning("a decision was already stored for this pass; it stands", stored=stored.route)

    async def finish(self, machine: CallMachine, *, notes: list[str], engine_seconds: float) -> None:
        """The pass's outcome (`notes`: the session's own, before the machine's trail notes)."""
        trail_notes = tuple(f"{entry.event}: {entry.note}" for entry in machine.trail if entry.note)
        kept = (*notes, *trail_notes[-KEPT_NOTES:])[-KEPT_NOTES:]
        outcome = PassOutcome(
            machine.outcome, tuple(machine.states_visited), machine.faults, kept, engine_seconds=engine_seconds
        )
        try:
            with trio.fail_after(STORE_TIMEOUT_S):
                await self._store.finish_pass(self._pass.call_sid, self._pass.number, outcome)
        except Exception as error:  # the outcome is a record; losing it must not break teardown
            self._metrics.store_errors.labels(store_error_kind(error)).inc()
            self._log.error("could not record the outcome", error=repr(error))
        self._metrics.calls_finished.labels(machine.outcome).inc()
        decision = machine.decision
        self._metrics.observe_finished_pass(
            self._pass.arm, decision.route if decision else None, machine.outcome,
            decision.decided_after_s if decision else None, engine_seconds,
            reason=str(decision.reason) if decision else None, faults=machine.faults,
        )

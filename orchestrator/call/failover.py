"""Failover: the call goes on with a second engine when its engine is refused at the start, drops, or fails
while the caller is still being triaged.

The failover engine (the offline one) is opened with what the machine has captured and heard so far: the
session first lets its driver catch up with what the lost engine reported last (its last tool calls may
still be queued). Once the new engine is open the driver forgets the old engine's requests and asks again
for the line that was cut off, or lets the new engine pick the conversation up. It happens once per pass;
the machine does not see the first engine go: only a failover that fails too reaches it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog
import trio

from machines import CallMachine, Line
from orchestrator.call.engine_requests import EngineRequestGate
from orchestrator.engines import EngineConnector
from orchestrator.telemetry import ServerMetrics

CATCH_UP_LIMIT_S = 1.0  # the driver never takes this long for what is queued; if it does, go on anyway


@dataclass(frozen=True, slots=True)
class CatchUp:
    """Set once the driver has handled everything posted before it (e.g. the lost engine's last tool calls)."""

    done: trio.Event


@dataclass(frozen=True, slots=True)
class EngineSwitched:
    """The failover engine is open: the driver forgets the old engine's requests and re-asks what was lost."""


class EngineFailover:
    def __init__(
        self,
        connector: EngineConnector | None,
        *,
        metrics: ServerMetrics,
        log: structlog.stdlib.BoundLogger,
        shutting_down: trio.Event,
    ) -> None:
        self.connector = connector  # None: a lost engine sends the call to the fallback route
        self._metrics = metrics
        self._log = log
        self._shutting_down = shutting_down
        self._used = False
        # Between losing an engine and the failover being open: the driver keeps its requests for the next.
        self.switching = False
        self.notes: list[str] = []  # kept in the pass record

    def possible(self, machine: CallMachine) -> bool:
        return (
            self.connector is not None
            and not self._used
            and machine.triage_open
            and not self._shutting_down.is_set()
        )

    def take_over(self, lost: str) -> EngineConnector:
        """The failover engine's connector, for a call whose engine was lost (`lost` says why)."""
        assert self.connector is not None
        self._used = True
        self.switching = True
        self._metrics.engine_failovers.inc()
        self.notes.append(f"failover to {self.connector.name}: {lost}")
        self._log.warning("engine lost; the failover engine takes the call", reason=lost, engine=self.connector.name)
        return self.connector

    async def catch_up(self, post: Callable[[object], None]) -> None:
        """Wait (briefly) until the driver has handled what the lost engine reported, so the machine, and
        through it the new engine, knows it."""
        caught_up = trio.Event()
        post(CatchUp(caught_up))
        with trio.move_on_after(CATCH_UP_LIMIT_S):
            await caught_up.wait()

    def on_switched(self, gate: EngineRequestGate, machine: CallMachine) -> None:
        """The driver's side of the switch: forget the old engine's requests; re-ask the line it was
        cut off in (not the greeting), or let the new engine go on."""
        self.switching = False
        lost_line = gate.forget_engine()
        if machine.state == "greeting" or gate.line_pending:
            return  # in the greeting the machine asks for it again when the new engine opens
        if lost_line is not None and lost_line.line is not Line.GREETING:
            gate.ask_line(lost_line)
        else:
            gate.ask_to_continue()

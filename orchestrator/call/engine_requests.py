"""The engine request gate: what the call machine asks of an engine, sent only when the engine may take it.

An engine runs one response at a time (the Realtime protocol's rule, which the offline engine keeps too),
so tool answers, the next line and "go on" wait while a response is active and go out together after it:
the outputs first, then at most one request for a response. "Active" is what the engine last reported, not
what we asked for: a request the engine refuses because it started a response itself (the request race)
comes back as a harmless problem naming our request, and is asked again after that response.

A live call's driver (`orchestrator.call.session`) and a replay of a past call
(`orchestrator.replay.text_replay`) both talk to their engine through one of these.
"""
from __future__ import annotations

import itertools

from machines import Speak
from orchestrator.config import RoutingConfig
from orchestrator.engines import (
    EngineProblem,
    RespondingEngine,
    line_instructions,
    spoken_line,
)


class EngineRequestGate:
    def __init__(self, config: RoutingConfig, *, request_prefix: str = "request_") -> None:
        self._config = config
        self._request_prefix = request_prefix
        self._request_numbers = itertools.count(1)
        self.response_active = False
        self._outputs: list[tuple[str, str]] = []
        self._line: Speak | None = None
        self._continue = False
        self._last_request: tuple[str, Speak | None] | None = None
        self._line_in_flight: Speak | None = None  # a line asked for whose response has not finished

    # ---- what is asked

    def answer_tool(self, call_id: str, output: str) -> None:
        self._outputs.append((call_id, output))

    def ask_line(self, line: Speak) -> None:
        self._line = line

    def ask_to_continue(self) -> None:
        """Let the agent pick the conversation up (a response with no instructions)."""
        self._continue = True

    @property
    def line_pending(self) -> bool:
        return self._line is not None

    # ---- what the engine reported

    def on_response_started(self) -> None:
        self.response_active = True

    def on_response_finished(self, tag: str | None) -> None:
        self.response_active = False
        if self._line_in_flight is not None and tag == self._line_in_flight.line.value:
            self._line_in_flight = None

    def on_harmless_problem(self, problem: EngineProblem) -> None:
        """A problem that leaves the engine usable. When it names our last request, that request lost a
        race with a response the engine started itself: it is asked again once that one is over."""
        last = self._last_request
        if last is None or problem.request_id != last[0]:
            return
        self._last_request = None
        self.response_active = True
        if last[1] is not None and self._line is None:
            self._line = last[1]
        elif last[1] is None:
            self._continue = True

    def forget_engine(self) -> Speak | None:
        """The engine is gone (a failover engine follows): answers to its tool calls mean nothing to the
        next one. Returns the line it was asked to say and had not finished, if any."""
        self.response_active = False
        self._outputs.clear()
        self._last_request = None
        lost, self._line_in_flight = self._line_in_flight, None
        return lost

    def drop_all(self) -> None:
        """No engine will take these (the call's engine is closed)."""
        self._outputs.clear()
        self._line = None
        self._continue = False

    # ---- sending

    async def flush(self, engine: RespondingEngine, *, language: str | None, may_continue: bool) -> bool:
        """Send the tool outputs and ask for at most one response, unless a response is active. A tool
        answer asks the agent to go on only when `may_continue` (after the decision it says the handoff
        line and nothing else). True when a response was asked for."""
        if self.response_active:
            return False
        outputs, self._outputs = self._outputs, []
        for call_id, output in outputs:
            await engine.send_tool_output(call_id, output)
        line, self._line = self._line, None
        wants_continue = (bool(outputs) or self._continue) and may_continue
        self._continue = False
        if line is None and not wants_continue:
            return False
        request_id = f"{self._request_prefix}{next(self._request_numbers)}"
        self._last_request = (request_id, line)
        if line is None:
            await engine.speak(None, tag=None, request_id=request_id)
        else:
            self._line_in_flight = line
            config = self._config
            await engine.speak(
                line_instructions(config, line, language), tag=line.line.value, request_id=request_id,
                line=spoken_line(config, line, language),
            )
        return True

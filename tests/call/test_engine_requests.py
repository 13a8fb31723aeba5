"""The engine request gate (`orchestrator.call.engine_requests`), shared by live calls and replays."""
from __future__ import annotations

from dataclasses import dataclass, field

from machines.effects import Line, Speak
from orchestrator.call.engine_requests import EngineRequestGate
from orchestrator.engines.interface import EngineProblem
from tests.call.session_harness import ACME_CONFIG


@dataclass
class RecordingEngine:
    sent: list[tuple] = field(default_factory=list)

    async def speak(self, instructions, *, tag, request_id=None, line=None) -> None:
        self.sent.append(("speak", tag, request_id, line is not None))

    async def send_tool_output(self, call_id: str, output: str) -> None:
        self.sent.append(("tool_output", call_id))

    def events(self, on_agent_audio=None):
        raise NotImplementedError


async def flush(gate: EngineRequestGate, engine: RecordingEngine, *, may_continue: bool = True) -> bool:
    return await gate.flush(engine, language=None, may_continue=may_continue)


async def test_nothing_goes_out_while_a_response_is_active_then_outputs_before_one_request():
    gate, engine = EngineRequestGate(ACME_CONFIG), RecordingEngine()
    gate.on_response_started()
    gate.answer_tool("call_1", "{}")
    gate.answer_tool("call_2", "{}")
    gate.ask_line(Speak(Line.CLARIFY))
    assert not await flush(gate, engine) and engine.sent == []
    gate.on_response_finished(None)
    assert await flush(gate, engine)
    assert engine.sent == [("tool_output", "call_1"), ("tool_output", "call_2"), ("speak", "clarify", "request_1", True)]
    assert not await flush(gate, engine)  # nothing left


async def test_a_tool_answer_asks_the_agent_to_go_on_only_while_it_may():
    gate, engine = EngineRequestGate(ACME_CONFIG, request_prefix="replay_"), RecordingEngine()
    gate.answer_tool("call_1", "{}")
    assert await flush(gate, engine)
    gate.answer_tool("call_2", "{}")
    assert not await flush(gate, engine, may_continue=False)  # decided: the answer alone
    assert engine.sent == [("tool_output", "call_1"), ("speak", None, "replay_1", False), ("tool_output", "call_2")]


async def test_a_request_that_lost_the_race_is_asked_again_after_the_engines_own_response():
    gate, engine = EngineRequestGate(ACME_CONFIG), RecordingEngine()
    gate.ask_line(Speak(Line.CLARIFY))
    await flush(gate, engine)
    gate.on_harmless_problem(EngineProblem("response_cancel_not_active", "", False, "request_9"))  # not ours
    assert not gate.line_pending
    gate.on_harmless_problem(EngineProblem("conversation_already_has_active_response", "", False, "request_1"))
    assert gate.line_pending and gate.response_active  # the engine's own response runs
    assert not await flush(gate, engine)
    gate.on_response_finished(None)
    assert await flush(gate, engine)
    assert [sent[2] for sent in engine.sent] == ["request_1", "request_2"]


async def test_a_lost_engine_takes_its_tool_calls_with_it_and_names_the_line_it_was_cut_off_in():
    gate, engine = EngineRequestGate(ACME_CONFIG), RecordingEngine()
    handoff = Speak(Line.HANDOFF)
    gate.ask_line(handoff)
    await flush(gate, engine)
    gate.on_response_started()
    gate.answer_tool("call_1", "{}")
    assert gate.forget_engine() is handoff
    assert not gate.response_active and not await flush(gate, engine, may_continue=True)
    gate.ask_line(Speak(Line.GREETING))
    gate.on_response_finished(Line.GREETING.value)
    gate.drop_all()
    assert not await flush(gate, engine) and len(engine.sent) == 1

"""A call session over in-memory doubles (`session_harness`): a scripted engine that fails the call on any
request it does not expect, and a fake Media Stream. Failover, the request race and barge-in, each in
milliseconds; the loopback end-to-end tests (`tests/e2e`) cover the same paths over real sockets."""
from __future__ import annotations

import pytest
import trio

from machines.effects import Line
from orchestrator.engines.interface import (
    AgentAudio,
    CallerSpeechStarted,
    CallerTranscript,
    EngineCapabilities,
    EngineProblem,
    ResponseFinished,
)
from tests.call.session_harness import (
    FakeMediaSocket,
    ScriptedConnector,
    UnexpectedRequest,
    audio_payload,
    emit,
    expect_speak,
    expect_tool_output,
    expect_truncate,
    propose,
    record_details,
    refuse,
    respond,
    running_session,
    vad_response,
)

GREETING = [expect_speak("greeting"), respond(audio_ms=400)]
HANDOFF = [expect_speak("handoff"), respond(audio_ms=300)]


async def test_a_call_is_greeted_triaged_and_handed_off_then_closes_engine_before_stream():
    connector = ScriptedConnector([*GREETING, expect_tool_output("call_1"), *HANDOFF])
    async with running_session(connector) as call:
        assert call.state == "capture"  # the greeting's end mark came back
        call.engine.emit(CallerTranscript("I was charged twice"), *vad_response(propose("billing", 0.9)))
    assert call.decision is not None and call.decision.route == "billing_desk"
    assert call.outcome is not None and call.outcome.state_path[-3:] == ("dispatch", "teardown", "ended")
    assert call.engine.finished_script and call.socket.closed_with == 1000
    assert [r.request for r in call.engine.requests] == ["speak", "tool_output", "speak"]
    assert [r.request_id for r in call.engine.requests if r.request == "speak"] == ["request_1", "request_2"]
    marks = call.socket.marks()
    assert [name for name in marks if name.startswith("line-")] == ["line-greeting-1", "line-handoff-2"]
    assert call.socket.events().count("media") == 7  # 400 ms of greeting and 300 of handoff, 100 ms a chunk
    assert call.session.realtime_closed.is_set()


async def test_an_engine_dropped_mid_triage_is_taken_over_by_the_failover_engine_with_what_was_heard():
    primary = ScriptedConnector(GREETING, name="realtime")
    failover = ScriptedConnector(
        [expect_speak(None), respond(audio_ms=200, tools=[propose("billing", 0.9)]), expect_tool_output("call_1"),
         *HANDOFF],
        name="offline",
    )
    async with running_session(primary, failover=failover) as call:
        assert call.state == "capture"
        primary.engine.emit(CallerTranscript("my bill is wrong"))
        primary.engine.drop()
        await call.settle()
        taking_over = failover.engine.call
        assert taking_over.taking_over and taking_over.caller_turns == ("my bill is wrong",)
    assert call.decision is not None and call.decision.route == "billing_desk"
    assert primary.engine.finished_script and failover.engine.finished_script
    assert call.metric("engine_failovers_total") == 1
    assert call.outcome is not None and call.outcome.notes[0] == "failover to offline: engine_dropped"
    assert "realtime_closed" not in "".join(call.outcome.notes)  # the machine never saw the first engine go


async def test_the_line_cut_off_by_a_lost_engine_is_asked_again_of_the_failover_engine():
    primary = ScriptedConnector(
        [*GREETING, expect_tool_output("call_1"), expect_speak("clarify"), respond(audio_ms=100, finish=False),
         emit(EngineProblem("server_error", "the model broke", fatal=True))],
    )
    failover = ScriptedConnector(
        [expect_speak("clarify"), respond(audio_ms=200), expect_tool_output("call_2"), *HANDOFF]
    )
    async with running_session(primary, failover=failover) as call:
        primary.engine.emit(*vad_response(propose("billing", 0.3)))  # too unsure: the machine asks again
        await call.settle()
        assert failover.engines and [r.tag for r in failover.engine.requests] == ["clarify"]
        failover.engine.emit(*vad_response(propose("billing", 0.9, call_id="call_2")))
    assert call.decision is not None and call.decision.route == "billing_desk"
    assert call.outcome is not None and call.outcome.notes[0] == "failover to scripted: engine_error: server_error"
    assert call.metric("engine_problems_total", code="server_error", fatal="true") == 1


async def test_a_refused_engine_without_failover_sends_the_caller_to_the_fallback_route():
    async with running_session(ScriptedConnector(refuse=True)) as call:
        pass
    assert call.decision is not None and call.decision.route == "voicemail"
    assert str(call.decision.reason) == "engine_failed"
    assert call.socket.closed_with == 1000 and call.session.realtime_closed.is_set()


async def test_a_request_refused_in_a_race_with_the_engines_own_response_is_asked_again_after_it():
    """Our clarify request reaches the engine just after it started a response of its own: the engine
    refuses it (a harmless problem naming our request); the gate waits for that response to finish and
    asks again, and never asks while a response is active."""
    connector = ScriptedConnector([
        *GREETING,
        expect_tool_output("call_1"),
        expect_speak("clarify"),
        emit(*vad_response(response_id="own_1")[:1]),  # the engine's own response started first...
        refuse(),  # ...so it refuses ours
        emit(*vad_response(response_id="own_1")[1:]),
        expect_speak("clarify"),
        respond(audio_ms=200),
        expect_tool_output("call_2"),
        *HANDOFF,
    ])
    async with running_session(connector) as call:
        call.engine.emit(*vad_response(propose("billing", 0.3)))
        await call.settle()
        clarifies = [r for r in call.engine.requests if r.tag == "clarify"]
        assert [r.request_id for r in clarifies] == ["request_2", "request_3"]  # a new request, same line
        call.engine.emit(*vad_response(propose("billing", 0.9, call_id="call_2")))
    assert call.decision is not None and call.decision.route == "billing_desk"
    assert call.metric("engine_problems_total", code="conversation_already_has_active_response", fatal="false") == 1


async def test_barge_in_clears_twilio_truncates_at_what_was_heard_and_drops_the_rest_of_the_item():
    socket = FakeMediaSocket(echo_marks=False)  # the caller hears only what the test plays
    connector = ScriptedConnector([expect_speak("greeting"), respond(audio_ms=400, finish=False),
                                   expect_truncate("item_1", 200)])
    async with running_session(connector, socket=socket) as call:
        assert socket.events() == ["media", "mark"] * 4  # a mark every 100 ms of audio
        socket.play_marks(2)  # 200 ms played
        await call.settle()
        call.engine.emit(CallerSpeechStarted())
        await call.settle()
        assert socket.events()[8:] == ["clear"]
        assert call.engine.requests[-1].request == "truncate"  # at 200 ms, as the script expects
        call.engine.emit(AgentAudio("resp_1", "item_1", audio_payload(100)))  # late: never played
        call.engine.emit(ResponseFinished("resp_1", Line.GREETING.value, "cancelled"))
        await call.settle()
        assert socket.events()[9:] == ["mark"] and socket.marks()[-1] == "line-greeting-1"
        socket.play_marks()  # the greeting is over, cut short
        await call.settle()
        assert call.state == "capture"
        socket.hang_up()
    assert call.metric("barge_ins_total") == 1
    assert call.outcome is not None and call.outcome.outcome == "abandoned"
    assert "media" not in socket.events()[8:]


async def test_the_machine_is_told_when_the_agent_begins_and_ends_being_heard():
    """Its budget gives the caller their turn after a question (AgentStoppedSpeaking: every mark back)."""
    socket = FakeMediaSocket(echo_marks=False)
    connector = ScriptedConnector([expect_speak("greeting"), respond(audio_ms=400)])
    async with running_session(connector, socket=socket) as call:

        def agent_events() -> list[str]:
            return [entry.event for entry in call.session.machine.trail if entry.event.startswith("Agent")]

        assert agent_events() == ["AgentStartedSpeaking"]
        socket.play_marks(2)  # half the greeting heard
        await call.settle()
        assert agent_events() == ["AgentStartedSpeaking"]
        socket.play_marks()
        await call.settle()
        assert agent_events() == ["AgentStartedSpeaking", "AgentStoppedSpeaking"] and call.state == "capture"
        socket.hang_up()


async def test_a_caller_talking_over_the_agent_ends_its_being_heard_once_the_response_is_over():
    socket = FakeMediaSocket(echo_marks=False)
    connector = ScriptedConnector([expect_speak("greeting"), respond(audio_ms=400, finish=False),
                                   expect_truncate("item_1", 100)])
    async with running_session(connector, socket=socket) as call:
        socket.play_marks(1)
        await call.settle()
        call.engine.emit(CallerSpeechStarted())
        await call.settle()
        trail = call.session.machine.trail
        assert "AgentStoppedSpeaking" not in [entry.event for entry in trail]  # the response is still going
        call.engine.emit(ResponseFinished("resp_1", Line.GREETING.value, "cancelled"))
        await call.settle()
        socket.play_marks()  # the greeting's own end mark
        await call.settle()
        assert [entry.event for entry in trail].count("AgentStoppedSpeaking") == 1
        socket.hang_up()


async def test_a_caller_talking_over_the_handoff_line_cuts_it_and_is_handed_back_at_once():
    """Barge-in on "I'm putting you through": Twilio clears, the engine forgets what was not heard, and the
    call is handed back without waiting for the line's end mark (which never comes here)."""
    socket = FakeMediaSocket(echo_marks=False)
    connector = ScriptedConnector([expect_speak("greeting"), respond(audio_ms=100), expect_tool_output("call_1"),
                                   expect_speak("handoff"), respond(audio_ms=300, finish=False),
                                   expect_truncate("item_2", 100)])
    async with running_session(connector, socket=socket) as call:
        socket.play_marks()
        await call.settle()
        call.engine.emit(*vad_response(propose("billing", 0.9)))
        await call.settle()
        assert call.state == "dispatch"
        socket.play_marks(1)  # 100 ms of the handoff line heard
        heard_over_the_line = socket.caller_audio(3)
        await call.settle()
        assert call.engine.caller_audio[-3:] == heard_over_the_line  # the engine hears the caller over the line
        sent = len(socket.sent)
        call.engine.emit(CallerSpeechStarted())
        await call.settle()
        assert [message["event"] for message in socket.sent[sent:]][:1] == ["clear"]
    assert call.state == "ended" and call.metric("barge_ins_total") == 1
    assert call.outcome is not None and call.outcome.outcome == "flex"
    assert [entry.note for entry in call.session.machine.trail if entry.event == "HandoffPlayed"] == [""]


async def test_the_caller_talking_after_the_decision_before_the_handoff_line_cuts_nothing():
    socket = FakeMediaSocket(echo_marks=False)
    connector = ScriptedConnector([expect_speak("greeting"), respond(audio_ms=100), expect_tool_output("call_1"),
                                   expect_speak("handoff")])
    async with running_session(connector, socket=socket) as call:
        socket.play_marks()
        await call.settle()
        call.engine.emit(*vad_response(propose("billing", 0.9)))
        await call.settle()
        assert call.state == "dispatch"
        heard = len(call.engine.caller_audio)
        socket.caller_audio(3)
        sent = len(socket.sent)
        call.engine.emit(CallerSpeechStarted(), AgentAudio("vad_2", "item_9", audio_payload(100)))
        await call.settle()
        assert socket.sent[sent:] == []  # no clear, and no audio of a response that is not the handoff line
        assert len(call.engine.caller_audio) == heard  # decided: the caller is not heard before the line
        call.engine.emit(*respond(audio_ms=200).events(call.engine))
        await call.settle()
        assert call.state == "dispatch"  # the line plays out
        socket.play_marks()
    assert call.metric("barge_ins_total") == 0
    assert call.decision is not None and call.outcome is not None and call.outcome.outcome == "flex"


async def test_caller_audio_is_held_while_the_engine_connects_then_forwarded_in_order():
    connector = ScriptedConnector(GREETING)
    connector.may_open = trio.Event()
    async with running_session(connector) as call:
        held = call.socket.caller_audio(160)  # 3.2 s: the oldest 200 ms do not fit
        await call.settle()
        assert not connector.engines
        connector.may_open.set()
        await call.settle()
        live = call.socket.caller_audio(5)
        await call.settle()
        assert call.engine.caller_audio == held[10:] + live
        call.socket.hang_up()
    assert call.outcome is not None and call.outcome.outcome == "abandoned"


async def test_a_caller_in_a_language_the_engine_does_not_declare_goes_to_a_person():
    english_only = EngineCapabilities(languages=("en",))
    connector = ScriptedConnector([], capabilities=english_only)
    async with running_session(connector, known_language="es-US") as call:
        pass
    assert call.decision is not None and str(call.decision.reason) == "unsupported_language"
    assert call.decision.route == "front_desk" and call.engine.requests == []


async def test_a_request_the_script_does_not_expect_fails_the_call_at_once():
    with pytest.raises(BaseExceptionGroup) as raised:
        async with running_session(ScriptedConnector([expect_speak("handoff")])):
            pass
    assert raised.group_contains(UnexpectedRequest, match="expected Expect", depth=None)


def press(socket: FakeMediaSocket, keys: str) -> None:
    for key in keys:
        socket.feed("dtmf", dtmf={"track": "inbound_track", "digit": key})


async def test_digits_typed_while_a_number_is_asked_fill_it_confirmed_and_the_agent_goes_on():
    connector = ScriptedConnector([
        *GREETING, expect_tool_output("call_1"), expect_speak("ask_details"), respond(audio_ms=200),
        expect_speak("keypad_thanks"), respond(audio_ms=200),
        expect_tool_output("call_details"), expect_tool_output("call_2"), *HANDOFF,
    ])
    async with running_session(connector) as call:
        call.engine.emit(*vad_response(propose("emergency", 0.9)))
        await call.settle()
        asked = call.engine.requests[-1].line
        # The caller-ID number is to be confirmed, with the name and the address.
        assert asked is not None and asked.asks_for == ("address", "callback_number", "caller_name")
        assert asked.confirms == ("callback_number",)
        press(call.socket, "41*4155550199#")  # a slip, cleared with *, then the number
        await call.settle()
        assert call.engine.keys_pressed == 14  # each key told to the engine: the caller is not silent
        thanks = call.engine.requests[-1]
        assert thanks.line is not None and thanks.line.asks_for == ("address", "caller_name")
        assert call.session.machine.captured["callback_number"] == "+14155550199"
        call.engine.emit(*vad_response(record_details({"caller_name": "Ann Lee", "address": "1 Main St"}),
                                       propose("emergency", 0.9, call_id="call_2")))
    assert call.decision is not None and call.decision.route == "emergency_desk"
    assert call.decision.captured["callback_number"] == "+14155550199"
    assert call.decision.unconfirmed_fields == ()  # typed: no read-back, no caller-ID question left
    assert call.metric("barge_ins_total") == 0


async def test_digits_that_are_no_phone_number_ask_again_and_menu_keys_work_when_nothing_is_asked():
    connector = ScriptedConnector([
        *GREETING, expect_speak("ask_details"), respond(audio_ms=200),
        expect_tool_output("call_1"), expect_speak("ask_details"), respond(audio_ms=200),
        expect_speak("keypad_invalid"), respond(audio_ms=200),
    ])
    async with running_session(connector) as call:
        press(call.socket, "2")  # nothing keyable is asked: the old menu's key for a booking proposes it
        await call.settle()
        assert call.session.machine.proposal is not None and call.session.machine.proposal.intent == "schedule"
        assert call.engine.requests[-1].line.asks_for == ("address", "caller_name")
        press(call.socket, "1")  # details are awaited: no menu key now
        await call.settle()
        assert call.session.machine.proposal.intent == "schedule"
        call.engine.emit(*vad_response(propose("emergency", 0.9)))
        await call.settle()
        press(call.socket, "123#")
        await call.settle()
        again = call.engine.requests[-1].line
        assert again is not None and again.asks_for == ("callback_number",)
        assert call.session.machine.proposal.intent == "emergency"  # the digits chose no menu intent
        call.socket.hang_up()
    assert call.outcome is not None and call.outcome.outcome == "abandoned"

"""End to end, the paths where something goes wrong: hang-ups, Realtime refusing, dropping or erroring,
invalid tool arguments, budget expiry, a call coming back to the Studio node it visited, bad signatures,
barge-in, junk frames from Twilio, server shutdown. Every one ends with TwiML that moves the caller on.
"""
from __future__ import annotations

import json
import ssl
import xml.etree.ElementTree as ElementTree
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
import trio
import trustme
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from bridge.openai_realtime.client import RealtimeSettings
from bridge.twilio.mulaw import tone
from orchestrator.engines.realtime import RealtimeConnector
from orchestrator.engines.tools import RECORD_DETAILS, agent_instructions, realtime_tools
from orchestrator.testing.fake_realtime import (
    Drop,
    Freeze,
    Respond,
    Scenario,
    SendError,
    Speech,
    UserSpeech,
    after_audio_frames,
    after_response_create,
    call_function,
    cancelled_function_call,
    on,
    speak,
)
from orchestrator.testing.twilio_caller import Say, Wait, WaitForAgent, fetch_call_record
from tests.live_call_support import (
    CALL_TIMEOUT_S,
    DETAILS,
    FrontDesk,
    assert_closed_in_order,
    call_task_names,
    front_desk,
    greeting,
    handoff_line,
    metric,
    propose,
    signed_headers,
    triage_scenario,
    with_triage,
)

VOICEMAIL = ["Say", "Record", "Hangup"]  # Acme's fallback route
FRONT_DESK_WORKFLOW = "WW145f0063e82132d8795bc84716172e7c"  # Acme's human route (Flex)


async def _never_answer(stream: trio.SocketStream) -> None:
    await trio.sleep_forever()


def tags(twiml: str | None) -> list[str]:
    assert twiml is not None
    return [child.tag for child in ElementTree.fromstring(twiml)]


def task_attributes(twiml: str | None) -> dict[str, Any]:
    enqueue = ElementTree.fromstring(twiml or "").find("Enqueue")
    assert enqueue is not None, twiml
    return {"workflow": enqueue.get("workflowSid"), **json.loads(enqueue.find("Task").text)}


async def pass_record(desk: FrontDesk, call_sid: str, number: int = 1) -> dict[str, Any]:
    record = await fetch_call_record(desk.server.base_url, call_sid, desk.server.auth_token)
    assert record is not None
    return record["passes"][number - 1]


def server_machine_state(desk: FrontDesk) -> str | None:
    sessions = list(desk.server.state.sessions.values())
    return sessions[0].machine.state if sessions and sessions[0].machine else None


async def hang_up_when(desk: FrontDesk, scenario_steps: tuple, condition) -> Any:
    caller = desk.caller(scenario_steps)
    with trio.fail_after(CALL_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            async def watch() -> None:
                await caller.wait_until(lambda _: condition(desk))
                await caller.hang_up()

            nursery.start_soon(watch)
            result = await caller.run()
            nursery.cancel_scope.cancel()
    return result


# --------------------------------------------------------------------------- hang-ups


async def test_hang_up_during_the_greeting_abandons_the_call_and_closes_realtime_first(tmp_path):
    slow_greeting = on(after_response_create(), speak(ms=3000, transcript="Hello…", pace_s=0.05))
    async with front_desk(tmp_path, Scenario(steps=[slow_greeting])) as desk:
        result = await hang_up_when(
            desk, (Wait(60_000),), lambda d: server_machine_state(d) == "greeting" and d.fake.sessions
            and d.fake.last_session.sent_of_type("response.output_audio.delta")
        )
        assert result.media_closed_by == "caller"
        assert tags(result.final_twiml) == VOICEMAIL  # no decision: the configured fallback, never silence
        assert_closed_in_order(desk, result)
        record = await pass_record(desk, result.call_sid)
        assert record["decision"] is None and record["outcome"]["outcome"] == "abandoned"
        assert record["outcome"]["state_path"] == ["greeting", "teardown", "ended"]
        desk.assert_nothing_of_the_call_remains()


async def test_hang_up_while_capturing_abandons_the_call(tmp_path):
    seen: list[str] = []
    realtime_open: list[bool] = []

    def capturing(d: FrontDesk) -> bool:
        # What "nothing of the call remains" looks for, while it is there.
        seen[:] = call_task_names()
        realtime_open[:] = [not session.is_closed for session in d.fake.sessions]
        return server_machine_state(d) == "capture"

    async with front_desk(tmp_path, Scenario(steps=[greeting()])) as desk:
        result = await hang_up_when(desk, (Wait(60_000),), capturing)
        assert any(name.endswith("CallSession._drive") for name in seen)
        assert any(name.endswith("CallSession._read_engine") for name in seen)
        assert realtime_open == [True]
        assert tags(result.final_twiml) == VOICEMAIL
        assert_closed_in_order(desk, result)
        record = await pass_record(desk, result.call_sid)
        assert record["outcome"]["state_path"] == ["greeting", "capture", "teardown", "ended"]
        desk.assert_nothing_of_the_call_remains()


async def test_hang_up_during_the_handoff_line_keeps_the_decision(tmp_path):
    scenario = triage_scenario("billing")
    scenario = Scenario(steps=[*scenario.steps[:-1], handoff_line(ms=5000)])
    async with front_desk(tmp_path, scenario) as desk:
        result = await hang_up_when(desk, (Say(tone(800)), Wait(60_000)), lambda d: server_machine_state(d) == "dispatch")
        assert_closed_in_order(desk, result)
        assert task_attributes(result.final_twiml)["intent"] == "billing"
        record = await pass_record(desk, result.call_sid)
        assert record["outcome"]["state_path"][-3:] == ["dispatch", "teardown", "ended"]
        desk.assert_nothing_of_the_call_remains()


async def test_hang_up_while_the_engine_is_still_connecting_ends_the_call_at_once(tmp_path):
    async with trio.open_nursery() as nursery:
        # A Realtime endpoint that accepts TCP and never answers the handshake.
        listeners = await nursery.start(trio.serve_tcp, _never_answer, 0)
        port = listeners[0].socket.getsockname()[1]
        async with front_desk(tmp_path, Scenario()) as desk:
            config = desk.config
            desk.server.state.connector = RealtimeConnector(
                RealtimeSettings(url=f"ws://127.0.0.1:{port}/v1/realtime", api_key="sk", connect_timeout_s=30),
                instructions=agent_instructions(config), tools=realtime_tools(config),
            )
            started = trio.current_time()
            result = await hang_up_when(desk, (Wait(60_000),), lambda d: server_machine_state(d) == "greeting")
            assert trio.current_time() - started < 5  # not the 30 s connect timeout
            assert tags(result.final_twiml) == VOICEMAIL
            desk.assert_nothing_of_the_call_remains()
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- the engine fails


async def test_realtime_refusing_the_connection_sends_the_caller_to_the_fallback_route(tmp_path):
    async with front_desk(tmp_path, Scenario(refuse_status=503)) as desk:
        result = await desk.call()
        assert result.media_closed_by == "server"
        assert tags(result.final_twiml) == VOICEMAIL
        record = await pass_record(desk, result.call_sid)
        assert record["decision"]["reason"] == "engine_failed"
        assert desk.fake.last_session.refused_status == 503
        assert metric(desk, "engine_unavailable_total") == 1
        assert metric(desk, "engine_connect_failures_total", kind="http_status") == 1
        assert result.media_closed_at <= result.action_answered_at
        desk.assert_nothing_of_the_call_remains()


async def test_realtime_dropping_mid_call_falls_back_after_closing_in_order(tmp_path):
    scenario = Scenario(steps=[greeting(), on(after_audio_frames(60), Drop())])
    async with front_desk(tmp_path, scenario) as desk:
        result = await desk.call()
        assert result.media_closed_by == "server"
        assert tags(result.final_twiml) == VOICEMAIL
        session = desk.realtime_session_of(result)
        assert session.closed_by == "server" and session.close_code == 1006
        assert session.closed_at <= result.media_closed_at <= result.action_answered_at
        record = await pass_record(desk, result.call_sid)
        assert record["decision"]["reason"] == "engine_failed"
        assert record["outcome"]["state_path"] == ["greeting", "capture", "dispatch", "teardown", "ended"]
        desk.assert_nothing_of_the_call_remains()


def serving_context(ca: trustme.CA, name: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    return context


async def test_a_whole_call_runs_over_tls_to_a_realtime_endpoint_with_a_private_ca(tmp_path):
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    scenario = triage_scenario("billing")
    serving = serving_context(ca, "localhost")
    async with front_desk(tmp_path, scenario, serving_tls=serving, ca_file=str(ca_file)) as desk:
        result = await desk.call()
        assert_closed_in_order(desk, result)
        assert task_attributes(result.final_twiml)["intent"] == "billing"
        assert desk.fake.violations == [] and result.violations == []
        desk.assert_nothing_of_the_call_remains()


async def test_an_untrusted_realtime_certificate_falls_back_and_is_counted_by_kind(tmp_path):
    untrusted = serving_context(trustme.CA(), "localhost")
    async with front_desk(tmp_path, triage_scenario("billing"), serving_tls=untrusted) as desk:
        result = await desk.call()
        assert tags(result.final_twiml) == VOICEMAIL
        assert (await pass_record(desk, result.call_sid))["decision"]["reason"] == "engine_failed"
        assert metric(desk, "engine_connect_failures_total", kind="certificate") == 1
        assert metric(desk, "engine_unavailable_total") == 1


async def test_a_silently_dead_realtime_peer_is_noticed_by_keepalive_and_the_call_falls_back(tmp_path):
    # The peer stops answering anything (no pong, no data) with its TCP connection open.
    scenario = Scenario(steps=[greeting(), on(after_audio_frames(10), Freeze())])
    async with front_desk(tmp_path, scenario, keepalive_s=0.5) as desk:
        result = await desk.call(steps=(Say(tone(1200), "I need some help"), Wait(6000)))
        assert result.media_closed_by == "server"
        assert tags(result.final_twiml) == VOICEMAIL
        session = desk.realtime_session_of(result)
        # Lost within two keepalive intervals of freezing (plus scheduling slack), long before the budget.
        assert result.media_closed_at - session.closed_at < 2.5
        record = await pass_record(desk, result.call_sid)
        assert record["decision"]["reason"] == "engine_failed"


async def test_a_fatal_error_event_falls_back_and_a_harmless_one_does_not(tmp_path):
    fatal = Scenario(steps=[greeting(), on(after_audio_frames(10), SendError("server_error", "boom", error_type="server_error"))])
    async with front_desk(tmp_path, fatal) as desk:
        result = await desk.call()
        assert_closed_in_order(desk, result)
        assert tags(result.final_twiml) == VOICEMAIL
        assert (await pass_record(desk, result.call_sid))["decision"]["reason"] == "engine_failed"
        assert metric(desk, "engine_problems_total", code="server_error", fatal="true") == 1
        desk.assert_nothing_of_the_call_remains()

    harmless = Scenario(steps=[
        greeting(),
        on(after_audio_frames(10), SendError("conversation_already_has_active_response", "busy"), propose("billing")),
        handoff_line(),
    ])
    async with front_desk(tmp_path / "2", harmless) as desk:
        result = await desk.call()
        assert_closed_in_order(desk, result)
        assert task_attributes(result.final_twiml)["intent"] == "billing"
        desk.assert_nothing_of_the_call_remains()


async def test_a_deployment_that_does_not_know_the_idle_timeout_serves_calls_without_it(tmp_path):
    idle = "session.audio.input.turn_detection.idle_timeout_ms"
    async with front_desk(tmp_path, triage_scenario("billing", unknown_params=(idle,))) as desk:
        updates = []
        for _ in range(2):
            result = await desk.call()
            assert task_attributes(result.final_twiml)["intent"] == "billing"
            sent = desk.realtime_session_of(result).events_of_type("session.update")
            updates.append(["idle_timeout_ms" in update.data["session"]["audio"]["input"]["turn_detection"]
                            for update in sent])
        # Refused once, configured again without it; the next call is configured without it from the start.
        assert updates == [[True, False], [False]]
        assert metric(desk, "engine_unavailable_total") == 0
        desk.assert_nothing_of_the_call_remains()


async def test_invalid_tool_arguments_are_explained_to_the_model_which_asks_again(tmp_path):
    bad = {"caller_name": "Ann Lee", "callback_number": "12", "address": "1 Main St, Springfield"}
    scenario = Scenario(steps=[
        greeting(),
        on(after_audio_frames(10), call_function(RECORD_DETAILS, bad)),
        on(after_response_create(), call_function(RECORD_DETAILS, "{not json")),
        on(after_response_create(), call_function(RECORD_DETAILS, DETAILS)),
        on(after_response_create(), propose("emergency")),
        handoff_line(),
    ])
    async with front_desk(tmp_path, scenario) as desk:
        result = await desk.call()
        assert_closed_in_order(desk, result)
        attributes = task_attributes(result.final_twiml)
        assert attributes["intent"] == "emergency" and attributes["callback_number"] == "+14155552671"

        outputs = [json.loads(e.data["item"]["output"]) for e in
                   desk.realtime_session_of(result).events_of_type("conversation.item.create")]
        assert [o["status"] for o in outputs] == ["invalid", "invalid", "recorded", "accepted"]
        assert any("callback_number" in problem for problem in outputs[0]["problems"])
        assert "instruction" in outputs[0]
        assert metric(desk, "tool_rejections_total", tool=RECORD_DETAILS) == 2
        desk.assert_nothing_of_the_call_remains()


async def test_a_cancelled_function_call_never_reaches_the_machine(tmp_path):
    scenario = Scenario(steps=[
        greeting(),
        on(after_audio_frames(10), cancelled_function_call("propose_route", {"intent": "emergency", "confidence": 1, "summary": "x"})),
        on(after_audio_frames(10), propose("billing")),
        handoff_line(),
    ])
    async with front_desk(tmp_path, scenario) as desk:
        result = await desk.call(steps=(Say(tone(2500)), WaitForAgent(quiet_ms=400)))
        assert task_attributes(result.final_twiml)["intent"] == "billing"
        desk.assert_nothing_of_the_call_remains()


async def test_budget_expiry_takes_the_fallback_route_after_the_handoff_line(tmp_path):
    scenario = Scenario(steps=[greeting(), handoff_line()])
    config = with_triage(tmp_path, budget_seconds=1, fallback_route="front_desk")
    async with front_desk(tmp_path, scenario, config_path=config) as desk:
        result = await desk.call(steps=(Wait(60_000),))
        assert_closed_in_order(desk, result)
        assert task_attributes(result.final_twiml)["workflow"] == FRONT_DESK_WORKFLOW
        record = await pass_record(desk, result.call_sid)
        assert record["decision"]["reason"] == "budget_expired"
        assert 1.0 <= record["decision"]["decided_after_s"] < 3
        requests = desk.realtime_session_of(result).events_of_type("response.create")
        assert requests[-1].data["response"]["metadata"] == {"tag": "handoff"}
        desk.assert_nothing_of_the_call_remains()


# --------------------------------------------------------------------------- re-entry


async def test_a_call_back_from_studio_cannot_be_sent_to_the_node_it_already_visited(tmp_path):
    details = {"caller_name": "Bo Chen", "address": "9 Elm Rd"}
    async with front_desk(tmp_path, triage_scenario("schedule", details=details)) as desk:
        first = await desk.call(call_sid="CA" + "1" * 32)
        assert tags(first.final_twiml) == ["Redirect"]

        # The Studio flow sends the same live call back to our webhook from its ai_triage widget.
        entry = "flow_sid=FW5670575a869e4a142814c71a1217f9f0&node=ai_triage"
        second = await desk.call(call_sid="CA" + "1" * 32, incoming_query=entry)
        assert_closed_in_order(desk, second)
        attributes = task_attributes(second.final_twiml)
        assert attributes["workflow"] == FRONT_DESK_WORKFLOW
        assert attributes["ai_reason"] == "reentry_refused" and attributes["intent"] == "schedule"

        record = await fetch_call_record(desk.server.base_url, second.call_sid, desk.server.auth_token)
        assert [p["number"] for p in record["passes"]] == [1, 2]
        assert record["passes"][1]["entry_node"] == "FW5670575a869e4a142814c71a1217f9f0/ai_triage"
        assert record["passes"][1]["decision"]["proposed_route"] == "schedule_visit"
        assert record["passes"][1]["decision"]["route"] == "front_desk"
        desk.assert_nothing_of_the_call_remains()


# --------------------------------------------------------------------------- security


async def test_bad_or_missing_signatures_get_403_on_the_webhook_and_on_the_stream(tmp_path):
    async with front_desk(tmp_path, triage_scenario("billing")) as desk:
        unsigned = await desk.call(sign=False)
        forged = await desk.call(bad_signature=True)
        assert unsigned.webhook_status == 403 and forged.webhook_status == 403
        assert unsigned.stream_url is None and desk.fake.sessions == []

        # A stream URL learnt some other way, upgraded without (or with a wrong) signature.
        stream_url = desk.server.state.media_stream_url
        for headers in ([], [(b"X-Twilio-Signature", b"AAAA")]):
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(stream_url, extra_headers=headers):
                    pass
            assert rejected.value.status_code == 403

        async with httpx.AsyncClient() as http:
            after = await http.post(f"{desk.server.base_url}/voice/after?pass=1", data={"CallSid": "CA" + "2" * 32})
            record = await http.get(f"{desk.server.base_url}/calls/{'CA' + '2' * 32}")
        assert after.status_code == 403 and record.status_code == 403
        assert metric(desk, "signature_failures_total", endpoint="media") == 2
        desk.assert_nothing_of_the_call_remains()


async def test_a_signed_stream_without_the_pass_token_is_closed_and_the_caller_falls_back(tmp_path):
    async with front_desk(tmp_path, triage_scenario("billing")) as desk:
        stream_url = desk.server.state.media_stream_url
        headers = [(b"X-Twilio-Signature", signed_headers(stream_url, desk.server.auth_token)["X-Twilio-Signature"].encode())]
        async with open_websocket_url(stream_url, extra_headers=headers) as websocket:
            await websocket.send_message(orjson.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}).decode())
            await websocket.send_message(orjson.dumps(_start("CA" + "3" * 32, {"pass": "1", "pass_token": "guess"})).decode())
            with trio.fail_after(5):
                with pytest.raises(ConnectionClosed):
                    while True:
                        await websocket.get_message()
            assert websocket.closed.code == 1008
        assert desk.fake.sessions == []
        desk.assert_nothing_of_the_call_remains()


# --------------------------------------------------------------------------- barge-in


async def test_barge_in_clears_twilio_and_truncates_at_the_audio_actually_played(tmp_path):
    long_greeting = Respond(
        (Speech(ms=4000, transcript="Welcome to Acme Plumbing, let me tell you about our services…"),),
        chunk_ms=100,
        pace_s=0.01,
        interrupted_by=UserSpeech(transcript="sorry, my basement is flooding"),
        interrupt_after_ms=2500,
    )
    scenario = Scenario(steps=[
        on(after_response_create(), long_greeting),
        on(after_audio_frames(10), propose("billing")),
        handoff_line(),
    ])
    async with front_desk(tmp_path, scenario) as desk:
        # Real-time playback, so most of the greeting is still queued at Twilio when the caller barges in.
        result = await desk.call(steps=(Say(tone(3000)), WaitForAgent(quiet_ms=400)), speed=1.0)
        assert result.clears == 1
        cleared = [mark for mark in result.marks if mark.cleared]
        assert cleared, "pending marks are echoed by clear"

        (truncate,) = desk.realtime_session_of(result).events_of_type("conversation.item.truncate")
        sent_ms = 2500
        played = truncate.data["audio_end_ms"]
        assert 0 <= played < sent_ms
        # What the caller's phone had played when the clear arrived, within one mark (100 ms) and the
        # loopback delay of the echo.
        assert abs(played - (result.audio_received_ms - result.audio_cleared_ms - _handoff_ms(result))) <= 250
        assert desk.fake.violations == []  # the truncate was within the audio sent
        assert metric(desk, "barge_ins_total") == 1
        assert task_attributes(result.final_twiml)["intent"] == "billing"
        desk.assert_nothing_of_the_call_remains()


def _handoff_ms(result) -> float:
    return 300.0  # the handoff line of the scenario, played after the barge-in


async def test_a_caller_talking_over_the_handoff_line_is_handed_back_at_once(tmp_path):
    """The caller talks over "I'm putting you through": Twilio is cleared, the Realtime item truncated at
    what was heard, and the call handed back without waiting for the 6 s line to play out."""
    long_handoff = Respond(
        (Speech(ms=6000, transcript="Thanks, I'm putting you through to the team now. Please stay on the line."),),
        chunk_ms=100,
        pace_s=0.01,
        interrupted_by=UserSpeech(transcript="okay, thanks"),
        interrupt_after_ms=1000,
    )
    scenario = triage_scenario("billing")
    scenario = Scenario(steps=[*scenario.steps[:-1], on(after_response_create(), long_handoff)])
    async with front_desk(tmp_path, scenario) as desk:
        started = trio.current_time()
        result = await desk.call(steps=(Say(tone(800)), Wait(60_000)), speed=1.0)
        assert trio.current_time() - started < 4.0  # the line alone would take 6 s to play
        # Two barge-ins: the scenario's caller talks over the greeting, then over the handoff line.
        assert result.clears == 2 and metric(desk, "barge_ins_total") == 2
        truncates = desk.realtime_session_of(result).events_of_type("conversation.item.truncate")
        assert len(truncates) == 2
        assert 0 <= truncates[-1].data["audio_end_ms"] < 1000  # what the phone had played of the line
        assert desk.fake.violations == []
        assert task_attributes(result.final_twiml)["intent"] == "billing"
        record = await pass_record(desk, result.call_sid)
        assert record["outcome"]["state_path"][-3:] == ["dispatch", "teardown", "ended"]
        assert_closed_in_order(desk, result)
        desk.assert_nothing_of_the_call_remains()


# --------------------------------------------------------------------------- junk from Twilio


async def test_junk_frames_from_twilio_are_counted_and_the_call_goes_on(tmp_path):
    async with front_desk(tmp_path, triage_scenario("billing")) as desk:
        call_sid = "CA" + "4" * 32
        async with raw_stream(desk, call_sid) as websocket:
            for junk in ("not json", b"\x00binary", '{"event": "media", "media": 7}', '{"event": "surprise"}',
                         "[1, 2]", '{"event": "mark", "mark": {}}'):
                await websocket.send_message(junk)
            await talk_until_closed(websocket, call_sid)
        assert metric(desk, "media_stream_errors_total", kind="malformed_json") == 1
        assert metric(desk, "media_stream_errors_total", kind="binary_frame") == 1
        assert metric(desk, "media_stream_errors_total", kind="invalid_shape") == 3
        assert metric(desk, "media_stream_unknown_events_total") == 1
        record = await fetch_call_record(desk.server.base_url, call_sid, desk.server.auth_token)
        assert record["passes"][0]["decision"]["intent"] == "billing"


async def test_an_oversized_frame_is_counted_and_skipped_and_the_call_goes_on(tmp_path):
    async with front_desk(tmp_path, triage_scenario("billing")) as desk:
        call_sid = "CA" + "5" * 32
        async with raw_stream(desk, call_sid) as websocket:
            await websocket.send_message('{"event": "media", "payload": "' + "A" * 200_000 + '"}')
            await talk_until_closed(websocket, call_sid)
        assert websocket.closed.code == 1000  # closed by us after the decision, not for the big frame
        assert metric(desk, "media_stream_errors_total", kind="oversized") == 1
        record = await fetch_call_record(desk.server.base_url, call_sid, desk.server.auth_token)
        assert record["passes"][0]["decision"]["intent"] == "billing"


@asynccontextmanager
async def raw_stream(desk: FrontDesk, call_sid: str) -> AsyncIterator[Any]:
    """A hand-driven Twilio side (to send what the simulated caller never would): the signed webhook,
    then the signed stream with its `start`."""
    async with httpx.AsyncClient() as http:
        url = f"{desk.server.base_url}/voice/incoming"
        params = {"CallSid": call_sid, "From": "+14155550100", "To": "+14155550199", "AccountSid": "AC" + "0" * 32}
        twiml = (await http.post(url, data=params, headers=signed_headers(url, desk.server.auth_token, params))).text
    stream = ElementTree.fromstring(twiml).find("Connect/Stream")
    custom = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    signature = signed_headers(stream.get("url"), desk.server.auth_token)["X-Twilio-Signature"].encode()
    async with open_websocket_url(stream.get("url"), extra_headers=[(b"X-Twilio-Signature", signature)]) as websocket:
        await websocket.send_message(orjson.dumps(_start(call_sid, custom)).decode())
        yield websocket


async def talk_until_closed(websocket: Any, call_sid: str) -> None:
    """Caller audio, then marks echoed as Twilio would, until the server closes the stream."""
    for chunk in range(1, 30):
        await websocket.send_message(orjson.dumps(_media(call_sid, chunk)).decode())
    with trio.fail_after(5):
        try:
            while True:
                message = orjson.loads(await websocket.get_message())
                if message["event"] == "mark":
                    echo = {"event": "mark", "sequenceNumber": "99", "streamSid": "MZ" + "0" * 32,
                            "mark": message["mark"]}
                    await websocket.send_message(orjson.dumps(echo).decode())
        except ConnectionClosed:
            pass


def _start(call_sid: str, custom: dict[str, str]) -> dict[str, Any]:
    return {
        "event": "start", "sequenceNumber": "1", "streamSid": "MZ" + "0" * 32,
        "start": {"accountSid": "AC" + "0" * 32, "streamSid": "MZ" + "0" * 32, "callSid": call_sid,
                  "tracks": ["inbound"], "customParameters": custom,
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
    }


def _media(call_sid: str, chunk: int) -> dict[str, Any]:
    import base64

    return {"event": "media", "sequenceNumber": str(chunk + 1), "streamSid": "MZ" + "0" * 32,
            "media": {"track": "inbound", "chunk": str(chunk), "timestamp": str(chunk * 20),
                      "payload": base64.b64encode(b"\xff" * 160).decode()}}


# --------------------------------------------------------------------------- shutdown


async def test_server_shutdown_mid_call_sends_the_caller_to_the_fallback_in_order(tmp_path):
    async with front_desk(tmp_path, Scenario(steps=[greeting()])) as desk:
        caller = desk.caller((Wait(60_000),))
        with trio.fail_after(CALL_TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                async def stop_when_capturing() -> None:
                    await caller.wait_until(lambda _: server_machine_state(desk) == "capture")
                    desk.server.stop()

                nursery.start_soon(stop_when_capturing)
                result = await caller.run()
        assert_closed_in_order(desk, result)
        assert tags(result.final_twiml) == VOICEMAIL
        # The listener is closing now; read the record from the store itself.
        record = (await desk.server.state.store.call_record(result.call_sid)).to_json()["passes"][0]
        assert record["decision"]["reason"] == "engine_failed"
        assert "server_shutdown" in " ".join(record["outcome"]["notes"])
        desk.assert_nothing_of_the_call_remains()


async def test_the_development_switch_accepts_unsigned_requests_and_says_so(tmp_path):
    async with front_desk(tmp_path, triage_scenario("billing"), insecure_skip_signature_check=True) as desk:
        assert any("NOT checked" in line for line in desk.server.announcements)
        result = await desk.call(sign=False)
        assert result.webhook_status == 200
        assert task_attributes(result.final_twiml)["intent"] == "billing"
        desk.assert_nothing_of_the_call_remains()

"""A Media Stream that goes silent while the call is up (a TLS proxy that died, a half-open connection): the
simulated caller stops sending without closing. The session ends, the Realtime socket is closed, and the live
call is moved to its route over Twilio's REST API (a fake that validates the update, over loopback), since
the dead stream can carry no TwiML and Twilio requests no action URL. Recorded and counted."""
from __future__ import annotations

import httpx
import trio

from bridge.twilio.mulaw import tone
from orchestrator.engines.tools import RECORD_DETAILS
from orchestrator.testing.fake_realtime import Scenario, after_audio_frames, after_response_create, call_function, on
from orchestrator.testing.fake_twilio_rest import run_fake_twilio_rest
from orchestrator.testing.twilio_caller import GoSilent, Say, Wait, WaitForAgent
from tests.live_call_support import (
    CALL_TIMEOUT_S,
    DETAILS,
    FrontDesk,
    front_desk,
    greeting,
    handoff_line,
    metric,
    propose,
    signed_headers,
)

ACME_ACCOUNT = "AC6918b3f30d86a2b7b27af58bbe029f87"
SILENCE_S = 0.5


def decided_during_a_long_handoff_line() -> Scenario:
    """Billing with every detail, then a handoff line long enough for the caller's line to die during it."""
    return Scenario(steps=[
        greeting(),
        on(after_audio_frames(10), call_function(RECORD_DETAILS, DETAILS)),
        on(after_response_create(), propose("billing")),
        handoff_line(ms=60_000),
    ])


async def call_ended(desk: FrontDesk) -> None:
    """The session is over (it moves the call and records it after the stream closed)."""
    with trio.fail_after(CALL_TIMEOUT_S):
        while desk.server.state.sessions:  # noqa: ASYNC110 (the session ends in the server's task)
            await trio.sleep(0.01)


async def action_url_twiml(desk: FrontDesk, call_sid: str) -> str:
    """What the `<Connect action>` URL answers for the call's first pass."""
    url = desk.server.public_url + "/voice/after?pass=1"
    params = {"CallSid": call_sid, "AccountSid": "AC" + "0" * 32, "From": "+15551230000", "To": "+15557650000",
              "CallStatus": "in-progress"}
    async with httpx.AsyncClient() as http:
        response = await http.post(url, data=params, headers=signed_headers(url, desk.server.auth_token, params))
    assert response.status_code == 200
    return response.text


async def test_a_stream_gone_silent_after_the_decision_moves_the_call_to_its_route_over_rest(tmp_path):
    async with run_fake_twilio_rest(ACME_ACCOUNT, "") as twilio, front_desk(
        tmp_path, decided_during_a_long_handoff_line(), twilio_silence_seconds=SILENCE_S, twilio_api_url=twilio.url,
    ) as desk:
        twilio.auth_token = desk.server.auth_token
        with trio.fail_after(CALL_TIMEOUT_S):
            result = await desk.call([Say(tone(1200), "a question about my bill"), GoSilent()])
        await call_ended(desk)

        assert twilio.refused == []
        (update,) = twilio.updates
        assert update.call_sid == result.call_sid and update.account_sid == ACME_ACCOUNT
        assert '<Enqueue workflowSid="WW77927f36a49d594244217cbcbcae9cee">' in update.twiml  # billing's Flex queue
        assert update.twiml == await action_url_twiml(desk, result.call_sid)  # what the action URL would answer
        assert result.media_closed_by == "server" and result.action_status is None  # no action URL on a dead path

        record = await desk.server.state.store.call_record(result.call_sid)
        (triage_pass,) = record.passes
        assert triage_pass.decision.route == "billing_desk" and triage_pass.answered_route == "billing_desk"
        notes = "\n".join(triage_pass.outcome.notes)
        assert "media_silent" in notes and "live call redirect: moved (the decided route)" in notes
        assert metric(desk, "media_streams_silent_total") == 1
        assert metric(desk, "live_call_redirects_total", result="moved") == 1
        assert desk.fake.last_session.closed_by == "client"
        desk.assert_nothing_of_the_call_remains()


async def test_a_stream_gone_silent_before_any_need_is_known_moves_the_call_to_the_fallback_route(tmp_path):
    async with run_fake_twilio_rest(ACME_ACCOUNT, "") as twilio, front_desk(
        tmp_path, Scenario(steps=[greeting()]), twilio_silence_seconds=SILENCE_S, twilio_api_url=twilio.url,
    ) as desk:
        twilio.auth_token = desk.server.auth_token
        result = await desk.call([Wait(200), GoSilent()])
        await call_ended(desk)

        (update,) = twilio.updates
        assert "<Record " in update.twiml  # Acme's fallback route is its voicemail
        assert update.twiml == await action_url_twiml(desk, result.call_sid)
        record = await desk.server.state.store.call_record(result.call_sid)
        (triage_pass,) = record.passes
        assert triage_pass.decision.route == "voicemail" and str(triage_pass.decision.reason) == "engine_failed"
        assert metric(desk, "live_call_redirects_total", result="moved") == 1
        desk.assert_nothing_of_the_call_remains()


async def test_a_refused_rest_update_is_recorded_and_the_call_still_ends(tmp_path):
    async with run_fake_twilio_rest(ACME_ACCOUNT, "") as twilio, front_desk(
        tmp_path, Scenario(steps=[greeting()]), twilio_silence_seconds=SILENCE_S, twilio_api_url=twilio.url,
    ) as desk:
        twilio.auth_token = desk.server.auth_token
        twilio.refuse_with = (400, 21220)  # the call is not in progress
        result = await desk.call([Wait(200), GoSilent()])
        await call_ended(desk)

        assert twilio.updates == [] and [refused.code for refused in twilio.refused] == [21220]
        record = await desk.server.state.store.call_record(result.call_sid)
        assert "live call redirect: refused (HTTP 400, Twilio error 21220)" in record.passes[0].outcome.notes
        assert metric(desk, "live_call_redirects_total", result="refused") == 1
        desk.assert_nothing_of_the_call_remains()


async def test_a_stream_that_keeps_sending_is_never_taken_for_silent(tmp_path):
    """A call whose caller talks and listens for many silence periods ends on its own route."""
    scenario = Scenario(steps=[greeting(), on(after_audio_frames(200), propose("opening_hours")), handoff_line()])
    async with run_fake_twilio_rest(ACME_ACCOUNT, "") as twilio, front_desk(
        tmp_path, scenario, twilio_silence_seconds=0.2, twilio_api_url=twilio.url,
    ) as desk:
        result = await desk.call([WaitForAgent(quiet_ms=400), Say(tone(4000), "when are you open")])
        assert result.action_status == 200 and result.media_closed_by == "server"
        assert twilio.updates == [] and twilio.refused == []
        assert metric(desk, "media_streams_silent_total") == 0

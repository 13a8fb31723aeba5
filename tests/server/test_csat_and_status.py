"""POST /calls/{CallSid}/csat and POST /voice/status over loopback against the real server."""
from __future__ import annotations

import hashlib
import json

import httpx
import pytest
from twilio.request_validator import RequestValidator

from orchestrator.config.server_settings import load_server_settings
from orchestrator.testing.fake_realtime import Scenario
from tests.live_call_support import FrontDesk, facts_of_call, front_desk, metric, open_ai_pass, signed_headers

CALL = "CA" + "a" * 32
TOKEN = "ops-token-for-tests"


async def open_call(desk: FrontDesk, call_sid: str = CALL) -> None:
    await open_ai_pass(desk, call_sid)


async def facts_of(desk: FrontDesk, call_sid: str = CALL) -> dict:
    return await facts_of_call(desk, call_sid)



async def post_csat(desk: FrontDesk, *, json_body=None, form=None, content: bytes | None = None,
                    token: str | None = TOKEN, call_sid: str = CALL, headers: dict | None = None) -> httpx.Response:
    url = f"{desk.server.base_url}/calls/{call_sid}/csat"
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient() as http:
        if content is not None:
            return await http.post(url, content=content, headers={"Content-Type": "application/json", **sent})
        if json_body is not None:
            return await http.post(url, json=json_body, headers=sent)
        return await http.post(url, data=form or {}, headers=sent)


# --------------------------------------------------------------------------- CSAT


async def test_a_score_and_comment_with_the_bearer_token(tmp_path):
    async with front_desk(tmp_path, Scenario(steps=[])) as desk:
        desk.server.state.ops_token = TOKEN
        await open_call(desk)
        answer = await post_csat(desk, json_body={"score": 4, "comment": "  quick and friendly  "})
        assert answer.status_code == 200, answer.text
        assert await facts_of(desk) == {"csat": 4, "csat_comment": "quick and friendly"}
        # A Studio form post, and a second rating replacing the first (its comment too).
        assert (await post_csat(desk, form={"score": "2"})).status_code == 200
        assert await facts_of(desk) == {"csat": 2, "csat_comment": None}
        assert metric(desk, "call_feedback_total", kind="csat", result="recorded") == 2


async def test_a_signed_form_needs_no_token(tmp_path):
    async with front_desk(tmp_path, Scenario(steps=[])) as desk:
        await open_call(desk)  # no ops_token configured: only Twilio's signature can authenticate
        url = f"{desk.server.base_url}/calls/{CALL}/csat"
        form = {"score": "5", "comment": "great", "FlowSid": "FW" + "1" * 32}
        answer = await post_csat(desk, form=form, token=None, headers=signed_headers(url, desk.server.auth_token, form))
        assert answer.status_code == 200, answer.text
        assert (await facts_of(desk))["csat"] == 5


async def test_a_signed_json_body_is_checked_by_its_hash(tmp_path):
    async with front_desk(tmp_path, Scenario(steps=[])) as desk:
        await open_call(desk)
        body = json.dumps({"score": 3}).encode()
        query = f"bodySHA256={hashlib.sha256(body).hexdigest()}"
        url = f"{desk.server.base_url}/calls/{CALL}/csat?{query}"
        signature = RequestValidator(desk.server.auth_token).compute_signature(url, {})
        async with httpx.AsyncClient() as http:
            good = await http.post(url, content=body, headers={
                "Content-Type": "application/json", "X-Twilio-Signature": signature})
            tampered = await http.post(url, content=json.dumps({"score": 1}).encode(), headers={
                "Content-Type": "application/json", "X-Twilio-Signature": signature})
        assert good.status_code == 200 and tampered.status_code == 403
        assert (await facts_of(desk))["csat"] == 3


@pytest.mark.parametrize(
    ("token", "configured"),
    [(None, TOKEN), ("wrong-token", TOKEN), (TOKEN, None), (TOKEN, "")],
)
async def test_no_score_without_a_valid_token_or_signature(tmp_path, token, configured):
    async with front_desk(tmp_path, Scenario(steps=[])) as desk:
        desk.server.state.ops_token = configured
        await open_call(desk)
        answer = await post_csat(desk, json_body={"score": 5}, token=token)
        assert answer.status_code == 403
        assert await facts_of(desk) == {}
        assert metric(desk, "call_feedback_total", kind="csat", result="refused") == 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"score": 0}, "score must be a whole number from 1 to 5"),
        ({"score": 6}, "score must be a whole number from 1 to 5"),
        ({"score": 4.5}, "score must be a whole number from 1 to 5"),
        ({"score": True}, "score must be a whole number from 1 to 5"),
        ({"score": "great"}, "score must be a whole number from 1 to 5"),
        ({}, "score must be a whole number from 1 to 5"),
        ({"score": 4, "comment": 12}, "comment must be text"),
        ({"score": 4, "comment": "x" * 501}, "longer than 500 characters"),
        (b"[4]", "not a JSON object"),
        (b"{score: 4", "not JSON"),
        (b"{\"score\": 4, \"comment\": \"" + b"x" * 5000 + b"\"}", "larger than 4096 bytes"),
    ],
)
async def test_a_bad_score_gets_400_with_the_reason(tmp_path, body, reason):
    async with front_desk(tmp_path, Scenario(steps=[])) as desk:
        desk.server.state.ops_token = TOKEN
        await open_call(desk)
        if isinstance(body, bytes):
            answer = await post_csat(desk, content=body)
        else:
            answer = await post_csat(desk, json_body=body)
        assert answer.status_code == 400 and reason in answer.text
        assert await facts_of(desk) == {}


async def test_a_score_for_an_unknown_or_malformed_call(tmp_path):
    async with front_desk(tmp_path, Scenario(steps=[])) as desk:
        desk.server.state.ops_token = TOKEN
        unknown = await post_csat(desk, json_body={"score": 4}, call_sid="CA" + "f" * 32)
        assert unknown.status_code == 404
        assert await desk.server.state.store.call_record("CA" + "f" * 32) is None
        malformed = await post_csat(desk, json_body={"score": 4}, call_sid="CA123")
        assert malformed.status_code == 400 and "CallSid malformed" in malformed.text


def test_the_ops_token_setting_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_OPS_TOKEN", "from-env")
    assert load_server_settings().ops_token.get_secret_value() == "from-env"


# --------------------------------------------------------------------------- call status


async def post_status(desk: FrontDesk, fields: dict, *, sign: bool = True) -> httpx.Response:
    url = desk.server.base_url + "/voice/status"
    headers = signed_headers(url, desk.server.auth_token, fields) if sign else {}
    async with httpx.AsyncClient() as http:
        return await http.post(url, data=fields, headers=headers)


def status(call_status: str, call_sid: str = CALL, **extra: str) -> dict:
    return {"CallSid": call_sid, "AccountSid": "AC" + "0" * 32, "CallStatus": call_status,
            "From": "+15551230000", "To": "+15557650000", "ApiVersion": "2010-04-01", **extra}


async def test_the_status_callback_records_status_and_duration(tmp_path):
    async with front_desk(tmp_path, Scenario(steps=[])) as desk:
        await open_call(desk)
        answer = await post_status(desk, status("completed", CallDuration="42", Duration="1"))
        assert answer.status_code == 200 and answer.json() == {"result": "recorded"}
        assert await facts_of(desk) == {"call_status": "completed", "call_duration_s": 42}


async def test_a_late_non_final_status_does_not_undo_the_final_one(tmp_path):
    async with front_desk(tmp_path, Scenario(steps=[])) as desk:
        await open_call(desk)
        await post_status(desk, status("in-progress"))
        await post_status(desk, status("completed", CallDuration="95"))
        late = await post_status(desk, status("ringing"))
        repeated = await post_status(desk, status("completed", CallDuration="95"))
        assert late.json() == {"result": "unchanged"} and repeated.json() == {"result": "unchanged"}
        assert await facts_of(desk) == {"call_status": "completed", "call_duration_s": 95}


async def test_status_of_an_unknown_call_is_answered_not_stored(tmp_path):
    async with front_desk(tmp_path, Scenario(steps=[])) as desk:
        unknown = "CA" + "f" * 32
        answer = await post_status(desk, status("completed", unknown, CallDuration="3"))
        assert answer.status_code == 200 and answer.json() == {"result": "not_ours"}
        assert await desk.server.state.store.call_record(unknown) is None


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (status("completed", "CA12"), "CallSid missing or malformed"),
        (status("hung-up"), "CallStatus 'hung-up' is not one of"),
        (status(""), "is not one of"),
        (status("completed", CallDuration="4.5"), "not a whole number of seconds"),
        (status("completed", CallDuration="-3"), "not a whole number of seconds"),
    ],
)
async def test_a_malformed_status_gets_400(tmp_path, fields, reason):
    async with front_desk(tmp_path, Scenario(steps=[])) as desk:
        await open_call(desk)
        answer = await post_status(desk, fields)
        assert answer.status_code == 400 and reason in answer.text
        assert await facts_of(desk) == {}


async def test_an_unsigned_status_is_refused(tmp_path):
    async with front_desk(tmp_path, Scenario(steps=[])) as desk:
        await open_call(desk)
        assert (await post_status(desk, status("completed", CallDuration="5"), sign=False)).status_code == 403
        assert await facts_of(desk) == {}
        assert metric(desk, "signature_failures_total", endpoint="voice_status") == 1

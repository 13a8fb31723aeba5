"""A JSON CSAT post is refused (403), never a 500, whatever its signature; a good one is checked the way
Twilio signs JSON bodies: the URL carries `bodySHA256`, the signature covers that URL and no parameters."""
from __future__ import annotations

import hashlib
import json

import httpx
import pytest
from twilio.request_validator import RequestValidator

from bridge.twilio.signature import TwilioSignatureCheck
from orchestrator.testing.fake_realtime import Scenario
from tests.live_call_support import facts_of_call, front_desk, metric, open_ai_pass

CALL = "CA" + "b" * 32
BODY = json.dumps({"score": 5}).encode()


def body_hash_query(body: bytes) -> str:
    return f"bodySHA256={hashlib.sha256(body).hexdigest()}"


@pytest.mark.parametrize(
    ("query", "signature"),
    [
        ("", "bad-signature"),  # no bodySHA256: the raw body used to reach the validator as its parameters
        ("", ""),
        (body_hash_query(BODY), "bad-signature"),
        ("bodySHA256=not-the-hash", "bad-signature"),
    ],
)
async def test_a_json_score_with_a_bad_signature_gets_403(tmp_path, query, signature):
    async with front_desk(tmp_path, Scenario(steps=[])) as desk:
        await open_ai_pass(desk, CALL)
        url = f"{desk.server.base_url}/calls/{CALL}/csat" + (f"?{query}" if query else "")
        async with httpx.AsyncClient() as http:
            answer = await http.post(url, content=BODY, headers={
                "Content-Type": "application/json", "X-Twilio-Signature": signature})
        assert answer.status_code == 403, answer.text
        assert await facts_of_call(desk, CALL) == {}
        assert metric(desk, "call_feedback_total", kind="csat", result="refused") == 1


async def test_a_json_body_signed_without_its_hash_on_the_url_is_refused(tmp_path):
    """A signature over the URL alone does not cover a body the URL does not name by its hash."""
    async with front_desk(tmp_path, Scenario(steps=[])) as desk:
        await open_ai_pass(desk, CALL)
        url = f"{desk.server.base_url}/calls/{CALL}/csat"
        signature = RequestValidator(desk.server.auth_token).compute_signature(url, {})
        async with httpx.AsyncClient() as http:
            answer = await http.post(url, content=BODY, headers={
                "Content-Type": "application/json", "X-Twilio-Signature": signature})
        assert answer.status_code == 403, answer.text
        assert await facts_of_call(desk, CALL) == {}


def test_the_json_check_follows_twilios_validator():
    check = TwilioSignatureCheck("token", "https://desk.example.com")
    body = '{"score": 5}'
    url = f"https://desk.example.com/calls/{CALL}/csat?{body_hash_query(body.encode())}"
    signature = RequestValidator("token").compute_signature(url, {})
    path, query = f"/calls/{CALL}/csat", url.partition("?")[2]
    assert check.check_json_webhook(path, query, body.encode(), signature)
    assert not check.check_json_webhook(path, query, b'{"score": 1}', signature)
    assert not check.check_json_webhook(path, query, b"\xff{", signature)
    assert not check.check_json_webhook(path, "", body.encode(), signature)
    assert not check.check_json_webhook(path, query, body.encode(), None)
    assert TwilioSignatureCheck("token", "https://desk.example.com", enabled=False).check_json_webhook(
        path, "", body.encode(), None)

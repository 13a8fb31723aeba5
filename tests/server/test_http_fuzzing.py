"""HTTP fuzzing of every endpoint of a running server: any method, path parameter, query, content type,
charset, body (form, JSON, text, binary, large) and signature (none, junk, or a valid one for the form
parameters sent). No answer is a 5xx and nothing is logged as an error or with a traceback."""
from __future__ import annotations

import logging
from urllib.parse import quote, urlencode

import httpx
import structlog
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from orchestrator.testing.fake_realtime import Scenario
from tests.live_call_support import front_desk, open_ai_pass

CALL = "CA" + "c" * 32
PATHS = [
    "/voice/incoming", "/voice/after", "/voice/recorded", "/voice/status", "/taskrouter/events",
    "/calls/{sid}/csat", "/calls/{sid}/handoff", "/calls/{sid}", "/healthz", "/metrics", "/ops", "/ops/data.json",
    "/media", "/nowhere",
]
TWILIO_FIELDS = ["CallSid", "AccountSid", "From", "To", "CallStatus", "DialCallStatus", "RecordingUrl", "Digits",
                 "EventType", "TaskAttributes", "score", "question", "answer", "pass", "token", "SpeechResult"]
CONTENT_TYPES = [None, "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=latin-1",
                 "application/json", "text/plain", "multipart/form-data; boundary=x", "application/octet-stream",
                 "application/x-www-form-urlencoded; charset=nonsense"]

field_values = st.one_of(
    st.text(max_size=40), st.sampled_from([CALL, "AC" + "0" * 32, "+14155550123", "completed", "5", "-1", "1e309"]),
)
forms = st.dictionaries(st.sampled_from(TWILIO_FIELDS) | st.text(max_size=10), field_values, max_size=8)
requests = st.fixed_dictionaries({
    "method": st.sampled_from(["POST", "POST", "GET", "PUT", "DELETE"]),
    "path": st.sampled_from(PATHS),
    "sid": st.sampled_from([CALL, "CA" + "0" * 32, "x", "CA%00", "../../etc", "é" * 3, "A" * 300]),
    "query": st.dictionaries(
        st.sampled_from(["flow_sid", "node", "pass", "bodySHA256", "engine"]) | st.text(max_size=6),
        st.text(max_size=30), max_size=3,
    ),
    "content_type": st.sampled_from(CONTENT_TYPES),
    "body": st.one_of(
        forms.map(lambda form: ("form", form)),
        st.binary(max_size=500).map(lambda raw: ("raw", raw)),
        st.text(max_size=300).map(lambda text: ("raw", text.encode("utf-8", "surrogatepass"))),
        st.just(("raw", b"A" * 200_000)),
        st.just(("raw", b'{"score": 5}')),
        st.just(("raw", b"\xff\xfe" + "CallSid=CA".encode("utf-16-le"))),
    ),
    "signature": st.sampled_from(["none", "junk", "valid", "empty"]),
})


async def test_no_request_to_any_endpoint_gets_a_5xx_or_logs_an_error(tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    async with front_desk(tmp_path, Scenario(steps=[])) as desk:
        await open_ai_pass(desk, CALL)
        base_url, token = desk.server.base_url, desk.server.auth_token
        with structlog.testing.capture_logs() as logs:
            failures = await trio.to_thread.run_sync(_fuzz, base_url, token)
    assert failures == []
    assert [entry for entry in logs if entry["log_level"] in ("error", "critical") or "exc_info" in entry] == []
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == []


def _fuzz(base_url: str, auth_token: str) -> list[str]:
    """Hypothesis runs in this worker thread; the server answers in the test's Trio thread."""
    failures: list[str] = []
    validator = RequestValidator(auth_token)

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(request=requests)
    def one_request(request: dict) -> None:
        path = request["path"].replace("{sid}", quote(request["sid"], safe=""))
        url = base_url + path + (f"?{urlencode(request['query'])}" if request["query"] else "")
        kind, body = request["body"]
        params = body if kind == "form" else {}
        content = urlencode(body).encode() if kind == "form" else body
        headers = {} if request["content_type"] is None else {"Content-Type": request["content_type"]}
        signature = {"none": None, "junk": "bm90IGEgc2lnbmF0dXJl", "empty": "",
                     "valid": validator.compute_signature(url, params)}[request["signature"]]
        if signature is not None:
            headers["X-Twilio-Signature"] = signature
        with httpx.Client(timeout=10) as http:
            answer = http.request(request["method"], url, content=content, headers=headers)
        if answer.status_code >= 500:
            failures.append(f"{request['method']} {path} {request['content_type']} {kind} -> {answer.status_code}")

    one_request()
    return failures

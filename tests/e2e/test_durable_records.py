"""A decision outlives the process that made it: `orchestrator serve` is killed (SIGKILL, no goodbye) in the
middle of a call, right after the decision was saved, and the action URL Twilio requests next is still
answered with the decided TwiML: by the same server restarted on its data folder (SQLite), or by
another instance on the same Redis.

The engine is `--engine fake` (the demo call: greets, hears ~1.5 s of caller audio, proposes
'emergency' with the details the route needs, says a 1.5 s handoff line); the caller plays audio in
real time, so the kill lands while that line is playing, after the decision and before the pass ends.
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import httpx
import trio
from twilio.request_validator import RequestValidator

from bridge.twilio.mulaw import tone
from orchestrator.testing.twilio_caller import CallerOptions, Say, SimulatedCaller, fetch_call_record
from tests.cli_support import BIN, clean_environment
from tests.e2e.test_two_instances import AUTH_TOKEN, PUBLIC_URL, LoadBalancer
from tests.redis_server import redis_server, redis_url  # noqa: F401 (fixtures)

EMERGENCY_WORKFLOW = "WW37efa99795cd582f2f4c31893159fe53"
START_TIMEOUT_S = 60
CALL_SID = "CA" + "7" * 32


class ServeProcess:
    """`orchestrator serve --engine fake` in `folder` (its data folder is `folder/var`)."""

    def __init__(self, folder: Path, *options: str, environment: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [str(BIN / "orchestrator"), "serve", "--engine", "fake", *options],
            cwd=folder, env={**clean_environment(), **(environment or {})},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.printed: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.printed.append(line.rstrip())

    async def base_url(self) -> str:
        """Where it listens, once it says it is ready."""
        with trio.fail_after(START_TIMEOUT_S):
            while not any("Ctrl+C to stop" in line for line in self.printed):
                assert self.process.poll() is None, "the server stopped:\n" + "\n".join(self.printed)
                await trio.sleep(0.05)
        (url,) = [found.group(1) for line in self.printed if (found := re.search(r"listening on (http://\S+)", line))]
        return url

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=5)


def voice_params() -> dict[str, str]:
    return {"AccountSid": "AC" + "0" * 32, "CallSid": CALL_SID, "CallStatus": "in-progress",
            "From": "+14155550123", "To": "+15557650000", "Direction": "inbound"}


async def call_until_decided_then_kill(server: ServeProcess, options: CallerOptions,
                                       http: httpx.AsyncClient | None, public_url: str) -> dict:
    """Play the call; SIGKILL the server as soon as its record has a decision. The record as it was then."""
    caller = SimulatedCaller(options, [Say(tone(1200), "my basement is flooding")], http=http)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller.run)
        with trio.fail_after(20):
            while True:
                record = await fetch_call_record(public_url, CALL_SID, options.auth_token, http=http)
                if record and record["passes"][0]["decision"] is not None:
                    break
                await trio.sleep(0.02)
        server.kill()
    assert caller.result.final_twiml is None  # the action URL was not requested of the dead server
    return record


TWILIO_ACTION_TIMEOUT_S = 15  # how long Twilio waits for a TwiML answer


async def answer_action_url(base_url: str, public_url: str, auth_token: str) -> httpx.Response:
    """What Twilio does when the stream ends: POST the signed `<Connect action>` URL of pass 1."""
    url = f"{public_url}/voice/after?pass=1"
    signature = RequestValidator(auth_token).compute_signature(url, voice_params())
    async with httpx.AsyncClient(timeout=TWILIO_ACTION_TIMEOUT_S) as http:
        return await http.post(f"{base_url}/voice/after?pass=1", data=voice_params(),
                               headers={"X-Twilio-Signature": signature})


def assert_enqueued_as_decided(response: httpx.Response) -> None:
    assert response.status_code == 200
    enqueue = ElementTree.fromstring(response.text).find("Enqueue")
    assert enqueue is not None and enqueue.get("workflowSid") == EMERGENCY_WORKFLOW, response.text
    attributes = json.loads(enqueue.find("Task").text)
    assert attributes["call_sid"] == CALL_SID and attributes["intent"] == "emergency"
    assert attributes["callback_number"] == "+14155552671"  # captured by the demo call before the kill


def assert_killed_mid_call(record_at_kill: dict) -> None:
    (first,) = record_at_kill["passes"]
    assert first["decision"]["route"] == "emergency_desk"
    assert first["outcome"] is None and first["answered_route"] is None  # the pass had not ended


async def test_a_restarted_server_answers_the_action_url_from_the_decision_saved_before_it_was_killed(tmp_path):
    first = ServeProcess(tmp_path, "--port", "0")
    try:
        base_url = await first.base_url()
        assert "store: SQLite file var/calls.sqlite3" in first.printed
        auth_token = (tmp_path / "var" / "dev-twilio-auth-token").read_text().strip()
        options = CallerOptions(base_url=base_url, auth_token=auth_token, call_sid=CALL_SID,
                                caller="+14155550123", follow_action=False)
        at_kill = await call_until_decided_then_kill(first, options, None, base_url)
    finally:
        first.stop()
    assert_killed_mid_call(at_kill)

    port = base_url.rsplit(":", 1)[1]  # the same address: what Twilio signs and requests
    restarted = ServeProcess(tmp_path, "--port", port)
    try:
        assert await restarted.base_url() == base_url
        assert_enqueued_as_decided(await answer_action_url(base_url, base_url, auth_token))
        record = await fetch_call_record(base_url, CALL_SID, auth_token)
    finally:
        restarted.stop()
    (first_pass,) = record["passes"]
    assert first_pass["decision"] == at_kill["passes"][0]["decision"]
    assert first_pass["answered_route"] == "emergency_desk"
    assert first_pass["outcome"] is None  # the killed process never finished the pass, and says so


async def test_another_instance_on_the_same_redis_answers_when_the_one_that_decided_was_killed(tmp_path, redis_url):
    environment = {"ORCHESTRATOR_STORE": redis_url, "ORCHESTRATOR_PUBLIC_URL": PUBLIC_URL,
                   "TWILIO_AUTH_TOKEN": AUTH_TOKEN}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    a = ServeProcess(tmp_path / "a", "--port", "0", environment=environment)
    b = ServeProcess(tmp_path / "b", "--port", "0", environment=environment)
    try:
        a_url, b_url = await a.base_url(), await b.base_url()
        assert any(line.startswith("store: Redis at redis://127.0.0.1:") for line in b.printed)
        options = CallerOptions(base_url=PUBLIC_URL, auth_token=AUTH_TOKEN, call_sid=CALL_SID,
                                caller="+14155550123", follow_action=False,
                                ws_origin=a_url.replace("http://", "ws://"))
        async with httpx.AsyncClient(transport=LoadBalancer(lambda request: a_url)) as to_a:
            at_kill = await call_until_decided_then_kill(a, options, to_a, PUBLIC_URL)
        assert_killed_mid_call(at_kill)

        assert_enqueued_as_decided(await answer_action_url(b_url, PUBLIC_URL, AUTH_TOKEN))
        async with httpx.AsyncClient(transport=LoadBalancer(lambda request: b_url)) as to_b:
            record = await fetch_call_record(PUBLIC_URL, CALL_SID, AUTH_TOKEN, http=to_b)
    finally:
        a.stop()
        b.stop()
    assert record["passes"][0]["decision"] == at_kill["passes"][0]["decision"]
    assert record["passes"][0]["answered_route"] == "emergency_desk"

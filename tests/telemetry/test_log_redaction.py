"""No log line carries a secret or a caller's number: the redaction step on its own, then a real server
with known secrets configured, driven into errors, whose whole log output is searched for them."""
from __future__ import annotations

import logging
import re
import secrets
import sys
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any
from xml.etree import ElementTree

import httpx
import orjson
import pytest
import structlog
import trio
from trio_websocket import open_websocket_url

from orchestrator.composition import realtime_settings, run_server
from orchestrator.config.routing import load_routing_config
from orchestrator.config.server_settings import load_server_settings
from orchestrator.engines.realtime import RealtimeConnector
from orchestrator.engines.tools import agent_instructions, realtime_tools
from orchestrator.store.location import open_call_store
from orchestrator.telemetry.logs import MASK, LogRedaction, configure_logging, log_redaction, secrets_masked_in_logs
from orchestrator.testing.fake_realtime import run_fake_realtime
from orchestrator.testing.twilio_caller import CallerOptions, SimulatedCaller
from tests.cli_support import serving
from tests.live_call_support import ACME, CALLER_SPEAKS, SPEED, signed_headers, triage_scenario
from tests.redis_server import start_redis_server, stop_redis_server

CALLERS = [f"+1415555{index:04d}" for index in range(1, 7)]  # each number is used by one request below
UNMASKED_NUMBER = re.compile(r"(?:\+|%2B)1\D{0,2}415\D{0,2}555\D{0,2}\d{4}")


# --------------------------------------------------------------------------- the redaction step


def test_the_processor_masks_secrets_credentials_pass_tokens_and_numbers():
    redaction = LogRedaction()
    redaction.add(["ops-token-0123456789"])
    event = {
        "event": "refused Authorization: Bearer ops-token-0123456789 from +14155550100",
        "pass_token": "a1b2c3d4e5",
        "headers": {"api-key": "azure-key-98765", "From": "+14155550100"},
        "url": "redis://:redis-password-1@redis.internal:6379/0",
        "exception": "RuntimeError: no pass for TriagePass(token='a1b2c3d4e5', caller='+1 415 555 0100')",
        "call_sid": "CA" + "1" * 32,
        "count": 3,
    }
    redacted = redaction(None, "info", dict(event))
    text = repr(redacted)
    for secret in ("ops-token-0123456789", "a1b2c3d4e5", "azure-key-98765", "redis-password-1", "Bearer ops"):
        assert secret not in text
    assert not UNMASKED_NUMBER.search(text)
    assert "+1415***0100" in redacted["event"] and "caller='+1415***0100'" in redacted["exception"]
    assert redacted["pass_token"] == MASK
    assert redacted["call_sid"] == event["call_sid"] and redacted["count"] == 3  # the rest is untouched
    assert redaction(None, "info", dict(redacted)) == redacted  # masking twice changes nothing


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("Authorization: Bearer abc.def", "Authorization: [redacted]"),
        ("(b'authorization', b'Basic dXNlcjpwYXNz')", "(b'authorization', b'[redacted]')"),
        ('{"api-key": "k-123456"}', '{"api-key": "[redacted]"}'),
        ('<Parameter name="pass_token" value="t0k3n"/>', '<Parameter name="pass_token" value="[redacted]"/>'),
        ("/media?pass=1&pass_token=t0k3n", "/media?pass=1&pass_token=[redacted]"),
        ("rediss://user:pw-123456@redis:6380/0", "rediss://user:[redacted]@redis:6380/0"),
        ("From=%2B14155550100&To=%2B14155550199", "From=%2B1415***0100&To=%2B1415***0199"),
        ("caller +44 20 7946 0958 called", "caller +4420***0958 called"),
        # Not secrets nor numbers: left as they are.
        ("at 2026-12-03T10:00:00.123456+00:00 pid 123456 input_tokens=812", None),
        ("caller=+1415***0100 CallSid CA0123456789abcdef0123456789abcdef", None),
    ],
)
def test_patterns_applied_to_every_line(text, masked):
    assert LogRedaction().redact(text) == (masked or text)


def test_registered_secrets_are_masked_while_registered(restored_logging):
    with secrets_masked_in_logs("short", "a secret/with spaces", None, ""):
        redaction = log_redaction()
        assert redaction.redact("a secret/with spaces, or a%20secret%2Fwith%20spaces") == f"{MASK}, or {MASK}"
        assert redaction.redact("short") == "short"  # too short to be a credential: it would garble every line
    assert log_redaction().redact("a secret/with spaces") == "a secret/with spaces"


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """configure_logging changes the process's logging: put it back for the tests that follow."""
    factory, handlers = logging.getLogRecordFactory(), list(logging.getLogger().handlers)
    try:
        yield
    finally:
        structlog.reset_defaults()
        logging.setLogRecordFactory(factory)
        for handler in logging.getLogger().handlers:
            if handler not in handlers:
                logging.getLogger().removeHandler(handler)


@pytest.fixture
def logging_as_served(restored_logging) -> None:
    configure_logging()
    # Not cached by the module loggers this test uses, so the tests that follow do not keep this setup.
    structlog.configure(cache_logger_on_first_use=False)


def _fail_with_a_secret_in_a_local_variable() -> None:
    token_in_a_local = "local-value-0123456789"  # noqa: F841 (what a traceback with locals would show)
    raise RuntimeError("the store is down")


@pytest.mark.parametrize("tty", [True, False])
def test_tracebacks_show_no_local_variables(restored_logging, monkeypatch, caplog, capfd, tty):
    class Terminal:  # stderr as `serve` sees it on a terminal or in a service's log file
        def isatty(self) -> bool:
            return tty

        def write(self, text: str) -> int:
            return len(text)

        def flush(self) -> None:
            pass

    monkeypatch.setattr(sys, "stderr", Terminal())
    configure_logging()
    monkeypatch.undo()
    structlog.configure(cache_logger_on_first_use=False)
    caplog.set_level(logging.INFO)
    try:
        _fail_with_a_secret_in_a_local_variable()
    except RuntimeError:
        structlog.get_logger("orchestrator.test").exception("media stream failed", caller="+14155550100")
        logging.getLogger("hypercorn.error").exception("Error in ASGI Framework")
    printed = caplog.text + "".join(capfd.readouterr())
    assert printed.count("RuntimeError: the store is down") == 2 and "Traceback" in printed
    assert "local-value-0123456789" not in printed and "token_in_a_local" not in printed
    assert "+1415***0100" in printed and not UNMASKED_NUMBER.search(printed)


# --------------------------------------------------------------------------- a real server


class FailingStore:
    """The call store, until `failing` is set: then every operation fails with an error that names the
    store's URL and the arguments, as store clients' errors do."""

    def __init__(self, store: Any, url: str) -> None:
        self._store, self._url = store, url
        self.failing = False

    def __getattr__(self, name: str) -> Any:
        operation = getattr(self._store, name)
        if name == "aclose" or not callable(operation):
            return operation

        async def run(*args: Any, **kwargs: Any) -> Any:
            if self.failing:
                raise ConnectionError(f"{self._url}: connection refused ({name} {args!r} {kwargs!r})")
            return await operation(*args, **kwargs)

        return run


def known_secrets(redis_password: str) -> dict[str, str]:
    return {name: f"{name}-{secrets.token_hex(12)}" for name in (
        "twilio_auth_token", "openai_api_key", "ops_token", "handoff_token", "azure_key")} | {"redis": redis_password}


async def test_a_server_driven_into_errors_logs_no_secret_and_no_caller_number(
    tmp_path, logging_as_served, caplog, capfd
):
    caplog.set_level(logging.DEBUG)
    redis_password = "redis-password-" + secrets.token_hex(8)
    known = known_secrets(redis_password)
    config = load_routing_config(ACME)
    with start_redis_server(password=redis_password) as redis:
        store_url = f"redis://:{redis_password}@127.0.0.1:{redis.port}/0?key_prefix=redaction:"
        async with run_fake_realtime(triage_scenario("billing")) as fake:
            settings = load_server_settings(
                data_dir=tmp_path / "var", store=store_url, realtime_url=fake.url, graceful_shutdown_seconds=2,
                after_wait_seconds=3, twilio_auth_token=known["twilio_auth_token"],
                openai_api_key=known["openai_api_key"], ops_token=known["ops_token"],
                handoff_token=known["handoff_token"], realtime_headers={"api-key": known["azure_key"]},
            )
            connector = RealtimeConnector(
                realtime_settings(settings), instructions=agent_instructions(config), tools=realtime_tools(config),
                transcription_model=settings.transcription_model,
            )
            opened = await open_call_store(store_url, data_dir=tmp_path, retention_seconds=86400)
            store = FailingStore(opened, store_url)
            try:
                async with run_server(settings, port=0, config=config, connector=connector, store=store) as server:
                    await _drive_into_errors(server.base_url, server.auth_token, known,
                                             fail_store=lambda: setattr(store, "failing", True))
            finally:
                await store.aclose()

    logged = caplog.text + "".join(capfd.readouterr())
    for name, value in known.items():
        assert value not in logged, f"{name} is in the log"
    assert not UNMASKED_NUMBER.search(logged), UNMASKED_NUMBER.search(logged)
    # The errors did happen and were logged (a failing store is an error line with its cause, not a traceback).
    assert "call store failed as the stream started" in logged and "ConnectionError" in logged
    assert "cannot read the call record: the call store failed" in logged


def test_orchestrator_serve_logs_no_secret_when_its_redis_goes_away(tmp_path):
    """`orchestrator serve` as deployed (its own logging set-up, everything it writes on stdout and stderr)."""
    redis_password = "redis-password-" + secrets.token_hex(8)
    known = known_secrets(redis_password)
    with start_redis_server(password=redis_password) as redis:
        environment = {
            "TWILIO_AUTH_TOKEN": known["twilio_auth_token"], "OPENAI_API_KEY": known["openai_api_key"],
            "ORCHESTRATOR_OPS_TOKEN": known["ops_token"], "ORCHESTRATOR_HANDOFF_TOKEN": known["handoff_token"],
            "ORCHESTRATOR_REALTIME_HEADERS": orjson.dumps({"api-key": known["azure_key"]}).decode(),
            "ORCHESTRATOR_STORE": f"redis://:{redis_password}@127.0.0.1:{redis.port}/0",
            "ORCHESTRATOR_ENGINE": "fake", "ORCHESTRATOR_ENGINE__FAILOVER": "fallback-route",
        }
        server = serving(tmp_path, "--access-log", environment=environment)
        base_url, printed = next(server)
        try:
            trio.run(partial(_drive_into_errors, base_url, known["twilio_auth_token"], known,
                             fail_store=partial(stop_redis_server, redis)))
        finally:
            server.close()
    logged = "\n".join(printed)
    for name, value in known.items():
        assert value not in logged, f"{name} is in the log"
    assert not UNMASKED_NUMBER.search(logged), UNMASKED_NUMBER.search(logged)
    assert "call store failed as the stream started" in logged and "Unable to establish a connection" in logged


async def _drive_into_errors(
    base: str, auth_token: str, known: dict[str, str], *, fail_store: Callable[[], None]
) -> None:
    """A call that routes, then requests with bad signatures, wrong tokens and junk frames, then the same
    once the store fails (`fail_store`)."""

    def caller(number: str, **options: Any) -> SimulatedCaller:
        return SimulatedCaller(CallerOptions(base_url=base, auth_token=auth_token, caller=number,
                                             speed=SPEED, max_call_s=160, **options), CALLER_SPEAKS)

    with trio.fail_after(60):
        normal = await caller(CALLERS[0]).run()  # a call that routes, logged as usual
        assert normal.final_twiml and "Enqueue" in normal.final_twiml
        assert (await caller(CALLERS[1], bad_signature=True).run()).webhook_status == 403

        async with httpx.AsyncClient() as http:
            # Credentials sent where they do not belong, or wrong.
            await http.get(f"{base}/calls/{normal.call_sid}/handoff", headers={"Authorization": "Bearer wrong"})
            await http.get(f"{base}/ops", headers={"Authorization": f"Bearer {known['handoff_token']}"})
            await http.post(f"{base}/calls/{normal.call_sid}/csat", content=b'{"score": 5}', headers={
                "Content-Type": "application/json", "X-Twilio-Signature": "forged"})
            # A stream that sends junk, then a start with a pass token that is not the call's.
            webhook = f"{base}/voice/incoming"
            call_sid = "CA" + secrets.token_hex(16)
            form = {"CallSid": call_sid, "From": CALLERS[2], "To": CALLERS[3], "AccountSid": "AC" + "0" * 32}
            twiml = (await http.post(webhook, data=form, headers=signed_headers(webhook, auth_token, form))).text
            stream = ElementTree.fromstring(twiml).find("Connect/Stream")
            custom = {parameter.get("name"): parameter.get("value") for parameter in stream.findall("Parameter")}
            await _stream(auth_token, stream.get("url"), call_sid, {**custom, "pass_token": custom["pass_token"][::-1]})

            # The store fails: webhooks, a stream's start, reads of the record and a CSAT score all meet it.
            fail_store()
            failed = await caller(CALLERS[4]).run()
            assert failed.webhook_status == 200  # the fallback route at once
            await _stream(auth_token, stream.get("url"), call_sid, custom)
            record_url = f"{base}/calls/{call_sid}"
            await http.get(record_url, headers=signed_headers(record_url, auth_token))
            await http.post(f"{base}/calls/{call_sid}/csat", json={"score": 4},
                            headers={"Authorization": f"Bearer {known['ops_token']}"})
            after = f"{base}/voice/after?pass=1"
            form = {"CallSid": call_sid, "From": CALLERS[5]}
            await http.post(after, data=form, headers=signed_headers(after, auth_token, form))


async def _stream(auth_token: str, url: str, call_sid: str, custom: dict[str, str]) -> None:
    signature = signed_headers(url, auth_token)["X-Twilio-Signature"].encode()
    start = {"event": "start", "sequenceNumber": "1", "streamSid": "MZ" + "0" * 32,
             "start": {"accountSid": "AC" + "0" * 32, "streamSid": "MZ" + "0" * 32, "callSid": call_sid,
                       "tracks": ["inbound"], "customParameters": custom,
                       "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}
    async with open_websocket_url(url, extra_headers=[(b"X-Twilio-Signature", signature)]) as websocket:
        for junk in ("not json", b"\x00binary", '{"event": "media", "media": 7}', "[1, 2]"):
            await websocket.send_message(junk)
        await websocket.send_message(orjson.dumps(start).decode())
        with trio.move_on_after(5):
            while not websocket.closed:
                try:
                    await websocket.get_message()
                except Exception:  # the server closed the stream
                    break

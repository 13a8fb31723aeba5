"""The server's own accept loop (`orchestrator/server/connection_router.py`): `GET /media` upgrades go to
the lean stream handler, every other connection to hypercorn with the bytes already read replayed first.
Raw TCP clients over loopback, so odd clients (slow, silent, not HTTP) can be played exactly."""
from __future__ import annotations

import base64
import os
from urllib.parse import urlsplit

import httpx
import trio

from orchestrator.testing.fake_realtime import Scenario
from tests.live_call_support import front_desk

TIMEOUT_S = 10


async def _connect(base_url: str) -> trio.SocketStream:
    parts = urlsplit(base_url)
    return await trio.open_tcp_stream(parts.hostname, parts.port)


async def _read_response_head(stream: trio.SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        data += chunk
    return data


def _upgrade(path: str, *, signature: str | None = None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket", "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
    ]
    if signature is not None:
        lines.append(f"X-Twilio-Signature: {signature}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_a_request_head_sent_a_byte_at_a_time_reaches_hypercorn_whole(tmp_path):
    async with front_desk(tmp_path, Scenario()) as desk:
        with trio.fail_after(TIMEOUT_S):
            stream = await _connect(desk.server.base_url)
            for byte in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n":
                await stream.send_all(bytes([byte]))
                await trio.sleep(0.001)
            head = await _read_response_head(stream)
            await stream.aclose()
        assert head.startswith(b"HTTP/1.1 200")


async def test_a_post_whose_body_came_with_its_head_is_answered_by_the_app(tmp_path):
    async with front_desk(tmp_path, Scenario()) as desk:
        with trio.fail_after(TIMEOUT_S):
            stream = await _connect(desk.server.base_url)
            body = b"CallSid=CA00000000000000000000000000000000&From=%2B15551234567"
            await stream.send_all(
                b"POST /voice/incoming HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
            )
            head = await _read_response_head(stream)
            await stream.aclose()
        assert head.startswith(b"HTTP/1.1 403")  # unsigned: the app's signature check answered, not a parse error


async def test_silent_and_garbage_connections_leave_the_server_serving(tmp_path):
    async with front_desk(tmp_path, Scenario()) as desk:
        with trio.fail_after(TIMEOUT_S):
            silent = await _connect(desk.server.base_url)
            await silent.aclose()  # connects and says nothing
            garbage = await _connect(desk.server.base_url)
            await garbage.send_all(b"\x16\x03\x01 not http at all\r\n\r\n")
            answer = await _read_response_head(garbage)
            await garbage.aclose()
            async with httpx.AsyncClient(base_url=desk.server.base_url) as client:
                health = await client.get("/healthz")
        assert answer.startswith(b"HTTP/1.1 400"), answer  # hypercorn's answer to what is not HTTP
        assert health.status_code == 200


async def test_a_stream_upgrade_without_a_valid_signature_is_refused_with_403(tmp_path):
    async with front_desk(tmp_path, Scenario()) as desk:
        with trio.fail_after(TIMEOUT_S):
            for signature in (None, "bm90IGEgc2lnbmF0dXJl"):
                stream = await _connect(desk.server.base_url)
                await stream.send_all(_upgrade("/media", signature=signature))
                head = await _read_response_head(stream)
                await stream.aclose()
                assert head.startswith(b"HTTP/1.1 403"), head
        failures = desk.server.state.metrics.signature_failures.labels("media")._value.get()
        assert failures == 2


async def test_an_upgrade_of_any_other_path_is_left_to_hypercorn(tmp_path):
    async with front_desk(tmp_path, Scenario()) as desk:
        with trio.fail_after(TIMEOUT_S):
            stream = await _connect(desk.server.base_url)
            await stream.send_all(_upgrade("/media-other"))
            head = await _read_response_head(stream)
            await stream.aclose()
        assert head.startswith(b"HTTP/1.1 403"), head  # Starlette has no WebSocket route there
        assert desk.server.state.metrics.signature_failures.labels("media")._value.get() == 0


async def test_a_connection_whose_handler_fails_does_not_stop_the_listener(tmp_path, monkeypatch, caplog):
    import orchestrator.server.connection_router as router

    def broken_check(head: bytes, path: str) -> bool:
        if b"/boom" in head:
            raise RuntimeError("a bug in the router")
        return False

    monkeypatch.setattr(router, "is_websocket_upgrade", broken_check)
    async with front_desk(tmp_path, Scenario()) as desk:
        with trio.fail_after(TIMEOUT_S):
            stream = await _connect(desk.server.base_url)
            await stream.send_all(b"GET /boom HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert await _read_response_head(stream) == b""  # closed, unanswered
            await stream.aclose()
            async with httpx.AsyncClient(base_url=desk.server.base_url) as client:
                health = await client.get("/healthz")
        assert health.status_code == 200
        assert "connection failed" in caplog.text

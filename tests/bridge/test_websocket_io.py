"""bridge/websocket/connection.py against independent peers, over loopback.

Our client (`connect_websocket`) talks to trio-websocket's server and to hand-written raw servers (for
odd behaviour: rejections, fragments, pings, close codes, bad UTF-8, a peer that never answers a close).
Our server (`read_http_head` + `accept_websocket` under `trio.serve_tcp`) talks to trio-websocket's
client, to the `websockets` package's threaded sync client and to hand-written raw clients.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import os
import re
import socket
import struct
from collections.abc import Awaitable, Callable
from functools import partial

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url, serve_websocket
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.http11 import Request
from websockets.sync.client import connect as sync_connect

from bridge.websocket.connection import (
    CLOSE_TIMEOUT_S,
    HTTP_HEAD_LIMIT,
    WebSocket,
    WebSocketClosed,
    WebSocketRejected,
    accept_websocket,
    connect_websocket,
    is_websocket_upgrade,
    read_http_head,
    read_request_line,
)

LOOPBACK = "127.0.0.1"
TIMEOUT_S = 10  # a hang guard; every test finishes far sooner
PATH = "/media"
MAX_MESSAGE_BYTES = 1 << 20
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def open_fds() -> int:
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


def port_of(listeners: list[trio.SocketListener]) -> int:
    return listeners[0].socket.getsockname()[1]


# --------------------------------------------------------------------------- a raw RFC 6455 peer


def frame_bytes(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = False) -> bytes:
    head = bytearray([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if mask else 0
    length = len(payload)
    if length < 126:
        head.append(mask_bit | length)
    elif length < 1 << 16:
        head.append(mask_bit | 126)
        head += length.to_bytes(2, "big")
    else:
        head.append(mask_bit | 127)
        head += length.to_bytes(8, "big")
    if mask:
        key = os.urandom(4)
        head += key
        payload = apply_mask(payload, key)
    return bytes(head) + payload


def apply_mask(payload: bytes, key: bytes) -> bytes:
    length = len(payload)
    repeated = (key * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(length, "big")


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


def parse_close(payload: bytes) -> tuple[int, str]:
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode()


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


class RawPeer:
    """Bytes on a Trio stream, with just enough framing to check what our side puts on the wire."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def _fill(self) -> None:
        chunk = await self.stream.receive_some(65536)
        if not chunk:
            raise EOFError("the peer closed the connection")
        self.buffer += chunk

    async def read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            await self._fill()
        end = self.buffer.index(marker) + len(marker)
        data = bytes(self.buffer[:end])
        del self.buffer[:end]
        return data

    async def read_exact(self, count: int) -> bytes:
        while len(self.buffer) < count:
            await self._fill()
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    async def read_to_eof(self) -> bytes:
        try:
            while True:
                await self._fill()
        except EOFError:
            pass
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    async def read_frame(self) -> tuple[bool, int, bool, bytes]:
        """(fin, opcode, masked, unmasked payload)."""
        first, second = await self.read_exact(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(await self.read_exact(2), "big")
        elif length == 127:
            length = int.from_bytes(await self.read_exact(8), "big")
        masked = bool(second & 0x80)
        key = await self.read_exact(4) if masked else b""
        payload = await self.read_exact(length)
        if masked:
            payload = apply_mask(payload, key)
        return bool(first & 0x80), first & 0x0F, masked, payload

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def answer_close(self) -> list[tuple[int, bytes]]:
        """Server side: read frames up to the client's close frame, echo it, close the TCP connection."""
        frames = []
        while True:
            _fin, opcode, _masked, payload = await self.read_frame()
            frames.append((opcode, payload))
            if opcode == OP_CLOSE:
                await self.send(frame_bytes(OP_CLOSE, payload))
                await self.stream.aclose()
                return frames

    async def accept_upgrade(self, extra: bytes = b"") -> bytes:
        """Server side: read the upgrade request and answer 101 (followed by `extra`, in one write)."""
        head = await self.read_until(b"\r\n\r\n")
        match = re.search(rb"(?im)^sec-websocket-key:\s*(\S+)\s*$", head)
        assert match, head
        await self.send(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(match.group(1)) + b"\r\n\r\n" + extra
        )
        return head


def upgrade_request(path: str = PATH, *, key: bytes | None = b"dGhlIHNhbXBsZSBub25jZQ==", extra: bytes = b"") -> bytes:
    lines = [
        f"GET {path} HTTP/1.1".encode(),
        b"Host: 127.0.0.1",
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Version: 13",
    ]
    if key is not None:
        lines.append(b"Sec-WebSocket-Key: " + key)
    return b"\r\n".join(lines) + b"\r\n\r\n" + extra


async def start_raw_server(
    nursery: trio.Nursery, handler: Callable[[RawPeer], Awaitable[None]]
) -> tuple[str, trio.Event]:
    """A TCP server running `handler` per connection: its ws:// URL and an event set when a handler returns
    (a handler's exception fails the test through the nursery)."""
    finished = trio.Event()

    async def serve(stream: trio.SocketStream) -> None:
        await handler(RawPeer(stream))
        finished.set()

    listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host=LOOPBACK))
    return f"ws://{LOOPBACK}:{port_of(listeners)}{PATH}", finished


async def open_raw_client(port: int) -> RawPeer:
    return RawPeer(await trio.open_tcp_stream(LOOPBACK, port))


# --------------------------------------------------------------------------- our server


async def start_our_server(
    nursery: trio.Nursery,
    on_websocket: Callable[[WebSocket], Awaitable[None]],
    *,
    authorize: Callable[[Request], bool] = lambda request: True,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    head_timeout_s: float = 5.0,
    on_done: Callable[[WebSocket | None], None] = lambda websocket: None,
) -> int:
    """`trio.serve_tcp` routing upgrades of PATH to `on_websocket`; the socket is closed after it."""

    async def handler(stream: trio.SocketStream) -> None:
        head = await read_http_head(stream, timeout_s=head_timeout_s)
        _method, target = read_request_line(head)
        if target and target.split(b"?", 1)[0] != PATH.encode():
            await stream.send_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            on_done(None)
            return
        websocket = await accept_websocket(stream, head, authorize=authorize, max_message_bytes=max_message_bytes)
        if websocket is None:
            on_done(None)
            return
        try:
            await on_websocket(websocket)
        finally:
            await websocket.close()
            on_done(websocket)

    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host=LOOPBACK))
    return port_of(listeners)


async def echo(websocket: WebSocket) -> None:
    try:
        while (message := await websocket.receive()) is not None:
            if isinstance(message, str):
                await websocket.send_text(message)
            else:
                await websocket.send_binary(message)
    except WebSocketClosed:
        pass  # the client closed right behind its last message


async def start_trio_websocket_echo_server(nursery: trio.Nursery, **options) -> str:
    async def handler(request) -> None:
        connection = await request.accept()
        try:
            while True:
                await connection.send_message(await connection.get_message())
        except ConnectionClosed:
            pass

    server = await nursery.start(partial(serve_websocket, handler, LOOPBACK, 0, None, **options))
    return f"ws://{LOOPBACK}:{server.port}{PATH}"


def run_sync_client(function: Callable[[], object]) -> Awaitable[object]:
    return trio.to_thread.run_sync(function, abandon_on_cancel=True)


def sync_client(port: int, **options):
    return sync_connect(
        f"ws://{LOOPBACK}:{port}{PATH}", proxy=None, compression=None, open_timeout=5, close_timeout=5, **options
    )


# =========================================================================== our client


async def test_client_round_trips_text_binary_and_100_kb_with_trio_websocket():
    big_text = "é" * 50_000  # 100 kB of UTF-8
    big_binary = os.urandom(100_000)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url = await start_trio_websocket_echo_server(nursery)
            websocket = await connect_websocket(url, max_message_bytes=MAX_MESSAGE_BYTES)
            assert websocket.closed is None
            for message in ["hello", "", b"\x00\x01\xff", b"", big_text, big_binary]:
                if isinstance(message, str):
                    await websocket.send_text(message)
                else:
                    await websocket.send_binary(message)
                echoed = await websocket.receive()
                # bytes-like for binary (the exact type is checked below), str for text
                assert isinstance(echoed, str if isinstance(message, str) else (bytes, bytearray))
                assert echoed == message
            await websocket.close()
            assert websocket.closed == (1000, "")
            nursery.cancel_scope.cancel()


async def test_client_receives_binary_messages_as_bytes():
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url = await start_trio_websocket_echo_server(nursery)
            websocket = await connect_websocket(url, max_message_bytes=1000)
            await websocket.send_binary(b"\x01\x02")
            received = await websocket.receive()
            await websocket.close()
            nursery.cancel_scope.cancel()
    assert type(received) is bytes


async def test_client_sends_its_headers_and_the_path_and_query():
    seen: dict[str, object] = {}

    async def handler(peer: RawPeer) -> None:
        seen["head"] = await peer.accept_upgrade()
        seen["frames"] = await peer.answer_close()

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url, finished = await start_raw_server(nursery, handler)
            websocket = await connect_websocket(
                url + "?call=CA1", [("Authorization", "Bearer t0ken")], max_message_bytes=1000
            )
            await websocket.close(1000, "done")
            await finished.wait()
            nursery.cancel_scope.cancel()
    head = seen["head"]
    assert head.startswith(b"GET /media?call=CA1 HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer t0ken\r\n" in head
    assert re.search(rb"(?i)\r\nupgrade: websocket\r\n", head)
    assert seen["frames"] == [(OP_CLOSE, close_payload(1000, "done"))]


async def test_client_rejected_with_http_401_and_a_body():
    async def handler(peer: RawPeer) -> None:
        await peer.read_until(b"\r\n\r\n")
        await peer.send(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 8\r\nContent-Type: text/plain\r\n\r\ngo away\n")
        assert await peer.read_to_eof() == b""  # and the client hangs up

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url, finished = await start_raw_server(nursery, handler)
            with pytest.raises(WebSocketRejected) as raised:
                await connect_websocket(url, max_message_bytes=1000)
            assert raised.value.status_code == 401
            assert raised.value.body == b"go away\n"
            assert "401" in str(raised.value)
            await finished.wait()
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("answer", [b"", b"SSH-2.0-OpenSSH_9.2\r\n\r\n"], ids=["closes-unanswered", "not-http"])
async def test_client_rejected_when_the_server_does_not_answer_in_http(answer: bytes):
    async def handler(peer: RawPeer) -> None:
        await peer.read_until(b"\r\n\r\n")
        if answer:
            await peer.send(answer)
        await peer.stream.aclose()

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url, _finished = await start_raw_server(nursery, handler)
            with pytest.raises(WebSocketRejected) as raised:
                await connect_websocket(url, max_message_bytes=1000)
            assert raised.value.status_code is None
            assert raised.value.body == b""
            nursery.cancel_scope.cancel()


async def test_client_refuses_non_websocket_urls_and_reports_a_closed_port():
    with pytest.raises(ValueError, match="not a ws"):
        await connect_websocket("http://127.0.0.1:1/x", max_message_bytes=1000)
    unused = trio.socket.socket()
    await unused.bind((LOOPBACK, 0))
    port = unused.getsockname()[1]
    unused.close()  # nothing listens there now
    with trio.fail_after(TIMEOUT_S), pytest.raises(OSError):
        await connect_websocket(f"ws://{LOOPBACK}:{port}/x", max_message_bytes=1000)


async def wait_until_open(peer: RawPeer) -> None:
    """Server side, after the 101: the client's "ready" text says it has processed the handshake."""
    fin, opcode, masked, payload = await peer.read_frame()
    assert (fin, opcode, masked, payload) == (True, OP_TEXT, True, b"ready")


async def test_client_reassembles_fragmented_messages_with_a_ping_in_between():
    pongs: list[bytes] = []

    async def handler(peer: RawPeer) -> None:
        await peer.accept_upgrade()
        await wait_until_open(peer)
        await peer.send(
            frame_bytes(OP_TEXT, b"hel", fin=False)
            + frame_bytes(OP_CONT, "lo wörld"[:3].encode(), fin=False)
            + frame_bytes(OP_PING, b"mid-message")
            + frame_bytes(OP_CONT, "lo wörld"[3:].encode())
        )
        # A multi-byte character split across fragments, then a fragmented binary message.
        snowman = "☃".encode()
        await peer.send(frame_bytes(OP_TEXT, snowman[:1], fin=False) + frame_bytes(OP_CONT, snowman[1:]))
        await peer.send(frame_bytes(OP_BINARY, b"\x00\x01", fin=False) + frame_bytes(OP_CONT, b"\x02"))
        fin, opcode, masked, payload = await peer.read_frame()
        assert (fin, opcode, masked) == (True, OP_PONG, True)
        pongs.append(payload)
        await peer.answer_close()

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url, finished = await start_raw_server(nursery, handler)
            websocket = await connect_websocket(url, max_message_bytes=1000)
            await websocket.send_text("ready")
            assert await websocket.receive() == "hello wörld"
            assert await websocket.receive() == "☃"
            assert await websocket.receive() == b"\x00\x01\x02"
            await websocket.close()
            await finished.wait()
            nursery.cancel_scope.cancel()
    assert pongs == [b"mid-message"]


async def test_client_answers_a_ping_with_a_pong_of_the_same_payload():
    seen: list[tuple[int, bool, bytes]] = []

    async def handler(peer: RawPeer) -> None:
        await peer.accept_upgrade()
        await wait_until_open(peer)
        await peer.send(frame_bytes(OP_PING, b"are you there?"))
        _fin, opcode, masked, payload = await peer.read_frame()
        seen.append((opcode, masked, payload))
        await peer.send(frame_bytes(OP_TEXT, b"after the pong"))
        await peer.answer_close()

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url, finished = await start_raw_server(nursery, handler)
            websocket = await connect_websocket(url, max_message_bytes=1000)
            await websocket.send_text("ready")
            assert await websocket.receive() == "after the pong"  # the ping itself is not a message
            await websocket.close()
            await finished.wait()
            nursery.cancel_scope.cancel()
    assert seen == [(OP_PONG, True, b"are you there?")]


async def test_client_answers_a_ping_that_arrives_with_the_101():
    seen: list[tuple[int, bytes]] = []

    async def handler(peer: RawPeer) -> None:
        await peer.accept_upgrade(extra=frame_bytes(OP_PING, b"early ping"))
        with trio.move_on_after(1):
            _fin, opcode, _masked, payload = await peer.read_frame()
            seen.append((opcode, payload))
        await peer.send(frame_bytes(OP_TEXT, b"go on"))
        await peer.answer_close()

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url, finished = await start_raw_server(nursery, handler)
            websocket = await connect_websocket(url, max_message_bytes=1000)
            assert await websocket.receive() == "go on"
            await websocket.close()
            await finished.wait()
            nursery.cancel_scope.cancel()
    assert seen == [(OP_PONG, b"early ping")]


async def test_client_receives_frames_sent_in_the_same_write_as_the_101():
    async def handler(peer: RawPeer) -> None:
        await peer.accept_upgrade(extra=frame_bytes(OP_TEXT, b"right behind") + frame_bytes(OP_BINARY, b"\x07"))
        await peer.answer_close()

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url, finished = await start_raw_server(nursery, handler)
            websocket = await connect_websocket(url, max_message_bytes=1000)
            assert await websocket.receive() == "right behind"
            assert await websocket.receive() == b"\x07"
            await websocket.close()
            await finished.wait()
            nursery.cancel_scope.cancel()


async def test_client_sees_a_server_close_with_code_4000_and_echoes_it():
    echoed: list[tuple[int, str]] = []

    async def handler(peer: RawPeer) -> None:
        await peer.accept_upgrade()
        await wait_until_open(peer)
        await peer.send(frame_bytes(OP_CLOSE, close_payload(4000, "call over")))
        _fin, opcode, _masked, payload = await peer.read_frame()
        assert opcode == OP_CLOSE
        echoed.append(parse_close(payload))
        assert await peer.read_to_eof() == b""  # nothing after the close frame, then our socket closes

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url, finished = await start_raw_server(nursery, handler)
            websocket = await connect_websocket(url, max_message_bytes=1000)
            await websocket.send_text("ready")
            assert await websocket.receive() is None
            assert websocket.closed == (4000, "call over")
            assert await websocket.receive() is None  # stays closed
            with pytest.raises(WebSocketClosed) as raised:
                await websocket.send_text("too late")
            assert (raised.value.code, raised.value.reason) == (4000, "call over")
            with trio.fail_after(0.5):  # the closing handshake is complete: close() does not wait
                await websocket.close()
            await finished.wait()
            nursery.cancel_scope.cancel()
    assert echoed == [(4000, "call over")]


async def test_client_fails_a_text_message_with_invalid_utf8_with_1007():
    async def handler(peer: RawPeer) -> None:
        await peer.accept_upgrade()
        await wait_until_open(peer)
        await peer.send(frame_bytes(OP_TEXT, b"ok \xff\xfe"))
        await peer.read_to_eof()

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url, finished = await start_raw_server(nursery, handler)
            websocket = await connect_websocket(url, max_message_bytes=1000)
            await websocket.send_text("ready")
            assert await websocket.receive() is None
            code, _reason = websocket.closed
            assert code == 1007
            with pytest.raises(WebSocketClosed) as raised:
                await websocket.send_text("x")
            assert raised.value.code == 1007
            with trio.fail_after(CLOSE_TIMEOUT_S + 1):
                await websocket.close()
            await finished.wait()  # the socket was released
            nursery.cancel_scope.cancel()


async def test_client_puts_the_1007_close_frame_on_the_wire():
    frames: list[tuple[int, bytes]] = []

    async def handler(peer: RawPeer) -> None:
        await peer.accept_upgrade()
        await wait_until_open(peer)
        await peer.send(frame_bytes(OP_TEXT, b"\xc3\x28"))
        try:
            _fin, opcode, _masked, payload = await peer.read_frame()
            frames.append((opcode, payload))
        except EOFError:
            pass

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url, finished = await start_raw_server(nursery, handler)
            websocket = await connect_websocket(url, max_message_bytes=1000)
            await websocket.send_text("ready")
            assert await websocket.receive() is None
            await websocket.close()
            await finished.wait()
            nursery.cancel_scope.cancel()
    assert frames and frames[0][0] == OP_CLOSE and parse_close(frames[0][1])[0] == 1007


async def test_client_close_is_bounded_against_a_server_that_never_answers_it():
    frames: list[tuple[int, bytes]] = []

    async def handler(peer: RawPeer) -> None:
        await peer.accept_upgrade()
        try:
            while True:
                _fin, opcode, _masked, payload = await peer.read_frame()
                frames.append((opcode, payload))
        except EOFError:
            pass  # our side gave up waiting and released the socket

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url, finished = await start_raw_server(nursery, handler)
            websocket = await connect_websocket(url, max_message_bytes=1000)
            started = trio.current_time()
            with trio.fail_after(CLOSE_TIMEOUT_S + 1):
                await websocket.close(1001, "going away")
            waited = trio.current_time() - started
            assert waited >= CLOSE_TIMEOUT_S * 0.9  # it did wait for the answer, up to the bound
            await finished.wait()
            assert websocket.closed == (1001, "going away")
            with trio.fail_after(0.1):
                await websocket.close()  # idempotent: returns at once
            nursery.cancel_scope.cancel()
    assert [(opcode, parse_close(payload)) for opcode, payload in frames] == [(OP_CLOSE, (1001, "going away"))]


async def test_client_close_is_idempotent_and_completes_in_a_cancelled_scope():
    reasons: list[tuple[int, str | None]] = []
    handler_done = trio.Event()

    async def handler(request) -> None:
        connection = await request.accept()
        try:
            await connection.get_message()
        except ConnectionClosed as closed:
            reasons.append((closed.reason.code, closed.reason.reason))
        handler_done.set()

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(serve_websocket, handler, LOOPBACK, 0, None))
            websocket = await connect_websocket(f"ws://{LOOPBACK}:{server.port}{PATH}", max_message_bytes=1000)
            with trio.CancelScope() as scope:
                scope.cancel()
                await websocket.close(1000, "bye")  # shielded: the whole handshake happens anyway
            assert websocket.closed == (1000, "bye")
            assert websocket._protocol.close_rcvd is not None  # the server's answer was read
            await websocket.close()
            await websocket.close(4001, "ignored")
            assert websocket.closed == (1000, "bye")
            assert await websocket.receive() is None
            with pytest.raises(WebSocketClosed):
                await websocket.send_binary(b"x")
            await handler_done.wait()
            nursery.cancel_scope.cancel()
    assert reasons == [(1000, "bye")]


async def test_two_tasks_cannot_receive_at_once():
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url = await start_trio_websocket_echo_server(nursery)
            websocket = await connect_websocket(url, max_message_bytes=1000)
            nursery.start_soon(websocket.receive)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await websocket.receive()
            await websocket.send_text("unblock")
            await websocket.close()
            nursery.cancel_scope.cancel()


# =========================================================================== our server


async def test_server_round_trips_text_binary_and_100_kb_with_trio_websocket():
    requests: list[Request] = []
    types: list[type] = []

    async def on_websocket(websocket: WebSocket) -> None:
        requests.append(websocket.request)
        while (message := await websocket.receive()) is not None:
            types.append(type(message))
            if isinstance(message, str):
                await websocket.send_text(message)
            else:
                await websocket.send_binary(message)

    big_text = "€" * 34_000  # 102 kB of UTF-8
    big_binary = os.urandom(100_000)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port = await start_our_server(nursery, on_websocket)
            async with open_websocket_url(f"ws://{LOOPBACK}:{port}{PATH}?call=CA9") as client:
                for message in ["hello", b"\x00\xff", big_text, big_binary, ""]:
                    await client.send_message(message)
                    echoed = await client.get_message()
                    assert type(echoed) is type(message) and echoed == message
            nursery.cancel_scope.cancel()
    (request,) = requests
    assert request.path == f"{PATH}?call=CA9"
    assert types == [str, bytes, str, bytes, str]


async def test_server_round_trips_with_the_websockets_sync_client():
    big_binary = os.urandom(100_000)

    def client(port: int) -> list[object]:
        with sync_client(port) as connection:
            received = []
            for message in ["hi", b"\x01\x02", "x" * 100_000, big_binary]:
                connection.send(message)
                received.append(connection.recv(timeout=5))
            return received

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port = await start_our_server(nursery, echo)
            received = await run_sync_client(partial(client, port))
            nursery.cancel_scope.cancel()
    assert received == ["hi", b"\x01\x02", "x" * 100_000, big_binary]


async def test_server_answers_403_when_authorize_refuses():
    seen: list[tuple[str, str | None]] = []

    def authorize(request: Request) -> bool:
        seen.append((request.path, request.headers.get("Authorization")))
        return request.headers.get("Authorization") == "Bearer good"

    def sync_attempt(port: int, token: str) -> int:
        try:
            with sync_client(port, additional_headers={"Authorization": f"Bearer {token}"}) as connection:
                connection.send("in")
                return 101
        except InvalidStatus as error:
            return error.response.status_code

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port = await start_our_server(nursery, echo, authorize=authorize)
            with pytest.raises(ConnectionRejected) as raised:
                async with open_websocket_url(
                    f"ws://{LOOPBACK}:{port}{PATH}", extra_headers=[(b"Authorization", b"Bearer bad")]
                ):
                    pass
            assert raised.value.status_code == 403
            assert raised.value.body == b"Forbidden\n"
            assert await run_sync_client(partial(sync_attempt, port, "bad")) == 403
            assert await run_sync_client(partial(sync_attempt, port, "good")) == 101
            nursery.cancel_scope.cancel()
    assert seen == [(PATH, "Bearer bad"), (PATH, "Bearer bad"), (PATH, "Bearer good")]


async def test_server_answers_400_to_an_upgrade_without_a_key():
    done = trio.Event()
    results: list[WebSocket | None] = []

    def on_done(websocket: WebSocket | None) -> None:
        results.append(websocket)
        done.set()

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port = await start_our_server(nursery, echo, on_done=on_done)
            peer = await open_raw_client(port)
            await peer.send(upgrade_request(key=None))
            response = await peer.read_to_eof()  # answered, then closed
            await done.wait()
            nursery.cancel_scope.cancel()
    assert response.startswith(b"HTTP/1.1 400 ")
    assert b"Sec-WebSocket-Key" in response  # the body says what was wrong
    assert results == [None]


async def test_server_answers_400_to_a_head_cut_short_by_the_timeout():
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port = await start_our_server(nursery, echo, head_timeout_s=0.3)
            peer = await open_raw_client(port)
            await peer.send(upgrade_request()[:40])  # and then nothing
            response = await peer.read_to_eof()
            nursery.cancel_scope.cancel()
    assert response.startswith(b"HTTP/1.1 400 ")


async def test_server_answers_400_to_an_unparsable_head():
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port = await start_our_server(nursery, echo)
            peer = await open_raw_client(port)
            await peer.send(b"GET /media HTTP/1.1\r\nUpgrade: websocket\r\nnot a header line\r\n\r\n")
            response = await peer.read_to_eof()
            nursery.cancel_scope.cancel()
    assert response.startswith(b"HTTP/1.1 400 ")


async def test_server_receives_a_frame_sent_in_the_same_write_as_the_request():
    received: list[object] = []

    async def on_websocket(websocket: WebSocket) -> None:
        received.append(await websocket.receive())
        received.append(await websocket.receive())

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port = await start_our_server(nursery, on_websocket)
            peer = await open_raw_client(port)
            await peer.send(upgrade_request(extra=frame_bytes(OP_TEXT, b"early", mask=True)))
            response = await peer.read_until(b"\r\n\r\n")
            assert response.startswith(b"HTTP/1.1 101 ")
            assert accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") in response
            await peer.send(frame_bytes(OP_CLOSE, close_payload(1000), mask=True))
            _fin, opcode, masked, payload = await peer.read_frame()
            assert (opcode, masked, parse_close(payload)) == (OP_CLOSE, False, (1000, ""))
            assert await peer.read_to_eof() == b""
            nursery.cancel_scope.cancel()
    assert received == ["early", None]


async def test_server_closes_a_message_over_max_message_bytes_with_1009():
    closed: list[tuple[int, str] | None] = []
    client_saw: list[int] = []

    async def on_websocket(websocket: WebSocket) -> None:
        assert await websocket.receive() == "small"
        assert await websocket.receive() is None
        closed.append(websocket.closed)
        with pytest.raises(WebSocketClosed) as raised:
            await websocket.send_text("x")
        assert raised.value.code == 1009

    def sync_too_big(port: int) -> int:
        with sync_client(port) as connection:
            connection.send("small")
            connection.send(b"y" * 2000)
            try:
                connection.recv(timeout=5)
            except ConnectionClosedError as error:
                return error.rcvd.code
        return -1

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port = await start_our_server(nursery, on_websocket, max_message_bytes=1000)
            async with open_websocket_url(f"ws://{LOOPBACK}:{port}{PATH}") as client:
                await client.send_message("small")
                await client.send_message("x" * 1001)
                with pytest.raises(ConnectionClosed) as raised:
                    await client.get_message()
                client_saw.append(raised.value.reason.code)
            assert await run_sync_client(partial(sync_too_big, port)) == 1009
            nursery.cancel_scope.cancel()
    assert client_saw == [1009]
    assert [code for code, _reason in closed] == [1009, 1009]  # trio-websocket's client, then the sync one


async def test_server_sees_a_client_close_as_none_and_1000():
    states: list[object] = []
    finished = trio.Event()

    async def on_websocket(websocket: WebSocket) -> None:
        assert await websocket.receive() == "last words"
        states.append(await websocket.receive())
        states.append(websocket.closed)
        with pytest.raises(WebSocketClosed) as raised:
            await websocket.send_text("after close")
        states.append(raised.value.code)

    def sync_close(port: int) -> None:
        with sync_client(port) as connection:
            connection.send("last words")
            connection.close(1000, "done here")

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port = await start_our_server(nursery, on_websocket, on_done=lambda websocket: finished.set())
            async with open_websocket_url(f"ws://{LOOPBACK}:{port}{PATH}") as client:
                await client.send_message("last words")
                await client.aclose(1000, "done here")
            await finished.wait()
            assert states == [None, (1000, "done here"), 1000]
            states.clear()
            finished = trio.Event()
            await run_sync_client(partial(sync_close, port))
            await finished.wait()
            assert states == [None, (1000, "done here"), 1000]
            nursery.cancel_scope.cancel()


async def test_server_send_texts_sends_each_message_in_order():
    async def on_websocket(websocket: WebSocket) -> None:
        await websocket.send_texts(["one", "two", "", "€" * 40_000])
        await websocket.send_texts([])  # nothing to send
        await websocket.send_text("last")
        assert await websocket.receive() is None
        with pytest.raises(WebSocketClosed) as raised:
            await websocket.send_texts(["too", "late"])
        assert raised.value.code == 1000

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port = await start_our_server(nursery, on_websocket)
            async with open_websocket_url(f"ws://{LOOPBACK}:{port}{PATH}") as client:
                received = [await client.get_message() for _ in range(5)]
            nursery.cancel_scope.cancel()
    assert received == ["one", "two", "", "€" * 40_000, "last"]


async def test_server_close_in_a_cancelled_scope_reaches_the_client():
    async def on_websocket(websocket: WebSocket) -> None:
        await websocket.send_text("goodbye")
        with trio.CancelScope() as scope:
            scope.cancel()
            await websocket.close(4002, "caller hung up")
        assert websocket.closed == (4002, "caller hung up")

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port = await start_our_server(nursery, on_websocket)
            async with open_websocket_url(f"ws://{LOOPBACK}:{port}{PATH}") as client:
                assert await client.get_message() == "goodbye"
                with pytest.raises(ConnectionClosed) as raised:
                    await client.get_message()
            nursery.cancel_scope.cancel()
    assert (raised.value.reason.code, raised.value.reason.reason) == (4002, "caller hung up")


async def test_server_close_is_bounded_against_a_client_that_never_answers_it():
    timings: list[float] = []

    async def on_websocket(websocket: WebSocket) -> None:
        started = trio.current_time()
        with trio.fail_after(CLOSE_TIMEOUT_S + 1):
            await websocket.close()
        timings.append(trio.current_time() - started)

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port = await start_our_server(nursery, on_websocket)
            peer = await open_raw_client(port)
            await peer.send(upgrade_request())
            assert (await peer.read_until(b"\r\n\r\n")).startswith(b"HTTP/1.1 101 ")
            _fin, opcode, _masked, payload = await peer.read_frame()
            assert (opcode, parse_close(payload)) == (OP_CLOSE, (1000, ""))
            # Keep the connection open and say nothing: the server gives up after CLOSE_TIMEOUT_S.
            assert await peer.read_to_eof() == b""
            nursery.cancel_scope.cancel()
    assert len(timings) == 1 and CLOSE_TIMEOUT_S * 0.9 <= timings[0] <= CLOSE_TIMEOUT_S + 1


# =========================================================================== many senders, slow readers


def numbered(task: int, index: int, size: int = 3000) -> bytes:
    return struct.pack("!HH", task, index) + bytes([(task * 31 + index) % 256]) * (size - 4)


def check_numbered(messages: list[bytes], tasks: int, per_task: int) -> None:
    last = dict.fromkeys(range(tasks), -1)
    for message in messages:
        task, index = struct.unpack("!HH", message[:4])
        assert message == numbered(task, index), f"message {task}/{index} is corrupt"
        assert index == last[task] + 1, f"task {task}: {index} after {last[task]}"
        last[task] = index
    assert len(messages) == tasks * per_task
    assert all(index == per_task - 1 for index in last.values())


async def send_numbered(websocket: WebSocket, tasks: int, per_task: int) -> None:
    async def sender(task: int) -> None:
        for index in range(per_task):
            await websocket.send_binary(numbered(task, index))

    async with trio.open_nursery() as senders:
        for task in range(tasks):
            senders.start_soon(sender, task)


@pytest.mark.parametrize("side", ["client", "server"])
async def test_concurrent_senders_never_interleave_frames(side: str):
    tasks, per_task = 20, 50
    received: list[bytes] = []

    async def read_all(connection) -> None:
        await trio.sleep(0.2)  # a peer that is slow at first, so sends pile up in the kernel
        for _ in range(tasks * per_task):
            received.append(await connection.get_message())

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            if side == "client":
                all_read = trio.Event()

                async def handler(request) -> None:
                    await read_all(await request.accept())
                    all_read.set()

                server = await nursery.start(partial(serve_websocket, handler, LOOPBACK, 0, None))
                websocket = await connect_websocket(f"ws://{LOOPBACK}:{server.port}{PATH}", max_message_bytes=1000)
                await send_numbered(websocket, tasks, per_task)
                await all_read.wait()
                await websocket.close()
            else:

                async def on_websocket(websocket: WebSocket) -> None:
                    await send_numbered(websocket, tasks, per_task)
                    assert await websocket.receive() is None  # the client's close

                port = await start_our_server(nursery, on_websocket)
                async with open_websocket_url(f"ws://{LOOPBACK}:{port}{PATH}") as client:
                    await read_all(client)
            nursery.cancel_scope.cancel()
    check_numbered(received, tasks, per_task)


@pytest.mark.parametrize("side", ["client", "server"])
async def test_a_sender_waits_for_a_slow_reader_then_completes(side: str):
    """~8 MB while the peer reads nothing for 0.5 s: the kernel buffers fill, the first send goes partial
    and the rest wait for room; everything arrives intact once the peer reads."""
    messages = [os.urandom(4 << 20)] + [os.urandom(1 << 20) for _ in range(4)]
    received: list[bytes] = []
    times: dict[str, float] = {}
    all_read = trio.Event()

    async def send_all(websocket: WebSocket) -> None:
        times["start"] = trio.current_time()
        for message in messages:
            await websocket.send_binary(message)
        times["sent"] = trio.current_time()

    async def slow_read(peer: RawPeer) -> None:
        await trio.sleep(0.5)  # the slow reader: nothing is read off the socket meanwhile
        times["reading"] = trio.current_time()
        for _ in messages:
            fin, opcode, masked, payload = await peer.read_frame()
            assert (fin, opcode, masked) == (True, OP_BINARY, side == "client")
            received.append(payload)
        all_read.set()

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            if side == "client":

                async def handler(peer: RawPeer) -> None:
                    await peer.accept_upgrade()
                    await slow_read(peer)
                    await peer.answer_close()

                url, _finished = await start_raw_server(nursery, handler)
                websocket = await connect_websocket(url, max_message_bytes=1000)
                await send_all(websocket)
                await all_read.wait()
                await websocket.close()
            else:

                async def on_websocket(websocket: WebSocket) -> None:
                    await send_all(websocket)
                    await all_read.wait()

                port = await start_our_server(nursery, on_websocket)
                peer = await open_raw_client(port)
                await peer.send(upgrade_request())
                await peer.read_until(b"\r\n\r\n")
                await slow_read(peer)
                _fin, opcode, _masked, payload = await peer.read_frame()  # the server's close
                assert opcode == OP_CLOSE
                await peer.send(frame_bytes(OP_CLOSE, payload, mask=True))
                assert await peer.read_to_eof() == b""
            nursery.cancel_scope.cancel()
    assert times["sent"] > times["reading"], "the sends should have waited for the reader"
    assert times["sent"] - times["start"] >= 0.45
    assert [hashlib.sha256(m).digest() for m in received] == [hashlib.sha256(m).digest() for m in messages]


async def test_a_cancelled_sender_never_leaves_half_a_frame_on_the_wire():
    """A sender whose scope is already cancelled either sends its whole frame or none of it, and the
    stream stays valid for the next message."""
    received: list[bytes | bytearray | str] = []
    big = os.urandom(6 << 20)  # more than one send() on a loopback socket takes

    async def on_websocket(websocket: WebSocket) -> None:
        with trio.CancelScope() as scope:
            scope.cancel()
            await websocket.send_binary(big)
        await websocket.send_text("after")
        assert await websocket.receive() is None

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port = await start_our_server(nursery, on_websocket)
            async with open_websocket_url(f"ws://{LOOPBACK}:{port}{PATH}", max_message_size=8 << 20) as client:
                with trio.move_on_after(2):  # a corrupt stream would leave the client waiting for payload
                    while (message := await client.get_message()) != "after":
                        received.append(message)
                    received.append(message)
            nursery.cancel_scope.cancel()
    assert received in (["after"], [big, "after"])


# =========================================================================== file descriptors


async def test_fifty_connections_leave_no_file_descriptor_behind():
    handled_send, handled_receive = trio.open_memory_channel[WebSocket | None](1000)
    # Every WebSocket stays referenced until the count, so a socket left open cannot hide behind gc.
    kept: list[WebSocket | None] = []

    def on_done(websocket: WebSocket | None) -> None:
        kept.append(websocket)
        handled_send.send_nowait(websocket)

    async def on_websocket(websocket: WebSocket) -> None:
        message = await websocket.receive()
        await websocket.send_text(message)
        if message.startswith("server closes"):
            await websocket.close()
        else:
            assert await websocket.receive() is None

    def authorize(request: Request) -> bool:
        return request.headers.get("X-Token") != "wrong"

    async def round_trip(websocket: WebSocket, message: str) -> None:
        await websocket.send_text(message)
        assert await websocket.receive() == message

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port = await start_our_server(nursery, on_websocket, authorize=authorize, on_done=on_done)
            url = f"ws://{LOOPBACK}:{port}{PATH}"
            # The run's one read reactor (an epoll fd) opens with the first socket: counted from then on.
            warm_up = await connect_websocket(url, max_message_bytes=1000)
            await round_trip(warm_up, "client closes warm-up")
            await warm_up.close()
            kept.append(warm_up)
            await handled_receive.receive()
            before = open_fds()

            # Five open at once are seen by the count: a client and a server socket each.
            batch = [await connect_websocket(url, max_message_bytes=1000) for _ in range(5)]
            for index, websocket in enumerate(batch):
                await round_trip(websocket, f"client closes {index}")
            assert open_fds() == before + 10
            for websocket in batch:
                await websocket.close()
            kept.extend(batch)

            for index in range(45):
                websocket = await connect_websocket(url, max_message_bytes=1000)
                kept.append(websocket)
                if index % 2 == 0:
                    await round_trip(websocket, f"server closes {index}")
                    assert await websocket.receive() is None
                    assert websocket.closed == (1000, "")
                else:
                    await round_trip(websocket, f"client closes {index}")
                await websocket.close()
                if index % 9 == 0:  # refused (403) and malformed (400) upgrades now and then
                    with pytest.raises(WebSocketRejected) as raised:
                        await connect_websocket(url, [("X-Token", "wrong")], max_message_bytes=1000)
                    assert raised.value.status_code == 403
                    peer = await open_raw_client(port)
                    await peer.send(upgrade_request(key=None))
                    assert (await peer.read_to_eof()).startswith(b"HTTP/1.1 400 ")
                    await peer.stream.aclose()

            for _ in range(50 + 2 * 5):  # every server handler has returned
                await handled_receive.receive()
            assert sum(websocket is not None for websocket in kept) == 1 + 1 + 50 + 50
            assert open_fds() == before
            nursery.cancel_scope.cancel()


# =========================================================================== the HTTP head helpers


def head_of(request_line: str, *headers: str) -> bytes:
    return "\r\n".join([request_line, *headers]).encode() + b"\r\n\r\n"


UPGRADE_HEADERS = ("Host: x", "Connection: Upgrade", "Upgrade: websocket")


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (head_of("GET /media HTTP/1.1", *UPGRADE_HEADERS), True),
        (head_of("GET /media?call=CA1&x=y HTTP/1.1", *UPGRADE_HEADERS), True),  # the query is not the path
        (head_of("GET /media HTTP/1.1", "host: x", "UPGRADE: WebSocket"), True),  # names and values any case
        (head_of("GET /media HTTP/1.1", "Upgrade:websocket"), True),
        (head_of("GET /media HTTP/1.0", "Upgrade: websocket"), True),
        (head_of("GET /other HTTP/1.1", *UPGRADE_HEADERS), False),  # wrong path
        (head_of("GET /media/x HTTP/1.1", *UPGRADE_HEADERS), False),
        (head_of("GET /medi HTTP/1.1", *UPGRADE_HEADERS), False),
        (head_of("POST /media HTTP/1.1", *UPGRADE_HEADERS), False),  # not GET
        (head_of("get /media HTTP/1.1", *UPGRADE_HEADERS), False),  # methods are case-sensitive
        (head_of("GET /media HTTP/1.1", "Host: x", "Connection: Upgrade"), False),  # no Upgrade header
        (head_of("GET /media HTTP/1.1", "Upgrade: h2c"), False),
        (head_of("GET /media HTTP/1.1", "X-Upgrade: websocket"), False),
        (b"GET /media\r\nUpgrade: websocket\r\n\r\n", False),  # not an HTTP request line
        (b"", False),
    ],
)
def test_is_websocket_upgrade(head: bytes, expected: bool):
    assert is_websocket_upgrade(head, PATH) is expected


def test_read_request_line():
    assert read_request_line(head_of("GET /media?x=1 HTTP/1.1", "Host: x")) == (b"GET", b"/media?x=1")
    assert read_request_line(b"POST /calls HTTP/1.1\r\n") == (b"POST", b"/calls")
    assert read_request_line(b"GET /media\r\n\r\n") == (b"", b"")
    assert read_request_line(b"GET /a b HTTP/1.1\r\n") == (b"", b"")
    assert read_request_line(b"GET /media FTP/1.1\r\n") == (b"", b"")
    assert read_request_line(b"") == (b"", b"")


async def _read_head_of(send: Callable[[trio.SocketStream], Awaitable[None]], timeout_s: float) -> bytes:
    result: list[bytes] = []
    done = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        result.append(await read_http_head(stream, timeout_s=timeout_s))
        done.set()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host=LOOPBACK))
        client = await trio.open_tcp_stream(LOOPBACK, port_of(listeners))
        async with client:
            nursery.start_soon(send, client)
            await done.wait()
            nursery.cancel_scope.cancel()
    return result[0]


async def test_read_http_head_returns_the_head_and_what_followed_it():
    async def send(client: trio.SocketStream) -> None:
        for piece in [b"GET /media HTTP/1.1\r\nHo", b"st: x\r\n", b"\r\n" + b"\x81\x00"]:
            await client.send_all(piece)
            await trio.sleep(0.01)  # separate segments
        await trio.sleep_forever()

    with trio.fail_after(TIMEOUT_S):
        started = trio.current_time()
        head = await _read_head_of(send, timeout_s=5)
        assert trio.current_time() - started < 2  # it returned at the blank line, not at the timeout
    assert head == b"GET /media HTTP/1.1\r\nHost: x\r\n\r\n\x81\x00"


async def test_read_http_head_returns_what_arrived_before_the_timeout():
    async def send(client: trio.SocketStream) -> None:
        await client.send_all(b"GET /media HTTP/1.1\r\nHost")
        await trio.sleep_forever()

    with trio.fail_after(TIMEOUT_S):
        started = trio.current_time()
        head = await _read_head_of(send, timeout_s=0.3)
        assert 0.25 <= trio.current_time() - started < 2
    assert head == b"GET /media HTTP/1.1\r\nHost"


async def test_read_http_head_returns_what_arrived_before_the_peer_closed():
    async def send(client: trio.SocketStream) -> None:
        await client.send_all(b"GET /med")
        await client.send_eof()
        await trio.sleep_forever()

    with trio.fail_after(TIMEOUT_S):
        started = trio.current_time()
        head = await _read_head_of(send, timeout_s=5)
        assert trio.current_time() - started < 2
    assert head == b"GET /med"


async def test_read_http_head_stops_at_the_limit():
    async def send(client: trio.SocketStream) -> None:
        await client.send_all(b"GET /media HTTP/1.1\r\n")
        for _ in range(HTTP_HEAD_LIMIT // 1000 + 1):
            await client.send_all(b"X-Filler: " + b"a" * 988 + b"\r\n")
        await trio.sleep_forever()  # never ends the head

    with trio.fail_after(TIMEOUT_S):
        started = trio.current_time()
        head = await _read_head_of(send, timeout_s=30)
        assert trio.current_time() - started < 5  # stopped at the limit, long before the timeout
    assert len(head) >= HTTP_HEAD_LIMIT
    assert b"\r\n\r\n" not in head
    assert head.startswith(b"GET /media HTTP/1.1\r\nX-Filler: aaa")


async def test_server_close_while_another_task_reads_waits_for_the_clients_answer_and_ends_with_a_fin():
    """The stream's reader is still reading when the session closes the socket: close() must let that
    task consume the client's answer (and the media still in flight) before closing, or the kernel
    resets the connection over the unread bytes."""
    received_after_close: list[object] = []
    reader_done = trio.Event()

    async def on_websocket(websocket: WebSocket) -> None:
        async def read() -> None:
            while (message := await websocket.receive()) is not None:
                received_after_close.append(message)
            reader_done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.sleep(0.05)
            await websocket.close(1000, "call over")
            assert websocket.closed == (1000, "done")  # the client's answer, read by the other task

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port = await start_our_server(nursery, on_websocket)
            peer = await open_raw_client(port)
            await peer.send(upgrade_request())
            await peer.read_until(b"\r\n\r\n")
            _fin, opcode, _masked, payload = await peer.read_frame()
            assert (opcode, parse_close(payload)) == (OP_CLOSE, (1000, "call over"))
            for number in range(5):  # media still in flight when our close frame arrived
                await peer.send(frame_bytes(OP_TEXT, f"late {number}".encode(), mask=True))
                await trio.sleep(0.01)
            await peer.send(frame_bytes(OP_CLOSE, close_payload(1000, "done"), mask=True))
            assert await peer.read_to_eof() == b""  # a clean end of stream, not ConnectionResetError
            await reader_done.wait()
            nursery.cancel_scope.cancel()
    assert received_after_close == [f"late {number}" for number in range(5)]


# =========================================================================== the read reactor


async def test_a_receive_cancelled_while_parked_loses_nothing_that_arrives_later():
    """A cancelled wait must leave the socket's readiness intact: the next receive gets the message."""
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url = await start_trio_websocket_echo_server(nursery)
            websocket = await connect_websocket(url, max_message_bytes=1000)
            for round_number in range(3):
                with trio.move_on_after(0.05) as waited:
                    await websocket.receive()  # nothing comes: parked on the reactor, then cancelled
                assert waited.cancelled_caught
                await websocket.send_text(f"after a cancelled wait {round_number}")
                if round_number % 2:
                    await trio.sleep(0.05)  # the echo arrives while nobody waits: it must wake no one
                assert await websocket.receive() == f"after a cancelled wait {round_number}"
            await websocket.close()
            nursery.cancel_scope.cancel()


async def test_a_socket_number_reused_right_after_a_close_gets_its_own_messages():
    """The reactor keys sockets by number: a closed socket's number, reused at once, must not inherit its
    waiter or lose its own readiness."""
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url = await start_trio_websocket_echo_server(nursery)
            numbers = set()
            for index in range(20):
                websocket = await connect_websocket(url, max_message_bytes=1000)
                numbers.add(websocket._io._fd)
                waiter_ended = trio.Event()

                async def parked_receiver(websocket: WebSocket = websocket, ended: trio.Event = waiter_ended) -> None:
                    assert await websocket.receive() is None  # woken by the close, not left hanging
                    ended.set()

                nursery.start_soon(parked_receiver)
                await trio.testing.wait_all_tasks_blocked()
                await websocket.close()
                await waiter_ended.wait()
                successor = await connect_websocket(url, max_message_bytes=1000)
                await successor.send_text(f"message {index}")
                assert await successor.receive() == f"message {index}"
                await successor.close()
            assert len(numbers) < 20  # numbers were reused, so the case was exercised
            nursery.cancel_scope.cancel()


async def test_a_receiver_parked_when_the_socket_closes_under_it_gets_none():
    """close() gives up on a peer that never answers its close frame and closes the socket: the task
    parked in receive() on the reactor must be woken, not left waiting on a closed number."""

    async def silent_server(peer: RawPeer) -> None:
        await peer.accept_upgrade()
        await trio.sleep_forever()

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url, _finished = await start_raw_server(nursery, silent_server)
            websocket = await connect_websocket(url, max_message_bytes=1000)
            received: list[object] = []

            async def parked_receiver() -> None:
                received.append(await websocket.receive())

            nursery.start_soon(parked_receiver)
            await trio.testing.wait_all_tasks_blocked()
            await websocket.close()  # CLOSE_TIMEOUT_S without an answer, then the socket is closed
            with trio.fail_after(1):
                while not received:
                    await trio.sleep(0.01)
            assert received == [None]
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("fast_path", [False, True])
async def test_an_end_of_stream_that_came_with_the_last_message_is_not_waited_for(fast_path: bool):
    """The peer's last message and its FIN arrive together: one edge. The read returns the message only;
    the end of the stream must still be seen, though no new edge will come for it (by the receiving
    task, or by the fast path, which otherwise stops after a short read)."""
    go: list[trio.Event] = []

    async def message_then_fin(peer: RawPeer) -> None:
        await peer.accept_upgrade()
        go.append(trio.Event())
        await go[-1].wait()
        # Both in one step of this task, so the client's reactor sees them as one edge.
        raw = peer.stream.socket._sock  # the stdlib socket under trio's: a send that does not yield
        raw.send(frame_bytes(OP_TEXT, b"last words"))
        raw.shutdown(socket.SHUT_WR)
        await trio.sleep_forever()

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url, _finished = await start_raw_server(nursery, message_then_fin)
            for _ in range(3):
                websocket = await connect_websocket(url, max_message_bytes=1000)
                await trio.testing.wait_all_tasks_blocked()
                by_handler: list[str | bytes] = []
                received: list[object] = []
                if fast_path:
                    assert websocket.handle_now(lambda message: by_handler.append(message) is None)

                    async def receiver(websocket: WebSocket = websocket, received: list = received) -> None:
                        received.append(await websocket.receive())

                    nursery.start_soon(receiver)
                    await trio.testing.wait_all_tasks_blocked()  # parked on the reactor
                    go[-1].set()
                    with trio.fail_after(1):
                        while not received:
                            await trio.sleep(0.01)
                    assert (by_handler, received) == (["last words"], [None])
                else:
                    go[-1].set()
                    await trio.sleep(0.05)  # both are in the kernel before the first read
                    assert await websocket.receive() == "last words"
                    with trio.fail_after(1):
                        assert await websocket.receive() is None
                assert websocket.closed == (1006, "")
                await websocket.close()
            nursery.cancel_scope.cancel()


async def test_many_sockets_ready_at_once_are_all_served():
    """More sockets than one epoll batch (512) become readable together; every one gets its message."""
    count = 600
    received = []

    async def on_websocket(websocket: WebSocket) -> None:
        received.append(await websocket.receive())
        await websocket.send_text("done")

    with trio.fail_after(4 * TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port = await start_our_server(nursery, on_websocket)
            clients = []
            for index in range(count):
                peer = await open_raw_client(port)
                await peer.send(upgrade_request())
                await peer.read_until(b"\r\n\r\n")
                clients.append(peer)
            await trio.testing.wait_all_tasks_blocked()
            for index, peer in enumerate(clients):
                await peer.send(frame_bytes(OP_TEXT, f"hello {index}".encode(), mask=True))
            for peer in clients:
                fin, opcode, _masked, payload = await peer.read_frame()
                assert (fin, opcode, payload) == (True, OP_TEXT, b"done")
                await peer.stream.aclose()
            assert sorted(received) == sorted(f"hello {index}" for index in range(count))
            nursery.cancel_scope.cancel()


# =========================================================================== the fast path (handle_now)


async def start_fast_path_server(
    nursery: trio.Nursery, handler_of: Callable[[WebSocket], Callable[[str | bytes], bool]]
) -> tuple[int, list[object]]:
    """Our server with `handle_now(handler_of(websocket))`; the receiving task records what it gets (and
    echoes it with a "task: " prefix). Returns the port and the task's record."""
    by_task: list[object] = []

    async def on_websocket(websocket: WebSocket) -> None:
        assert websocket.handle_now(handler_of(websocket))
        while (message := await websocket.receive()) is not None:
            by_task.append(message)
            try:
                await websocket.send_text(f"task: {message}")
            except WebSocketClosed:
                return
        by_task.append(None)

    return await start_our_server(nursery, on_websocket), by_task


async def open_fast_path_client(port: int) -> RawPeer:
    """A raw client past the upgrade, once the server's task waits in receive() (the fast path's case)."""
    peer = await open_raw_client(port)
    await peer.send(upgrade_request())
    await peer.read_until(b"\r\n\r\n")
    await trio.testing.wait_all_tasks_blocked()
    return peer


async def test_the_fast_path_answers_without_the_task_and_hands_over_the_rest_in_order():
    by_handler: list[str | bytes] = []

    def handler_of(websocket: WebSocket) -> Callable[[str | bytes], bool]:
        def handler(message: str | bytes) -> bool:
            if message != "fast" and not str(message).startswith("fast "):
                return False
            assert websocket.can_send_now()
            by_handler.append(message)
            websocket.send_text_now(f"handler: {message}")
            return True
        return handler

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port, by_task = await start_fast_path_server(nursery, handler_of)
            peer = await open_fast_path_client(port)

            async def expect(*texts: str) -> None:
                for text in texts:
                    fin, opcode, masked, payload = await peer.read_frame()
                    assert (fin, opcode, masked, payload.decode()) == (True, OP_TEXT, False, text)

            for index in range(5):  # one message per readiness event: all by the handler
                await peer.send(frame_bytes(OP_TEXT, f"fast {index}".encode(), mask=True))
                await expect(f"handler: fast {index}")
            assert by_task == []
            # One write: the handler takes the first; the one it refuses, and everything after it, go to
            # the task in order, even the message the handler would have taken.
            await peer.send(b"".join(frame_bytes(OP_TEXT, text.encode(), mask=True) for text in ("fast", "slow", "fast")))
            await expect("handler: fast", "task: slow", "task: fast")
            assert by_task == ["slow", "fast"]
            # Once the task waits again, the handler is back.
            await trio.testing.wait_all_tasks_blocked()
            await peer.send(frame_bytes(OP_TEXT, b"fast again", mask=True))
            await expect("handler: fast again")
            # A ping in the middle is answered, and a binary message is the handler's to refuse.
            await peer.send(frame_bytes(OP_PING, b"p1", mask=True) + frame_bytes(OP_BINARY, b"\x00\x01", mask=True))
            fin, opcode, _masked, payload = await peer.read_frame()
            assert (opcode, payload) == (OP_PONG, b"p1")
            await expect("task: b'\\x00\\x01'")
            assert by_handler == [*(f"fast {index}" for index in range(5)), "fast", "fast again"]
            await peer.send(frame_bytes(OP_CLOSE, close_payload(1000), mask=True))
            fin, opcode, _masked, payload = await peer.read_frame()
            assert (opcode, parse_close(payload)) == (OP_CLOSE, (1000, ""))
            assert await peer.read_to_eof() == b""
            await trio.testing.wait_all_tasks_blocked()
            assert by_task[-1] is None
            nursery.cancel_scope.cancel()


async def test_the_fast_path_leaves_fragments_bad_utf8_and_a_failing_handler_to_the_task():
    def handler_of(websocket: WebSocket) -> Callable[[str | bytes], bool]:
        def handler(message: str | bytes) -> bool:
            if message == "explode":
                raise RuntimeError("a bug in the handler")
            return message == "fast"
        return handler

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port, by_task = await start_fast_path_server(nursery, handler_of)
            peer = await open_fast_path_client(port)
            await peer.send(frame_bytes(OP_TEXT, b"explode", mask=True))
            assert (await peer.read_frame())[3] == b"task: explode"
            await trio.testing.wait_all_tasks_blocked()
            await peer.send(frame_bytes(OP_TEXT, b"fa", fin=False, mask=True))
            await trio.testing.wait_all_tasks_blocked()
            await peer.send(frame_bytes(OP_CONT, b"st", mask=True))
            assert (await peer.read_frame())[3] == b"task: fast"  # assembled by the task, not the handler
            await trio.testing.wait_all_tasks_blocked()
            await peer.send(frame_bytes(OP_TEXT, b"\xff\xfe", mask=True))
            fin, opcode, _masked, payload = await peer.read_frame()
            assert (opcode, parse_close(payload)[0]) == (OP_CLOSE, 1007)
            assert by_task == ["explode", "fast", None]
            nursery.cancel_scope.cancel()


async def test_what_the_kernel_does_not_take_now_goes_out_in_order_before_later_sends():
    """A handler's send_text_now bigger than the socket buffers: the rest is written by a flusher, and a
    task's send after it (and a second handler send) come after it, whole."""
    big = "x" * (4 << 20)
    sent_now: list[bool] = []

    def handler_of(websocket: WebSocket) -> Callable[[str | bytes], bool]:
        def handler(message: str | bytes) -> bool:
            if message != "big":
                return False
            sent_now.append(websocket.can_send_now())
            websocket.send_text_now(big)
            sent_now.append(websocket.can_send_now())  # no: a flusher owns the rest now
            return True
        return handler

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port, by_task = await start_fast_path_server(nursery, handler_of)
            peer = await open_fast_path_client(port)
            await peer.send(frame_bytes(OP_TEXT, b"big", mask=True))
            await trio.testing.wait_all_tasks_blocked()
            await peer.send(frame_bytes(OP_TEXT, b"after", mask=True))  # the handler refuses it: the task sends
            await trio.testing.wait_all_tasks_blocked()
            fin, opcode, _masked, payload = await peer.read_frame()
            assert (fin, opcode, len(payload)) == (True, OP_TEXT, len(big))
            assert (await peer.read_frame())[3] == b"task: after"
            assert sent_now == [True, False]
            assert by_task == ["after"]
            nursery.cancel_scope.cancel()

"""Peers and servers for the tests of `bridge.websocket` over loopback.

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
import struct
from collections.abc import Awaitable, Callable
from functools import partial

import trio
import trio.testing
from trio_websocket import ConnectionClosed, serve_websocket
from websockets.http11 import Request
from websockets.sync.client import connect as sync_connect

from bridge.websocket.connection import WebSocket, WebSocketClosed, accept_websocket
from bridge.websocket.http_head import read_http_head, read_request_line

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

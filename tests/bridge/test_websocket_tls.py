"""Our client over wss:// (`TlsSocketIO`): records opened in the read reactor's fast path, messages that span
many records both ways, close_notify both ways, a peer that drops the connection, a TLS alert mid-stream.

The server side is a hand-written TLS peer (an `ssl.SSLObject` over memory BIOs on a Trio stream), so each
test decides what goes on the wire, down to a record that does not decrypt or a bare TCP close."""

from __future__ import annotations

import logging
import os
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from functools import partial

import pytest
import trio
import trustme

from bridge.websocket.byte_io import TlsSocketIO
from bridge.websocket.connection import WebSocket, connect_websocket
from tests.bridge.websocket_peers import (
    LOOPBACK,
    OP_BINARY,
    OP_CLOSE,
    OP_TEXT,
    PATH,
    TIMEOUT_S,
    RawPeer,
    close_payload,
    frame_bytes,
    parse_close,
    port_of,
)

MAX_MESSAGE_BYTES = 1 << 21


@pytest.fixture(scope="module")
def test_ca() -> trustme.CA:
    return trustme.CA()


class TlsServerStream:
    """The server's end of a TLS connection on a TCP stream: enough of a Trio stream for RawPeer, plus what
    a misbehaving peer does (drop the TCP connection, send an alert)."""

    def __init__(self, tcp: trio.SocketStream, context: ssl.SSLContext) -> None:
        self.tcp = tcp
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.peer_close_notify = False

    async def _pull(self) -> bool:
        data = await self.tcp.receive_some(65536)
        if not data:
            return False
        self.incoming.write(data)
        return True

    async def _push(self) -> None:
        if self.outgoing.pending:
            await self.tcp.send_all(self.outgoing.read())

    async def handshake(self) -> None:
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._push()
                assert await self._pull(), "the client left during the handshake"
        await self._push()

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        while True:
            try:
                return self.tls.read(max_bytes)  # b"" at the client's close_notify
            except ssl.SSLWantReadError:
                if not await self._pull():
                    raise EOFError("the client closed TCP without a close_notify") from None

    async def send_all(self, data: bytes) -> None:
        self.tls.write(data)
        await self._push()

    async def aclose(self) -> None:
        await self.close_notify()
        await self.tcp.aclose()

    async def close_notify(self) -> None:
        """Send our close_notify and read on until the client's (TCP open all along)."""
        try:
            self.tls.unwrap()
        except ssl.SSLWantReadError:
            pass
        await self._push()
        while not self.peer_close_notify:
            try:
                self.tls.unwrap()
                self.peer_close_notify = True
            except ssl.SSLWantReadError:
                if not await self._pull():
                    raise EOFError("the client closed TCP without answering close_notify") from None

    async def drop(self, *, reset: bool) -> None:
        """End the TCP connection without a close_notify: a FIN, or a RST."""
        if reset:
            self.tcp.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.tcp.aclose()

    async def send_alert(self) -> None:
        """A fatal alert, as OpenSSL sends it: the server is fed a record that does not decrypt."""
        self.incoming.write(b"\x17\x03\x03\x00\x20" + b"z" * 32)
        with pytest.raises(ssl.SSLError):
            self.tls.read(1)
        alert = self.outgoing.read()
        assert alert, "OpenSSL wrote no alert"
        await self.tcp.send_all(alert)


async def start_tls_server(
    nursery: trio.Nursery, ca: trustme.CA, handler: Callable[[RawPeer, TlsServerStream], Awaitable[None]]
) -> tuple[str, trio.Event]:
    serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(serving)
    finished = trio.Event()

    async def serve(tcp: trio.SocketStream) -> None:
        stream = TlsServerStream(tcp, serving)
        await stream.handshake()
        await handler(RawPeer(stream), stream)  # type: ignore[arg-type]  # a stream in all RawPeer uses
        finished.set()

    listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host=LOOPBACK))
    return f"wss://localhost:{port_of(listeners)}{PATH}", finished


async def connect(url: str, ca: trustme.CA) -> WebSocket:
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    websocket = await connect_websocket(url, max_message_bytes=MAX_MESSAGE_BYTES, ssl_context=trusting)
    assert isinstance(websocket._io, TlsSocketIO)
    return websocket


def in_the_reactor() -> bool:
    return trio.lowlevel.current_task().name == "websocket read reactor"


async def test_messages_spanning_many_records_go_both_ways_and_small_ones_are_taken_in_the_reactor(test_ca):
    big_binary = os.urandom(300_000)  # ~19 TLS records, several reads
    big_text = "é" * 150_000
    echoed: list[tuple[int, bytes]] = []

    async def handler(peer: RawPeer, stream: TlsServerStream) -> None:
        await peer.accept_upgrade()
        await peer.send(frame_bytes(OP_BINARY, big_binary) + frame_bytes(OP_TEXT, big_text.encode()))
        for _ in range(2):
            _fin, opcode, _masked, payload = await peer.read_frame()
            echoed.append((opcode, payload))
        for index in range(3):  # one at a time: each is a readiness event of its own
            await peer.send(frame_bytes(OP_TEXT, f"small {index}".encode()))
            _fin, opcode, _masked, payload = await peer.read_frame()
            echoed.append((opcode, payload))
        await peer.send(frame_bytes(OP_CLOSE, close_payload(1000)))
        assert (await peer.read_frame())[1] == OP_CLOSE
        await stream.aclose()

    received: list[tuple[str | bytes, bool]] = []
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url, finished = await start_tls_server(nursery, test_ca, handler)
            websocket = await connect(url, test_ca)

            def on_message(message: str | bytes) -> None:
                received.append((message, in_the_reactor()))
                websocket.post_text(message if isinstance(message, str) else f"{len(message)} bytes")

            await websocket.serve(on_message)
            assert websocket.closed == (1000, "")
            await websocket.close()  # with our close_notify, which the server waits for
            await finished.wait()
            nursery.cancel_scope.cancel()
    assert [message for message, _ in received] == [big_binary, big_text, "small 0", "small 1", "small 2"]
    assert echoed == [(OP_TEXT, b"300000 bytes"), (OP_TEXT, big_text.encode()),
                      *((OP_TEXT, f"small {index}".encode()) for index in range(3))]
    assert all(in_reactor for _, in_reactor in received[2:])


@pytest.mark.parametrize("initiator", ["client", "server"])
async def test_the_closing_handshake_ends_with_close_notify_both_ways(test_ca, initiator):
    seen: dict[str, object] = {}

    async def handler(peer: RawPeer, stream: TlsServerStream) -> None:
        await peer.accept_upgrade()
        if initiator == "server":
            await trio.sleep(0.05)  # after the client's handshake is done
            await peer.send(frame_bytes(OP_CLOSE, close_payload(4000, "bye")))
        _fin, opcode, _masked, payload = await peer.read_frame()
        seen["close"] = (opcode, parse_close(payload))
        if initiator == "client":
            await peer.send(frame_bytes(OP_CLOSE, payload))
        await stream.close_notify()  # raises unless the client answers with its own, on an open TCP connection
        seen["close_notify"] = stream.peer_close_notify

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url, finished = await start_tls_server(nursery, test_ca, handler)
            websocket = await connect(url, test_ca)
            if initiator == "client":
                await websocket.close(1000, "done")
            else:
                assert await websocket.receive() is None
                await websocket.close()
            await finished.wait()
            nursery.cancel_scope.cancel()
    assert seen["close"] == (OP_CLOSE, (1000, "done") if initiator == "client" else (4000, "bye"))
    assert seen["close_notify"] is True
    assert websocket.closed == ((1000, "done") if initiator == "client" else (4000, "bye"))


async def receive_all(websocket: WebSocket, *, fast_path: bool) -> list[str | bytes]:
    """Every message until the end, taken in the reactor (`fast_path`) or by receive()."""
    messages: list[str | bytes] = []
    if fast_path:
        await websocket.serve(messages.append)
    else:
        while (message := await websocket.receive()) is not None:
            messages.append(message)
    return messages


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast path", "task"])
@pytest.mark.parametrize("how", ["fin", "reset"])
async def test_a_peer_that_drops_the_connection_ends_it_as_1006_after_what_it_sent(test_ca, how, fast_path):
    async def handler(peer: RawPeer, stream: TlsServerStream) -> None:
        await peer.accept_upgrade()
        await trio.sleep(0.05)  # the client's task waits in receive() by now
        await peer.send(frame_bytes(OP_TEXT, b"last words"))
        await trio.sleep(0.05)
        await stream.drop(reset=how == "reset")

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url, _finished = await start_tls_server(nursery, test_ca, handler)
            websocket = await connect(url, test_ca)
            assert await receive_all(websocket, fast_path=fast_path) == ["last words"]
            assert websocket.closed == (1006, "")
            await websocket.close()
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast path", "task"])
async def test_a_tls_alert_mid_stream_ends_the_connection_and_logs_its_cause(test_ca, caplog, fast_path):
    async def handler(peer: RawPeer, stream: TlsServerStream) -> None:
        await peer.accept_upgrade()
        await trio.sleep(0.05)
        await peer.send(frame_bytes(OP_TEXT, b"before the alert"))
        await stream.send_alert()
        await trio.sleep(TIMEOUT_S)  # the TCP connection stays open: the alert alone must end it

    caplog.set_level(logging.WARNING, logger="bridge.websocket.byte_io")
    with trio.fail_after(TIMEOUT_S / 2):
        async with trio.open_nursery() as nursery:
            url, _finished = await start_tls_server(nursery, test_ca, handler)
            websocket = await connect(url, test_ca)
            assert await receive_all(websocket, fast_path=fast_path) == ["before the alert"]
            assert websocket.closed == (1006, "")
            await websocket.close()
            nursery.cancel_scope.cancel()
    assert any("BAD_RECORD_MAC" in record.getMessage().upper() for record in caplog.records), caplog.text

"""Our client (`connect_websocket`) against trio-websocket's server and hand-written raw servers."""

from __future__ import annotations

import os
import re
from functools import partial

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, serve_websocket

from bridge.websocket.connection import CLOSE_TIMEOUT_S, WebSocketClosed, WebSocketRejected, connect_websocket
from tests.bridge.websocket_peers import (
    LOOPBACK,
    MAX_MESSAGE_BYTES,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    PATH,
    TIMEOUT_S,
    RawPeer,
    close_payload,
    frame_bytes,
    parse_close,
    start_raw_server,
    start_trio_websocket_echo_server,
)


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

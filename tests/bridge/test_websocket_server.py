"""Our server (`accept_websocket` after `read_http_head`) against trio-websocket's client, the
`websockets` sync client and hand-written raw clients."""

from __future__ import annotations

import os
from functools import partial

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.http11 import Request

from bridge.websocket.connection import CLOSE_TIMEOUT_S, WebSocket, WebSocketClosed
from tests.bridge.websocket_peers import (
    LOOPBACK,
    OP_CLOSE,
    OP_TEXT,
    PATH,
    TIMEOUT_S,
    accept_key,
    close_payload,
    echo,
    frame_bytes,
    open_raw_client,
    parse_close,
    run_sync_client,
    start_our_server,
    sync_client,
    upgrade_request,
)


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

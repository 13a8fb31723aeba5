"""Messages taken without a task wake-up (`WebSocket.take_messages`, `serve`) and sends that never wait
(`post_text`)."""

from __future__ import annotations

from collections.abc import Callable

import trio
import trio.testing

from bridge.websocket import byte_io
from bridge.websocket.connection import WebSocket, WebSocketClosed, connect_websocket
from tests.bridge.websocket_peers import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    TIMEOUT_S,
    RawPeer,
    close_payload,
    frame_bytes,
    open_raw_client,
    parse_close,
    start_our_server,
    start_trio_websocket_echo_server,
    upgrade_request,
)


def in_the_reactor() -> bool:
    return trio.lowlevel.current_task().name == "websocket read reactor"


async def start_fast_path_server(
    nursery: trio.Nursery, take_of: Callable[[WebSocket], Callable[[str | bytes], bool]]
) -> tuple[int, list[object]]:
    """Our server with `take_messages(take_of(websocket))`; the receiving task records what it gets (and
    echoes it with a "task: " prefix). Returns the port and the task's record."""
    by_task: list[object] = []

    async def on_websocket(websocket: WebSocket) -> None:
        websocket.take_messages(take_of(websocket))
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


async def test_take_answers_in_the_reactor_and_hands_over_the_rest_in_order():
    by_take: list[tuple[str | bytes, bool]] = []  # (message, taken in the reactor)

    def take_of(websocket: WebSocket) -> Callable[[str | bytes], bool]:
        def take(message: str | bytes) -> bool:
            if message != "fast" and not str(message).startswith("fast "):
                return False
            by_take.append((message, in_the_reactor()))
            websocket.post_text(f"take: {message}")
            return True
        return take

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port, by_task = await start_fast_path_server(nursery, take_of)
            peer = await open_fast_path_client(port)

            async def expect(*texts: str) -> None:
                for text in texts:
                    fin, opcode, masked, payload = await peer.read_frame()
                    assert (fin, opcode, masked, payload.decode()) == (True, OP_TEXT, False, text)

            for index in range(5):  # one message per readiness event: all taken in the reactor
                await peer.send(frame_bytes(OP_TEXT, f"fast {index}".encode(), mask=True))
                await expect(f"take: fast {index}")
            assert by_task == [] and by_take == [(f"fast {index}", True) for index in range(5)]
            # One write: the reactor takes the first; the one refused, and everything after it, go to the
            # task in order: receive() returns the refused one, then offers the next to `take` itself.
            await peer.send(b"".join(frame_bytes(OP_TEXT, text.encode(), mask=True) for text in ("fast", "slow", "fast")))
            await expect("take: fast", "task: slow", "take: fast")
            assert by_task == ["slow"] and by_take[5:] == [("fast", True), ("fast", False)]
            # Once the task waits again, the reactor takes again.
            await trio.testing.wait_all_tasks_blocked()
            await peer.send(frame_bytes(OP_TEXT, b"fast again", mask=True))
            await expect("take: fast again")
            assert by_take[-1] == ("fast again", True)
            # A ping in the middle is answered, and a binary message is `take`'s to refuse.
            await peer.send(frame_bytes(OP_PING, b"p1", mask=True) + frame_bytes(OP_BINARY, b"\x00\x01", mask=True))
            fin, opcode, _masked, payload = await peer.read_frame()
            assert (opcode, payload) == (OP_PONG, b"p1")
            await expect("task: b'\\x00\\x01'")
            assert [message for message, _where in by_take] == [
                *(f"fast {index}" for index in range(5)), "fast", "fast", "fast again"
            ]
            await peer.send(frame_bytes(OP_CLOSE, close_payload(1000), mask=True))
            fin, opcode, _masked, payload = await peer.read_frame()
            assert (opcode, parse_close(payload)) == (OP_CLOSE, (1000, ""))
            assert await peer.read_to_eof() == b""
            await trio.testing.wait_all_tasks_blocked()
            assert by_task == ["slow", b"\x00\x01", None]
            nursery.cancel_scope.cancel()


async def test_fragments_bad_utf8_and_a_failing_take_are_left_to_the_task():
    taken: list[tuple[str | bytes, bool]] = []

    def take_of(websocket: WebSocket) -> Callable[[str | bytes], bool]:
        def take(message: str | bytes) -> bool:
            if message == "explode" and in_the_reactor():
                raise RuntimeError("a bug in take")
            if message != "fast":
                return False
            taken.append((message, in_the_reactor()))
            websocket.post_text(f"take: {message}")
            return True
        return take

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port, by_task = await start_fast_path_server(nursery, take_of)
            peer = await open_fast_path_client(port)
            await peer.send(frame_bytes(OP_TEXT, b"explode", mask=True))
            assert (await peer.read_frame())[3] == b"task: explode"  # receive() returns it, untaken
            await trio.testing.wait_all_tasks_blocked()
            await peer.send(frame_bytes(OP_TEXT, b"fa", fin=False, mask=True))
            await trio.testing.wait_all_tasks_blocked()
            await peer.send(frame_bytes(OP_CONT, b"st", mask=True))
            assert (await peer.read_frame())[3] == b"take: fast"
            assert taken == [("fast", False)]  # assembled by the task, then offered to `take` there
            await trio.testing.wait_all_tasks_blocked()
            await peer.send(frame_bytes(OP_TEXT, b"\xff\xfe", mask=True))
            fin, opcode, _masked, payload = await peer.read_frame()
            assert (opcode, parse_close(payload)[0]) == (OP_CLOSE, 1007)
            assert by_task == ["explode", None]
            nursery.cancel_scope.cancel()


async def test_what_the_kernel_does_not_take_now_goes_out_in_order_before_later_sends():
    """A post bigger than the socket buffers: the rest is written by a flusher, and a second post (queued
    behind it) and a task's send after both come after it, whole."""
    big = "x" * (4 << 20)
    posted_in_the_reactor: list[bool] = []

    def take_of(websocket: WebSocket) -> Callable[[str | bytes], bool]:
        def take(message: str | bytes) -> bool:
            if message != "big":
                return False
            websocket.post_text(big)
            websocket.post_texts(["second", "third"])
            posted_in_the_reactor.append(in_the_reactor())
            return True
        return take

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port, by_task = await start_fast_path_server(nursery, take_of)
            peer = await open_fast_path_client(port)
            await peer.send(frame_bytes(OP_TEXT, b"big", mask=True))
            await trio.testing.wait_all_tasks_blocked()
            await peer.send(frame_bytes(OP_TEXT, b"after", mask=True))  # refused: the task sends
            await trio.testing.wait_all_tasks_blocked()
            fin, opcode, _masked, payload = await peer.read_frame()
            assert (fin, opcode, len(payload)) == (True, OP_TEXT, len(big))
            assert [(await peer.read_frame())[3] for _ in range(3)] == [b"second", b"third", b"task: after"]
            assert posted_in_the_reactor == [True]
            assert by_task == ["after"]
            nursery.cancel_scope.cancel()


async def test_serve_hands_every_message_to_one_function_and_returns_once_closed():
    served: list[tuple[str | bytes, bool]] = []
    returned = trio.Event()

    async def on_websocket(websocket: WebSocket) -> None:
        def on_message(message: str | bytes) -> None:
            served.append((message, in_the_reactor()))
            websocket.post_text(f"served: {message!r}")

        await websocket.serve(on_message)
        returned.set()

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port = await start_our_server(nursery, on_websocket)
            peer = await open_fast_path_client(port)
            for index in range(3):
                await peer.send(frame_bytes(OP_TEXT, f"one {index}".encode(), mask=True))
                assert (await peer.read_frame())[3] == f"served: 'one {index}'".encode()
            await peer.send(b"".join(frame_bytes(OP_TEXT, f"burst {index}".encode(), mask=True) for index in range(20)))
            await peer.send(frame_bytes(OP_BINARY, b"\x01", mask=True))
            expected = [f"served: 'burst {index}'".encode() for index in range(20)] + [b"served: b'\\x01'"]
            assert [(await peer.read_frame())[3] for _ in expected] == expected
            await peer.send(frame_bytes(OP_CLOSE, close_payload(1000), mask=True))
            assert (await peer.read_frame())[1] == OP_CLOSE
            await returned.wait()
            nursery.cancel_scope.cancel()
    assert [message for message, _where in served] == [
        *(f"one {index}" for index in range(3)), *(f"burst {index}" for index in range(20)), b"\x01"
    ]
    assert all(where for _message, where in served[:3])  # one message per readiness event: in the reactor


async def test_without_a_reactor_take_runs_in_receive_and_posts_keep_their_order(monkeypatch):
    """A socket with no read reactor (no epoll): `take` sees every message inside receive()."""
    monkeypatch.setattr(byte_io, "read_reactor", lambda: None)
    taken: list[tuple[str | bytes, trio.lowlevel.Task]] = []
    receiver = trio.lowlevel.current_task()
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url = await start_trio_websocket_echo_server(nursery)
            websocket = await connect_websocket(url, max_message_bytes=1000)
            assert websocket._io._reactor is None

            def take(message: str | bytes) -> bool:
                if not str(message).startswith("take"):
                    return False
                taken.append((message, trio.lowlevel.current_task()))
                return True

            websocket.take_messages(take)
            websocket.post_texts(["take 1", "keep 1"])
            websocket.post_text("take 2")
            websocket.post_text("keep 2")
            assert await websocket.receive() == "keep 1"
            assert await websocket.receive() == "keep 2"
            websocket.take_messages(None)
            websocket.post_text("take 3")
            assert await websocket.receive() == "take 3"
            await websocket.close()
            nursery.cancel_scope.cancel()
    assert taken == [("take 1", receiver), ("take 2", receiver)]

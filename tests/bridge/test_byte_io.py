"""The bytes under a WebSocket (`bridge.websocket.byte_io`): many senders, slow readers, cancelled
senders, and no file descriptor left behind."""

from __future__ import annotations

import hashlib
import os
import struct
from functools import partial

import pytest
import trio
import trio.testing
from trio_websocket import open_websocket_url, serve_websocket
from websockets.http11 import Request

from bridge.websocket.connection import WebSocket, WebSocketRejected, connect_websocket
from tests.bridge.websocket_peers import (
    LOOPBACK,
    OP_BINARY,
    OP_CLOSE,
    PATH,
    TIMEOUT_S,
    RawPeer,
    frame_bytes,
    open_fds,
    open_raw_client,
    start_our_server,
    start_raw_server,
    upgrade_request,
)


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


# --------------------------------------------------------------------------- file descriptors


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

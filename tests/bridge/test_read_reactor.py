"""The run's read reactor (`bridge.websocket.read_reactor`): readiness kept across cancelled waits,
reused socket numbers, sockets closed under a parked receiver, many sockets at once, faults of fast paths and
of the reactor's own loop."""

from __future__ import annotations

import select
import socket
import time

import pytest
import trio
import trio.testing

from bridge.websocket import read_reactor as read_reactor_module
from bridge.websocket.connection import WebSocket, connect_websocket
from bridge.websocket.read_reactor import (
    FAST_PATH_BUDGET_S,
    FAST_PATH_STRIKES,
    MAX_FAULTS,
    ReadReactor,
    read_reactor,
)
from tests.bridge.websocket_peers import (
    OP_CLOSE,
    OP_TEXT,
    PATH,
    TIMEOUT_S,
    RawPeer,
    frame_bytes,
    open_raw_client,
    start_our_server,
    start_raw_server,
    start_trio_websocket_echo_server,
    upgrade_request,
)


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
                    websocket.take_messages(lambda message, by_handler=by_handler: by_handler.append(message) is None)

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
            for _ in range(count):
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


@pytest.mark.parametrize("slow_calls", [1, FAST_PATH_STRIKES])
async def test_a_fast_path_over_its_budget_is_moved_to_its_task_and_the_others_keep_theirs(slow_calls):
    """A `take` that holds the reactor past FAST_PATH_BUDGET_S on FAST_PATH_STRIKES calls in a row loses the
    fast path: its socket's messages are then taken in its task, in order; another socket keeps being served
    in the reactor. A single overrun (what a preempted reactor looks like) costs nothing."""
    taken: dict[str, list[tuple[str | bytes, bool]]] = {"slow": [], "quick": []}
    messages = FAST_PATH_STRIKES + 2

    async def on_websocket(websocket: WebSocket) -> None:
        kind = websocket.request.path.partition("?")[2]

        def on_message(message: str | bytes) -> None:
            taken[kind].append((message, trio.lowlevel.current_task().name == "websocket read reactor"))
            if kind == "slow" and len(taken[kind]) <= slow_calls:
                time.sleep(2 * FAST_PATH_BUDGET_S)
            websocket.post_text(f"{kind}: {message}")

        await websocket.serve(on_message)

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port = await start_our_server(nursery, on_websocket)
            peers = {}
            for kind in ("slow", "quick"):
                peers[kind] = await open_raw_client(port)
                await peers[kind].send(upgrade_request(path=f"{PATH}?{kind}"))
                await peers[kind].read_until(b"\r\n\r\n")
            await trio.testing.wait_all_tasks_blocked()
            for index in range(messages):
                for kind, peer in peers.items():
                    await peer.send(frame_bytes(OP_TEXT, f"{index}".encode(), mask=True))
                    assert (await peer.read_frame())[3] == f"{kind}: {index}".encode()
                    await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    in_reactor = [index < slow_calls or slow_calls < FAST_PATH_STRIKES for index in range(messages)]
    assert taken["slow"] == [(f"{index}", where) for index, where in enumerate(in_reactor)]
    assert taken["quick"] == [(f"{index}", True) for index in range(messages)]


async def test_a_fast_path_that_fails_fails_its_own_task_and_no_other_socket(monkeypatch):
    """The reactor serves every socket of the run: a fast path raising out of it (not from `take`, which
    the connection catches) goes to that socket's task; the reactor goes on serving the others."""
    ended: dict[str, BaseException | None] = {}
    on_readable_now = WebSocket._on_readable_now

    def failing_for_doomed(self: WebSocket) -> bool:
        if self.request is not None and self.request.path.endswith("?doomed"):
            raise RuntimeError("injected fault")
        return on_readable_now(self)

    monkeypatch.setattr(WebSocket, "_on_readable_now", failing_for_doomed)

    async def on_websocket(websocket: WebSocket) -> None:
        try:
            await websocket.serve(lambda message: websocket.post_text(f"served: {message}"))
        except RuntimeError as error:
            ended[websocket.request.path.partition("?")[2]] = error
            await websocket.close(1011)

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port = await start_our_server(nursery, on_websocket)
            peers = {}
            for name in ("doomed", "fine"):
                peers[name] = await open_raw_client(port)
                await peers[name].send(upgrade_request(path=f"{PATH}?{name}"))
                await peers[name].read_until(b"\r\n\r\n")
            await trio.testing.wait_all_tasks_blocked()
            await peers["doomed"].send(frame_bytes(OP_TEXT, b"boom", mask=True))
            assert (await peers["doomed"].read_frame())[1] == OP_CLOSE
            for index in range(3):
                await peers["fine"].send(frame_bytes(OP_TEXT, f"{index}".encode(), mask=True))
                assert (await peers["fine"].read_frame())[3] == f"served: {index}".encode()
            nursery.cancel_scope.cancel()
    assert str(ended["doomed"]) == "injected fault" and "fine" not in ended


class FlakyEpoll:
    """An epoll whose poll takes the events, then raises (while `faults` lasts): the edges it took are lost
    to the reactor unless its recovery looks at every socket again."""

    faults = 0
    made = 0

    def __init__(self) -> None:
        self._epoll = REAL_EPOLL()
        FlakyEpoll.made += 1

    def poll(self, timeout: float = -1, maxevents: int = -1) -> list[tuple[int, int]]:
        events = self._epoll.poll(timeout, maxevents)
        if events and FlakyEpoll.faults:
            FlakyEpoll.faults -= 1
            raise OSError("injected epoll fault")
        return events

    def __getattr__(self, name: str) -> object:
        return getattr(self._epoll, name)


REAL_EPOLL = select.epoll


async def echo_round(websockets: list[WebSocket], label: str) -> None:
    for index, websocket in enumerate(websockets):
        await websocket.send_text(f"{label} {index}")
    for index, websocket in enumerate(websockets):
        assert await websocket.receive() == f"{label} {index}"


@pytest.mark.parametrize("faults", [1, MAX_FAULTS + 1], ids=["restarts", "retires"])
async def test_a_fault_of_the_reactors_own_loses_no_socket_and_no_message(monkeypatch, faults):
    """A fault outside any socket's handling (here: epoll, after it handed out edges) fails no socket: the
    reactor starts again and every socket gets what came meanwhile; past MAX_FAULTS it retires and every
    socket, old or new, is read by its task."""
    monkeypatch.setattr(read_reactor_module.select, "epoll", FlakyEpoll)
    FlakyEpoll.faults, FlakyEpoll.made = 0, 0
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url = await start_trio_websocket_echo_server(nursery)
            websockets = [await connect_websocket(url, max_message_bytes=1000) for _ in range(3)]
            reactor = read_reactor()
            assert reactor is not None
            await echo_round(websockets, "before")
            for round_number in range(faults):
                FlakyEpoll.faults = 1
                await echo_round(websockets, f"through fault {round_number}")
                assert FlakyEpoll.faults == 0  # the fault struck while the echoes were in flight
            assert reactor.retired is (faults > MAX_FAULTS)
            assert FlakyEpoll.made == faults + 1  # a new epoll after each fault
            websockets.append(await connect_websocket(url, max_message_bytes=1000))
            assert (websockets[-1]._io._reactor is None) is reactor.retired
            await echo_round(websockets, "after")
            for websocket in websockets:
                await websocket.close()
            nursery.cancel_scope.cancel()


async def test_a_fault_of_the_reactors_own_on_one_socket_fails_that_socket_only(monkeypatch):
    """The loop itself raises while handling one socket (past the fast path's own guard): that socket's
    task gets the error; the others are served on, in the reactor."""
    ended: dict[str, BaseException | None] = {}
    run_fast_path = ReadReactor._run_fast_path

    def failing_for_doomed(self: ReadReactor, fd: int, on_readable, task) -> bool:
        websocket = on_readable.__self__
        if websocket.request is not None and websocket.request.path.endswith("?doomed"):
            raise RuntimeError("injected reactor fault")
        return run_fast_path(self, fd, on_readable, task)

    monkeypatch.setattr(ReadReactor, "_run_fast_path", failing_for_doomed)
    where: list[bool] = []

    async def on_websocket(websocket: WebSocket) -> None:
        def on_message(message: str | bytes) -> None:
            where.append(trio.lowlevel.current_task().name == "websocket read reactor")
            websocket.post_text(f"served: {message}")

        try:
            await websocket.serve(on_message)
        except RuntimeError as error:
            ended[websocket.request.path.partition("?")[2]] = error
            await websocket.close(1011)

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port = await start_our_server(nursery, on_websocket)
            peers = {}
            for name in ("doomed", "fine"):
                peers[name] = await open_raw_client(port)
                await peers[name].send(upgrade_request(path=f"{PATH}?{name}"))
                await peers[name].read_until(b"\r\n\r\n")
            await trio.testing.wait_all_tasks_blocked()
            await peers["doomed"].send(frame_bytes(OP_TEXT, b"boom", mask=True))
            assert (await peers["doomed"].read_frame())[1] == OP_CLOSE
            await trio.testing.wait_all_tasks_blocked()  # the fine socket's task, woken to look, waits again
            for index in range(3):
                await peers["fine"].send(frame_bytes(OP_TEXT, f"{index}".encode(), mask=True))
                assert (await peers["fine"].read_frame())[3] == f"served: {index}".encode()
                await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert str(ended["doomed"]) == "injected reactor fault" and "fine" not in ended
    assert where == [True, True, True]

"""The server's own accept loop: one port for everything. A connection whose first request is a WebSocket
upgrade of `/media` goes to the lean Media Stream handler; hypercorn serves all the others.

(A message costs a fifth as much on `bridge.websocket.connection` as through hypercorn:
`benchmarks/websocket_stacks/README.md`.)
"""
from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

from bridge.websocket import is_websocket_upgrade, read_http_head
from orchestrator.config import ConfigError
from orchestrator.server.media_endpoint import MEDIA_PATH, MediaStreamHandler

_log = logging.getLogger(__name__)
# A burst of calls must not overflow the accept queue, or the kernel drops connections (seen: 200 calls
# in 2 s with hypercorn's default of 100).
LISTEN_BACKLOG = 1024
# How long a new connection may take to send its first request head before it is closed.
REQUEST_HEAD_TIMEOUT_S = 10.0


def listening_socket(host: str, port: int, *, shared_port: bool = False, listen: bool = True) -> socket.socket:
    """A socket bound to host:port. `shared_port` (SO_REUSEPORT): each worker of `serve --workers N` listens
    on its own socket on the same port and the kernel spreads new connections evenly over them; the
    supervisor holds the port with one that does not listen (`listen=False`)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ConfigError(f"{host}:{port}", None, f"cannot listen there ({error.strerror or error})") from None
    if listen:
        sock.listen(LISTEN_BACKLOG)
    return sock


class _ReplayStream(trio.abc.HalfCloseableStream):
    """A connection whose first bytes the router has read already: hypercorn gets them first."""

    def __init__(self, stream: trio.SocketStream, already_read: bytes) -> None:
        self._stream = stream
        self._already_read = already_read
        self.socket = stream.socket  # hypercorn reads the peer and local addresses from it

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._already_read:
            data, self._already_read = self._already_read, b""
            return data
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


async def serve_connections(
    app: Any,
    media_stream: MediaStreamHandler,
    sock: socket.socket,
    shutdown_trigger: Callable[[], Awaitable[None]],
    *,
    graceful_timeout_s: float,
    access_log: bool = False,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """hypercorn's trio `worker_serve` (0.18), with one change: a connection whose first request is a
    WebSocket upgrade of /media goes to the lean stream handler; hypercorn serves all the others.
    `shutdown_trigger` returns when the listener is to stop; connections then get `graceful_timeout_s`."""
    hypercorn = HypercornConfig()
    hypercorn.graceful_timeout = graceful_timeout_s
    hypercorn.accesslog = logging.getLogger("hypercorn.access") if access_log else None
    hypercorn.errorlog = logging.getLogger("hypercorn.error")
    asgi = wrap_app(app, hypercorn.wsgi_max_body_size, None)
    lifespan_state: dict[str, Any] = {}
    lifespan = Lifespan(asgi, hypercorn, lifespan_state)
    context = WorkerContext(None)

    async def route(stream: trio.SocketStream) -> None:
        try:
            head = await read_http_head(stream, timeout_s=REQUEST_HEAD_TIMEOUT_S)
            if not head:
                await trio.aclose_forcefully(stream)
            elif is_websocket_upgrade(head, MEDIA_PATH):
                await media_stream(stream, head)
            else:
                state = ConnectionState(lifespan_state.copy())
                await TCPServer(asgi, hypercorn, context, state, _ReplayStream(stream, head))
        except Exception:  # one broken connection must not take the listener (and every call) down
            _log.exception("connection failed")
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as connections:
            listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
            task_status.started()
            try:
                async with trio.open_nursery() as accepting:
                    accepting.start_soon(partial(trio.serve_listeners, route, [listener], handler_nursery=connections))
                    await shutdown_trigger()
                    accepting.cancel_scope.cancel()
            finally:
                await context.terminated.set()  # hypercorn's connections finish their request and close
                connections.cancel_scope.deadline = trio.current_time() + hypercorn.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()

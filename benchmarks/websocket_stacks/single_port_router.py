"""Prototype: one port, one Trio process. A front accept loop sniffs the HTTP
request head; `GET /media` WebSocket upgrades go to a lean sans-I/O path, every
other connection is handed (with the already-read bytes replayed) to hypercorn's
trio TCPServer running a Starlette app.

Usage: router.py PORT [lean=d|c]
Uses hypercorn internals: hypercorn.trio.tcp_server.TCPServer,
hypercorn.trio.worker_context.WorkerContext, hypercorn.trio.lifespan.Lifespan
(checked against Hypercorn 0.18.0).
"""
import sys
from functools import partial

import trio
from hypercorn.config import Config
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.trio.lifespan import Lifespan
from hypercorn.typing import ConnectionState
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute

PORT = int(sys.argv[1])
LEAN = sys.argv[2] if len(sys.argv) > 2 else "d"
MAX_HEAD = 16384


class ReplayStream(trio.abc.HalfCloseableStream):
    """SocketStream wrapper that first returns bytes already consumed by the router."""

    def __init__(self, stream: trio.SocketStream, prefix: bytes):
        self._s = stream
        self._prefix = prefix
        self.socket = stream.socket  # hypercorn reads .socket for peer/sock names

    async def receive_some(self, max_bytes=None):
        if self._prefix:
            p, self._prefix = self._prefix, b""
            return p
        return await self._s.receive_some(max_bytes)

    async def send_all(self, data):
        await self._s.send_all(data)

    async def wait_send_all_might_not_block(self):
        await self._s.wait_send_all_might_not_block()

    async def send_eof(self):
        await self._s.send_eof()

    async def aclose(self):
        await self._s.aclose()


# ------------------------------------------------------------- lean /media paths
async def media_websockets(stream, head: bytes):
    from websockets.server import ServerProtocol
    from websockets.http11 import Request
    from websockets.frames import Opcode
    p = ServerProtocol(max_size=2 ** 20)
    recv, send_all = stream.receive_some, stream.send_all
    data = head
    try:
        while True:
            if data:
                p.receive_data(data)
            else:
                p.receive_eof()
            for ev in p.events_received():
                if isinstance(ev, Request):
                    p.send_response(p.accept(ev))
                elif ev.opcode is Opcode.TEXT:
                    # real bridge: orjson.loads(ev.data) -> forward upstream
                    p.send_text(ev.data)
            out = p.data_to_send()
            if out:
                buf = b"".join(out)
                if buf:
                    await send_all(buf)
                if out[-1] == b"":
                    return
            if not data:
                return
            data = await recv(65536)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()


async def media_wsproto(stream, head: bytes):
    from wsproto import WSConnection, ConnectionType
    from wsproto.events import Request, AcceptConnection, TextMessage, CloseConnection, Ping, Message
    ws = WSConnection(ConnectionType.SERVER)
    data = head
    try:
        while True:
            ws.receive_data(data or None)
            out = []
            for ev in ws.events():
                if isinstance(ev, TextMessage):
                    out.append(ws.send(Message(data=ev.data)))  # single-frame msgs assumed
                elif isinstance(ev, Request):
                    out.append(ws.send(AcceptConnection()))
                elif isinstance(ev, Ping):
                    out.append(ws.send(ev.response()))
                elif isinstance(ev, CloseConnection):
                    await stream.send_all(ws.send(ev.response())); return
            if out:
                await stream.send_all(b"".join(out))
            if not data:
                return
            data = await stream.receive_some(65536)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()


MEDIA = media_websockets if LEAN == "d" else media_wsproto


# ------------------------------------------------------------- ASGI side
async def home(request):
    return PlainTextResponse("hello from hypercorn+starlette\n")


async def ws_echo(ws):
    await ws.accept()
    async for m in ws.iter_text():
        await ws.send_text(m)

app = Starlette(routes=[Route("/", home), WebSocketRoute("/asgi-ws", ws_echo)])


def is_media_upgrade(head: bytes) -> bool:
    line, _, rest = head.partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3 or parts[0] != b"GET":
        return False
    if parts[1].split(b"?", 1)[0] != b"/media":
        return False
    for h in rest.split(b"\r\n"):
        k, _, v = h.partition(b":")
        if k.strip().lower() == b"upgrade" and v.strip().lower() == b"websocket":
            return True
    return False


async def main():
    from hypercorn.asyncio import serve  # noqa: F401  (not used; trio path below)
    from hypercorn.utils import wrap_app
    config = Config()
    config.accesslog = None
    config.loglevel = "WARNING"
    wrapped = wrap_app(app, config.wsgi_max_body_size, None)
    state = {}
    lifespan = Lifespan(wrapped, config, state)
    context = WorkerContext(None)

    async def handler(stream: trio.SocketStream):
        buf = b""
        with trio.move_on_after(10):
            while b"\r\n\r\n" not in buf and len(buf) < MAX_HEAD:
                d = await stream.receive_some(65536)
                if not d:
                    break
                buf += d
        if is_media_upgrade(buf):
            await MEDIA(stream, buf)
        else:
            await TCPServer(wrapped, config, context, ConnectionState(state.copy()),
                            ReplayStream(stream, buf))

    async with trio.open_nursery() as n:
        await n.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        await trio.serve_tcp(handler, PORT, host="127.0.0.1", backlog=1024)


trio.run(main)

"""Echo WebSocket servers, one variant per process.

Usage: stacks_server.py VARIANT PORT
  a  hypercorn (trio) + Starlette WebSocketRoute
  b  hypercorn (trio) + raw ASGI app
  c  trio + wsproto (WSConnection, one task per connection)
  d  trio + websockets sans-I/O ServerProtocol
  f  trio + hand-rolled RFC6455 frame parser (floor of trio stream I/O)
  g  trio + websockets sans-I/O on the raw socket (one wake-up per message; RCVLOWAT=n sets SO_RCVLOWAT)
  h  as g, but every connection waits on one shared edge-triggered epoll (no epoll_ctl per wait)
  i  as g, but frames are handled in a callback of one reactor task (no task wake-up per message)
  e1 asyncio + websockets.asyncio.server (default asyncio loop)
  e2 asyncio(uvloop) + websockets.asyncio.server
  e3 picows + uvloop
"""
import base64
import hashlib
import os
import sys
from functools import partial

VARIANT = sys.argv[1]
PORT = int(sys.argv[2])
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# ---------------------------------------------------------------- ASGI apps
async def raw_asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"}); return
    if scope["type"] != "websocket":
        return
    m = await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        m = await receive()
        t = m["type"]
        if t == "websocket.receive":
            if m.get("text") is not None:
                await send({"type": "websocket.send", "text": m["text"]})
            else:
                await send({"type": "websocket.send", "bytes": m["bytes"]})
        elif t == "websocket.disconnect":
            return


def starlette_app():
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocketDisconnect

    async def media(ws):
        await ws.accept()
        try:
            while True:
                msg = await ws.receive_text()
                await ws.send_text(msg)
        except WebSocketDisconnect:
            pass
    return Starlette(routes=[WebSocketRoute("/media", media)])


def run_hypercorn(app):
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve
    cfg = Config()
    cfg.bind = [f"127.0.0.1:{PORT}"]
    cfg.accesslog = None
    cfg.errorlog = "-"
    cfg.loglevel = "WARNING"
    cfg.backlog = 1024
    trio.run(serve, app, cfg)


# ---------------------------------------------------------------- trio + wsproto
def run_wsproto():
    import trio
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Message, Ping, Request, TextMessage

    async def handler(stream):
        ws = WSConnection(ConnectionType.SERVER)
        recv = stream.receive_some
        send_all = stream.send_all
        ws_send = ws.send
        text_parts = []
        try:
            while True:
                data = await recv(65536)
                if not data:
                    return
                ws.receive_data(data)
                out = []
                for ev in ws.events():
                    if isinstance(ev, TextMessage):
                        if ev.message_finished and not text_parts:
                            out.append(ws_send(Message(data=ev.data)))
                        else:
                            text_parts.append(ev.data)
                            if ev.message_finished:
                                out.append(ws_send(Message(data="".join(text_parts))))
                                text_parts.clear()
                    elif isinstance(ev, BytesMessage):
                        out.append(ws_send(Message(data=ev.data)))
                    elif isinstance(ev, Request):
                        out.append(ws_send(AcceptConnection()))
                    elif isinstance(ev, Ping):
                        out.append(ws_send(ev.response()))
                    elif isinstance(ev, CloseConnection):
                        await send_all(ws_send(ev.response()))
                        return
                if out:
                    await send_all(b"".join(out))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    trio.run(partial(trio.serve_tcp, handler, PORT, host="127.0.0.1", backlog=1024))


# ---------------------------------------------------------------- trio + websockets sans-I/O
def run_websockets_sansio():
    import trio
    from websockets.frames import Opcode
    from websockets.http11 import Request
    from websockets.server import ServerProtocol

    async def handler(stream):
        p = ServerProtocol(max_size=2 ** 20)
        recv = stream.receive_some
        send_all = stream.send_all
        try:
            while True:
                data = await recv(65536)
                if not data:
                    p.receive_eof()
                else:
                    p.receive_data(data)
                for ev in p.events_received():
                    if isinstance(ev, Request):
                        p.send_response(p.accept(ev))
                    elif ev.opcode is Opcode.TEXT:   # Frame (single-frame msgs here)
                        p.send_text(ev.data)
                    elif ev.opcode is Opcode.BINARY:
                        p.send_binary(ev.data)
                out = p.data_to_send()
                if out:
                    eof = out[-1] == b""
                    buf = b"".join(out)
                    if buf:
                        await send_all(buf)
                    if eof:
                        return
                if not data:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    trio.run(partial(trio.serve_tcp, handler, PORT, host="127.0.0.1", backlog=1024))


# ---------------------------------------------------------------- trio + hand-rolled frames
def run_handrolled():
    import trio

    async def handler(stream):
        recv = stream.receive_some
        send_all = stream.send_all
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            d = await recv(65536)
            if not d:
                return
            buf += d
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        key = None
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"sec-websocket-key":
                key = v.strip()
        acc = base64.b64encode(hashlib.sha1(key + GUID).digest())
        await send_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n")
        buf = bytearray(rest)
        from_bytes = int.from_bytes
        try:
            while True:
                out = []
                pos = 0
                n = len(buf)
                while n - pos >= 6:
                    b0 = buf[pos]; ln = buf[pos + 1] & 0x7F
                    hl = 2
                    if ln == 126:
                        if n - pos < 8: break
                        ln = (buf[pos + 2] << 8) | buf[pos + 3]; hl = 4
                    elif ln == 127:
                        if n - pos < 14: break
                        ln = from_bytes(buf[pos + 2:pos + 10], "big"); hl = 10
                    if n - pos < hl + 4 + ln:
                        break
                    mask = buf[pos + hl:pos + hl + 4]
                    s = pos + hl + 4
                    payload = (from_bytes(buf[s:s + ln], "big") ^
                               from_bytes((mask * (ln // 4 + 1))[:ln], "big")).to_bytes(ln, "big")
                    pos = s + ln
                    op = b0 & 0x0F
                    if op == 8:
                        await send_all(b"\x88\x00"); return
                    if op in (1, 2):
                        hdr = bytes((b0, ln)) if ln < 126 else (
                            bytes((b0, 126)) + ln.to_bytes(2, "big") if ln < 65536
                            else bytes((b0, 127)) + ln.to_bytes(8, "big"))
                        out.append(hdr); out.append(payload)
                if pos:
                    del buf[:pos]
                if out:
                    await send_all(b"".join(out))
                d = await recv(65536)
                if not d:
                    return
                buf += d
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    trio.run(partial(trio.serve_tcp, handler, PORT, host="127.0.0.1", backlog=1024))


# ---------------------------------------------------------------- trio + websockets sans-I/O, raw socket
def run_websockets_rawsocket():
    """As d, but the socket is used directly: a non-blocking recv/send first, and only when the kernel
    has nothing (EAGAIN) a trio.lowlevel.wait_readable/wait_writable, so each message costs one wake-up
    instead of the stream API's extra checkpoints."""
    import trio
    from websockets.frames import Opcode
    from websockets.http11 import Request
    from websockets.server import ServerProtocol

    async def handler(stream):
        sock = stream.socket
        fd_sock = sock._sock  # the stdlib socket under trio's (non-blocking already)
        if os.environ.get("RCVLOWAT"):  # wake only once this many bytes wait (two messages per wake-up)
            import socket
            fd_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, int(os.environ["RCVLOWAT"]))
        p = ServerProtocol(max_size=2 ** 20)
        wait_readable = trio.lowlevel.wait_readable
        wait_writable = trio.lowlevel.wait_writable
        try:
            while True:
                try:
                    data = fd_sock.recv(65536)
                except BlockingIOError:
                    await wait_readable(fd_sock)
                    continue
                if not data:
                    p.receive_eof()
                else:
                    p.receive_data(data)
                for ev in p.events_received():
                    if isinstance(ev, Request):
                        p.send_response(p.accept(ev))
                    elif ev.opcode is Opcode.TEXT:
                        p.send_text(ev.data)
                out = p.data_to_send()
                if out:
                    eof = out[-1] == b""
                    view = memoryview(b"".join(out))
                    while view:
                        try:
                            view = view[fd_sock.send(view):]
                        except BlockingIOError:
                            await wait_writable(fd_sock)
                    if eof:
                        return
                if not data:
                    return
        except OSError:
            pass
        finally:
            await stream.aclose()

    trio.run(partial(trio.serve_tcp, handler, PORT, host="127.0.0.1", backlog=1024))


# ---------------------------------------------------------------- shared edge-triggered epoll (h, i)
def _shared_epoll():
    import select

    import trio

    class SharedEpoll:
        """One epoll for all connections, registered once (edge-triggered); trio waits on its fd."""

        def __init__(self):
            self.epoll = select.epoll()
            self.waiting = {}
            self.signalled = set()
            self.callbacks = {}

        def register(self, fd, callback=None):
            self.epoll.register(fd, select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET)
            if callback is not None:
                self.callbacks[fd] = callback

        def unregister(self, fd):
            self.waiting.pop(fd, None); self.signalled.discard(fd); self.callbacks.pop(fd, None)
            try:
                self.epoll.unregister(fd)
            except OSError:
                pass

        async def wait_readable(self, fd):
            if fd in self.signalled:
                self.signalled.discard(fd)
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            self.waiting[fd] = trio.lowlevel.current_task()

            def abort(_):
                self.waiting.pop(fd, None)
                return trio.lowlevel.Abort.SUCCEEDED
            await trio.lowlevel.wait_task_rescheduled(abort)

        async def run(self):
            fileno = self.epoll.fileno()
            while True:
                await trio.lowlevel.wait_readable(fileno)
                while True:
                    events = self.epoll.poll(0, 512)
                    for fd, _flags in events:
                        callback = self.callbacks.get(fd)
                        if callback is not None:
                            callback()
                            continue
                        task = self.waiting.pop(fd, None)
                        if task is not None:
                            trio.lowlevel.reschedule(task)
                        else:
                            self.signalled.add(fd)
                    if len(events) < 512:
                        break
    return SharedEpoll()


def run_websockets_shared_epoll(callbacks):
    import trio
    from websockets.frames import Opcode
    from websockets.http11 import Request
    from websockets.server import ServerProtocol
    poller = _shared_epoll()

    def pump(fd_sock, p):
        """Reads what the kernel has, echoes it; False once the connection has ended."""
        while True:
            try:
                data = fd_sock.recv(65536)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data:
                p.receive_eof()
            else:
                p.receive_data(data)
            for ev in p.events_received():
                if isinstance(ev, Request):
                    p.send_response(p.accept(ev))
                elif ev.opcode is Opcode.TEXT:
                    p.send_text(ev.data)
            out = p.data_to_send()
            if out:
                try:
                    fd_sock.send(b"".join(out))  # the echo is small: the kernel takes it whole
                except OSError:
                    return False
            if not data:
                return False

    async def handler(stream):
        fd_sock = stream.socket._sock
        fd = fd_sock.fileno()
        p = ServerProtocol(max_size=2 ** 20)
        try:
            if callbacks:
                ended = trio.Event()

                def on_readable():
                    if not pump(fd_sock, p):
                        poller.unregister(fd); ended.set()
                poller.register(fd, on_readable)
                on_readable()
                await ended.wait()
            else:
                poller.register(fd)
                while pump(fd_sock, p):
                    await poller.wait_readable(fd)
        finally:
            poller.unregister(fd)
            await stream.aclose()

    async def main():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poller.run)
            await trio.serve_tcp(handler, PORT, host="127.0.0.1", backlog=1024)
    trio.run(main)


# ---------------------------------------------------------------- asyncio websockets / picows
def run_asyncio_websockets(use_uvloop):
    import asyncio

    from websockets.asyncio.server import serve

    async def echo(ws):
        async for msg in ws:
            await ws.send(msg)

    async def main():
        async with serve(echo, "127.0.0.1", PORT, compression=None, backlog=1024,
                         ping_interval=None):
            await asyncio.Future()
    if use_uvloop:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def run_picows():

    import uvloop
    from picows import WSListener, WSMsgType, ws_create_server

    class Echo(WSListener):
        def on_ws_connected(self, transport):
            self.t = transport

        def on_ws_frame(self, transport, frame):
            if frame.msg_type == WSMsgType.TEXT:
                transport.send(WSMsgType.TEXT, frame.get_payload_as_memoryview())
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code()); transport.disconnect()

    async def main():
        srv = await ws_create_server(lambda r: Echo(), "127.0.0.1", PORT, backlog=1024)
        await srv.serve_forever()
    uvloop.run(main())


if __name__ == "__main__":
    v = VARIANT
    if v == "a": run_hypercorn(starlette_app())
    elif v == "b": run_hypercorn(raw_asgi)
    elif v == "c": run_wsproto()
    elif v == "d": run_websockets_sansio()
    elif v == "f": run_handrolled()
    elif v == "g": run_websockets_rawsocket()
    elif v == "h": run_websockets_shared_epoll(callbacks=False)
    elif v == "i": run_websockets_shared_epoll(callbacks=True)
    elif v == "e1": run_asyncio_websockets(False)
    elif v == "e2": run_asyncio_websockets(True)
    elif v == "e3": run_picows()
    else: sys.exit("unknown variant")

"""WebSocket connections under Trio, on `websockets`' sans-I/O protocol (RFC 6455 framing, handshakes and
the closing handshake are the library's; this package only moves bytes).

Why not trio-websocket or an ASGI server for the audio sockets: a call carries ~100 WebSocket messages a
second each way, and their per-message cost (a reader task and a channel hop per message, or an ASGI
server's protocol stack) was most of our CPU (`benchmarks/websocket_stacks/README.md`). Here a message
costs one wake-up (`byte_io`: sockets used directly, waiting on one epoll per run, `read_reactor`; TLS
records opened and sealed in memory on the same socket).

    websocket = await accept_websocket(stream, head, authorize=check)   # server side, after routing
    websocket = await connect_websocket("ws://…", headers)               # client side
    frame = await websocket.receive()    # str (text), bytes (binary) or None once closed
    await websocket.send_text(text)      # waits for room; raises WebSocketClosed once closed
    websocket.post_text(text)            # never waits: written now, or queued in order for a flusher
    await websocket.close(1000)          # idempotent, bounded
    websocket.keep_alive(15.0)           # ping every 15 s; a peer that misses a ping's answer is lost

One task receives at a time; any number of tasks may send (frames never interleave).

Messages taken without a wake-up: `websocket.take_messages(take)` makes `take(message) -> bool` see each
message first; those it takes (True) are consumed, the others come from `receive()`, in order. The
reactor calls it (`ws://` and `wss://` alike) while the receiving task waits in `receive()` with nothing
queued, so the commonest messages cost no task wake-up (a third of a message's cost, variant i in
`benchmarks/websocket_stacks/README.md`); without epoll `receive()` calls it. A `take` that
refuses a message (or raises in the reactor) gets that message, and every later one, delivered by
`receive()` as usual, so order holds. `await websocket.serve(on_message)` hands every message to one
function that way. What `take` sends, it posts (`post_text`): it runs where no one may wait.
"""

from __future__ import annotations

import base64
import logging
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from typing import cast
from urllib.parse import unquote, urlsplit

import trio
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidState, InvalidURI, ProtocolError
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Protocol, State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from bridge.websocket.byte_io import ByteIO, PlainSocketIO, TlsSocketIO, plain_socket_of

__all__ = [
    "CLOSE_TIMEOUT_S",
    "ProxyRefused",
    "WebSocket",
    "WebSocketClosed",
    "WebSocketRejected",
    "accept_websocket",
    "connect_websocket",
]

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 2.0
# Reads the fast path makes per readiness event before it wakes the task with the rest (fairness).
_FAST_READS_PER_EVENT = 4


class WebSocketClosed(Exception):
    """A send on a closed connection. `code` and `reason` say how it closed (1006: no close frame)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"websocket closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class WebSocketRejected(Exception):
    """The server answered the upgrade with something other than 101 (or not with HTTP at all)."""

    def __init__(self, status_code: int | None, body: bytes, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.body = body


# --------------------------------------------------------------------------- the connection


class WebSocket:
    """An open WebSocket (either side). See the module docstring."""

    def __init__(self, protocol: Protocol, io: ByteIO, *, request: Request | None = None) -> None:
        self._protocol = protocol
        self._io = io
        self.request = request  # the upgrade request, on the server side
        self._events: deque[Frame] = deque()
        self._fragments: list[bytes] = []
        self._fragment_opcode: Opcode | None = None
        self._eof = False  # the peer's end of stream, or the socket failed
        self._receiving = False
        self._closing = False
        self._close_answered = trio.Event()  # the peer's close frame, or its end of stream, has come
        self._unsent: list[bytes] = []  # protocol output left for the receiving task or a flusher to write
        self._flush_scheduled = False
        self._take: Callable[[str | bytes], bool] | None = None
        self._refused: str | bytes | None = None  # the message `take` refused in the reactor, for receive()
        self._pong_seen = False  # a pong came since keep_alive's last ping
        self._keepalive = trio.CancelScope()  # cancelled by close(): the keepalive task ends with the socket

    # ---- messages taken without a wake-up (see the module docstring)

    def take_messages(self, take: Callable[[str | bytes], bool] | None) -> None:
        """From now on `take` sees every message first (None: stop); receive() returns those it refuses."""
        self._take = take
        self._io.set_fast_path(None if take is None else self._on_readable_now)

    async def serve(self, on_message: Callable[[str | bytes], None]) -> None:
        """Hand every message to `on_message`, in order, until the connection closes."""

        def take(message: str | bytes) -> bool:
            on_message(message)
            return True

        self.take_messages(take)
        try:
            while (message := await self.receive()) is not None:
                on_message(message)  # one it raised on in the reactor: it raises again here, in the task
        finally:
            self.take_messages(None)

    def _taken(self, message: str | bytes) -> bool:
        take = self._take
        return take is not None and take(message)

    def _on_readable_now(self) -> bool:
        """The reactor's call when the socket became readable while its task waits in receive(): read what
        the kernel has and give complete messages to `take`. True: all taken (the task keeps waiting);
        False: the task is woken for the rest (queued in order) or to read itself."""
        take = self._take
        if take is None or not self._receiving or self._closing or self._events or self._ended:
            return False
        if self._unsent or self._refused is not None or not self._io.can_send_now():
            return False
        io: PlainSocketIO = self._io  # type: ignore[assignment]  # only a socket's reactor calls this
        protocol = self._protocol
        for _ in range(_FAST_READS_PER_EVENT):
            data = io.recv_now()
            if data is None:
                return True
            if data:
                protocol.receive_data(data)
            else:
                protocol.receive_eof()
                self._eof = True
            events = _frames(protocol)
            for index, frame in enumerate(events):
                if frame.opcode is Opcode.PONG:
                    self._pong_seen = True
                    continue
                if frame.opcode is Opcode.PING:
                    continue  # the protocol answered it already (flushed below)
                message = _whole_message(frame)
                if message is None:  # for receive() to assemble (a fragment, bad UTF-8, a close)
                    self._events.extend(events[index:])
                    break
                try:
                    taken = take(message)
                except Exception:  # the task gets the message and fails where it would have
                    log.exception("websocket take failed in the read reactor; the receiving task takes over")
                    taken = False
                if not taken:
                    self._refused = message
                    self._events.extend(events[index + 1 :])
                    break
            flushed = self._flush_now()
            if self._events or self._refused is not None or not flushed or self._ended:
                io.hand_over()
                return False
            # A short read took all the kernel had: what comes later raises a new edge, so the read that
            # would fail (a syscall and an exception) is skipped. Not after the peer's FIN: no edge follows.
            if io.took_all_there_was() and not io.peer_hung_up():
                return True
        io.hand_over()  # more may be waiting: the task reads the rest
        return False

    # ---- keepalive

    def keep_alive(self, interval_s: float) -> None:
        """Ping the peer every `interval_s`; one that has not answered a ping by the next is taken for dead:
        the connection ends as dropped (1006), so `receive()` returns None within 2 × interval_s of the
        peer's last sign of life. Pongs are seen by the task in `receive()`: keep one receiving. Runs until
        the connection ends."""
        trio.lowlevel.spawn_system_task(self._keep_alive, interval_s, name="websocket keepalive")

    async def _keep_alive(self, interval_s: float) -> None:
        pinged = False
        with self._keepalive:
            while True:
                await trio.sleep(interval_s)
                if self._ended or self._closing:
                    return
                if pinged and not self._pong_seen:
                    log.warning("websocket peer answered no ping within %g s: the connection is lost", interval_s)
                    self._eof = True
                    self._io.close()  # the receiving task wakes to the end of the stream
                    return
                self._pong_seen, pinged = False, True
                try:
                    self._protocol.send_ping(b"keepalive")
                except InvalidState:
                    return
                self._write_soon()

    # ---- sends that never wait

    def post_text(self, text: str) -> None:
        """Send one text message without waiting: written at once when the socket has room, else queued,
        ahead of any later send, for a flusher task. Raises WebSocketClosed once closing or closed."""
        if self._ended:
            raise WebSocketClosed(*self._close_code_and_reason())
        try:
            self._protocol.send_text(text.encode())
        except InvalidState:
            raise WebSocketClosed(*self._close_code_and_reason()) from None
        self._write_soon()

    def post_texts(self, texts: Sequence[str]) -> None:
        """post_text for several messages, in order, with one write."""
        if self._ended:
            raise WebSocketClosed(*self._close_code_and_reason())
        send = self._protocol.send_text
        try:
            for text in texts:
                send(text.encode())
        except InvalidState:
            raise WebSocketClosed(*self._close_code_and_reason()) from None
        self._write_soon()

    def _write_soon(self) -> None:
        if not self._flush_now() and not self._flush_scheduled:
            self._flush_scheduled = True
            trio.lowlevel.spawn_system_task(self._flush_later, name="websocket flush")

    async def _flush_later(self) -> None:
        self._flush_scheduled = False
        await self._flush()

    def _flush_now(self) -> bool:
        """Write the protocol's output without waiting; False: it was left in `_unsent` (an end of stream,
        or a send under way)."""
        chunks = self._unsent + self._protocol.data_to_send()
        self._unsent = []
        if not chunks:
            return True
        if chunks[-1] == b"" or not self._io.can_send_now():
            self._unsent = chunks
            return False
        try:
            self._io.send_now(b"".join(chunks))
        except OSError:
            self._eof = True
            self._io.close()
        return True

    @property
    def _ended(self) -> bool:
        """No more messages will come: end of stream, or a close frame received, sent or forced."""
        return self._eof or self._protocol.state is not State.OPEN

    @property
    def closed(self) -> tuple[int, str] | None:
        """(code, reason) once the connection is closing or closed, None while it is open."""
        return self._close_code_and_reason() if self._ended else None

    def _close_code_and_reason(self) -> tuple[int, str]:
        # The peer's close frame, else ours (e.g. 1009 for a message over the limit), else 1006.
        close = self._protocol.close_rcvd or self._protocol.close_sent
        return (1006, "") if close is None else (int(close.code), close.reason)

    async def receive(self) -> str | bytes | None:
        """The next message: str for text, bytes for binary; None once the connection is closed.
        Pings are answered and the closing handshake is completed on the way."""
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this websocket")
        self._receiving = True
        try:
            while True:
                refused, self._refused = self._refused, None
                if refused is not None:  # the reactor's `take` left it, and what came after it, to this task
                    return refused
                events = self._events
                while events:
                    message = self._assemble(events.popleft())
                    if message is not None and not self._taken(message):
                        return message
                if self._ended and not self._awaiting_close_answer:
                    await self._flush()  # e.g. the 1007 close frame that _assemble queued
                    return None
                await self._read_once()
        finally:
            self._receiving = False

    def _assemble(self, frame: Frame) -> str | bytes | None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if not frame.fin:
                self._fragment_opcode, self._fragments = opcode, [bytes(frame.data)]
                return None
            data = frame.data
        elif opcode is Opcode.CONT:
            self._fragments.append(bytes(frame.data))
            if not frame.fin:
                return None
            opcode, data = self._fragment_opcode or Opcode.BINARY, b"".join(self._fragments)
            self._fragments, self._fragment_opcode = [], None
        else:
            if opcode is Opcode.PONG:
                self._pong_seen = True
            return None  # ping, pong, close: the protocol has handled them
        if opcode is Opcode.BINARY:
            return bytes(data)
        try:
            return bytes(data).decode()
        except UnicodeDecodeError:
            self._protocol.fail(1007, "invalid UTF-8 in a text message")
            self._drop_events()
            return None

    def _drop_events(self) -> None:
        self._events.clear()
        self._fragments, self._fragment_opcode = [], None

    async def _read_once(self) -> None:
        data = await self._io.receive_some()
        protocol = self._protocol
        if data is not None:  # None: the fast path read, and queued what it did not handle
            if data:
                protocol.receive_data(data)
            else:
                protocol.receive_eof()
                self._eof = True
            self._events.extend(_frames(protocol))
        await self._flush()
        if self._eof or protocol.close_rcvd is not None:
            self._close_answered.set()

    @property
    def _awaiting_close_answer(self) -> bool:
        # close() sent our close frame and waits for the peer's: the task that reads keeps reading, so the
        # answer is consumed and the socket closes cleanly (closing it with data unread resets it).
        return self._closing and not self._close_answered.is_set()

    async def _flush(self) -> None:
        """Write what the protocol has queued (messages, pongs, close frames); b"" means end of stream."""
        chunks = self._unsent + self._protocol.data_to_send()
        self._unsent = []
        if not chunks:
            return
        end_of_stream = chunks[-1] == b""
        data = b"".join(chunks)
        try:
            if data:
                await self._io.send_all(data)
            if end_of_stream:
                await self._io.send_eof()
        except OSError:
            self._eof = True
            self._io.close()

    async def send_text(self, text: str) -> None:
        """Send one text message; raises WebSocketClosed once the connection is closing or closed."""
        await self._send(Opcode.TEXT, text.encode())

    async def send_texts(self, texts: Sequence[str]) -> None:
        """Send several text messages, in order, with one write to the socket."""
        await self._send(Opcode.TEXT, *(text.encode() for text in texts))

    async def send_binary(self, data: bytes) -> None:
        await self._send(Opcode.BINARY, data)

    async def _send(self, opcode: Opcode, *messages: bytes) -> None:
        protocol = self._protocol
        if self._ended:
            raise WebSocketClosed(*self._close_code_and_reason())
        send = protocol.send_text if opcode is Opcode.TEXT else protocol.send_binary
        try:
            for data in messages:
                send(data)
        except InvalidState:
            raise WebSocketClosed(*self._close_code_and_reason()) from None
        await self._flush()
        if self._eof:
            raise WebSocketClosed(*self._close_code_and_reason())

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start (or finish) the closing handshake and release the socket. Idempotent; shielded and
        bounded by CLOSE_TIMEOUT_S, so it completes in a cancelled task and with a silent peer."""
        if self._closing:
            return
        self._closing = True
        self._keepalive.cancel()
        protocol = self._protocol
        with trio.CancelScope(shield=True):
            try:
                with trio.move_on_after(CLOSE_TIMEOUT_S):
                    if not self._ended:
                        try:
                            protocol.send_close(code, reason)
                        except (InvalidState, ProtocolError):
                            pass
                        await self._flush()
                    # Wait for the peer's answering close frame: read it here, or let the reading task.
                    while protocol.close_sent is not None and not self._close_answered.is_set():
                        if self._receiving:  # re-checked now and then: that task may stop reading
                            with trio.move_on_after(0.05):
                                await self._close_answered.wait()
                        else:
                            await self._read_once()
                            self._events.clear()
            finally:
                self._io.close()


def _frames(protocol: Protocol) -> list[Frame]:
    """What the protocol received: after the handshake, frames only."""
    return cast(list[Frame], protocol.events_received())


def _whole_message(frame: Frame) -> str | bytes | None:
    """An unfragmented text (valid UTF-8) or binary message; None for anything receive() must assemble."""
    if not frame.fin:
        return None
    if frame.opcode is Opcode.TEXT:
        try:
            return frame.data.decode()  # type: ignore[union-attr]  # websockets' frames carry bytes
        except UnicodeDecodeError:
            return None
    if frame.opcode is Opcode.BINARY:
        return bytes(frame.data)
    return None


# --------------------------------------------------------------------------- server side


async def accept_websocket(
    stream: trio.SocketStream,
    head: bytes,
    *,
    authorize: Callable[[Request], bool],
    max_message_bytes: int,
) -> WebSocket | None:
    """Complete the opening handshake of an upgrade whose head (and any bytes after it) was already read
    from `stream`. `authorize(request)` False answers 403. Returns None (socket closed) when refused or
    malformed. The stream is taken over either way."""
    io = PlainSocketIO(plain_socket_of(stream))
    protocol = ServerProtocol(max_size=max_message_bytes)
    protocol.receive_data(head)
    events = protocol.events_received()
    request = events[0] if events and isinstance(events[0], Request) else None
    websocket = WebSocket(protocol, io, request=request)
    if request is None:
        # An incomplete head, or one websockets could not parse (it queued only an EOF then): answer 400.
        protocol.data_to_send()
        try:
            await io.send_all(protocol.reject(400, "Bad Request\n").serialize())
        except OSError:
            pass
        io.close()
        return None
    response = protocol.accept(request) if authorize(request) else protocol.reject(403, "Forbidden\n")
    protocol.send_response(response)
    await websocket._flush()
    if response.status_code != 101 or protocol.state is not State.OPEN:
        io.close()
        return None
    # Frames the client sent right behind its request head were parsed with it.
    websocket._events.extend(ev for ev in events[1:] if isinstance(ev, Frame))
    return websocket


# --------------------------------------------------------------------------- client side


class ProxyRefused(ConnectionError):
    """The HTTP proxy answered CONNECT with something else than 2xx (or not HTTP at all)."""


_PROXY_ANSWER_LIMIT = 16 * 1024


async def _tunnel(proxy: str, host: str, port: int) -> trio.SocketStream:
    """A TCP stream to host:port through an HTTP proxy's CONNECT tunnel (what HTTPS_PROXY means)."""
    parts = urlsplit(proxy)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"not an http:// proxy URL: {proxy!r}")
    stream = await trio.open_tcp_stream(parts.hostname, parts.port or 80)
    try:
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            head += f"Proxy-Authorization: Basic {base64.b64encode(credentials).decode()}\r\n"
        await stream.send_all((head + "\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = await stream.receive_some(4096)
            if not data or len(answer) > _PROXY_ANSWER_LIMIT:
                raise ProxyRefused(f"the proxy {parts.hostname} closed the connection without answering CONNECT")
            answer += data
        status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
        status = status_line.split(" ", 2)
        if len(status) < 2 or not status[0].startswith("HTTP/") or not status[1].startswith("2"):
            raise ProxyRefused(f"the proxy {parts.hostname} refused CONNECT {target}: {status_line}")
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


async def connect_websocket(
    url: str,
    headers: Sequence[tuple[str, str]] = (),
    *,
    max_message_bytes: int,
    ssl_context: ssl.SSLContext | None = None,
    proxy: str | None = None,
) -> WebSocket:
    """Open a ws:// or wss:// connection. Raises WebSocketRejected (not 101, or not HTTP), OSError
    (cannot connect: `ssl.SSLCertVerificationError` for a refused certificate, `socket.gaierror` for a name
    that does not resolve, ...) or ValueError (not a WebSocket URL). Bound it with a Trio timeout.
    `ssl_context`: build one per process and pass it to every connection (building one blocks ~20 ms).
    `proxy`: an http:// proxy reached with CONNECT (ProxyRefused when it will not tunnel)."""
    try:
        uri = parse_uri(url)
    except InvalidURI as error:
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}") from error
    protocol = ClientProtocol(uri, max_size=max_message_bytes)
    if proxy is None:
        tcp = await trio.open_tcp_stream(uri.host, uri.port)
    else:
        tcp = await _tunnel(proxy, uri.host, uri.port)
    io: ByteIO
    if uri.secure:
        tls = TlsSocketIO(plain_socket_of(tcp), ssl_context or ssl.create_default_context(), server_hostname=uri.host)
        try:
            await tls.handshake()  # here, so that a refused certificate is raised as itself
        except BaseException:
            tls.close()
            raise
        io = tls
    else:
        io = PlainSocketIO(plain_socket_of(tcp))
    websocket = WebSocket(protocol, io)
    try:
        request = protocol.connect()
        for name, value in headers:
            request.headers[name] = value
        protocol.send_request(request)
        await websocket._flush()
        response: Response | None = None
        while response is None:
            data = await io.receive_some() or b""
            if data:
                protocol.receive_data(data)
            else:
                protocol.receive_eof()
            for event in protocol.events_received():
                if isinstance(event, Response):
                    response = event
                elif isinstance(event, Frame):
                    websocket._events.append(event)
            if response is None and not data:
                raise WebSocketRejected(None, b"", "the server closed the connection during the handshake")
        if protocol.handshake_exc is not None or protocol.state is not State.OPEN:
            status = response.status_code
            raise WebSocketRejected(
                status, bytes(response.body or b""), f"handshake rejected with HTTP {status}: {protocol.handshake_exc}"
            )
        await websocket._flush()  # what the protocol queued for frames that came with the 101 (pong, close)
    except BaseException:
        io.close()
        raise
    return websocket


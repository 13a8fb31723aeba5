"""WebSocket connections under Trio, on `websockets`' sans-I/O protocol (RFC 6455 framing, handshakes and
the closing handshake are the library's; this module only moves bytes).

Why not trio-websocket or an ASGI server for the audio sockets: a call carries ~100 WebSocket messages a
second each way, and their per-message cost (a reader task and a channel hop per message, or an ASGI
server's protocol stack) was most of our CPU (`benchmarks/websocket_stacks/README.md`). Here a message
costs one wake-up: on a plain TCP socket we call `recv`/`send` directly and only wait on the socket when
the kernel has nothing to give (on one edge-triggered epoll per run, `_ReadReactor`) or no room
(`trio.lowlevel.wait_writable`); TLS streams (`wss://` to OpenAI) go through `trio.SSLStream` as usual.

    websocket = await accept_websocket(stream, head, authorize=check)   # server side, after routing
    websocket = await connect_websocket("ws://…", headers)               # client side
    frame = await websocket.receive()    # str (text), bytes (binary) or None once closed
    await websocket.send_text(text)      # raises WebSocketClosed once closed
    await websocket.close(1000)          # idempotent, bounded

One task receives at a time; any number of tasks may send (frames never interleave).

The fast path (plain sockets only): `websocket.handle_now(handler)` lets the reactor hand complete messages
to `handler(message) -> bool` synchronously while the receiving task waits in `receive()` with nothing
queued, so the commonest messages cost no task wake-up (a third of a message's cost, variant i in
`benchmarks/websocket_stacks/README.md`). A handler that returns False (or raises) gets that message, and
every later one, delivered by `receive()` as usual, so order holds. A handler sends with `send_text_now` /
`send_texts_now` after `can_send_now()` said yes (before it changed any state).
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol as TypingProtocol

import outcome
import trio
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidState, InvalidURI, ProtocolError
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Protocol, State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

__all__ = [
    "HTTP_HEAD_LIMIT",
    "WebSocket",
    "WebSocketClosed",
    "WebSocketRejected",
    "accept_websocket",
    "connect_websocket",
    "is_websocket_upgrade",
    "read_http_head",
    "read_request_line",
]

log = logging.getLogger(__name__)

HTTP_HEAD_LIMIT = 16 * 1024  # the head of a Twilio stream upgrade is < 2 KiB
_RECEIVE_BYTES = 65536
CLOSE_TIMEOUT_S = 2.0
# A peer that takes no bytes for this long is gone: the connection is dropped rather than the sender held.
SEND_STALL_TIMEOUT_S = 10.0
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


# --------------------------------------------------------------------------- byte transports


class _ReadReactor:
    """One edge-triggered epoll for every plain socket's reads in a Trio run. A socket is registered once;
    Trio's own `wait_readable` re-arms a one-shot registration (an `epoll_ctl`) on every wait, which is a
    sixth of the cost of a message (`benchmarks/websocket_stacks/README.md`, variant h). Its task waits on
    the epoll's fd and wakes the tasks whose sockets became readable."""

    _BATCH = 512

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._waiting: dict[int, trio.lowlevel.Task] = {}
        # Sockets with an edge since their task last looked: data may wait (or a spurious wake, harmless).
        self._ready: set[int] = set()
        # Sockets the peer closed or reset: readable for good. A read returns the data before the end of
        # the stream, and no new edge comes for the end that is still pending, so it must not be waited for.
        self._hung_up: set[int] = set()
        # Called when a socket whose task waits becomes readable; True: handled, the task keeps waiting.
        self._fast_paths: dict[int, Callable[[], bool]] = {}

    def set_fast_path(self, fd: int, on_readable: Callable[[], bool] | None) -> None:
        if on_readable is None:
            self._fast_paths.pop(fd, None)
        else:
            self._fast_paths[fd] = on_readable

    def register(self, fd: int) -> None:
        flags = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET
        try:
            self._epoll.register(fd, flags)
        except FileExistsError:  # a closed socket's number, reused before epoll dropped it
            self._epoll.modify(fd, flags)
        self._ready.add(fd)

    def hung_up(self, fd: int) -> bool:
        return fd in self._hung_up

    def unregister(self, fd: int) -> None:
        """Before the socket closes (its number may be reused at once); its waiting task gets
        ClosedResourceError, as `trio.lowlevel.notify_closing` would give it."""
        self._ready.discard(fd)
        self._hung_up.discard(fd)
        self._fast_paths.pop(fd, None)
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):
            pass
        task = self._waiting.pop(fd, None)
        if task is not None:
            trio.lowlevel.reschedule(task, outcome.Error(trio.ClosedResourceError("the socket was closed")))

    async def wait_readable(self, fd: int) -> None:
        ready = self._ready
        if fd in self._hung_up:
            await trio.lowlevel.checkpoint()
            return
        if fd in ready:
            await trio.lowlevel.checkpoint()
            ready.discard(fd)  # after the checkpoint: the read that follows sees any data that came meanwhile
            return
        waiting = self._waiting
        waiting[fd] = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            waiting.pop(fd, None)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def run(self) -> None:
        epoll, waiting, ready, fast_paths = self._epoll, self._waiting, self._ready, self._fast_paths
        hung_up = self._hung_up
        reschedule = trio.lowlevel.reschedule
        try:
            while True:
                await trio.lowlevel.wait_readable(epoll.fileno())
                while True:
                    events = epoll.poll(0, self._BATCH)
                    for fd, flags in events:
                        if flags & _HANG_UP_FLAGS:
                            hung_up.add(fd)
                        task = waiting.get(fd)
                        if task is None:
                            ready.add(fd)
                            continue
                        on_readable = fast_paths.get(fd)
                        if on_readable is not None and on_readable():
                            continue
                        # The fast path may have closed the socket (and woken the task) already.
                        if waiting.get(fd) is task:
                            del waiting[fd]
                            reschedule(task)
                    if len(events) < self._BATCH:
                        break
        finally:
            epoll.close()


_HANG_UP_FLAGS = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR if hasattr(select, "epoll") else 0
_READ_REACTOR: trio.lowlevel.RunVar[_ReadReactor] = trio.lowlevel.RunVar("websocket_read_reactor")


def _read_reactor() -> _ReadReactor | None:
    """This run's reactor, started on first use; None where there is no epoll (Trio's waits then)."""
    if not hasattr(select, "epoll"):
        return None
    try:
        return _READ_REACTOR.get()
    except LookupError:
        reactor = _ReadReactor()
        trio.lowlevel.spawn_system_task(reactor.run, name="websocket read reactor")
        _READ_REACTOR.set(reactor)
        return reactor


class _ByteIO(TypingProtocol):
    async def receive_some(self) -> bytes | None: ...  # None: nothing read, the fast path queued messages
    async def send_all(self, data: bytes) -> None: ...
    async def send_eof(self) -> None: ...
    def close(self) -> None: ...
    def can_send_now(self) -> bool: ...
    def send_now(self, data: bytes) -> None: ...


class _PlainSocketIO:
    """A connected non-blocking TCP socket, used directly (one wake-up per message)."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()
        self._reactor = _read_reactor()
        if self._reactor is not None:
            self._reactor.register(self._fd)
        self._send_lock = trio.StrictFIFOLock()
        # Bytes send_now could not write at once; they go out before anything else (see _send_locked).
        self._pending = bytearray()
        # After a read that did not fill the buffer the kernel has most likely nothing more: wait for the
        # socket first instead of a read that fails (a syscall and an exception per message).
        self._drained = False
        self._handed_over = False  # the fast path read and queued messages for the waiting task

    def set_fast_path(self, on_readable: Callable[[], bool] | None) -> bool:
        """Install the reactor's call for this socket; False without a reactor or once closed."""
        if self._reactor is None or self._sock.fileno() < 0:
            return False
        self._reactor.set_fast_path(self._fd, on_readable)
        return True

    def hand_over(self) -> None:
        """The fast path read from the socket and queued what the waiting task must see."""
        self._handed_over = True

    def peer_hung_up(self) -> bool:
        return self._reactor is not None and self._reactor.hung_up(self._fd)

    def recv_now(self) -> bytes | None:
        """A read that does not wait: None when the kernel has nothing, b"" at the end of the stream."""
        try:
            return self._sock.recv(_RECEIVE_BYTES)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    async def receive_some(self) -> bytes | None:
        sock = self._sock
        while True:
            if self._drained:
                try:
                    if self._reactor is not None:
                        await self._reactor.wait_readable(self._fd)
                    else:
                        await trio.lowlevel.wait_readable(sock)
                except trio.ClosedResourceError:  # closed by another task
                    return b""
                if self._handed_over:
                    self._handed_over = False
                    self._drained = False  # the fast path may have stopped before the kernel was empty
                    return None
            else:
                await trio.lowlevel.checkpoint()  # data was waiting: let the other tasks run first
            try:
                data = sock.recv(_RECEIVE_BYTES)
            except BlockingIOError:
                self._drained = True
                continue
            except OSError:  # reset, or closed under us: the stream has ended
                return b""
            self._drained = len(data) < _RECEIVE_BYTES
            return data

    def can_send_now(self) -> bool:
        return not self._send_lock.locked() and not self._pending and self._sock.fileno() >= 0

    def send_now(self, data: bytes) -> None:
        """Write without waiting (only after can_send_now()); what the kernel does not take now is kept in
        order and written by a flusher task, ahead of any later send. Raises OSError if the socket failed."""
        try:
            sent = self._sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            self._pending += memoryview(data)[sent:]
            trio.lowlevel.spawn_system_task(self._flush_pending, name="websocket pending flush")

    async def _flush_pending(self) -> None:
        try:
            async with self._send_lock:
                await self._send_locked(b"")
        except OSError:
            pass  # the connection failed: its reader sees the end of the stream

    async def send_all(self, data: bytes) -> None:
        lock = self._send_lock
        begun = False
        if not lock.locked() and not self._pending:
            try:
                sent = self._sock.send(data)
            except BlockingIOError:
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
            begun = sent > 0
        # Part of a frame may be on the wire already: finish it even if the sender is cancelled, or the
        # stream is corrupt; a peer that takes nothing for SEND_STALL_TIMEOUT_S is cut off instead.
        # Taking the lock is shielded too then (it is free: nothing was awaited since the check above).
        with trio.CancelScope(shield=begun):
            async with lock:
                await self._send_locked(data)

    async def _send_locked(self, data: bytes) -> None:
        """With the send lock held: the pending bytes, then `data`, all of it (shielded, but bounded)."""
        if self._pending:
            data = bytes(self._pending) + data
            self._pending.clear()
        with trio.CancelScope(shield=True), trio.move_on_after(SEND_STALL_TIMEOUT_S) as stalled:
            view = memoryview(data)
            while view:
                if self._sock.fileno() < 0:
                    raise BrokenPipeError("the connection was closed")
                try:
                    await trio.lowlevel.wait_writable(self._sock)
                    view = view[self._sock.send(view):]
                except BlockingIOError:
                    continue
                except trio.ClosedResourceError:
                    raise BrokenPipeError("the connection was closed") from None
        if stalled.cancelled_caught:
            self.close()
            raise BrokenPipeError("the peer took no data for too long")

    async def send_eof(self) -> None:
        if self._pending:  # the end of the stream comes after every byte
            async with self._send_lock:
                await self._send_locked(b"")
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        if self._sock.fileno() >= 0:
            if self._reactor is not None:
                self._reactor.unregister(self._fd)
            trio.lowlevel.notify_closing(self._sock)
            self._sock.close()


class _StreamIO:
    """Any Trio stream (TLS to OpenAI)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._send_lock = trio.StrictFIFOLock()

    async def receive_some(self) -> bytes:
        try:
            return await self._stream.receive_some(_RECEIVE_BYTES)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""

    async def send_all(self, data: bytes) -> None:
        async with self._send_lock:
            try:
                with trio.CancelScope(shield=True), trio.move_on_after(SEND_STALL_TIMEOUT_S) as stalled:
                    await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
                raise BrokenPipeError(str(error)) from None
            if stalled.cancelled_caught:
                self.close()
                raise BrokenPipeError("the peer took no data for too long")

    async def send_eof(self) -> None:
        pass  # TLS has no half-close; the close that follows ends it

    def can_send_now(self) -> bool:
        return False  # a TLS record is written by trio.SSLStream, which only awaits

    def send_now(self, data: bytes) -> None:
        raise RuntimeError("a TLS stream cannot send without waiting (can_send_now() is False)")

    def close(self) -> None:
        transport = getattr(self._stream, "transport_stream", self._stream)
        sock = getattr(transport, "socket", None)
        if sock is not None:
            sock.close()  # wakes a task blocked on it with ClosedResourceError


def _plain_socket_of(stream: trio.SocketStream) -> socket.socket:
    """Take the stdlib socket out of a Trio SocketStream (the stream must not be used afterwards)."""
    trio_socket = stream.socket
    return socket.socket(trio_socket.family, trio_socket.type, trio_socket.proto, fileno=trio_socket.detach())


# --------------------------------------------------------------------------- the connection


class WebSocket:
    """An open WebSocket (either side). See the module docstring."""

    def __init__(self, protocol: Protocol, io: _ByteIO, *, request: Request | None = None) -> None:
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
        self._unsent: list[bytes] = []  # protocol output the fast path left for the task to write
        self._handler: Callable[[str | bytes], bool] | None = None

    # ---- the fast path (see the module docstring)

    def handle_now(self, handler: Callable[[str | bytes], bool] | None) -> bool:
        """Let `handler` take messages synchronously (None: stop). False where this socket has no fast
        path (TLS, or no epoll): every message then comes from receive()."""
        set_fast_path = getattr(self._io, "set_fast_path", None)
        if set_fast_path is None or not set_fast_path(None if handler is None else self._on_readable_now):
            return False
        self._handler = handler
        return True

    def can_send_now(self) -> bool:
        """Whether send_text_now / send_texts_now will write at once (a plain socket, open, no send waiting)."""
        return not self._ended and not self._unsent and self._io.can_send_now()

    def send_text_now(self, text: str) -> None:
        """send_text without waiting; only after can_send_now() (what the kernel does not take now is
        written in order by a flusher task). A failed socket ends the connection, as in send_text."""
        self._protocol.send_text(text.encode())
        self._flush_now()

    def send_texts_now(self, texts: Sequence[str]) -> None:
        send = self._protocol.send_text
        for text in texts:
            send(text.encode())
        self._flush_now()

    def _flush_now(self) -> bool:
        """Write the protocol's output without waiting; False: it was left for the task (an end of stream,
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

    def _on_readable_now(self) -> bool:
        """The reactor's call when the socket became readable while its task waits in receive(): read what
        the kernel has and give complete messages to the handler. True: all handled (the task keeps
        waiting); False: the task is woken for the rest (queued in order) or to read itself."""
        handler = self._handler
        if handler is None or not self._receiving or self._closing or self._events or self._ended:
            return False
        if self._unsent or not self._io.can_send_now():
            return False
        io: _PlainSocketIO = self._io  # type: ignore[assignment]  # handle_now installs only on those
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
            events = protocol.events_received()
            for index, frame in enumerate(events):
                if frame.opcode is Opcode.PING or frame.opcode is Opcode.PONG:
                    continue  # the protocol answered a ping already (flushed below)
                message = _whole_message(frame)
                handled = False
                if message is not None:
                    try:
                        handled = handler(message)
                    except Exception:  # the task gets the message again and fails where it would have
                        log.exception("websocket fast path handler failed; the receiving task takes over")
                if not handled:
                    self._events.extend(events[index:])
                    break
            flushed = self._flush_now()
            if self._events or not flushed or self._ended:
                io.hand_over()
                return False
            # A short read took all the kernel had: what comes later raises a new edge, so the read that
            # would fail (a syscall and an exception) is skipped. Not after the peer's FIN: no edge follows.
            if len(data) < _RECEIVE_BYTES and not io.peer_hung_up():
                return True
        io.hand_over()  # more may be waiting: the task reads the rest
        return False

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
                events = self._events
                while events:
                    message = self._assemble(events.popleft())
                    if message is not None:
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
                self._fragment_opcode, self._fragments = opcode, [frame.data]
                return None
            data = frame.data
        elif opcode is Opcode.CONT:
            self._fragments.append(frame.data)
            if not frame.fin:
                return None
            opcode, data = self._fragment_opcode or Opcode.BINARY, b"".join(self._fragments)
            self._fragments, self._fragment_opcode = [], None
        else:
            return None  # ping, pong, close: the protocol has handled them
        if opcode is Opcode.BINARY:
            return bytes(data)
        try:
            return data.decode()
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
            self._events.extend(protocol.events_received())
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


def _whole_message(frame: Frame) -> str | bytes | None:
    """An unfragmented text (valid UTF-8) or binary message; None for anything receive() must assemble."""
    if not frame.fin:
        return None
    if frame.opcode is Opcode.TEXT:
        try:
            return frame.data.decode()
        except UnicodeDecodeError:
            return None
    if frame.opcode is Opcode.BINARY:
        return bytes(frame.data)
    return None


# --------------------------------------------------------------------------- server side


def read_request_line(head: bytes) -> tuple[bytes, bytes]:
    """(method, target) of an HTTP request head; (b"", b"") if it is not one."""
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return b"", b""
    return parts[0], parts[1]


def is_websocket_upgrade(head: bytes, path: str) -> bool:
    """Whether an HTTP request head asks to upgrade `path` (query aside) to a WebSocket."""
    method, target = read_request_line(head)
    if method != b"GET" or target.split(b"?", 1)[0] != path.encode():
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"upgrade":
            return b"websocket" in value.strip().lower()
    return False


async def read_http_head(stream: trio.SocketStream, *, timeout_s: float) -> bytes:
    """The bytes read until the end of the HTTP head (and whatever came after it), or what came before
    the peer stopped, the limit or the timeout."""
    data = b""
    with trio.move_on_after(timeout_s):
        while b"\r\n\r\n" not in data and len(data) < HTTP_HEAD_LIMIT:
            try:
                chunk = await stream.receive_some(_RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break
            if not chunk:
                break
            data += chunk
    return data


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
    io = _PlainSocketIO(_plain_socket_of(stream))
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


async def connect_websocket(
    url: str,
    headers: Sequence[tuple[str, str]] = (),
    *,
    max_message_bytes: int,
    ssl_context: ssl.SSLContext | None = None,
) -> WebSocket:
    """Open a ws:// or wss:// connection. Raises WebSocketRejected (not 101, or not HTTP), OSError
    (cannot connect) or ValueError (not a WebSocket URL). Bound it with a Trio timeout."""
    try:
        uri = parse_uri(url)
    except InvalidURI as error:
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}") from error
    protocol = ClientProtocol(uri, max_size=max_message_bytes)
    io: _ByteIO
    if uri.secure:
        stream = await trio.open_ssl_over_tcp_stream(
            uri.host, uri.port, ssl_context=ssl_context or ssl.create_default_context(), https_compatible=True
        )
        io = _StreamIO(stream)
    else:
        io = _PlainSocketIO(_plain_socket_of(await trio.open_tcp_stream(uri.host, uri.port)))
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
                status, response.body or b"", f"handshake rejected with HTTP {status}: {protocol.handshake_exc}"
            )
        await websocket._flush()  # what the protocol queued for frames that came with the 101 (pong, close)
    except BaseException:
        io.close()
        raise
    return websocket


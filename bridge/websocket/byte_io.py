"""The bytes under a WebSocket: a plain TCP socket used directly, or any Trio stream (TLS).

On a plain socket a message costs one wake-up: `recv`/`send` are called directly, and the task waits on
the socket only when the kernel has nothing to give (on the run's `read_reactor`) or no room
(`trio.lowlevel.wait_writable`). TLS streams (`wss://` to OpenAI) go through `trio.SSLStream` as usual.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Protocol

import trio

from bridge.websocket.read_reactor import read_reactor

__all__ = ["RECEIVE_BYTES", "SEND_STALL_TIMEOUT_S", "ByteIO", "PlainSocketIO", "StreamIO", "plain_socket_of"]

RECEIVE_BYTES = 65536
# A peer that takes no bytes for this long is gone: the connection is dropped rather than the sender held.
SEND_STALL_TIMEOUT_S = 10.0


class ByteIO(Protocol):
    """What a WebSocket needs of its byte stream."""

    async def receive_some(self) -> bytes | None: ...  # None: nothing read, the fast path queued messages
    async def send_all(self, data: bytes) -> None: ...
    async def send_eof(self) -> None: ...
    def close(self) -> None: ...
    def can_send_now(self) -> bool: ...
    def send_now(self, data: bytes) -> None: ...
    def set_fast_path(self, on_readable: Callable[[], bool] | None) -> None: ...


class PlainSocketIO:
    """A connected non-blocking TCP socket, used directly (one wake-up per message)."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()
        self._reactor = read_reactor()
        if self._reactor is not None:
            self._reactor.register(self._fd)
        self._send_lock = trio.StrictFIFOLock()
        # Bytes send_now could not write at once; they go out before anything else (see _send_locked).
        self._pending = bytearray()
        # After a read that did not fill the buffer the kernel has most likely nothing more: wait for the
        # socket first instead of a read that fails (a syscall and an exception per message).
        self._drained = False
        self._handed_over = False  # the fast path read and queued messages for the waiting task

    def set_fast_path(self, on_readable: Callable[[], bool] | None) -> None:
        """Install the reactor's call for this socket (nothing without a reactor, or once closed)."""
        if self._reactor is not None and self._sock.fileno() >= 0:
            self._reactor.set_fast_path(self._fd, on_readable)

    def hand_over(self) -> None:
        """The fast path read from the socket and queued what the waiting task must see."""
        self._handed_over = True

    def peer_hung_up(self) -> bool:
        return self._reactor is not None and self._reactor.hung_up(self._fd)

    def recv_now(self) -> bytes | None:
        """A read that does not wait: None when the kernel has nothing, b"" at the end of the stream."""
        try:
            return self._sock.recv(RECEIVE_BYTES)
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
                data = sock.recv(RECEIVE_BYTES)
            except BlockingIOError:
                self._drained = True
                continue
            except OSError:  # reset, or closed under us: the stream has ended
                return b""
            self._drained = len(data) < RECEIVE_BYTES
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


class StreamIO:
    """Any Trio stream (TLS to OpenAI)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._send_lock = trio.StrictFIFOLock()

    async def receive_some(self) -> bytes:
        try:
            return bytes(await self._stream.receive_some(RECEIVE_BYTES))
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

    def set_fast_path(self, on_readable: Callable[[], bool] | None) -> None:
        pass  # no reactor reads a TLS stream: its messages are read by the receiving task

    def close(self) -> None:
        transport = getattr(self._stream, "transport_stream", self._stream)
        sock = getattr(transport, "socket", None)
        if sock is not None:
            sock.close()  # wakes a task blocked on it with ClosedResourceError


def plain_socket_of(stream: trio.SocketStream) -> socket.socket:
    """Take the stdlib socket out of a Trio SocketStream (the stream must not be used afterwards)."""
    trio_socket = stream.socket
    return socket.socket(trio_socket.family, trio_socket.type, trio_socket.proto, fileno=trio_socket.detach())

"""The bytes under a WebSocket: a TCP socket used directly, in the clear or through TLS.

On a plain socket a message costs one wake-up: `recv`/`send` are called directly, and the task waits on
the socket only when the kernel has nothing to give (on the run's `read_reactor`) or no room
(`trio.lowlevel.wait_writable`). TLS (`wss://` to OpenAI) keeps that design: `TlsSocketIO` is the same
socket with an `ssl.SSLObject` over memory BIOs, so records are decrypted where the bytes are read (in the
reactor's fast path too) and encrypted where they are sent.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Protocol

import trio

from bridge.websocket.read_reactor import read_reactor

__all__ = [
    "RECEIVE_BYTES", "SEND_STALL_TIMEOUT_S", "ByteIO", "PlainSocketIO", "TlsSocketIO", "plain_socket_of",
]

log = logging.getLogger(__name__)

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

    # Whether what `_sealed` returns must reach the wire once made, even from a cancelled sender (TLS records
    # carry sequence numbers: one dropped corrupts the stream).
    _SEALS_RECORDS = False

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
        self._short_read = False  # the last recv_now took all the kernel had
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

    def took_all_there_was(self) -> bool:
        """The last recv_now emptied the kernel's buffer (a short read) and left nothing to return: what
        comes later raises a new readiness edge, so another read now would only fail."""
        return self._short_read

    def recv_now(self) -> bytes | None:
        """A read that does not wait: None when the kernel has nothing, b"" at the end of the stream."""
        try:
            data = self._sock.recv(RECEIVE_BYTES)
        except BlockingIOError:
            self._short_read = True
            return None
        except OSError:
            return b""
        self._short_read = len(data) < RECEIVE_BYTES
        return data

    async def receive_some(self) -> bytes | None:
        return await self._receive_raw()

    async def _receive_raw(self) -> bytes | None:
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

    def _sealed(self, data: bytes) -> bytes:
        """What goes on the wire for `data` (TLS: its records)."""
        return data

    def can_send_now(self) -> bool:
        return not self._send_lock.locked() and not self._pending and self._sock.fileno() >= 0

    def send_now(self, data: bytes) -> None:
        """Write without waiting (only after can_send_now()); what the kernel does not take now is kept in
        order and written by a flusher task, ahead of any later send. Raises OSError if the socket failed."""
        self._send_wire_now(self._sealed(data))

    def _send_wire_now(self, data: bytes) -> None:
        if self._send_lock.locked() or self._pending:  # behind what is being sent or waits to be
            sent = 0
        else:
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
        begun = sealed = False
        if not lock.locked() and not self._pending:
            data, sealed = self._sealed(data), True
            try:
                sent = self._sock.send(data)
            except BlockingIOError:
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
            begun = sent > 0 or self._SEALS_RECORDS
            if begun:  # queued now, so that bytes queued while the lock is taken go after it
                self._pending += data
                data = b""
        # Part of a frame may be on the wire already: finish it even if the sender is cancelled, or the
        # stream is corrupt; a peer that takes nothing for SEND_STALL_TIMEOUT_S is cut off instead.
        # Taking the lock is shielded too then (it is free: nothing was awaited since the check above).
        with trio.CancelScope(shield=begun):
            async with lock:
                await self._send_locked(data if sealed else self._sealed(data))

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


class TlsSocketIO(PlainSocketIO):
    """TLS on a plain socket: an `ssl.SSLObject` over memory BIOs, so a message still costs one wake-up.

    Ciphertext is read and written exactly as a plain socket's bytes (the same reactor, fast path, pending
    buffer and send lock); records are opened where they are read and sealed where they are sent, in wire
    order (sealing happens only while nothing else is queued or with the send lock held). Records the TLS
    layer writes by itself (post-handshake messages, close_notify) take the same queue. The stream ends at
    the peer's close_notify, at its TCP end without one (as HTTPS clients accept), or at a TLS error, which
    is logged with its cause. Renegotiation (TLS 1.2 only) is not supported: a write it would hold fails.
    """

    _SEALS_RECORDS = True

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, *, server_hostname: str) -> None:
        super().__init__(sock)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=server_hostname)
        self._handshaken = False
        self._tls_ended = False  # close_notify or a TLS error came: the stream ends after what was opened
        self._close_notify_sent = False

    async def handshake(self) -> None:
        """Raises the TLS layer's error as itself (`ssl.SSLCertVerificationError` for a refused
        certificate or host name), or ConnectionResetError when the peer ends the connection first."""
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                with contextlib.suppress(OSError):
                    self._send_wire_now(self._outgoing.read())  # our alert, so the peer knows why
                raise
            async with self._send_lock:
                await self._send_locked(self._outgoing.read())
            data = await self._receive_raw()
            if not data:
                raise ConnectionResetError("the server closed the connection during the TLS handshake")
            self._incoming.write(data)
        self._handshaken = True
        async with self._send_lock:
            await self._send_locked(self._outgoing.read())

    def _opened(self, data: bytes) -> bytes:
        """The plaintext of every whole record that came (b"" when none is whole yet)."""
        incoming, tls = self._incoming, self._tls
        if data:
            incoming.write(data)
        chunks = []
        while incoming.pending or tls.pending():
            try:
                chunk = tls.read(RECEIVE_BYTES)
            except ssl.SSLWantReadError:  # part of a record, or records without data (session tickets)
                break
            except ssl.SSLError as error:
                log.warning("TLS error from the peer, the connection ends: %s", error)
                self._tls_ended = True
                break
            if not chunk:  # close_notify
                self._tls_ended = True
                break
            chunks.append(chunk)
        if self._outgoing.pending:  # what the TLS layer answers by itself (e.g. a key update)
            with contextlib.suppress(OSError):  # a failed connection: the reader sees its end
                self._send_wire_now(self._outgoing.read())
        return b"".join(chunks)

    def took_all_there_was(self) -> bool:
        return self._short_read and not self._tls_ended

    def recv_now(self) -> bytes | None:
        while not self._tls_ended:
            data = super().recv_now()
            if not data:
                return data
            plaintext = self._opened(data)
            if plaintext:
                return plaintext
            if self._short_read and not self._tls_ended:
                return None  # the rest of a record comes with a new edge
        return b""

    async def receive_some(self) -> bytes | None:
        if self._incoming.pending and (plaintext := self._opened(b"")):  # left behind the handshake
            return plaintext
        while not self._tls_ended:
            data = await self._receive_raw()
            if not data:
                return data
            plaintext = self._opened(data)
            if plaintext:
                return plaintext
        return b""

    def _sealed(self, data: bytes) -> bytes:
        if not data:
            return data
        try:
            self._tls.write(data)  # whole: the memory BIO takes every record
        except ssl.SSLError as error:
            raise BrokenPipeError(f"TLS cannot send: {error}") from error
        return self._outgoing.read()

    def _close_notify(self) -> bytes:
        if self._close_notify_sent or not self._handshaken:
            return b""
        self._close_notify_sent = True
        try:
            self._tls.unwrap()
        except ssl.SSLWantReadError:  # sent; the peer's own close_notify is not awaited
            pass
        except ssl.SSLError:
            return b""
        return self._outgoing.read()

    async def send_eof(self) -> None:
        self._pending += self._close_notify()
        await super().send_eof()

    def close(self) -> None:
        if self._sock.fileno() >= 0 and self.can_send_now():  # the close_notify, if it fits now
            with contextlib.suppress(OSError):
                self._sock.send(self._close_notify())
        super().close()


def plain_socket_of(stream: trio.SocketStream) -> socket.socket:
    """Take the stdlib socket out of a Trio SocketStream (the stream must not be used afterwards)."""
    trio_socket = stream.socket
    return socket.socket(trio_socket.family, trio_socket.type, trio_socket.proto, fileno=trio_socket.detach())

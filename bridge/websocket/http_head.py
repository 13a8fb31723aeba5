"""The head of an HTTP request, read off a raw connection: enough to route a WebSocket upgrade before any
HTTP server sees it (`accept_websocket` completes the handshake from these bytes)."""

from __future__ import annotations

import trio

from bridge.websocket.byte_io import RECEIVE_BYTES

__all__ = ["HTTP_HEAD_LIMIT", "is_websocket_upgrade", "read_http_head", "read_request_line"]

HTTP_HEAD_LIMIT = 16 * 1024  # the head of a Twilio stream upgrade is < 2 KiB


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
                chunk = await stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break
            if not chunk:
                break
            data += chunk
    return data

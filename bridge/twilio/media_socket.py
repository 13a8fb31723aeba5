"""A Media Stream's socket as a call uses it: every frame handed to one function, sends that never wait.

`MediaSocket` is what a call needs (tests drive a call over an in-memory one); `TwilioMediaSocket` is the
stream's WebSocket seen that way. Sends on a closed socket are dropped: the reader sees the close, and
that is how the call learns of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from bridge.websocket import WebSocket, WebSocketClosed

__all__ = ["MediaSocket", "TwilioMediaSocket"]


class MediaSocket(Protocol):
    async def serve(self, on_frame: Callable[[str | bytes], None]) -> None:
        """Hand every frame to `on_frame`, in order, until the socket closes."""

    def post_texts(self, texts: Sequence[str]) -> None:
        """Send text frames in this order without waiting; a closed socket drops them."""

    async def close(self, code: int = 1000) -> None:
        """Close (idempotent)."""


class TwilioMediaSocket:
    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket
        self.receive = websocket.receive  # the frames before `start`, read by whoever opens the stream

    async def serve(self, on_frame: Callable[[str | bytes], None]) -> None:
        """Hand every frame to `on_frame`, in order (in the socket's read reactor when it can: no task
        wake-up), until the socket closes."""
        await self._websocket.serve(on_frame)

    def post_texts(self, texts: Sequence[str]) -> None:
        """Send text frames in this order, with one write, without waiting (queued when they cannot go
        out at once)."""
        try:
            self._websocket.post_texts(texts)
        except WebSocketClosed:
            pass

    async def close(self, code: int = 1000) -> None:
        await self._websocket.close(code)

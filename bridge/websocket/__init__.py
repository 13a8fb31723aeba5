"""WebSocket connections under Trio on `websockets`' sans-I/O protocol, both ways, with one read reactor
per process that hands the commonest frames to their connection without waking a task (the fast path)."""
from bridge.websocket.connection import (
    CLOSE_TIMEOUT_S,
    ProxyRefused,
    WebSocket,
    WebSocketClosed,
    WebSocketRejected,
    accept_websocket,
    connect_websocket,
)
from bridge.websocket.http_head import is_websocket_upgrade, read_http_head

__all__ = [
    "CLOSE_TIMEOUT_S",
    "ProxyRefused",
    "WebSocket",
    "WebSocketClosed",
    "WebSocketRejected",
    "accept_websocket",
    "connect_websocket",
    "is_websocket_upgrade",
    "read_http_head",
]

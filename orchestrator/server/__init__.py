"""The HTTP and WebSocket server: the app and its endpoints, the connection router, the workers."""
from orchestrator.server.app import build_app
from orchestrator.server.connection_router import listening_socket, serve_connections
from orchestrator.server.live_call_redirect import LiveCallRedirect
from orchestrator.server.state import ServerState
from orchestrator.server.workers import run_workers, this_worker, use_batch_scheduling

__all__ = [
    "LiveCallRedirect",
    "ServerState",
    "build_app",
    "listening_socket",
    "run_workers",
    "serve_connections",
    "this_worker",
    "use_batch_scheduling",
]

"""The HTTP and WebSocket face of the front desk: one Starlette app served by hypercorn under Trio, and the
Media Stream WebSocket, which the connection router (`connection_router.py`) hands to `media_stream`
before hypercorn sees it.

    POST /voice/incoming, /voice/after, /voice/recorded     Twilio's voice webhooks (`voice_webhooks.py`)
    WS   /media                                             the Media Stream (`media_endpoint.py`)
    GET  /calls/{sid}/handoff, /calls/{sid}, /healthz, /metrics     records and health (`records_endpoints.py`)
    POST /taskrouter/events, /calls/{sid}/csat, /voice/status; GET /ops, /ops/data.json
                                                            the operations endpoints (`ops_endpoints.py`)
"""
from __future__ import annotations

from starlette.applications import Starlette

from orchestrator.server.media_endpoint import MediaEndpoint, MediaStreamHandler
from orchestrator.server.ops_endpoints import ops_routes
from orchestrator.server.records_endpoints import record_routes
from orchestrator.server.state import ServerState
from orchestrator.server.voice_webhooks import voice_routes
from orchestrator.telemetry import configure_server_logging


def build_app(state: ServerState) -> tuple[Starlette, MediaStreamHandler]:
    """The HTTP app, and the handler of `GET /media` upgrades (given the connection and its request head)."""
    configure_server_logging()
    app = Starlette(routes=[*voice_routes(state), *record_routes(state), *ops_routes(state)])
    app.state.front_desk = state
    return app, MediaEndpoint(state).media_stream

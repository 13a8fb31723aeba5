"""What the server's endpoints share: one `ServerState`, built once by the composition root."""
from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from bridge.twilio import TwilioSignatureCheck
from machines import CallFlow
from orchestrator.call import CallSession, SessionDeps
from orchestrator.config import RoutingConfig
from orchestrator.engines import EngineConnector
from orchestrator.rollout import RolloutControl
from orchestrator.store import CallStore, TriagePass
from orchestrator.telemetry import ServerMetrics


@dataclass
class ServerState:
    """Everything the endpoints share, built once by the composition root."""

    config: RoutingConfig
    store: CallStore
    connector: EngineConnector
    signature: TwilioSignatureCheck
    public_url: str
    media_stream_url: str
    flow: CallFlow
    # The live rollout setting, read from the store on every call: every instance sees a change at once.
    rollout: RolloutControl
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    handoff_token: str | None = None
    ops_token: str | None = None  # opens /ops and posts CSAT scores
    after_wait_s: float = 5.0
    stream_start_timeout_s: float = 10.0
    # A stream silent this long while its call is up has a dead peer (0: never); `move_live_call` (Twilio's
    # REST API, `live_call_redirect.py`) then hands the call to its route.
    media_silence_s: float = 0.0
    move_live_call: Callable[[TriagePass], Awaitable[str]] | None = None
    max_concurrent_calls: int = 500
    # Takes over calls whose engine is refused or lost mid-triage (config `engine.failover`).
    failover: EngineConnector | None = None
    # Engines a call may ask for by name (`/voice/incoming?engine=offline`), besides `connector`.
    engines: dict[str, EngineConnector] = field(default_factory=dict)
    shutting_down: trio.Event = field(default_factory=trio.Event)
    sessions: dict[tuple[str, int], CallSession] = field(default_factory=dict)
    # The brake's looks, at most one per BRAKE_LOOK_INTERVAL_S (each reads ~2 windows of records).
    brake_look_pending: bool = field(default=False, init=False)
    last_brake_look_at: float = field(default=-math.inf, init=False)

    def session_deps(self, engine: str | None = None) -> SessionDeps:
        # Built per call on purpose: a test may swap `connector` on a running server.
        connector = self.engines.get(engine or "", self.connector)
        failover = self.failover if self.failover is not connector else None
        return SessionDeps(
            self.config, self.flow, self.store, connector, self.metrics, self.shutting_down, failover=failover,
            media_silence_s=self.media_silence_s, move_live_call=self.move_live_call,
        )

    def public(self, path: str) -> str:
        return self.public_url + path

    async def finish_calls(self, grace_s: float) -> None:
        """Shutting down: the calls in progress are told first (they take the fallback route and close in
        order), and the listener stays up meanwhile so their action URL requests are still answered."""
        self.shutting_down.set()
        had_calls = bool(self.sessions)
        with trio.move_on_after(grace_s):
            while self.sessions:  # noqa: ASYNC110 (once, at shutdown: sessions end in their own tasks)
                await trio.sleep(0.05)
            if had_calls:  # their action URL requests follow the stream's close
                await trio.sleep(min(1.0, grace_s))

"""The composition root: builds the config, store, engine, signature check and app once, and serves them.

`run_server` is what `orchestrator serve` runs and what the end-to-end tests run, so both exercise the
same wiring; tests only swap in an engine connector pointed at their own fake.
"""
from __future__ import annotations

import gc
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

from bridge.openai_realtime.client import RealtimeSettings
from bridge.websocket.http_head import is_websocket_upgrade, read_http_head
from orchestrator.store.sqlite_store import CallStore
from orchestrator.engines.tools import agent_instructions, realtime_tools
from orchestrator.engines.demo import run_demo_engine
from orchestrator.engines.offline.engine import OfflineConnector
from orchestrator.engines.realtime import RealtimeConnector
from orchestrator.config.routing import ConfigError, RoutingConfig, load_routing_config
from orchestrator.server.app import MEDIA_PATH, MediaStreamHandler, ServerState, build_app
from orchestrator.telemetry.metrics import ServerMetrics
from orchestrator.config.server_settings import ServerSettings, development_auth_token, media_stream_url
from orchestrator.store.location import describe_store_location, open_call_store
from orchestrator.engines.interface import EngineConnector
from bridge.twilio.signature import TwilioSignatureCheck
from orchestrator.server.workers import use_batch_scheduling

_log = logging.getLogger(__name__)
# A burst of calls must not overflow the accept queue, or the kernel drops connections (seen: 200 calls
# in 2 s with hypercorn's default of 100).
LISTEN_BACKLOG = 1024
# How long a new connection may take to send its first request head before it is closed.
REQUEST_HEAD_TIMEOUT_S = 10.0


@dataclass
class RunningServer:
    base_url: str  # where it listens, e.g. http://127.0.0.1:8080
    public_url: str  # what Twilio is told (and signs)
    auth_token: str
    state: ServerState
    announcements: list[str]
    stop: Callable[[], None]


def listening_socket(host: str, port: int, *, shared_port: bool = False, listen: bool = True) -> socket.socket:
    """A socket bound to host:port. `shared_port` (SO_REUSEPORT): each worker of `serve --workers N` listens
    on its own socket on the same port and the kernel spreads new connections evenly over them; the
    supervisor holds the port with one that does not listen (`listen=False`)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ConfigError(f"{host}:{port}", None, f"cannot listen there ({error.strerror or error})") from None
    if listen:
        sock.listen(LISTEN_BACKLOG)
    return sock


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def choose_engine(settings: ServerSettings) -> str:
    if settings.engine != "auto":
        return settings.engine
    return "realtime" if settings.openai_api_key is not None else "offline"


async def _build_engines(
    settings: ServerSettings, config: RoutingConfig, stack: AsyncExitStack, announcements: list[str]
) -> tuple[EngineConnector, EngineConnector | None]:
    """The configured engine and the one that takes over when it fails (None: the fallback route)."""
    engine = choose_engine(settings)
    offline = None
    if engine == "offline" or config.engine.failover == "offline":
        offline = OfflineConnector.for_config(config)
    if engine == "offline":
        assert offline is not None
        why = "" if settings.openai_api_key is not None or settings.engine == "offline" else " (no OPENAI_API_KEY)"
        announcements.append(f"engine: {offline.describe()}{why}")
        return offline, None
    instructions, tools = agent_instructions(config), realtime_tools(config)
    if engine == "realtime":
        connector: EngineConnector = RealtimeConnector(
            realtime_settings(settings),
            instructions=instructions,
            tools=tools,
            transcription_model=settings.transcription_model,
        )
        announcements.append(
            f"engine: OpenAI Realtime at {settings.realtime_url} (model {settings.realtime_model or 'from URL'})"
        )
    else:
        connector = await stack.enter_async_context(
            run_demo_engine(
                config, instructions=instructions, tools=tools, transcription_model=settings.transcription_model
            )
        )
        announcements.append(
            "engine: FAKE. A scripted stand-in that does not listen to the caller: it greets, then after ~1.5 s "
            f"proposes '{config.intents[0].name if config.intents else '-'}'."
        )
    if offline is not None:
        announcements.append(f"  (offline engine for failover: {offline.describe()})")
    return connector, offline


def realtime_settings(settings: ServerSettings) -> RealtimeSettings:
    if settings.openai_api_key is None and not settings.realtime_headers:
        raise ConfigError(
            "$OPENAI_API_KEY", None, "not set (needed by --engine realtime; or set ORCHESTRATOR_REALTIME_HEADERS)"
        )
    return RealtimeSettings(
        url=settings.realtime_url,
        model=settings.realtime_model,
        api_key=settings.openai_api_key,
        extra_headers=settings.realtime_headers,
        voice=settings.realtime_voice,
    )


@asynccontextmanager
async def run_server(
    settings: ServerSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    config: RoutingConfig | None = None,
    connector: EngineConnector | None = None,
    failover: EngineConnector | None = None,
    store: CallStore | None = None,
    access_log: bool = False,
    listening: socket.socket | None = None,
) -> AsyncIterator[RunningServer]:
    """Serve until the block exits (or `stop()` is called, then wait out the calls in progress).
    Without `connector`, the engines come from the settings and the config (`failover` is then ignored).
    `listening` is a socket already listening (a worker of `serve --workers N`); else one is opened."""
    config = config or load_routing_config(settings.config)
    announcements: list[str] = []
    sock = listening if listening is not None else listening_socket(host, port)
    try:
        async with _serving(
            settings, config, sock, host, connector, failover, store, access_log, announcements
        ) as running:
            yield running
    finally:
        sock.close()


@asynccontextmanager
async def _serving(
    settings: ServerSettings,
    config: RoutingConfig,
    sock: socket.socket,
    host: str,
    connector: EngineConnector | None,
    failover: EngineConnector | None,
    store: CallStore | None,
    access_log: bool,
    announcements: list[str],
) -> AsyncIterator[RunningServer]:
    bound_port = sock.getsockname()[1]
    base_url = f"http://{_url_host(host)}:{bound_port}"
    public_url = settings.public_url or base_url

    if settings.twilio_auth_token is not None:
        auth_token = settings.twilio_auth_token.get_secret_value()
    else:
        auth_token = development_auth_token(settings.data_dir)
        announcements.append(
            f"TWILIO_AUTH_TOKEN is not set: signatures are checked with a development token kept in "
            f"{settings.data_dir / 'dev-twilio-auth-token'} (`orchestrator call` uses it); real Twilio "
            "requests get 403 until TWILIO_AUTH_TOKEN is set."
        )
    if settings.insecure_skip_signature_check:
        announcements.append(
            "WARNING: ORCHESTRATOR_INSECURE_SKIP_SIGNATURE_CHECK is on: X-Twilio-Signature is NOT checked. "
            "Development only; anyone who can reach this server can drive it."
        )
    signature = TwilioSignatureCheck(auth_token, public_url, enabled=not settings.insecure_skip_signature_check)

    async with AsyncExitStack() as stack:
        if store is None:
            retention_s = settings.retention_days * 86400
            store = await open_call_store(settings.store, data_dir=settings.data_dir, retention_seconds=retention_s)
            stack.push_async_callback(store.aclose)
            announcements.append(f"store: {describe_store_location(settings.store, data_dir=settings.data_dir)}")
            purged = await store.purge_older_than(retention_s)
            if purged:
                announcements.append(f"purged {purged} call records older than {settings.retention_days:g} days")
        engines: dict[str, EngineConnector] = {}
        if connector is None:
            connector, failover = await _build_engines(settings, config, stack, announcements)
            engines = {engine.name: engine for engine in (connector, failover) if engine is not None}
        else:
            announcements.append(f"engine: {connector.name} (given)")
        if failover is not None:
            announcements.append(f"failover: {failover.name} takes over calls whose engine is refused or lost")

        state = ServerState(
            config=config,
            store=store,
            connector=connector,
            signature=signature,
            public_url=public_url,
            media_stream_url=media_stream_url(public_url),
            handoff_token=settings.handoff_token.get_secret_value() if settings.handoff_token else None,
            after_wait_s=settings.after_wait_seconds,
            stream_start_timeout_s=settings.stream_start_timeout_seconds,
            max_concurrent_calls=settings.max_concurrent_calls,
            failover=failover,
            engines=engines,
            ops_token=settings.ops_token.get_secret_value() if settings.ops_token else None,
            metrics=ServerMetrics(triage_budget_s=config.triage.budget_seconds),
        )
        hypercorn = HypercornConfig()
        hypercorn.graceful_timeout = settings.graceful_shutdown_seconds
        hypercorn.accesslog = logging.getLogger("hypercorn.access") if access_log else None
        hypercorn.errorlog = logging.getLogger("hypercorn.error")
        stop_serving = trio.Event()

        async def shutdown_trigger() -> None:
            await stop_serving.wait()
            # Calls in progress are told first (they take the fallback route and close in order), and the
            # listener stays up meanwhile so their action URL requests are still answered.
            state.shutting_down.set()
            had_calls = bool(state.sessions)
            with trio.move_on_after(settings.graceful_shutdown_seconds):
                while state.sessions:
                    await trio.sleep(0.05)
                if had_calls:  # their action URL requests follow the stream's close
                    await trio.sleep(min(1.0, settings.graceful_shutdown_seconds))

        app, media_stream = build_app(state)
        _exempt_startup_objects_from_gc()
        async with trio.open_nursery() as nursery:
            await nursery.start(_serve_connections, app, media_stream, hypercorn, sock, shutdown_trigger)
            running = RunningServer(base_url, public_url, auth_token, state, announcements, stop_serving.set)
            try:
                yield running
            finally:
                stop_serving.set()


def _exempt_startup_objects_from_gc() -> None:
    """What start-up built (modules, models, the engines) lives as long as the process. Left in the
    collector's view, each full pass walks all of it (50–170 ms measured at start-up), a pause for every
    call's audio; frozen, those passes only walk what calls allocate."""
    gc.collect()
    gc.freeze()


class _ReplayStream(trio.abc.HalfCloseableStream):
    """A connection whose first bytes the router has read already: hypercorn gets them first."""

    def __init__(self, stream: trio.SocketStream, already_read: bytes) -> None:
        self._stream = stream
        self._already_read = already_read
        self.socket = stream.socket  # hypercorn reads the peer and local addresses from it

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._already_read:
            data, self._already_read = self._already_read, b""
            return data
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


async def _serve_connections(
    app: Any,
    media_stream: MediaStreamHandler,
    hypercorn: HypercornConfig,
    sock: socket.socket,
    shutdown_trigger: Callable[[], Awaitable[None]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """hypercorn's trio `worker_serve` (0.18), with one change: a connection whose first request is a
    WebSocket upgrade of /media goes to the lean stream handler; hypercorn serves all the others."""
    asgi = wrap_app(app, hypercorn.wsgi_max_body_size, None)
    lifespan_state: dict[str, Any] = {}
    lifespan = Lifespan(asgi, hypercorn, lifespan_state)
    context = WorkerContext(None)

    async def route(stream: trio.SocketStream) -> None:
        try:
            head = await read_http_head(stream, timeout_s=REQUEST_HEAD_TIMEOUT_S)
            if not head:
                await trio.aclose_forcefully(stream)
            elif is_websocket_upgrade(head, MEDIA_PATH):
                await media_stream(stream, head)
            else:
                state = ConnectionState(lifespan_state.copy())
                await TCPServer(asgi, hypercorn, context, state, _ReplayStream(stream, head))
        except Exception:  # one broken connection must not take the listener (and every call) down
            _log.exception("connection failed")
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as connections:
            listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
            task_status.started()
            try:
                async with trio.open_nursery() as accepting:
                    accepting.start_soon(partial(trio.serve_listeners, route, [listener], handler_nursery=connections))
                    await shutdown_trigger()
                    accepting.cancel_scope.cancel()
            finally:
                await context.terminated.set()  # hypercorn's connections finish their request and close
                connections.cancel_scope.deadline = trio.current_time() + hypercorn.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


async def serve_until_signalled(
    settings: ServerSettings,
    host: str,
    port: int,
    access_log: bool = False,
    *,
    listening: socket.socket | None = None,
    worker: str | None = None,
    announce: bool = True,
) -> None:
    """`orchestrator serve`: announce what runs, then serve until SIGINT or SIGTERM. A worker of
    `serve --workers N` (`worker` names it) serves on the socket it inherited; one of them announces."""
    # Before any thread starts: threads inherit the policy of the one that starts them.
    scheduling = [use_batch_scheduling()] if settings.batch_scheduling else []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with run_server(
            settings, host=host, port=port, access_log=access_log, listening=listening
        ) as running:
            state = running.state
            if worker is not None:
                print(f"worker {worker} (pid {os.getpid()}) serving {running.base_url}", flush=True)
            if not announce:
                async for _ in signals:
                    break
                return
            for line in [*running.announcements, *scheduling]:
                print(line, flush=True)
            print(
                f"front desk for {state.config.company.name or 'the configured company'} listening on "
                f"{running.base_url}\n  voice webhook: {running.public_url}/voice/incoming"
                f"\n  media stream:  {state.media_stream_url}\n  health:        {running.base_url}/healthz"
                "\nCtrl+C to stop.",
                flush=True,
            )
            async for received in signals:
                print(f"{signal.Signals(received).name}: finishing the calls in progress, then stopping", flush=True)
                break

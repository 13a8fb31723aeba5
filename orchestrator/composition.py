"""The composition root: the one place that builds the config, the store, the engines, the signature check,
the call flow and the rollout control.

`run_server` is what `orchestrator serve` runs and what the end-to-end tests run, so both exercise the
same wiring; tests only swap in an engine connector pointed at their own fake. The commands that read the
store, change the rollout or replay calls through an engine (`report`, `rollout`, `eval`) get them here.
"""
from __future__ import annotations

import gc
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial

import trio

from bridge.openai_realtime import RealtimeSettings
from bridge.twilio import HttpxTwilioClient, TwilioSignatureCheck
from machines import CallFlow
from orchestrator.config import (
    ConfigError,
    RoutingConfig,
    ServerSettings,
    development_auth_token,
    load_routing_config,
    load_server_settings,
    media_stream_url,
    model_shutdown_warnings,
)
from orchestrator.engines import (
    CallerAudioBatching,
    EngineConnector,
    RealtimeConnector,
    agent_instructions,
    realtime_tools,
    run_demo_engine,
)
from orchestrator.engines.offline import (
    OfflineConnector,
    SpeechSynthesizer,
    SpeechUnavailable,
    load_intent_model,
    speech_support,
)
from orchestrator.rollout import RolloutControl
from orchestrator.server import (
    LiveCallRedirect,
    ServerState,
    build_app,
    listening_socket,
    serve_connections,
)
from orchestrator.store import (
    CallStore,
    CallStoreError,
    describe_store_location,
    is_redis_location,
    open_call_store,
    sqlite_path,
)
from orchestrator.telemetry import (
    ServerMetrics,
    configure_server_logging,
    quiet_state_machine_library,
    secrets_masked_in_logs,
)

__all__ = [
    "RunningServer",
    "call_flow",
    "choose_engine",
    "offline_voice",
    "open_store",
    "realtime_settings",
    "replay_engine",
    "rollout_control",
    "run_server",
]


@dataclass
class RunningServer:
    base_url: str  # where it listens, e.g. http://127.0.0.1:8080
    public_url: str  # what Twilio is told (and signs)
    auth_token: str
    state: ServerState
    announcements: list[str]
    stop: Callable[[], None]


# A REST redirect moves a caller who hears nothing meanwhile: not worth waiting longer for.
TWILIO_REST_TIMEOUT_S = 5.0


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


# ---------------------------------------------------------------------------- the parts


def call_flow(config: RoutingConfig) -> CallFlow:
    """Every call's machine comes from this one flow: the config's routing rules, on Trio's clock."""
    return CallFlow(config.triage_policy(), trio.current_time)


def rollout_control(store: CallStore, config: RoutingConfig) -> RolloutControl:
    return RolloutControl(store, config.rollout, region=config.company.country)


async def open_store(settings: ServerSettings, *, existing_only: bool = False) -> CallStore:
    """The store the settings name (`ORCHESTRATOR_STORE`, else SQLite in the data dir). `existing_only`: a
    SQLite file that is not there is refused rather than created (a report of an empty new store would
    only hide a wrong --data-dir)."""
    if existing_only and not is_redis_location(settings.store):
        path = sqlite_path(settings.store, data_dir=settings.data_dir)
        if not path.is_file():
            raise CallStoreError(f"call store {path}: no such file (is --data-dir the server's?)")
    return await open_call_store(
        settings.store, data_dir=settings.data_dir, retention_seconds=settings.retention_days * 86400,
        operation_timeout_s=settings.store_timeout_seconds,
    )


def _signature_check(
    settings: ServerSettings, public_url: str, announcements: list[str]
) -> tuple[TwilioSignatureCheck, str]:
    """The check of `X-Twilio-Signature`, and the auth token it checks with."""
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
    return TwilioSignatureCheck(auth_token, public_url, enabled=not settings.insecure_skip_signature_check), auth_token


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
            batching=CallerAudioBatching(settings.caller_audio_batch_cpu),
        )
        announcements.append(
            f"engine: OpenAI Realtime at {settings.realtime_url} (model {settings.realtime_model or 'from URL'})"
        )
        announcements.extend(model_shutdown_warnings(settings))
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
    realtime = RealtimeSettings(
        url=settings.realtime_url,
        model=settings.realtime_model,
        api_key=settings.openai_api_key,
        extra_headers=settings.realtime_headers,
        voice=settings.realtime_voice,
        keepalive_s=settings.realtime_keepalive_seconds or None,
        organization=settings.openai_org_id,
        project=settings.openai_project_id,
        ca_file=str(settings.realtime_ca_file) if settings.realtime_ca_file else None,
    )
    return realtime.model_copy(update={"proxy": realtime.proxy_from_environment()})


def replay_engine(engine: str, config: RoutingConfig, *, listens: bool) -> EngineConnector:
    """The engine (`realtime` or `offline`) `orchestrator eval` replays past calls through: one that
    `listens` to recordings on the live path, else one that reads each turn's text (the offline engine
    then loads no speech models)."""
    if engine == "offline":
        if not listens:
            return OfflineConnector(config, load_intent_model(config), None)
        connector = OfflineConnector.for_config(config)
        if connector.text_mode:
            raise ConfigError("--audio", None, f"the offline engine cannot listen: {connector.text_mode_reason}")
        return connector
    settings = load_server_settings()
    if not listens and settings.openai_api_key is None and not settings.realtime_headers:
        raise ConfigError("$OPENAI_API_KEY", None, "not set (needed by --engine realtime)")
    return RealtimeConnector(
        realtime_settings(settings),
        instructions=agent_instructions(config),
        tools=realtime_tools(config),
        transcription_model=settings.transcription_model if listens else None,
    )


def offline_voice() -> SpeechSynthesizer | None:
    """The offline engine's voice when the speech extra is installed (only the voice: no recogniser)."""
    if not speech_support().tts:
        return None
    try:
        return SpeechSynthesizer.load()
    except SpeechUnavailable:
        return None


# ---------------------------------------------------------------------------- the server


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
    configure_server_logging()
    quiet_state_machine_library()
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
    signature, auth_token = _signature_check(settings, public_url, announcements)

    async with AsyncExitStack() as stack:
        stack.enter_context(secrets_masked_in_logs(auth_token, *settings.secret_values()))
        if store is None:
            store = await open_store(settings)
            stack.push_async_callback(store.aclose)
            announcements.append(f"store: {describe_store_location(settings.store, data_dir=settings.data_dir)}")
            purged = await store.purge_older_than(settings.retention_days * 86400)
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
            flow=call_flow(config),
            rollout=rollout_control(store, config),
            handoff_token=settings.handoff_token.get_secret_value() if settings.handoff_token else None,
            after_wait_s=settings.after_wait_seconds,
            stream_start_timeout_s=settings.stream_start_timeout_seconds,
            media_silence_s=settings.twilio_silence_seconds,
            max_concurrent_calls=settings.max_concurrent_calls,
            failover=failover,
            engines=engines,
            ops_token=settings.ops_token.get_secret_value() if settings.ops_token else None,
            metrics=ServerMetrics(triage_budget_s=config.triage.budget_seconds),
        )
        twilio_http = await stack.enter_async_context(
            HttpxTwilioClient(timeout=TWILIO_REST_TIMEOUT_S, origin=settings.twilio_api_url)
        )
        account_sid = settings.twilio_account_sid or config.twilio.account_sid
        state.move_live_call = LiveCallRedirect(state, twilio_http, auth_token=auth_token, account_sid=account_sid).move
        stop_serving = trio.Event()

        async def shutdown_trigger() -> None:
            await stop_serving.wait()
            await state.finish_calls(settings.graceful_shutdown_seconds)

        app, media_stream = build_app(state)
        _exempt_startup_objects_from_gc()
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(
                serve_connections, app, media_stream, sock, shutdown_trigger,
                graceful_timeout_s=settings.graceful_shutdown_seconds, access_log=access_log,
            ))
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

"""The HTTP and WebSocket face of the front desk: one Starlette app served by hypercorn under Trio, and the
Media Stream WebSocket, which `serving.py` hands to `media_stream` before hypercorn sees it (a message costs
a fifth as much on `bridge.websocket.connection` as through hypercorn: `benchmarks/websocket_stacks/README.md`).

    POST /voice/incoming      Twilio's voice webhook (or a Studio TwiML Redirect widget): assigns the
                              rollout arm; for the AI arm opens a triage pass and answers
                              <Connect action><Stream><Parameter/></Stream></Connect>, for the legacy arm
                              answers the legacy path at once (no Realtime connection)
    WS   /media               the Media Stream; one CallSession per stream
    POST /voice/after         the <Connect action>: the TwiML of the pass's decision, else the fallback;
                              then the rollout brake looks at the AI arm's recent passes
    POST /voice/recorded      the <Record action> of the voicemail route: <Hangup/>
    GET  /calls/{sid}/handoff the decision for a Studio flow started fresh (signed, or a bearer token)
    GET  /calls/{sid}         the call's record: passes, state paths, decisions (signed)
    GET  /healthz, /metrics
    and the operations endpoints of `ops_endpoints.py`: POST /taskrouter/events, POST /calls/{sid}/csat,
    POST /voice/status, GET /ops, GET /ops/data.json

Every Twilio-facing request is checked against `X-Twilio-Signature` (403 when it fails). Whatever goes
wrong on the way, a caller gets TwiML that moves the call on, never silence.
"""
from __future__ import annotations

import math
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import structlog
import trio
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from twilio.twiml.voice_response import VoiceResponse

from bridge.twilio.media_socket import TwilioMediaSocket
from bridge.twilio.media_stream import MediaStreamProtocolError, StartMessage, parse_twilio_message
from bridge.websocket.connection import accept_websocket
from machines.call_machine import CallFlow
from machines.policy import CallHistory
from machines.rollout import AI_ARM, LEGACY_ARM
from orchestrator.telemetry.logs import mask_phone
from orchestrator.call.session import CallSession, SessionDeps
from orchestrator.store.sqlite_store import CallStore, PassOutcome, TriagePass, decision_to_json
from orchestrator.call.dispatch_twiml import CallFacts, dispatch_twiml, fallback_twiml, legacy_twiml
from orchestrator.server.ops_endpoints import ops_routes
from orchestrator.rollout.live import RolloutControl
from orchestrator.config.routing import (
    RoutingConfig,
    StudioRoute,
    caller_number,
    canonical_language_code,
    studio_node_key,
)
from orchestrator.telemetry.metrics import METRICS_CONTENT_TYPE, ServerMetrics
from orchestrator.engines.interface import EngineConnector
from bridge.twilio.signature import SIGNATURE_HEADER, TwilioSignatureCheck

log = structlog.get_logger("orchestrator.server.app")

# Twilio frames are ~300 bytes. Frames up to this size reach our parser, which counts and skips those over
# its own limit (64 KiB) so the call goes on; the stream is closed (1009) on bigger ones.
MAX_WEBSOCKET_MESSAGE_BYTES = 1024 * 1024
MEDIA_PATH = "/media"
# A burst of finished calls (hundreds a second at capacity) is judged by one look of the brake a second,
# not one look each (~5 ms of the event loop per look on SQLite); a trip comes at most this much later.
BRAKE_LOOK_INTERVAL_S = 1.0

TWIML_MEDIA_TYPE = "application/xml"
# Names of the <Parameter>s that tie a Media Stream to the pass that /voice/incoming opened.
PASS_PARAMETER = "pass"
TOKEN_PARAMETER = "pass_token"
ENGINE_PARAMETER = "engine"  # a call may ask for one of the server's engines by name
LANGUAGE_PARAMETER = "language"  # a language Studio already chose (`?language=es-US` on the webhook)
_CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")
_FLOW_SID = re.compile(r"FW[0-9a-fA-F]{32}")
_WIDGET = re.compile(r"[^\s/]{1,64}")
_ELSEWHERE_POLL_S = 0.02  # how often /voice/after looks for a session on another instance to finish
# An engine closes in milliseconds; longer means the instance running the session died: answer anyway.
_ELSEWHERE_WAIT_S = 2.0
# Only what a voicemail or a hang-up needs: the answer when nothing else could be built.
_LAST_RESORT_LINE = "Sorry, we could not connect your call. Please call again later."


@dataclass
class ServerState:
    """Everything the endpoints share, built once by the composition root."""

    config: RoutingConfig
    store: CallStore
    connector: EngineConnector
    signature: TwilioSignatureCheck
    public_url: str
    media_stream_url: str
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    handoff_token: str | None = None
    ops_token: str | None = None  # opens /ops and posts CSAT scores
    after_wait_s: float = 5.0
    stream_start_timeout_s: float = 10.0
    max_concurrent_calls: int = 500
    # Takes over calls whose engine is refused or lost mid-triage (config `engine.failover`).
    failover: EngineConnector | None = None
    # Engines a call may ask for by name (`/voice/incoming?engine=offline`), besides `connector`.
    engines: dict[str, EngineConnector] = field(default_factory=dict)
    shutting_down: trio.Event = field(default_factory=trio.Event)
    sessions: dict[tuple[str, int], CallSession] = field(default_factory=dict)
    flow: CallFlow = field(init=False)
    # The live rollout setting, read from the store on every call: every instance sees a change at once.
    rollout: RolloutControl = field(init=False)
    # The brake's looks, at most one per BRAKE_LOOK_INTERVAL_S (each reads ~2 windows of records).
    brake_look_pending: bool = field(default=False, init=False)
    last_brake_look_at: float = field(default=-math.inf, init=False)

    def __post_init__(self) -> None:
        self.flow = CallFlow(self.config.triage_policy(), trio.current_time)
        self.rollout = RolloutControl(self.store, self.config.rollout, region=self.config.company.country)

    def session_deps(self, engine: str | None = None) -> SessionDeps:
        # Built per call on purpose: a test may swap `connector` on a running server.
        connector = self.engines.get(engine or "", self.connector)
        failover = self.failover if self.failover is not connector else None
        return SessionDeps(
            self.config, self.flow, self.store, connector, self.metrics, self.shutting_down, failover=failover
        )

    def public(self, path: str) -> str:
        return self.public_url + path


MediaStreamHandler = Callable[[trio.SocketStream, bytes], Awaitable[None]]


def build_app(state: ServerState) -> tuple[Starlette, MediaStreamHandler]:
    """The HTTP app, and the handler of `GET /media` upgrades (given the connection and its request head)."""
    endpoints = _Endpoints(state)
    app = Starlette(
        routes=[
            Route("/voice/incoming", endpoints.voice_incoming, methods=["POST"]),
            Route("/voice/after", endpoints.voice_after, methods=["POST"]),
            Route("/voice/recorded", endpoints.voice_recorded, methods=["POST"]),
            Route("/calls/{call_sid}/handoff", endpoints.call_handoff, methods=["GET"]),
            Route("/calls/{call_sid}", endpoints.call_record, methods=["GET"]),
            Route("/healthz", endpoints.healthz, methods=["GET"]),
            Route("/metrics", endpoints.metrics, methods=["GET"]),
            *ops_routes(state),  # TaskRouter events, CSAT, call status, /ops
        ],
    )
    app.state.front_desk = state
    return app, endpoints.media_stream


def _twiml(xml: str) -> Response:
    return Response(xml, media_type=TWIML_MEDIA_TYPE)


def _forbidden() -> Response:
    return PlainTextResponse("invalid or missing X-Twilio-Signature", status_code=403)


class _Endpoints:
    def __init__(self, state: ServerState) -> None:
        self.state = state

    # ------------------------------------------------------------------ webhooks

    async def _signed_form(self, request: Request, endpoint: str) -> Any | None:
        """The form of a signed Twilio POST, or None (counted) when the signature does not hold."""
        form = await request.form()
        signature = request.headers.get(SIGNATURE_HEADER)
        if not self.state.signature.check_webhook(request.url.path, request.url.query, form, signature):
            self.state.metrics.signature_failures.labels(endpoint).inc()
            log.warning("refused: bad signature", endpoint=endpoint)
            return None
        return form

    async def voice_incoming(self, request: Request) -> Response:
        form = await self._signed_form(request, "voice_incoming")
        if form is None:
            return _forbidden()
        state = self.state
        call_sid = str(form.get("CallSid", ""))
        if not _CALL_SID.fullmatch(call_sid):
            return PlainTextResponse("CallSid missing or malformed", status_code=400)
        setting = await state.rollout.current()
        assignment = state.rollout.assign(setting, caller_number(str(form.get("From", ""))), call_sid)
        state.metrics.rollout_calls.labels(assignment.arm).inc()
        facts = _call_facts(form, assignment.arm)
        bound = log.bind(call_sid=call_sid, caller=mask_phone(facts.caller), arm=assignment.arm)
        if assignment.arm == LEGACY_ARM:
            return await self._legacy(request, facts, bound)
        if state.shutting_down.is_set() or len(state.sessions) >= state.max_concurrent_calls:
            bound.warning("not taking the call: fallback route", shutting_down=state.shutting_down.is_set())
            return await self._fallback(facts, "capacity")
        try:
            triage_pass = await state.store.open_pass(
                call_sid,
                caller=facts.caller,
                called=facts.called,
                account_sid=facts.account_sid,
                entry_node=_entry_node(request.query_params),
                arm=AI_ARM,
            )
        except Exception as error:
            state.metrics.store_errors.inc()
            bound.error("cannot open a triage pass: fallback route", error=repr(error))
            return await self._fallback(facts, "store_error")
        response = VoiceResponse()
        connect = response.connect(action=state.public(f"/voice/after?{PASS_PARAMETER}={triage_pass.number}"),
                                   method="POST")
        stream = connect.stream(url=state.media_stream_url)
        stream.parameter(name=PASS_PARAMETER, value=str(triage_pass.number))
        stream.parameter(name=TOKEN_PARAMETER, value=triage_pass.token)
        engine = request.query_params.get(ENGINE_PARAMETER)
        if engine in state.engines:
            stream.parameter(name=ENGINE_PARAMETER, value=engine)
        language = _known_language(state.config, request.query_params.get(LANGUAGE_PARAMETER), facts.caller)
        if language:
            stream.parameter(name=LANGUAGE_PARAMETER, value=language)
        bound.info("triage pass opened", triage_pass=triage_pass.number, entry_node=triage_pass.entry_node)
        return _twiml(response.to_xml())

    async def _legacy(self, request: Request, facts: CallFacts, bound: Any) -> Response:
        """The legacy arm: the original path at once, no Realtime connection. Back to the Studio flow
        whose TwiML Redirect sent the call (`arm=legacy` leads to its old menu), else the legacy route.
        The call still gets a pass and an outcome, so records and reports count it."""
        state = self.state
        flow_sid = request.query_params.get("flow_sid")
        resume_flow_sid = flow_sid if flow_sid and _FLOW_SID.fullmatch(flow_sid) else None
        try:
            twiml = legacy_twiml(state.config, facts, public_url=state.public_url, resume_flow_sid=resume_flow_sid)
        except Exception as error:  # still never silence
            bound.error("legacy TwiML failed: fallback route", error=repr(error))
            return await self._fallback(facts, "error")
        try:
            triage_pass = await state.store.open_pass(
                facts.call_sid,
                caller=facts.caller,
                called=facts.called,
                account_sid=facts.account_sid,
                entry_node=_entry_node(request.query_params),
                arm=LEGACY_ARM,
            )
            await state.store.finish_pass(facts.call_sid, triage_pass.number, PassOutcome(LEGACY_ARM, (LEGACY_ARM,)))
            state.metrics.observe_finished_pass(LEGACY_ARM, None, LEGACY_ARM, None, 0.0)
            route = None if resume_flow_sid else state.config.routes.get(state.config.legacy_route)
            if isinstance(route, StudioRoute):
                await state.store.record_visit(facts.call_sid, route.studio_node)
        except Exception as error:  # the record is lost, the caller still gets the legacy path
            state.metrics.store_errors.inc()
            bound.error("cannot record the legacy call", error=repr(error))
        bound.info("legacy arm: the original path", studio_return=resume_flow_sid is not None)
        return _twiml(twiml)

    async def voice_after(self, request: Request) -> Response:
        form = await self._signed_form(request, "voice_after")
        if form is None:
            return _forbidden()
        state = self.state
        facts = _call_facts(form, AI_ARM)
        number = _int_or_none(request.query_params.get(PASS_PARAMETER))
        session = state.sessions.get((facts.call_sid, number or 0))
        if session is not None:
            # The hang-up path: Twilio closed the stream first; the engine may still be closing.
            with trio.move_on_after(state.after_wait_s):
                await session.realtime_closed.wait()
        elif number is not None:
            await self._wait_for_a_session_elsewhere(facts.call_sid, number)
        response = await self._after_answer(facts, number)
        # Once the caller has their answer: this pass's result is known, the brake may look at it.
        response.background = BackgroundTask(self._check_brake)
        return response

    async def _wait_for_a_session_elsewhere(self, call_sid: str, number: int) -> None:
        """The stream may have run on another worker or instance: a decided pass that has not finished
        is still closing its engine there, and the hand-back waits for that (a little). A pass with no
        decision gets its fallback at once: nothing waits on an engine that never decided."""
        store = self.state.store
        with trio.move_on_after(min(self.state.after_wait_s, _ELSEWHERE_WAIT_S)):
            while True:
                try:
                    record = await store.call_record(call_sid)
                except Exception:  # answering reports the store's trouble
                    return
                found = [p for p in (record.passes if record else ()) if p.triage_pass.number == number]
                if not found or found[0].decision is None or found[0].finished_at is not None:
                    return
                await trio.sleep(_ELSEWHERE_POLL_S)

    async def _after_answer(self, facts: CallFacts, number: int | None) -> Response:
        state = self.state
        try:
            triage_pass = None if number is None else await state.store.get_pass(facts.call_sid, number)
            if triage_pass is not None:
                facts = replace(facts, arm=triage_pass.arm)  # the arm travels with the call, from its pass
            decision = None if triage_pass is None else await state.store.get_decision(facts.call_sid, number)
            if decision is None:
                if triage_pass is not None:  # so the brake can tell a pass whose session never ran
                    await self._mark_fallback_answered(facts.call_sid, triage_pass.number)
                return await self._fallback(facts, "no_decision")
            twiml = dispatch_twiml(decision, state.config, facts, public_url=state.public_url)
            route = state.config.routes.get(decision.route)
            if isinstance(route, StudioRoute):
                await state.store.record_visit(facts.call_sid, route.studio_node)
            await state.store.mark_answered(facts.call_sid, number, decision.route)
        except Exception as error:
            state.metrics.store_errors.inc()
            log.error("answering the action URL failed: fallback route", call_sid=facts.call_sid, error=repr(error))
            return await self._fallback(facts, "error")
        state.metrics.after_answers.labels("decision").inc()
        return _twiml(twiml)

    async def _mark_fallback_answered(self, call_sid: str, number: int) -> None:
        try:
            await self.state.store.mark_answered(call_sid, number, self.state.config.triage.fallback_route)
        except Exception as error:
            self.state.metrics.store_errors.inc()
            log.error("cannot mark the fallback answered", call_sid=call_sid, error=repr(error))

    async def _check_brake(self) -> None:
        state = self.state
        if state.brake_look_pending:
            return  # the look already waiting runs after this pass was recorded: it judges it too
        state.brake_look_pending = True
        try:
            await trio.sleep_until(state.last_brake_look_at + BRAKE_LOOK_INTERVAL_S)
        finally:
            state.brake_look_pending = False
        state.last_brake_look_at = trio.current_time()
        try:
            trip = await state.rollout.check_brake()
        except Exception as error:  # the brake must never break a call; the next pass tries again
            state.metrics.store_errors.inc()
            log.error("cannot evaluate the rollout brake", error=repr(error))
            return
        if trip is not None:
            state.metrics.rollout_brake_trips.inc()

    async def _fallback(self, facts: CallFacts, source: str) -> Response:
        self.state.metrics.after_answers.labels(source).inc()
        try:
            return _twiml(fallback_twiml(self.state.config, facts, public_url=self.state.public_url))
        except Exception as error:  # still never silence
            log.error("fallback TwiML failed", error=repr(error))
            response = VoiceResponse()
            response.say(_LAST_RESORT_LINE)
            response.hangup()
            return _twiml(response.to_xml())

    async def voice_recorded(self, request: Request) -> Response:
        if await self._signed_form(request, "voice_recorded") is None:
            return _forbidden()
        response = VoiceResponse()
        response.hangup()
        return _twiml(response.to_xml())

    # ------------------------------------------------------------------ reading calls back

    def _signed_get(self, request: Request) -> bool:
        signature = request.headers.get(SIGNATURE_HEADER)
        return self.state.signature.check_webhook(request.url.path, request.url.query, {}, signature)

    def _bearer_ok(self, request: Request) -> bool:
        token = self.state.handoff_token
        given = request.headers.get("authorization", "")
        return bool(token) and given.startswith("Bearer ") and secrets.compare_digest(given[7:], token)

    async def call_handoff(self, request: Request) -> Response:
        if not (self._bearer_ok(request) or self._signed_get(request)):
            self.state.metrics.signature_failures.labels("call_handoff").inc()
            return _forbidden()
        record = await self.state.store.call_record(request.path_params["call_sid"])
        decided = [p for p in (record.passes if record else ()) if p.decision is not None]
        if not decided:
            return JSONResponse({"error": "no handoff for this call"}, status_code=404)
        latest = decided[-1]
        body = {
            "call_sid": record.call_sid,
            "pass": latest.triage_pass.number,
            "arm": latest.triage_pass.arm,
            **decision_to_json(latest.decision),
        }
        return JSONResponse(body)

    async def call_record(self, request: Request) -> Response:
        if not self._signed_get(request):
            self.state.metrics.signature_failures.labels("call_record").inc()
            return _forbidden()
        record = await self.state.store.call_record(request.path_params["call_sid"])
        if record is None:
            return JSONResponse({"error": "unknown call"}, status_code=404)
        return Response(orjson.dumps(record.to_json()), media_type="application/json")

    async def healthz(self, request: Request) -> Response:
        state = self.state
        return JSONResponse(
            {
                "status": "shutting_down" if state.shutting_down.is_set() else "ok",
                "engine": state.connector.name,
                "failover": state.failover.name if state.failover else None,
                "engines": sorted({state.connector.name, *state.engines}),
                "active_calls": len(state.sessions),
                "signature_check": state.signature.enabled,
            }
        )

    async def metrics(self, request: Request) -> Response:
        return Response(self.state.metrics.exposition(), media_type=METRICS_CONTENT_TYPE)

    # ------------------------------------------------------------------ the Media Stream

    async def media_stream(self, stream: trio.SocketStream, head: bytes) -> None:
        """A `GET /media` upgrade whose request head (`head`) was read by the server's router."""
        state = self.state

        def signed(request: Any) -> bool:
            path, _, query = request.path.partition("?")
            if state.signature.check_websocket(path, query, request.headers.get(SIGNATURE_HEADER)):
                return True
            state.metrics.signature_failures.labels("media").inc()
            log.warning("refused: bad signature on the stream upgrade")
            return False

        websocket = await accept_websocket(
            stream, head, authorize=signed, max_message_bytes=MAX_WEBSOCKET_MESSAGE_BYTES
        )
        if websocket is None:  # refused (403) or not a valid upgrade (400)
            return
        socket = TwilioMediaSocket(websocket)
        try:
            await self._run_stream(socket)
        except Exception:  # a bug: logged here; the caller gets the fallback route at /voice/after
            log.exception("media stream failed")
        finally:
            await socket.close(1000)

    async def _run_stream(self, socket: TwilioMediaSocket) -> None:
        state = self.state
        opened = await self._open_stream(socket)
        if opened is None:
            return
        start, triage_pass = opened
        history = CallHistory(
            entry_node=triage_pass.entry_node,
            visited_nodes=await state.store.visited_nodes(triage_pass.call_sid),
        )
        parameters = start.start.custom_parameters
        deps = state.session_deps(parameters.get(ENGINE_PARAMETER))
        language = _known_language(state.config, parameters.get(LANGUAGE_PARAMETER), None)
        session = CallSession(deps, socket, start, triage_pass, history, known_language=language)
        key = (triage_pass.call_sid, triage_pass.number)
        state.sessions[key] = session
        try:
            await session.run()
        finally:
            if state.sessions.get(key) is session:
                del state.sessions[key]

    async def _open_stream(self, socket: TwilioMediaSocket) -> tuple[StartMessage, TriagePass] | None:
        """Wait for `start` and match it to an open pass by its token; None (socket closed) otherwise."""
        state = self.state
        start: StartMessage | None = None
        with trio.move_on_after(state.stream_start_timeout_s):
            while start is None:
                frame = await socket.receive()
                if frame is None:
                    return None
                try:
                    message = parse_twilio_message(frame)
                except MediaStreamProtocolError as error:
                    state.metrics.media_errors.labels(error.kind).inc()
                    continue
                if isinstance(message, StartMessage):
                    start = message
        if start is None:
            log.warning("no start message on the stream; closing it")
            await socket.close(1008)
            return None
        call_sid = start.start.call_sid
        parameters = start.start.custom_parameters
        number = _int_or_none(parameters.get(PASS_PARAMETER))
        token = parameters.get(TOKEN_PARAMETER, "")
        triage_pass = None
        if number is not None and _CALL_SID.fullmatch(call_sid):
            triage_pass = await state.store.get_pass(call_sid, number)
        if triage_pass is None or not secrets.compare_digest(token.encode(), triage_pass.token.encode()):
            state.metrics.signature_failures.labels("media_token").inc()
            log.warning("stream does not match an open triage pass; closing it", call_sid=call_sid)
            await socket.close(1008)
            return None
        return start, triage_pass


def _known_language(config: RoutingConfig, given: str | None, caller: str | None) -> str | None:
    """The caller's language before they speak: what Studio passed in (kept as given, supported or not:
    an unsupported one sends the call to a person), else what the caller's number suggests."""
    code = canonical_language_code(given) if given else None
    if code is not None:
        return config.match_language(code) or code
    return config.language_for_caller(caller) if config.multilingual else None


def _call_facts(form: Any, arm: str) -> CallFacts:
    return CallFacts(
        call_sid=str(form.get("CallSid", "")),
        caller=str(form.get("From", "")),
        called=str(form.get("To", "")),
        account_sid=str(form.get("AccountSid", "")),
        arm=arm,
    )


def _entry_node(query: Any) -> str | None:
    """`?flow_sid=FW…&node=widget` on the webhook URL names the Studio node that sent the call to us."""
    flow_sid, node = query.get("flow_sid"), query.get("node")
    if not flow_sid or not _FLOW_SID.fullmatch(flow_sid):
        return None
    return studio_node_key(flow_sid, node if node and _WIDGET.fullmatch(node) else None)


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None

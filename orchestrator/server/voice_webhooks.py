"""Twilio's voice webhooks: where a call comes in, where it goes after triage, and the end of a voicemail.

    POST /voice/incoming      Twilio's voice webhook (or a Studio TwiML Redirect widget): assigns the
                              rollout arm; for the AI arm opens a triage pass and answers
                              <Connect action><Stream><Parameter/></Stream></Connect>, for the legacy arm
                              answers the legacy path at once (no Realtime connection)
    POST /voice/after         the <Connect action>: the TwiML of the pass's decision, else the fallback;
                              then the rollout brake looks at the AI arm's recent passes
    POST /voice/recorded      the <Record action> of the voicemail route: <Hangup/>

Every request is checked against `X-Twilio-Signature` (403 when it fails). Whatever goes wrong on the
way, a caller gets TwiML that moves the call on, never silence.
"""
from __future__ import annotations

import re
from typing import Any

import structlog
import trio
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from twilio.twiml.voice_response import VoiceResponse

from bridge.twilio import SIGNATURE_HEADER
from machines import Arm
from orchestrator.call import CallFacts, legacy_twiml
from orchestrator.config import StudioRoute, caller_number, studio_node_key
from orchestrator.server.call_parameters import (
    CALL_SID,
    ENGINE_PARAMETER,
    LANGUAGE_PARAMETER,
    PASS_PARAMETER,
    TOKEN_PARAMETER,
    known_language,
    pass_number,
)
from orchestrator.server.forwarded_origin import origin_forwarded_elsewhere
from orchestrator.server.hand_back import HandBack
from orchestrator.server.responses import forbidden, twiml_response
from orchestrator.server.state import ServerState
from orchestrator.store import PassOutcome, store_error_kind
from orchestrator.telemetry import mask_phone

log = structlog.get_logger("orchestrator.server.voice_webhooks")

# A burst of finished calls (hundreds a second at capacity) is judged by one look of the brake a second,
# not one look each (~5 ms of the event loop per look on SQLite); a trip comes at most this much later.
BRAKE_LOOK_INTERVAL_S = 1.0
_FLOW_SID = re.compile(r"FW[0-9a-fA-F]{32}")
_WIDGET = re.compile(r"[^\s/]{1,64}")
_ELSEWHERE_POLL_S = 0.02  # how often /voice/after looks for a session on another instance to finish
# An engine closes in milliseconds; longer means the instance running the session died: answer anyway.
_ELSEWHERE_WAIT_S = 2.0


def voice_routes(state: ServerState) -> list[Route]:
    webhooks = VoiceWebhooks(state)
    return [
        Route("/voice/incoming", webhooks.voice_incoming, methods=["POST"]),
        Route("/voice/after", webhooks.voice_after, methods=["POST"]),
        Route("/voice/recorded", webhooks.voice_recorded, methods=["POST"]),
    ]


class VoiceWebhooks:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.hand_back = HandBack(state)

    async def _signed_form(self, request: Request, endpoint: str) -> Any | None:
        """The form of a signed Twilio POST, or None (counted) when the signature does not hold."""
        form = await request.form()
        signature = request.headers.get(SIGNATURE_HEADER)
        if not self.state.signature.check_webhook(request.url.path, request.url.query, form, signature):
            self.state.metrics.signature_failures.labels(endpoint).inc()
            elsewhere = origin_forwarded_elsewhere(self.state.public_url, request.headers)
            if elsewhere is None:
                log.warning("refused: bad signature", endpoint=endpoint)
            else:
                log.warning("refused: bad signature; the proxy forwards a request made to another origin than the "
                            "public URL (ORCHESTRATOR_PUBLIC_URL)", endpoint=endpoint, forwarded_origin=elsewhere,
                            public_url=self.state.public_url)
            return None
        return form

    async def voice_incoming(self, request: Request) -> Response:
        form = await self._signed_form(request, "voice_incoming")
        if form is None:
            return forbidden()
        state = self.state
        call_sid = str(form.get("CallSid", ""))
        if not CALL_SID.fullmatch(call_sid):
            return PlainTextResponse("CallSid missing or malformed", status_code=400)
        setting = await state.rollout.current()
        assignment = state.rollout.assign(setting, caller_number(str(form.get("From", ""))), call_sid)
        state.metrics.rollout_calls.labels(assignment.arm).inc()
        facts = _call_facts(form, assignment.arm)
        bound = log.bind(call_sid=call_sid, caller=mask_phone(facts.caller), arm=assignment.arm)
        if assignment.arm == Arm.LEGACY:
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
                arm=Arm.AI,
            )
        except Exception as error:
            state.metrics.store_errors.labels(store_error_kind(error)).inc()
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
        language = known_language(state.config, request.query_params.get(LANGUAGE_PARAMETER), facts.caller)
        if language:
            stream.parameter(name=LANGUAGE_PARAMETER, value=language)
        bound.info("triage pass opened", triage_pass=triage_pass.number, entry_node=triage_pass.entry_node)
        return twiml_response(response.to_xml())

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
                arm=Arm.LEGACY,
            )
            await state.store.finish_pass(facts.call_sid, triage_pass.number, PassOutcome(Arm.LEGACY, (Arm.LEGACY,)))
            state.metrics.observe_finished_pass(Arm.LEGACY, None, Arm.LEGACY, None, 0.0)
            route = None if resume_flow_sid else state.config.routes.get(state.config.legacy_route)
            if isinstance(route, StudioRoute):
                await state.store.record_visit(facts.call_sid, route.studio_node)
        except Exception as error:  # the record is lost, the caller still gets the legacy path
            state.metrics.store_errors.labels(store_error_kind(error)).inc()
            bound.error("cannot record the legacy call", error=repr(error))
        bound.info("legacy arm: the original path", studio_return=resume_flow_sid is not None)
        return twiml_response(twiml)

    async def voice_after(self, request: Request) -> Response:
        form = await self._signed_form(request, "voice_after")
        if form is None:
            return forbidden()
        state = self.state
        facts = _call_facts(form, Arm.AI)
        number = pass_number(request.query_params.get(PASS_PARAMETER))
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
        twiml, source = await self.hand_back.twiml(facts, number)
        self.state.metrics.after_answers.labels(source).inc()
        return twiml_response(twiml)

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
            state.metrics.store_errors.labels(store_error_kind(error)).inc()
            log.error("cannot evaluate the rollout brake", error=repr(error))
            return
        if trip is not None:
            state.metrics.rollout_brake_trips.inc()

    async def _fallback(self, facts: CallFacts, source: str) -> Response:
        self.state.metrics.after_answers.labels(source).inc()
        return twiml_response(self.hand_back.fallback_twiml(facts))

    async def voice_recorded(self, request: Request) -> Response:
        if await self._signed_form(request, "voice_recorded") is None:
            return forbidden()
        response = VoiceResponse()
        response.hangup()
        return twiml_response(response.to_xml())


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

"""The TwiML answered at our `<Connect action>` URL: where a call goes once the AI is done with it.

Twilio requests the `<Connect action>` URL whenever the Media Stream ends (a deliberate handoff, a
crash, a dropped socket). The handler looks up the persisted `DispatchDecision` by CallSid and
answers `dispatch_twiml(...)`, or `fallback_twiml(...)` when there is no decision: never silence.

One TwiML shape per route kind (DESIGN.md section 5, protocols/twilio.md sections 3-4):

- studio, resume: `<Redirect>` to the flow webhook with `FlowEvent=return` and the decision as
  query parameters (read in the flow as `{{widgets.<redirect widget>.intent}}` and so on);
- studio, fresh: `<Redirect>` to the flow webhook with `Trigger=incomingCall` (a new execution);
- flex: `<Enqueue workflowSid><Task>{json attributes}</Task></Enqueue>`;
- resolve: `<Say>` the answer, `<Hangup/>`;
- voicemail: `<Say>` the prompt, `<Record>`, `<Hangup/>`;
- sip: `<Dial answerOnBridge="true"><Sip>uri</Sip></Dial>`.

Every Studio return carries the call's rollout arm (`arm`; in fresh mode through the handoff endpoint, with
the rest of the data), and so does every Flex task. A call of the
legacy arm never reaches the AI: `legacy_twiml(...)` hands it straight back to the Studio flow that sent
it (`FlowEvent=return&arm=legacy`, which the imported flow routes to its old menu), or, when our number
is the entry, answers the config's `rollout.legacy_route`.

All XML is built with twilio's `VoiceResponse`; nothing here concatenates markup.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

from twilio.twiml.voice_response import VoiceResponse

from machines import LANGUAGE_FIELD, Arm, DispatchDecision
from orchestrator.config import (
    RESERVED_TASK_ATTRIBUTES,
    FlexRoute,
    ResolveRoute,
    RoutingConfig,
    SipRoute,
    StudioRoute,
    VoicemailRoute,
)

log = logging.getLogger(__name__)

STUDIO_FLOW_WEBHOOK = "https://webhooks.twilio.com/v1/Accounts/{account_sid}/Flows/{flow_sid}"

# Reasons for a handoff that did not come from a decision as it was made.
NO_DECISION = "no_decision"  # no decision persisted for the CallSid: the config's fallback route
ROUTE_MISSING = "route_missing"  # the decided route is no longer in the config: the human route
NO_ACCOUNT_SID = "no_account_sid"  # a Studio URL cannot be built without one: the human route

# Where `<Record>` sends Twilio when the recording ends. Without an action Twilio re-requests the
# current document, i.e. our `<Connect action>` URL, which would answer the voicemail TwiML again
# (a loop). The server must answer this path with `<Hangup/>`.
RECORDING_ACTION_PATH = "/voice/recorded"

# Keep the Studio return URL short: values become query parameters.
STUDIO_SUMMARY_LIMIT = 200
STUDIO_VALUE_LIMIT = 200
# The Flex task summary is shown to an agent; a paragraph is plenty.
FLEX_SUMMARY_LIMIT = 1000


@dataclass(frozen=True)
class CallFacts:
    """The facts of the call, from Twilio's `<Connect action>` request."""

    call_sid: str  # CallSid
    caller: str  # From
    called: str  # To
    account_sid: str  # AccountSid
    arm: str = Arm.AI  # the rollout arm that handled the call
    language: str | None = None  # the caller's language, when the AI detected it


@dataclass(frozen=True)
class _Handoff:
    """What the TwiML is built from: a decision as made, or a synthetic one (fallback, missing route)."""

    route_name: str
    reason: str
    intent: str | None = None
    confidence: float | None = None
    summary: str = ""
    captured: Mapping[str, str] = field(default_factory=dict)


def dispatch_twiml(decision: DispatchDecision, config: RoutingConfig, call: CallFacts, *, public_url: str) -> str:
    """The TwiML that sends the call where `decision` says.

    The route is looked up in `config` by name; when the config changed since the decision and the
    route is gone, the call goes to the human route (reason "route_missing") instead of failing.

    Studio fresh mode passes no data in the URL (Studio does not reliably expose it to a new
    execution): the decision stays with us keyed by CallSid, and the flow reads it from
    `GET {public_url}/calls/{CallSid}/handoff`.

    `public_url` is our externally reachable base URL, for the absolute callback URLs in the TwiML.
    """
    handoff = _Handoff(
        route_name=decision.route,
        reason=str(decision.reason),
        intent=decision.intent,
        confidence=decision.confidence,
        summary=decision.summary,
        captured=decision.captured,
    )
    return _render(handoff, config, call, public_url)


def fallback_twiml(config: RoutingConfig, call: CallFacts, *, public_url: str) -> str:
    """The TwiML when no decision exists for the call (crash, drop, timeout): the fallback route."""
    return _render(_Handoff(route_name=config.triage.fallback_route, reason=NO_DECISION), config, call, public_url)


def legacy_twiml(config: RoutingConfig, call: CallFacts, *, public_url: str, resume_flow_sid: str | None = None) -> str:
    """The TwiML of a legacy-arm call. `resume_flow_sid`: the Studio flow whose TwiML Redirect widget sent
    the call (resume mode); it gets the call back at once with `arm=legacy`. Otherwise (or without an
    account SID to build the flow's URL) the config's legacy route (default: the fallback route)."""
    account_sid = config.twilio.account_sid or call.account_sid
    if resume_flow_sid is not None and account_sid:
        base = STUDIO_FLOW_WEBHOOK.format(account_sid=account_sid, flow_sid=resume_flow_sid)
        response = VoiceResponse()
        response.redirect(f"{base}?{urlencode({'FlowEvent': 'return', 'arm': Arm.LEGACY})}", method="POST")
        return response.to_xml()
    return _render(_Handoff(route_name=config.legacy_route, reason=Arm.LEGACY), config, call, public_url)


def _render(handoff: _Handoff, config: RoutingConfig, call: CallFacts, public_url: str) -> str:
    language = handoff.captured.get(LANGUAGE_FIELD) or call.language
    try:
        route = config.route_for(handoff.route_name, language)  # the language's own target, if it has one
    except KeyError:
        route = None
    if route is None:
        log.warning(
            "decided route %r is not in the config; sending call %s to the human route %r",
            handoff.route_name, call.call_sid, config.triage.human_route,
        )
        return _to_human(handoff, ROUTE_MISSING, config, call, public_url)

    response = VoiceResponse()
    match route:
        case StudioRoute():
            account_sid = config.twilio.account_sid or call.account_sid
            if not account_sid:
                log.warning("no account SID for the Studio route %r of call %s", handoff.route_name, call.call_sid)
                return _to_human(handoff, NO_ACCOUNT_SID, config, call, public_url)
            response.redirect(_studio_url(route, account_sid, handoff, call.arm), method="POST")
        case FlexRoute():
            enqueue = response.enqueue(None, workflow_sid=route.workflow_sid)
            enqueue.task(_task_attributes(route, handoff, call), priority=route.priority, timeout=route.timeout)
        case ResolveRoute():
            response.say(route.answer)
            response.hangup()
        case VoicemailRoute():
            if route.prompt:
                response.say(route.prompt)
            response.record(
                action=public_url.rstrip("/") + RECORDING_ACTION_PATH,
                method="POST",
                max_length=route.max_length,
                play_beep=True,
            )
            response.hangup()  # reached when the recording is empty (Twilio skips the action then)
        case SipRoute():
            response.dial(answer_on_bridge=True).sip(route.uri)
    return response.to_xml()


def _to_human(handoff: _Handoff, reason: str, config: RoutingConfig, call: CallFacts, public_url: str) -> str:
    # Config validation guarantees the human route exists and is never Studio, so this ends here.
    human = _Handoff(
        route_name=config.triage.human_route,
        reason=reason,
        intent=handoff.intent,
        confidence=handoff.confidence,
        summary=handoff.summary,
        captured=handoff.captured,
    )
    return _render(human, config, call, public_url)


def _studio_url(route: StudioRoute, account_sid: str, handoff: _Handoff, arm: str) -> str:
    base = STUDIO_FLOW_WEBHOOK.format(account_sid=account_sid, flow_sid=route.flow_sid)
    if route.mode == "fresh":
        return f"{base}?{urlencode({'Trigger': 'incomingCall'})}"  # the arm too is at /calls/{CallSid}/handoff
    params: dict[str, str] = {
        "FlowEvent": "return",
        "arm": arm,
        "intent": handoff.intent or "",
        "route": handoff.route_name,
        "confidence": _confidence_text(handoff.confidence),
        "summary": _truncate(handoff.summary, STUDIO_SUMMARY_LIMIT),
        "reason": handoff.reason,
    }
    for name, value in handoff.captured.items():
        if name not in params:  # a field named like one of ours cannot replace it
            params[name] = _truncate(value, STUDIO_VALUE_LIMIT)
    return f"{base}?{urlencode({name: value for name, value in params.items() if value})}"


def _task_attributes(route: FlexRoute, handoff: _Handoff, call: CallFacts) -> str:
    """The `<Task>` JSON: the captured fields, then the route's attributes, then ours (which always win)."""
    captured = {name: value.strip() for name, value in handoff.captured.items() if value and value.strip()}
    ours: dict[str, object] = {
        "type": "inbound",
        "name": captured.get("caller_name") or call.caller,
        "from": call.caller,
        "call_sid": call.call_sid,
        "intent": handoff.intent,
        "summary": _truncate(handoff.summary, FLEX_SUMMARY_LIMIT),
        "priority": route.priority,
        "ai_confidence": None if handoff.confidence is None else round(handoff.confidence, 2),
        "ai_reason": handoff.reason,
        "arm": call.arm,
        "captured": captured,
    }
    language = captured.get(LANGUAGE_FIELD) or call.language
    if language:
        ours["language"] = language  # TaskRouter workflows route on task.language
    attributes: dict[str, object] = {
        name: value for name, value in captured.items() if name not in RESERVED_TASK_ATTRIBUTES
    }
    attributes.update(route.attributes)
    attributes.update(ours)
    return json.dumps(attributes, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _confidence_text(confidence: float | None) -> str:
    return "" if confidence is None else f"{confidence:.2f}"


def _truncate(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"

"""What happens to a call after triage, and the page that shows it all: the operations endpoints.

    POST /taskrouter/events      TaskRouter's event callback (signed): Flex task times, handle time (AHT)
    POST /calls/{CallSid}/csat   a satisfaction score 1–5 and an optional comment (bearer `ops_token`, or signed)
    POST /voice/status           the phone number's call status callback (signed): status and duration
    GET  /ops                    live calls, the rollout, figures per arm and a chart (bearer or HTTP Basic)
    GET  /ops/data.json          what /ops redraws itself from, every 2 s

What they learn is kept as call facts (`CallStore.record_call_facts`), only for calls the store knows:
requests about other calls are answered 200 and counted, never stored. Malformed requests get 400 with
the reason. Facts are read, merged and written under one lock, so out-of-order and repeated callbacks
settle to the same facts: the earliest acceptance, the latest completion, a final call status that a
late "ringing" does not undo. (Two server processes can still interleave; handle time is re-derived
after every write, so it appears as soon as either process sees both ends.)
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import math
import re
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import structlog
import trio
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bridge.twilio import SIGNATURE_HEADER
from orchestrator.rollout import (
    ROLLOUT_SETTING,
    ArmFigures,
    ReportInputError,
    arm_figures,
    parse_since,
    rollout_view,
)
from orchestrator.server.ops_page import LiveCall, OpsSnapshot, ops_page
from orchestrator.server.responses import forbidden
from orchestrator.server.state import ServerState
from orchestrator.store import FactValue, store_error_kind
from orchestrator.telemetry import mask_phone

log = structlog.get_logger("orchestrator.ops")

_CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")
_TASK_SID = re.compile(r"WT[0-9a-fA-F]{32}")
MAX_CSAT_BODY_BYTES = 4096
MAX_CSAT_COMMENT = 500
DEFAULT_OPS_WINDOW = "24h"
# The page's figures read at most this many calls, and at most once per FIGURES_TTL_S for all viewers.
MAX_FIGURE_CALLS = 2000
FIGURES_TTL_S = 5.0

# TaskRouter events that move a call's Flex facts; every other event type is answered and ignored.
TASK_CREATED = "task.created"
RESERVATION_ACCEPTED = "reservation.accepted"
TASK_WRAPUP = "task.wrapup"  # the conversation ended; after-call work starts
TASK_COMPLETED = "task.completed"  # the agent finished after-call work: the end of handle time
TASK_CANCELED = "task.canceled"  # e.g. the caller hung up in the queue
TRACKED_TASK_EVENTS = frozenset({TASK_CREATED, RESERVATION_ACCEPTED, TASK_WRAPUP, TASK_COMPLETED, TASK_CANCELED})

CALL_STATUSES = frozenset({"queued", "initiated", "ringing", "in-progress", "completed", "busy", "failed",
                           "no-answer", "canceled"})
FINAL_CALL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


class BadRequest(Exception):
    """A request that cannot be used; the message (one line) is the 400 answer."""


# ---------------------------------------------------------------------------- facts, as arithmetic


def task_event_facts(facts: Mapping[str, FactValue], event_type: str, task_sid: str, at: float) -> dict[str, FactValue]:
    """The facts a TaskRouter event changes, given the call's facts so far (empty: nothing new).

    Earliest wins for creation and acceptance, latest for wrap-up and completion, so duplicates and any
    arrival order give the same result. Handle time (accepted → completed, after-call work included, as
    AHT is usually counted) follows whenever both ends are known.
    """
    updates: dict[str, FactValue] = {}
    if event_type == TASK_CREATED:
        created = _number(facts.get("flex_created_at"))
        if created is None or at < created:
            updates.update(flex_created_at=at, flex_task_sid=task_sid)
    elif event_type == RESERVATION_ACCEPTED:
        accepted = _number(facts.get("flex_accepted_at"))
        if accepted is None or at < accepted:
            updates["flex_accepted_at"] = at
    elif event_type in (TASK_WRAPUP, TASK_COMPLETED):
        name = "flex_wrapup_at" if event_type == TASK_WRAPUP else "flex_completed_at"
        earlier = _number(facts.get(name))
        if earlier is None or at > earlier:
            updates[name] = at
    elif event_type == TASK_CANCELED and facts.get("flex_canceled") is not True:
        updates["flex_canceled"] = True
    if event_type in TRACKED_TASK_EVENTS and not isinstance(facts.get("flex_task_sid"), str):
        updates.setdefault("flex_task_sid", task_sid)
    updates.update(handle_time_facts({**facts, **updates}))
    return updates


def handle_time_facts(facts: Mapping[str, FactValue]) -> dict[str, FactValue]:
    """`handle_time_s` when acceptance and completion are both known and it is not yet what they say."""
    accepted, completed = _number(facts.get("flex_accepted_at")), _number(facts.get("flex_completed_at"))
    if accepted is None or completed is None or completed < accepted:
        return {}
    handle_time = round(completed - accepted, 3)
    return {} if facts.get("handle_time_s") == handle_time else {"handle_time_s": handle_time}


def call_status_facts(facts: Mapping[str, FactValue], status: str, duration_s: int | None) -> dict[str, FactValue]:
    """A final status is never replaced by a later non-final one (callbacks can arrive out of order)."""
    if facts.get("call_status") in FINAL_CALL_STATUSES and status not in FINAL_CALL_STATUSES:
        return {}
    updates: dict[str, FactValue] = {}
    if facts.get("call_status") != status:
        updates["call_status"] = status
    if duration_s is not None and facts.get("call_duration_s") != duration_s:
        updates["call_duration_s"] = duration_s
    return updates


def task_event_time(form: Mapping[str, Any]) -> float:
    """When the event happened, unix seconds: `TimestampMs` when sent, else `Timestamp` (unix seconds,
    or ISO 8601 should it come in that form)."""
    millis = form.get("TimestampMs")
    if millis:
        value = _finite(millis)
        if value is None or value < 0:
            raise BadRequest(f"TimestampMs {str(millis)[:40]!r} is not a number of milliseconds")
        return value / 1000
    text = str(form.get("Timestamp") or "").strip()
    if not text:
        raise BadRequest("Timestamp missing")
    value = _finite(text)
    if value is None:
        try:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest(f"Timestamp {text[:40]!r} is neither unix seconds nor ISO 8601") from None
        value = (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()
    if value < 0:
        raise BadRequest(f"Timestamp {text[:40]!r} is before 1970")
    return value


def csat_from(body: Mapping[str, Any]) -> tuple[int, str | None]:
    """(score, comment) from a JSON object or a form; BadRequest naming the problem."""
    score = body.get("score")
    if isinstance(score, str) and re.fullmatch(r"\s*[0-9]\s*", score):
        score = int(score)
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
        raise BadRequest("score must be a whole number from 1 to 5")
    comment = body.get("comment")
    if comment is None:
        return score, None
    if not isinstance(comment, str):
        raise BadRequest("comment must be text")
    comment = comment.strip()
    if len(comment) > MAX_CSAT_COMMENT:
        raise BadRequest(f"comment is longer than {MAX_CSAT_COMMENT} characters")
    return score, comment or None


def _finite(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


# ---------------------------------------------------------------------------- the endpoints


def ops_routes(state: ServerState) -> list[Route]:
    endpoints = OpsEndpoints(state)
    return [
        Route("/taskrouter/events", endpoints.taskrouter_events, methods=["POST"]),
        Route("/calls/{call_sid}/csat", endpoints.call_csat, methods=["POST"]),
        Route("/voice/status", endpoints.voice_status, methods=["POST"]),
        Route("/ops", endpoints.ops, methods=["GET"]),
        Route("/ops/data.json", endpoints.ops_data, methods=["GET"]),
    ]


def _bad_request(reason: str) -> Response:
    return PlainTextResponse(reason, status_code=400)


def _unavailable() -> Response:
    return PlainTextResponse("the call store is unavailable; try again", status_code=503)


class OpsEndpoints:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        # Facts are read-merged-written: one writer at a time in this process keeps the merge whole.
        self._facts_lock = trio.Lock()
        self._figures: tuple[str, float, list[ArmFigures], int, bool] | None = None

    # ------------------------------------------------------------------ shared plumbing

    def _signed(self, request: Request, params: Any, endpoint: str) -> bool:
        """`params`: the form, or the raw body (bytes) of a JSON request."""
        signature = request.headers.get(SIGNATURE_HEADER)
        signatures = self.state.signature
        check = signatures.check_json_webhook if isinstance(params, bytes) else signatures.check_webhook
        if check(request.url.path, request.url.query, params, signature):
            return True
        self.state.metrics.signature_failures.labels(endpoint).inc()
        log.warning("refused: bad signature", endpoint=endpoint)
        return False

    async def _form(self, request: Request) -> Any:
        try:
            return await request.form()
        except Exception as error:  # a body python-multipart cannot parse
            raise BadRequest(f"the body is not a form: {type(error).__name__}") from None

    def _token_given(self, request: Request) -> bool:
        """The bearer token, or HTTP Basic with the token as the password (any user name)."""
        token = self.state.ops_token
        if not token:
            return False
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            given = value.strip()
        elif scheme.lower() == "basic":
            try:
                given = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                return False
        else:
            return False
        return secrets.compare_digest(given.encode(), token.encode())

    async def _merge_facts(
        self, call_sid: str, change: Callable[[Mapping[str, FactValue]], dict[str, FactValue]]
    ) -> dict[str, FactValue] | None:
        """Apply `change(facts) -> updates` to a known call; None when the store does not know the call."""
        store = self.state.store
        async with self._facts_lock:
            record = await store.call_record(call_sid)
            if record is None:
                return None
            updates = change(record.facts)
            if updates:
                await store.record_call_facts(call_sid, updates)
                fresh = await store.call_record(call_sid)
                derived = handle_time_facts(fresh.facts) if fresh is not None else {}
                if derived:
                    await store.record_call_facts(call_sid, derived)
                    updates = {**updates, **derived}
            return updates

    # ------------------------------------------------------------------ TaskRouter

    async def taskrouter_events(self, request: Request) -> Response:
        counter = self.state.metrics.taskrouter_events
        try:
            form = await self._form(request)
        except BadRequest as problem:
            counter.labels("malformed").inc()
            return _bad_request(str(problem))
        if not self._signed(request, form, "taskrouter_events"):
            return forbidden()
        try:
            parsed = self._task_event(form)
        except BadRequest as problem:
            counter.labels("malformed").inc()
            log.warning("TaskRouter event refused", reason=str(problem))
            return _bad_request(str(problem))
        if parsed is None:
            counter.labels("ignored_event").inc()
            return JSONResponse({"result": "ignored_event"})
        event_type, task_sid, call_sid, at = parsed
        if call_sid is None:
            counter.labels("not_ours").inc()
            return JSONResponse({"result": "not_ours"})
        try:
            updates = await self._merge_facts(call_sid, lambda facts: task_event_facts(facts, event_type, task_sid, at))
        except Exception as error:
            self.state.metrics.store_errors.labels(store_error_kind(error)).inc()
            log.error("cannot record a TaskRouter event", call_sid=call_sid, error=repr(error))
            return _unavailable()
        if updates is None:
            counter.labels("not_ours").inc()
            return JSONResponse({"result": "not_ours"})
        result = "recorded" if updates else "unchanged"
        counter.labels(result).inc()
        log.info("TaskRouter event", call_sid=call_sid, event_type=event_type, facts=sorted(updates))
        return JSONResponse({"result": result, "call_sid": call_sid, "facts": updates})

    def _task_event(self, form: Any) -> tuple[str, str, str | None, float] | None:
        """(event type, task sid, our call's sid or None, when); None for an event type not tracked."""
        event_type = str(form.get("EventType") or "").strip()
        if not event_type:
            raise BadRequest("EventType missing")
        if event_type not in TRACKED_TASK_EVENTS:
            return None
        task_sid = str(form.get("TaskSid") or "")
        if not _TASK_SID.fullmatch(task_sid):
            raise BadRequest("TaskSid missing or malformed")
        attributes_text = form.get("TaskAttributes")
        if not attributes_text:
            raise BadRequest("TaskAttributes missing")
        try:
            attributes = orjson.loads(str(attributes_text))
        except orjson.JSONDecodeError:
            raise BadRequest("TaskAttributes is not JSON") from None
        if not isinstance(attributes, dict):
            raise BadRequest("TaskAttributes is not a JSON object")
        at = task_event_time(form)
        call_sid = attributes.get("call_sid")
        # Tasks that no call of ours created (chat, callbacks, other lines) carry no CallSid of ours.
        ours = call_sid if isinstance(call_sid, str) and _CALL_SID.fullmatch(call_sid) else None
        return event_type, task_sid, ours, at

    # ------------------------------------------------------------------ CSAT and call status

    async def call_csat(self, request: Request) -> Response:
        counter = self.state.metrics.call_feedback
        call_sid = request.path_params["call_sid"]
        body = await request.body()
        if len(body) > MAX_CSAT_BODY_BYTES:
            counter.labels("csat", "malformed").inc()
            return _bad_request(f"the body is larger than {MAX_CSAT_BODY_BYTES} bytes")
        is_json = request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json"
        try:
            fields: Any = _json_object(body) if is_json else await self._form(request)
        except BadRequest as problem:
            fields, unreadable = None, problem
        else:
            unreadable = None
        # JSON is signed over the raw body (`?bodySHA256=` on the URL), a form over its fields.
        signed_params = body if is_json else fields
        if not (self._token_given(request) or (fields is not None and self._signed(request, signed_params, "csat"))):
            counter.labels("csat", "refused").inc()
            return forbidden("a bearer token (ops_token) or a valid X-Twilio-Signature is required")
        try:
            if unreadable is not None:
                raise unreadable
            if not _CALL_SID.fullmatch(call_sid):
                raise BadRequest("CallSid malformed")
            score, comment = csat_from(fields)
        except BadRequest as problem:
            counter.labels("csat", "malformed").inc()
            return _bad_request(str(problem))
        try:
            updates = await self._merge_facts(call_sid, lambda _: {"csat": score, "csat_comment": comment})
        except Exception as error:
            self.state.metrics.store_errors.labels(store_error_kind(error)).inc()
            log.error("cannot record a CSAT score", call_sid=call_sid, error=repr(error))
            return _unavailable()
        if updates is None:
            counter.labels("csat", "unknown_call").inc()
            return JSONResponse({"error": "unknown call"}, status_code=404)
        counter.labels("csat", "recorded").inc()
        return JSONResponse({"call_sid": call_sid, "csat": score, "csat_comment": comment})

    async def voice_status(self, request: Request) -> Response:
        counter = self.state.metrics.call_feedback
        try:
            form = await self._form(request)
        except BadRequest as problem:
            counter.labels("call_status", "malformed").inc()
            return _bad_request(str(problem))
        if not self._signed(request, form, "voice_status"):
            return forbidden()
        try:
            call_sid, status, duration = _call_status(form)
        except BadRequest as problem:
            counter.labels("call_status", "malformed").inc()
            return _bad_request(str(problem))
        try:
            updates = await self._merge_facts(call_sid, lambda facts: call_status_facts(facts, status, duration))
        except Exception as error:
            self.state.metrics.store_errors.labels(store_error_kind(error)).inc()
            log.error("cannot record a call status", call_sid=call_sid, error=repr(error))
            return _unavailable()
        result = "not_ours" if updates is None else "recorded" if updates else "unchanged"
        counter.labels("call_status", result).inc()
        return JSONResponse({"result": result})

    # ------------------------------------------------------------------ the page

    async def ops(self, request: Request) -> Response:
        snapshot = await self._authorised_snapshot(request)
        if isinstance(snapshot, Response):
            return snapshot
        nonce = secrets.token_urlsafe(12)
        return HTMLResponse(ops_page(snapshot, nonce=nonce), headers=_page_headers(nonce))

    async def ops_data(self, request: Request) -> Response:
        snapshot = await self._authorised_snapshot(request)
        if isinstance(snapshot, Response):
            return snapshot
        return Response(orjson.dumps(snapshot.to_json()), media_type="application/json",
                        headers={"Cache-Control": "no-store"})

    async def _authorised_snapshot(self, request: Request) -> OpsSnapshot | Response:
        """What the page shows, or the refusal (401/403) or the 400 to answer instead."""
        refused = self._ops_refusal(request)
        if refused is not None:
            return refused
        try:
            return await self._snapshot(request.query_params.get("window", DEFAULT_OPS_WINDOW))
        except BadRequest as problem:
            return _bad_request(str(problem))

    def _ops_refusal(self, request: Request) -> Response | None:
        if not self.state.ops_token:
            return forbidden("the ops page is off: set ORCHESTRATOR_OPS_TOKEN")
        if self._token_given(request):
            return None
        self.state.metrics.signature_failures.labels("ops").inc()
        return PlainTextResponse("the ops token is required (bearer, or as the HTTP Basic password)",
                                 status_code=401, headers={"WWW-Authenticate": 'Basic realm="front desk ops"'})

    async def _snapshot(self, window: str) -> OpsSnapshot:
        now = time.time()
        try:
            since = parse_since(window, now=now)
        except ReportInputError as problem:
            raise BadRequest(str(problem).replace("--since", "window")) from None
        errors: list[str] = []
        try:
            setting = await self.state.store.get_setting(ROLLOUT_SETTING)
        except Exception as error:
            self.state.metrics.store_errors.labels(store_error_kind(error)).inc()
            errors.append(f"rollout setting unreadable: {type(error).__name__}")
            setting = None
        try:
            figures, calls_read, truncated = await self._arm_figures(window, since, now)
        except Exception as error:
            self.state.metrics.store_errors.labels(store_error_kind(error)).inc()
            errors.append(f"call records unreadable: {type(error).__name__}")
            figures, calls_read, truncated = [], 0, False
        return OpsSnapshot(
            generated_at=now, window=window, live_calls=self._live_calls(now), rollout=rollout_view(setting),
            arms=figures, calls_read=calls_read, truncated=truncated, errors=errors,
        )

    async def _arm_figures(self, window: str, since: float, now: float) -> tuple[list[ArmFigures], int, bool]:
        cached = self._figures
        if cached is not None and cached[0] == window and now - cached[1] < FIGURES_TTL_S:
            return cached[2], cached[3], cached[4]
        records = await self.state.store.calls_since(since, limit=MAX_FIGURE_CALLS + 1)
        truncated = len(records) > MAX_FIGURE_CALLS
        records = records[:MAX_FIGURE_CALLS]
        figures = arm_figures(records, now=now)
        self._figures = (window, now, figures, len(records), truncated)
        return figures, len(records), truncated

    def _live_calls(self, now: float) -> list[LiveCall]:
        """The sessions of this process, read defensively: a session may be half built or ending."""
        calls = []
        for (call_sid, number), session in list(self.state.sessions.items()):
            try:
                machine = getattr(session, "machine", None)
                triage_pass = session.triage_pass
                decision = getattr(machine, "decision", None)
                calls.append(LiveCall(
                    call_sid=str(call_sid), number=int(number),
                    state=str(getattr(machine, "state", None) or "starting"),
                    arm=str(triage_pass.arm), caller=mask_phone(triage_pass.caller),
                    age_s=max(0.0, now - float(triage_pass.opened_at)),
                    route=getattr(decision, "route", None),
                ))
            except Exception as error:  # shown as unknown rather than breaking the page
                log.warning("live call unreadable", call_sid=str(call_sid), error=repr(error))
                calls.append(LiveCall(str(call_sid), 0, "unknown", "?", "", 0.0, None))
        return sorted(calls, key=lambda call: -call.age_s)


def _json_object(body: bytes) -> dict:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("the body is not JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("the body is not a JSON object")
    return data


def _call_status(form: Any) -> tuple[str, str, int | None]:
    call_sid = str(form.get("CallSid") or "")
    if not _CALL_SID.fullmatch(call_sid):
        raise BadRequest("CallSid missing or malformed")
    status = str(form.get("CallStatus") or "")
    if status not in CALL_STATUSES:
        raise BadRequest(f"CallStatus {status[:40]!r} is not one of: {', '.join(sorted(CALL_STATUSES))}")
    duration_text = str(form.get("CallDuration") or "").strip()
    if not duration_text:
        return call_sid, status, None
    if not duration_text.isdigit() or len(duration_text) > 9:
        raise BadRequest(f"CallDuration {duration_text[:40]!r} is not a whole number of seconds")
    return call_sid, status, int(duration_text)


def _page_headers(nonce: str) -> dict[str, str]:
    # Self-contained by policy too: nothing may load from elsewhere, only this response's own script runs.
    policy = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
              "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return {"Content-Security-Policy": policy, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

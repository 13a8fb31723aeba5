"""Reading calls back, and the server's own health.

    GET  /calls/{sid}/handoff the decision for a Studio flow started fresh (signed, or a bearer token)
    GET  /calls/{sid}         the call's record: passes, state paths, decisions (signed)
    GET  /healthz, /metrics
"""
from __future__ import annotations

import os
import secrets

import orjson
import structlog
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bridge.twilio import SIGNATURE_HEADER
from orchestrator.server.responses import forbidden
from orchestrator.server.state import ServerState
from orchestrator.store import decision_to_json, store_error_kind
from orchestrator.telemetry import METRICS_CONTENT_TYPE, live_trio_tasks

log = structlog.get_logger("orchestrator.server.records_endpoints")
TASKS_SETTLE_S = 0.01


def record_routes(state: ServerState) -> list[Route]:
    endpoints = RecordEndpoints(state)
    return [
        Route("/calls/{call_sid}/handoff", endpoints.call_handoff, methods=["GET"]),
        Route("/calls/{call_sid}", endpoints.call_record, methods=["GET"]),
        Route("/healthz", endpoints.healthz, methods=["GET"]),
        Route("/metrics", endpoints.metrics, methods=["GET"]),
    ]


class RecordEndpoints:
    def __init__(self, state: ServerState) -> None:
        self.state = state

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
            return forbidden()
        try:
            record = await self.state.store.call_record(request.path_params["call_sid"])
        except Exception as error:
            return self._store_unavailable("handoff", error)
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
            return forbidden()
        try:
            record = await self.state.store.call_record(request.path_params["call_sid"])
        except Exception as error:
            return self._store_unavailable("call record", error)
        if record is None:
            return JSONResponse({"error": "unknown call"}, status_code=404)
        return Response(orjson.dumps(record.to_json()), media_type="application/json")

    def _store_unavailable(self, what: str, error: Exception) -> Response:
        self.state.metrics.store_errors.labels(store_error_kind(error)).inc()
        log.error(f"cannot read the {what}: the call store failed", error=repr(error))
        return PlainTextResponse("the call store is unavailable; try again", status_code=503)

    async def healthz(self, request: Request) -> Response:
        state = self.state
        # The HTTP server cancels this connection's idle timer as the request arrives; let it end first, so
        # the task count at an idle moment is the same from one reading to the next.
        await trio.sleep(TASKS_SETTLE_S)
        return JSONResponse(
            {
                "status": "shutting_down" if state.shutting_down.is_set() else "ok",
                "engine": state.connector.name,
                "failover": state.failover.name if state.failover else None,
                "engines": sorted({state.connector.name, *state.engines}),
                "active_calls": len(state.sessions),
                "signature_check": state.signature.enabled,
                # Which worker answered, its calls so far and its Trio tasks: the soak benchmark's leak accounting.
                "pid": os.getpid(),
                "calls_started": int(state.metrics.registry.get_sample_value("calls_started_total") or 0),
                "trio_tasks": live_trio_tasks(),
            }
        )

    async def metrics(self, request: Request) -> Response:
        self.state.metrics.trio_tasks.set(live_trio_tasks())
        return Response(self.state.metrics.exposition(), media_type=METRICS_CONTENT_TYPE)

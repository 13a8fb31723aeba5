"""Where a triage pass's call goes once the AI is done with it, as TwiML: its decision's route, else the
configured fallback route, never silence. The `<Connect action>` URL answers it (`voice_webhooks.py`), and so
does the REST redirect of a call whose Media Stream went silent (`live_call_redirect.py`)."""
from __future__ import annotations

from dataclasses import replace

import structlog
from twilio.twiml.voice_response import VoiceResponse

from orchestrator.call import CallFacts, dispatch_twiml, fallback_twiml
from orchestrator.config import StudioRoute
from orchestrator.server.state import ServerState
from orchestrator.store import store_error_kind

log = structlog.get_logger("orchestrator.server.hand_back")

# Only what a voicemail or a hang-up needs: the answer when nothing else could be built.
_LAST_RESORT_LINE = "Sorry, we could not connect your call. Please call again later."

DECISION = "decision"  # the pass's decision was answered
NO_DECISION = "no_decision"  # the pass has none: the fallback route
ERROR = "error"  # the store or the TwiML failed: the fallback route


class HandBack:
    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def twiml(self, facts: CallFacts, number: int | None) -> tuple[str, str]:
        """The TwiML of pass `number`'s decision, and what it came from (DECISION, NO_DECISION or ERROR). The
        answered route is recorded, and a Studio node it sends the call to is remembered as visited."""
        state = self.state
        try:
            triage_pass = None if number is None else await state.store.get_pass(facts.call_sid, number)
            if triage_pass is not None:
                facts = replace(facts, arm=triage_pass.arm)  # the arm travels with the call, from its pass
            decision = None if triage_pass is None else await state.store.get_decision(facts.call_sid, number)
            if decision is None:
                if triage_pass is not None:  # so the brake can tell a pass whose session never ran
                    await self._mark_fallback_answered(facts.call_sid, triage_pass.number)
                return self.fallback_twiml(facts), NO_DECISION
            twiml = dispatch_twiml(decision, state.config, facts, public_url=state.public_url)
            route = state.config.routes.get(decision.route)
            if isinstance(route, StudioRoute):
                await state.store.record_visit(facts.call_sid, route.studio_node)
            await state.store.mark_answered(facts.call_sid, number, decision.route)
        except Exception as error:
            state.metrics.store_errors.labels(store_error_kind(error)).inc()
            log.error("handing the call back failed: fallback route", call_sid=facts.call_sid, error=repr(error))
            return self.fallback_twiml(facts), ERROR
        return twiml, DECISION

    def fallback_twiml(self, facts: CallFacts) -> str:
        """The configured fallback route's TwiML; never raises."""
        state = self.state
        try:
            return fallback_twiml(state.config, facts, public_url=state.public_url)
        except Exception as error:  # still never silence
            log.error("fallback TwiML failed", error=repr(error))
            response = VoiceResponse()
            response.say(_LAST_RESORT_LINE)
            response.hangup()
            return str(response.to_xml())

    async def _mark_fallback_answered(self, call_sid: str, number: int) -> None:
        try:
            await self.state.store.mark_answered(call_sid, number, self.state.config.triage.fallback_route)
        except Exception as error:
            self.state.metrics.store_errors.labels(store_error_kind(error)).inc()
            log.error("cannot mark the fallback answered", call_sid=call_sid, error=repr(error))

"""A call whose Media Stream went silent (a TLS proxy that died, a half-open connection) can no longer be
told where to go: our close of the stream does not reach Twilio, so no `<Connect action>` request follows.
`LiveCallRedirect` moves it over Twilio's REST API instead, `calls(CallSid).update(twiml=…)` (which replaces
what the call runs, the stream with it), with the same TwiML the action URL would have answered: the
pass's decided route, else the fallback route. Recorded in the pass's notes and counted in /metrics
(`live_call_redirects{result}`)."""
from __future__ import annotations

import httpx
import structlog
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client

from bridge.twilio import HttpxTwilioClient
from orchestrator.call import CallFacts
from orchestrator.server.hand_back import HandBack
from orchestrator.server.state import ServerState
from orchestrator.store import TriagePass

log = structlog.get_logger("orchestrator.server.live_call_redirect")

# Results, as counted and noted.
MOVED = "moved"
REFUSED = "refused"  # Twilio answered with an error (e.g. the call has ended meanwhile: 21220)
UNREACHABLE = "unreachable"
NO_ACCOUNT = "no_account"  # no account SID to name the call by
_WHAT_WAS_SENT = {
    "decision": "the decided route",
    "no_decision": "the fallback route (no decision)",
    "error": "the fallback route (the store failed)",
}


class LiveCallRedirect:
    def __init__(self, state: ServerState, http: HttpxTwilioClient, *, auth_token: str, account_sid: str | None) -> None:
        self._state = state
        self._hand_back = HandBack(state)
        self._http = http
        self._auth_token = auth_token
        self._account_sid = account_sid  # the configured one; else the account the call came in on

    async def move(self, triage_pass: TriagePass) -> str:
        """Send pass `triage_pass`'s call to its route over REST; what happened, as a note for its record."""
        metrics = self._state.metrics
        account_sid = self._account_sid or triage_pass.account_sid
        facts = CallFacts(triage_pass.call_sid, triage_pass.caller, triage_pass.called, account_sid, triage_pass.arm)
        bound = log.bind(call_sid=triage_pass.call_sid, triage_pass=triage_pass.number)
        if not account_sid:
            result, detail = NO_ACCOUNT, "no TWILIO_ACCOUNT_SID and none from Twilio"
        else:
            twiml, source = await self._hand_back.twiml(facts, triage_pass.number)
            client = Client(account_sid, self._auth_token, http_client=self._http)
            try:
                await client.api.v2010.accounts(account_sid).calls(triage_pass.call_sid).update_async(twiml=twiml)
            except TwilioRestException as error:
                result, detail = REFUSED, f"HTTP {error.status}, Twilio error {error.code}"
            except (httpx.HTTPError, TwilioException) as error:
                result, detail = UNREACHABLE, f"{type(error).__name__}: {error}"[:200]
            else:
                result, detail = MOVED, _WHAT_WAS_SENT[source]
        metrics.live_call_redirects.labels(result).inc()
        if result == MOVED:
            bound.info("live call moved over Twilio's REST API", detail=detail)
        else:
            bound.error("live call could not be moved over Twilio's REST API", result=result, detail=detail)
        return f"live call redirect: {result} ({detail})"

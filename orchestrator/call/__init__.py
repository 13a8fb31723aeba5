"""One call: the session that runs it (media, engine, machine) and the TwiML that hands it back."""
from orchestrator.call.dispatch_twiml import (
    CallFacts,
    dispatch_twiml,
    fallback_twiml,
    legacy_twiml,
)
from orchestrator.call.engine_requests import EngineRequestGate
from orchestrator.call.session import CallSession, SessionDeps

__all__ = [
    "CallFacts",
    "CallSession",
    "EngineRequestGate",
    "SessionDeps",
    "dispatch_twiml",
    "fallback_twiml",
    "legacy_twiml",
]

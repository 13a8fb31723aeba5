"""Test doubles that ship with the package: fakes of the remote services the orchestrator talks to, and
callers: scripted, or a persona that converses (with a perfect Realtime model for it) and its verdict."""
from orchestrator.testing.agent_listener import AgentListener, HeardLine
from orchestrator.testing.fake_realtime import (
    Scenario,
    UserSpeech,
    after_audio_frames,
    after_response_create,
    call_function,
    on,
    run_fake_realtime,
    speak,
)
from orchestrator.testing.fake_twilio_rest import CallUpdate, FakeTwilioRest, run_fake_twilio_rest
from orchestrator.testing.persona_answers import PersonaMind
from orchestrator.testing.persona_caller import CallerTurn, PersonaCall, PersonaCaller
from orchestrator.testing.persona_model import ModelBrief, PersonaModel
from orchestrator.testing.persona_verdict import FieldVerdict, Verdict, judge
from orchestrator.testing.personas import Persona, PersonaError, load_persona, load_personas
from orchestrator.testing.twilio_caller import (
    CallerOptions,
    CallerStep,
    CallResult,
    Say,
    SimulatedCaller,
    WaitForAgent,
    fetch_call_record,
)

__all__ = [
    "AgentListener",
    "CallResult",
    "CallUpdate",
    "CallerOptions",
    "CallerStep",
    "CallerTurn",
    "FakeTwilioRest",
    "FieldVerdict",
    "HeardLine",
    "ModelBrief",
    "Persona",
    "PersonaCall",
    "PersonaCaller",
    "PersonaError",
    "PersonaMind",
    "PersonaModel",
    "Say",
    "Scenario",
    "SimulatedCaller",
    "UserSpeech",
    "Verdict",
    "WaitForAgent",
    "after_audio_frames",
    "after_response_create",
    "call_function",
    "fetch_call_record",
    "judge",
    "load_persona",
    "load_personas",
    "on",
    "run_fake_realtime",
    "run_fake_twilio_rest",
    "speak",
]

"""Test doubles that ship with the package: fakes of the remote services the orchestrator talks to."""
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
    "CallerOptions",
    "CallerStep",
    "CallResult",
    "Say",
    "Scenario",
    "SimulatedCaller",
    "UserSpeech",
    "WaitForAgent",
    "after_audio_frames",
    "after_response_create",
    "call_function",
    "fetch_call_record",
    "on",
    "run_fake_realtime",
    "speak",
]

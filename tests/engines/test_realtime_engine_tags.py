"""Which of the Realtime engine's responses are ours: by the metadata echoed, else by the request waiting; and
the server's idle timeout paused while the caller types."""
from __future__ import annotations

from typing import Any

from openai.types.realtime import InputAudioBufferSpeechStartedEvent, ResponseCreatedEvent, ResponseDoneEvent
from pydantic import BaseModel

from bridge.openai_realtime import DEFAULT_TURN_DETECTION
from orchestrator.engines import ResponseFinished, ResponseStarted
from orchestrator.engines.realtime import RealtimeEngine


class Connection:
    def __init__(self) -> None:
        self.sent: list[str] = []  # what went out, in order: "idle <ms>" for a turn detection update

    async def create_response(self, instructions: Any, **options: Any) -> None:
        self.sent.append("response.create")

    def post_event(self, event: BaseModel) -> None:
        vad = event.model_dump(exclude_unset=True)["session"]["audio"]["input"]["turn_detection"]
        self.sent.append(f"idle {vad['idle_timeout_ms']}")


def created(response_id: str, metadata: dict[str, str] | None = None) -> ResponseCreatedEvent:
    return ResponseCreatedEvent.model_validate(
        {"type": "response.created", "event_id": "e", "response": {"id": response_id, "metadata": metadata}}
    )


def done(response_id: str) -> ResponseDoneEvent:
    return ResponseDoneEvent.model_validate(
        {"type": "response.done", "event_id": "e", "response": {"id": response_id, "status": "completed"}}
    )


async def test_without_metadata_the_response_after_our_request_is_ours_and_others_are_not():
    engine = RealtimeEngine(Connection())  # type: ignore[arg-type]
    await engine.speak("Greet.", tag="greeting")
    assert engine._translate(created("r1")) == (ResponseStarted("r1", "greeting"),)
    assert engine._translate(done("r1")) == (ResponseFinished("r1", "greeting", "completed"),)
    assert engine._translate(created("r2")) == (ResponseStarted("r2", None),)  # the server's own (VAD)
    await engine.speak("Hand off.", tag="handoff")
    assert engine._translate(created("r3")) == (ResponseStarted("r3", None),)  # r2 still active: not ours
    engine._translate(done("r2"))
    engine._translate(done("r3"))
    assert engine._translate(created("r4")) == (ResponseStarted("r4", "handoff"),)


async def test_once_metadata_is_echoed_tags_are_never_inferred():
    engine = RealtimeEngine(Connection())  # type: ignore[arg-type]
    await engine.speak("Greet.", tag="greeting")
    assert engine._translate(created("r1", {"tag": "greeting"})) == (ResponseStarted("r1", "greeting"),)
    engine._translate(done("r1"))
    await engine.speak("Hand off.", tag="handoff")
    assert engine._translate(created("r2")) == (ResponseStarted("r2", None),)  # a VAD response in the race
    engine._translate(done("r2"))
    assert engine._translate(created("r3", {"tag": "handoff"})) == (ResponseStarted("r3", "handoff"),)


async def test_keys_pause_the_idle_timeout_until_the_agent_or_the_caller_speaks():
    idle = DEFAULT_TURN_DETECTION.model_copy(update={"idle_timeout_ms": 5000})
    connection = Connection()
    engine = RealtimeEngine(connection, turn_detection=idle)  # type: ignore[arg-type]
    engine.caller_pressed_key()
    engine.caller_pressed_key()  # once paused, more keys change nothing
    assert connection.sent == ["idle None"]
    await engine.speak("Thank the caller.", tag="keypad_thanks")
    assert connection.sent == ["idle None", "idle 5000", "response.create"]  # back on before the response
    engine.caller_pressed_key()
    started = {"type": "input_audio_buffer.speech_started", "event_id": "e", "audio_start_ms": 0, "item_id": "i"}
    engine._translate(InputAudioBufferSpeechStartedEvent.model_validate(started))
    assert connection.sent[3:] == ["idle None", "idle 5000"]


async def test_without_an_idle_timeout_keys_change_nothing():
    connection = Connection()
    engine = RealtimeEngine(connection)  # type: ignore[arg-type]  # a text session: no turn detection
    engine.caller_pressed_key()
    await engine.speak(None, tag=None)
    assert connection.sent == ["response.create"]

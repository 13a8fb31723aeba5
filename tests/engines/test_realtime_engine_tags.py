"""Which of the Realtime engine's responses are ours: by the metadata echoed, else by the request waiting."""
from __future__ import annotations

from typing import Any

from openai.types.realtime import ResponseCreatedEvent, ResponseDoneEvent

from orchestrator.engines import ResponseFinished, ResponseStarted
from orchestrator.engines.realtime import RealtimeEngine


class Connection:
    async def create_response(self, instructions: Any, **options: Any) -> None:
        pass


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

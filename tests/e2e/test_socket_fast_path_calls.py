"""A live call through the sockets' fast path (frames handled in the read reactor, `WebSocket.take_messages`)
carries exactly what it carries without it: the same caller audio to Realtime, the same agent audio and
marks to Twilio, the same outcome. The fake Realtime and the simulated Twilio caller are independent peers
(trio-websocket) that validate what they receive."""
from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ElementTree

import trio

from bridge.twilio.mulaw import tone
from bridge.websocket.byte_io import PlainSocketIO
from orchestrator.call.media_intake import MediaIntake
from orchestrator.call.playback import Playback
from orchestrator.testing.fake_realtime import (
    Scenario,
    UserSpeech,
    after_audio_frames,
    after_response_create,
    on,
    speak,
)
from orchestrator.testing.twilio_caller import Say, WaitForAgent
from tests.live_call_support import front_desk, propose

# Agent audio in 100 ms chunks 50 ms apart (a chunk per readiness event, as from OpenAI); the caller speaks
# only after the greeting has played, so no barge-in makes the two runs differ by timing.
SCENARIO = Scenario(steps=[
    on(after_response_create(), speak(ms=800, transcript="Thanks for calling, how can I help?", pace_s=0.05)),
    on(after_audio_frames(45), UserSpeech(transcript="I need help with a bill"), propose("billing")),
    on(after_response_create(), speak(ms=400, transcript="Putting you through now.", pace_s=0.05)),
])
CALLER = (WaitForAgent(quiet_ms=300), Say(tone(1200), "I need help with a bill"), WaitForAgent(quiet_ms=400))


async def one_call(tmp_path, monkeypatch, *, fast_path: bool) -> dict[str, object]:
    taken = {"caller frames": 0, "agent chunks": 0}
    if fast_path:
        on_frame, play = MediaIntake.on_frame, Playback.play

        def in_the_reactor() -> bool:
            return trio.lowlevel.current_task().name == "websocket read reactor"

        def counting_on_frame(self: MediaIntake, frame: str | bytes) -> None:
            on_frame(self, frame)
            taken["caller frames"] += in_the_reactor()

        def counting_play(self: Playback, audio) -> None:
            play(self, audio)
            taken["agent chunks"] += in_the_reactor()

        monkeypatch.setattr(MediaIntake, "on_frame", counting_on_frame)
        monkeypatch.setattr(Playback, "play", counting_play)
    else:
        monkeypatch.setattr(PlainSocketIO, "set_fast_path", lambda self, on_readable: None)
    async with front_desk(tmp_path / str(fast_path), SCENARIO) as desk:
        caller = desk.caller(CALLER)
        result = await caller.run()
        session = desk.fake.last_session
        assert desk.fake.violations == [] and result.violations == []
        sent = b"".join(base64.b64decode(f.data["media"]["payload"]) for f in caller.sent if f.event == "media")
        appended = b"".join(base64.b64decode(e.data["audio"]) for e in session.events_of_type("input_audio_buffer.append"))
        deltas = b"".join(base64.b64decode(e["delta"]) for e in session.sent_of_type("response.output_audio.delta"))
        heard = b"".join(base64.b64decode(f.data["media"]["payload"]) for f in caller.received if f.event == "media")
        monkeypatch.undo()
        return {
            "taken": taken,
            "intent": json.loads(ElementTree.fromstring(result.final_twiml).find("Enqueue").find("Task").text)["intent"],
            "caller audio heard by the engine": len(appended) >= 10 * 160 and sent.startswith(appended),
            "agent audio": heard,
            "agent audio sent by the fake": deltas,
            "marks": [(mark.name, mark.cleared) for mark in result.marks],
            "media closed by": result.media_closed_by,
        }


async def test_a_call_carries_the_same_audio_marks_and_outcome_with_and_without_the_fast_path(tmp_path, monkeypatch):
    with_it = await one_call(tmp_path, monkeypatch, fast_path=True)
    without = await one_call(tmp_path, monkeypatch, fast_path=False)
    # The fast path was taken, for most frames each way (12 agent chunks; ~100 caller frames and marks).
    assert with_it["taken"]["caller frames"] > 50 and with_it["taken"]["agent chunks"] >= 8
    assert with_it["caller audio heard by the engine"] and without["caller audio heard by the engine"]
    for result in (with_it, without):
        assert result["agent audio"] == result["agent audio sent by the fake"]  # every chunk, in order
        assert result["intent"] == "billing" and result["media closed by"] == "server"
    with_it.pop("taken"), without.pop("taken")
    assert with_it == without

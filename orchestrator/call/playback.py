"""Playback: the agent's responses as the caller hears them.

The engine hands over its audio as it arrives (`play`, called from its socket's read reactor when it can:
it never waits). Audio goes out while the caller is being triaged, and after the decision only the handoff
line's. The end of every response is marked, and the end of each line the machine waits for gets a mark of
its own, whose echo becomes GreetingPlayed / HandoffPlayed. When the caller talks over the agent, Twilio
drops what it has not played and the engine is told how much of its item was heard (barge-in). A caller
who talks over the handoff line has made up their mind: the line is cut the same way and is over at once
(HandoffPlayed), so the call is handed back without waiting for the line's end. The wire side of it
(frames, mark names, played milliseconds) is `bridge.twilio.audio_out`.
"""
from __future__ import annotations

from collections.abc import Callable

import structlog

from bridge.twilio import AudioOut
from machines import Line
from machines import events as ev
from orchestrator.engines import AgentAudio, TriageEngine
from orchestrator.telemetry import ServerMetrics

# Lines whose end the machine waits for (their mark echo becomes GreetingPlayed / HandoffPlayed).
_LINE_PLAYED = {Line.GREETING.value: ev.GreetingPlayed, Line.HANDOFF.value: ev.HandoffPlayed}
_HANDOFF = Line.HANDOFF.value


class Playback:
    def __init__(
        self,
        audio_out: AudioOut,
        *,
        listening: Callable[[], bool],
        post: Callable[[ev.CallEvent], None],
        metrics: ServerMetrics,
        log: structlog.stdlib.BoundLogger,
    ) -> None:
        self._audio_out = audio_out
        self._listening = listening  # the caller is being triaged: the agent may say anything
        self._post = post
        self._metrics = metrics
        self._log = log
        self._tag_by_response: dict[str, str | None] = {}
        self._line_marks: dict[str, str] = {}  # mark name → line tag
        self._handoff_started = False  # the handoff line's response began
        self._handoff_over = False  # its end mark came back, or the caller cut it short
        self._audible = False  # the agent's words are reaching the caller (told to the machine while triaging)

    def play(self, audio: AgentAudio) -> None:
        listening = self._listening()
        if listening or self._tag_by_response.get(audio.response_id) == _HANDOFF:
            self._audio_out.play(audio.item_id, audio.payload_b64)
        if listening and not self._audible and self._audio_out.playing:
            self._audible = True
            self._post(ev.AgentStartedSpeaking())

    @property
    def handoff_playing(self) -> bool:
        """The handoff line has begun and the caller has not heard the end of it: they may talk over it."""
        return self._handoff_started and not self._handoff_over

    def on_response_started(self, response_id: str, tag: str | None) -> None:
        self._tag_by_response[response_id] = tag
        if tag == _HANDOFF:
            self._handoff_started = True

    def on_response_finished(self, response_id: str, tag: str | None) -> None:
        self._tag_by_response.pop(response_id, None)
        self._audio_out.mark_end()  # the end of every response is marked: barge-in knows when it played
        if tag in _LINE_PLAYED:
            self._line_marks[self._audio_out.mark(f"line-{tag}")] = tag
        self._note_if_silent()

    def on_mark_echo(self, name: str) -> None:
        self._audio_out.on_echo(name)
        tag = self._line_marks.pop(name, None)
        if tag is not None:
            self._handoff_over = self._handoff_over or tag == _HANDOFF
            self._post(_LINE_PLAYED[tag]())  # played, or cleared by a barge-in: either way the line is over
        self._note_if_silent()

    def _note_if_silent(self) -> None:
        """The caller has heard all the agent said (every mark back) and no response is under way: the
        machine's budget then gives the caller their turn to answer."""
        if self._audible and not self._audio_out.playing and not self._tag_by_response:
            self._audible = False
            if self._listening():
                self._post(ev.AgentStoppedSpeaking())

    async def on_caller_speech(self, engine: TriageEngine) -> None:
        """The caller started talking: whatever the agent is saying stops."""
        audio_out = self._audio_out
        over_handoff = not self._listening() and self.handoff_playing
        if not over_handoff and (not self._listening() or not audio_out.playing):
            return  # decided and no handoff line left to cut, or everything sent was played: nothing to stop
        self._metrics.barge_ins.inc()
        cut = audio_out.clear()
        self._note_if_silent()  # the marks cleared come back no more
        if cut is not None:
            self._log.info("barge-in", played_ms=cut.played_ms, sent_ms=cut.sent_ms, on_handoff=over_handoff)
            if cut.heard_in_part:
                await engine.truncate(cut.item_id, cut.played_ms)
        if over_handoff:  # the caller has made up their mind: hand the call back now
            self._handoff_over = True
            self._post(ev.HandoffPlayed())

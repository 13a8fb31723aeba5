"""What a simulated caller hears of the agent, line by line, as their phone plays it.

    listener = AgentListener(caller, recognizer.transcribe)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.listen)
        result = await caller.run()
    for line in listener.lines:
        print(line.started_at, line.text)

Only the audio counts, as for a real caller: the phone's playback (`SimulatedCaller.played_bytes`) is cut
into lines where it pauses for `pause_ms` (the agent stopped talking, or the server sent nothing more for a
while), and each line is transcribed once it has played, in a worker thread. As a person starts making
sense of what they heard before they are sure the other side has finished, transcription starts
`early_ms` into a pause and is used when the pause turns out to end the line. Nothing is read from the
server's state or logs. Audio the server `clear`s before it plays is never heard, so it is in no line.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import trio

from bridge.twilio import MULAW_BYTES_PER_MS
from orchestrator.testing.twilio_caller import SimulatedCaller

__all__ = ["AgentListener", "HeardLine"]

POLL_MS = 20  # how often playback is looked at (a Media Stream frame)


@dataclass
class HeardLine:
    """One stretch of agent speech the caller heard. Times are `trio.current_time()`."""

    index: int
    started_at: float
    ended_at: float | None = None  # None while it plays
    text: str | None = None  # None until transcribed
    start_byte: int = 0  # where the line starts in what the phone played

    @property
    def complete(self) -> bool:
        return self.text is not None


@dataclass
class _Transcription:
    """A transcription of a line's first `played` bytes, running or done."""

    played: int
    done: trio.Event
    text: str = ""


class AgentListener:
    """Listens to one simulated call; `lines` grows as the agent talks."""

    def __init__(
        self,
        caller: SimulatedCaller,
        transcribe: Callable[[bytes], str],
        *,
        pause_ms: int = 600,
        early_ms: int = 250,
        speed: float = 1.0,
    ) -> None:
        self._caller = caller
        self._transcribe = transcribe
        self._pause_s = pause_ms / 1000 / speed
        self._early_s = early_ms / 1000 / speed
        self._poll_s = POLL_MS / 1000 / speed
        self._changed = trio.Event()
        self._over = False
        self.lines: list[HeardLine] = []

    @property
    def over(self) -> bool:
        """The stream has ended and every line heard is transcribed."""
        return self._over

    @property
    def playing(self) -> HeardLine | None:
        """The line playing now, if any."""
        last = self.lines[-1] if self.lines else None
        return last if last is not None and last.ended_at is None else None

    async def changed(self, timeout_s: float = math.inf) -> None:
        """Wait until a line starts, ends or is transcribed, or the listening is over (at most `timeout_s`)."""
        with trio.move_on_after(timeout_s):
            await self._changed.wait()

    async def listen(self) -> None:
        """Follow the playback until the call is over; returns once every line heard is transcribed."""
        async with trio.open_nursery() as transcribing:
            position = self._caller.played_bytes
            last_sound = trio.current_time()
            early: _Transcription | None = None
            while True:
                now = trio.current_time()
                played = self._caller.played_bytes
                line = self.playing
                if played > position:
                    if line is None:
                        started = now - (played - position) / MULAW_BYTES_PER_MS / 1000
                        line = HeardLine(len(self.lines), started, start_byte=position)
                        self.lines.append(line)
                        self._notify()
                    position, last_sound, early = played, now, None
                streaming = self._caller.state in ("dialing", "streaming")
                if line is not None and early is None and now - last_sound >= self._early_s:
                    early = _Transcription(position, trio.Event())
                    transcribing.start_soon(self._transcribe_into, early, self._heard(line, position))
                if line is not None and (now - last_sound >= self._pause_s or not streaming):
                    line.ended_at = last_sound
                    if early is None or early.played != position:
                        early = _Transcription(position, trio.Event())
                        transcribing.start_soon(self._transcribe_into, early, self._heard(line, position))
                    transcribing.start_soon(self._finish, line, early)
                    early = None
                    self._notify()
                if not streaming and self.playing is None:
                    break
                await trio.sleep(self._poll_s)
        self._over = True
        self._notify()

    async def transcript_so_far(self) -> str:
        """What the caller has heard of the line playing now ("" when none plays)."""
        line = self.playing
        if line is None:
            return ""
        return await self._run_transcribe(self._caller.heard_audio_since(line.start_byte))

    def _heard(self, line: HeardLine, position: int) -> bytes:
        return self._caller.heard_audio_since(line.start_byte)[: position - line.start_byte]

    async def _transcribe_into(self, transcription: _Transcription, audio: bytes) -> None:
        transcription.text = await self._run_transcribe(audio)
        transcription.done.set()

    async def _finish(self, line: HeardLine, transcription: _Transcription) -> None:
        await transcription.done.wait()
        line.text = transcription.text
        self._notify()

    async def _run_transcribe(self, audio: bytes) -> str:
        return await trio.to_thread.run_sync(self._transcribe, audio)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

"""Media intake: what each frame from Twilio means for the call.

One function, `on_frame`, decides it, and it never waits: the socket calls it from its read reactor as
frames arrive (caller audio is 50 frames a second: no task wakes for them), or from the session's media
reader when it cannot. Caller audio goes to the engine, or is held while no engine is open; a mark echo
goes to whoever placed the mark; a stop is the caller hanging up.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable

import structlog

from bridge.twilio import (
    DtmfMessage,
    MarkMessage,
    MediaFrame,
    MediaStreamCounters,
    MediaStreamProtocolError,
    StopMessage,
    UnknownTwilioMessage,
    parse_twilio_message,
    plausible_audio_payload,
)
from machines import events as ev
from orchestrator.engines import TriageEngine
from orchestrator.telemetry import ServerMetrics

# Caller audio kept while the engine connects (or the failover takes over), so the caller's first words
# reach it: Twilio streams from the first moment, a Realtime connection takes a few hundred ms.
HELD_CALLER_AUDIO_MS = 3000
CALLER_FRAME_MS = 20  # Twilio's media frames


class MediaIntake:
    def __init__(
        self,
        *,
        listening: Callable[[], bool],
        hearing: Callable[[], bool],
        on_mark_echo: Callable[[str], None],
        post: Callable[[ev.CallEvent], None],
        metrics: ServerMetrics,
        log: structlog.stdlib.BoundLogger,
    ) -> None:
        self._listening = listening  # after the decision the caller is not heard: the agent must not answer
        self._hearing = hearing  # caller audio goes to the engine: while listening, and over the handoff line
        self._on_mark_echo = on_mark_echo
        self._post = post
        self._metrics = metrics
        self._log = log
        self.counters = MediaStreamCounters()
        self.frames_received = 0  # every message, usable or not: the stream's peer is alive
        self._engine: TriageEngine | None = None
        # Caller audio that came while no engine was open; the oldest goes first when full.
        self._held_audio: deque[str] = deque(maxlen=HELD_CALLER_AUDIO_MS // CALLER_FRAME_MS)

    def engine_opened(self, engine: TriageEngine) -> None:
        """Caller audio goes to `engine` from now on, after what was held for it."""
        if self._listening():
            while self._held_audio:
                engine.send_caller_audio(self._held_audio.popleft())
        self._engine = engine

    def engine_closed(self) -> None:
        self._engine = None

    def on_frame(self, frame: str | bytes) -> None:
        self.frames_received += 1
        try:
            message = parse_twilio_message(frame)
        except MediaStreamProtocolError as error:
            self._drop(error)
            return
        if isinstance(message, MediaFrame):
            if not self._hearing():
                return
            if not plausible_audio_payload(message.payload):  # one bad frame is dropped, not sent to end the call
                self._drop(MediaStreamProtocolError("unusable_audio", f"payload of {len(message.payload)} chars"))
                return
            engine = self._engine
            if engine is None:  # still connecting (or switching to the failover): heard once it is open
                self._held_audio.append(message.payload)
            else:
                engine.send_caller_audio(message.payload)
        elif isinstance(message, MarkMessage):
            self._on_mark_echo(message.mark.name)
        elif isinstance(message, StopMessage):
            self._post(ev.CallerHungUp())
        elif isinstance(message, DtmfMessage):
            digit = message.dtmf.digit[:2]
            self._log.info("caller pressed a key", digit=digit)
            if self._listening():  # a key of the old menu proposes its intent (the machine's guards decide)
                if self._engine is not None:
                    self._engine.caller_pressed_key()
                self._post(ev.KeyPressed(digit))
        elif isinstance(message, UnknownTwilioMessage):
            self.counters.record_unknown(message)
            self._metrics.media_unknown_events.inc()
        else:
            self._log.debug("repeated stream set-up message ignored", message_event=message.event)

    def _drop(self, error: MediaStreamProtocolError) -> None:
        self.counters.record_error(error)
        self._metrics.media_errors.labels(error.kind).inc()
        if self.counters.errors_by_kind[error.kind] == 1:
            self._log.warning("unusable Twilio frame", kind=error.kind, detail=error.detail[:120])

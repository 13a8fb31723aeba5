"""The offline engine: the `TriageEngine` interface with no account and no network.

    caller µ-law ─► VAD ─► speech-to-text ─► OfflineDialogue (intent classifier + slot extraction)
                    │                              │ tool calls, words
                    └► CallerSpeechStarted         ▼
                       (barge-in)          text-to-speech ─► AgentAudio (µ-law 8 kHz)

It speaks the same events as the Realtime engine, so the session cannot tell them apart: responses with
ids and tags, tool calls that wait for their answers, a refused `speak` while a response is active. The
speech models (`orchestrator.engines.offline.speech`, the optional `speech` extra) are loaded once per server
and shared; each call's blocking work runs in a worker thread under a server-wide limit, so two calls
never fight for the same two cores. Without the speech extra the engine runs in text mode: `eval` and
tests drive it with `send_caller_text`, and a live call is refused (EngineUnavailable), which sends it
to the fallback route instead of leaving the caller talking to nobody.
"""
from __future__ import annotations

import base64
import datetime
import functools
import itertools
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import trio

from bridge.twilio import MULAW_RATE
from orchestrator.config import ConfigError, RoutingConfig
from orchestrator.engines import (
    SILENT_ANSWER_S,
    AgentAudio,
    AgentTranscript,
    CallerSpeechStarted,
    CallerTranscript,
    EngineCall,
    EngineCapabilities,
    EngineEvent,
    EngineProblem,
    EngineUnavailable,
    ResponseFinished,
    ResponseStarted,
    SpokenLine,
    ToolCallReady,
)
from orchestrator.engines.offline.dialogue import OfflineDialogue, Reply
from orchestrator.engines.offline.intent_model import IntentModel, IntentModelError
from orchestrator.engines.offline.speech import SpeechStarted, UtteranceEnded

log = logging.getLogger(__name__)

AUDIO_CHUNK_BYTES = 800  # 100 ms of µ-law per AgentAudio, about what Realtime sends per delta
ACTIVE_RESPONSE = "conversation_already_has_active_response"  # the Realtime code, so the session re-asks
MAX_QUEUED_TURNS = 8  # a caller who talks far faster than speech-to-text keeps up loses the oldest
# Transcription starts this far into the silence that may end the caller's turn (the turn ends at 600 ms):
# the text is usually ready when the turn ends. Voice coming back wastes that transcription, nothing more.
TRANSCRIBE_EARLY_AFTER_MS = 240
# A caller who goes on speaking in breaths shorter than this is still saying what they began before the agent's
# question (a listener's answer comes after the question, seconds after their last words); once they stop for
# REASK_AFTER_S, the question they talked through is put again, uncounted.
CONTINUATION_PAUSE_S = 1.5
REASK_AFTER_S = 1.5
SILENCE_POLL_S = 0.25


# --------------------------------------------------------------------------- shared models


@dataclass
class OfflineSpeech:
    """Speech models shared by every call of a server, and the limits on their use."""

    recognizer: object  # offline_speech.SpeechRecognizer
    synthesizer: object  # offline_speech.SpeechSynthesizer
    detector_factory: Callable[[], object]  # offline_speech.VoiceActivityDetector
    # Both cores for one transcription at a time: a queue of short jobs beats two slow ones.
    recognition_slots: trio.CapacityLimiter | None = None
    synthesis_slots: trio.CapacityLimiter | None = None

    def limits(self) -> tuple[trio.CapacityLimiter, trio.CapacityLimiter]:
        # Created lazily: a CapacityLimiter belongs to the Trio run that first uses it.
        if self.recognition_slots is None:
            self.recognition_slots = trio.CapacityLimiter(1)
        if self.synthesis_slots is None:
            self.synthesis_slots = trio.CapacityLimiter(1)
        return self.recognition_slots, self.synthesis_slots


@dataclass(frozen=True)
class SpeechLoad:
    speech: OfflineSpeech | None
    problem: str | None  # why there is no speech (text mode)


@lru_cache(maxsize=1)
def load_offline_speech() -> SpeechLoad:
    """The speech models, loaded once per process; text mode (with the reason) when they are missing."""
    from orchestrator.engines.offline import speech as offline_speech

    support = offline_speech.speech_support()
    if not support.available:
        missing = ", ".join(support.missing) or "speech packages"
        return SpeechLoad(None, f"speech extra not installed (missing {missing}); pip install -e '.[speech]'")
    try:
        recognizer = offline_speech.SpeechRecognizer.load()
        synthesizer = offline_speech.SpeechSynthesizer.load()
    except offline_speech.SpeechUnavailable as problem:
        return SpeechLoad(None, str(problem))
    return SpeechLoad(OfflineSpeech(recognizer, synthesizer, offline_speech.VoiceActivityDetector), None)


def load_intent_model(config: RoutingConfig) -> IntentModel:
    """The config's model file when it names one (it must fit the config's intents), else fit on the config."""
    path = config.intent_model_path()
    if path is None:
        return IntentModel.fit(config)
    try:
        model = IntentModel.load(path)
    except IntentModelError as problem:
        raise ConfigError(str(path), "engine.intent_model", str(problem)) from None
    if not model.matches(config):
        raise ConfigError(
            str(path), "engine.intent_model",
            "was fit for other intents than this config's; run `orchestrator engine fit` again",
        )
    return model


# --------------------------------------------------------------------------- the engine


@dataclass
class _EarlyTranscript:
    audio: bytes
    done: trio.Event
    text: str | None = None


class _Silence:
    """A turn in which the caller said nothing after the agent's words."""


@dataclass(frozen=True)
class _Timing:
    """When a caller turn's speech began (Trio time) and how long the caller was silent before it."""

    started_at: float | None = None
    pause_before: float | None = None


class OfflineEngine:
    """One call's offline conversation. Sends after the call ended are dropped, as with Realtime."""

    def __init__(
        self,
        config: RoutingConfig,
        model: IntentModel,
        call: EngineCall,
        speech: OfflineSpeech | None,
        *,
        today: Callable[[], datetime.date] = datetime.date.today,
    ) -> None:
        self.speech = speech
        self.dialogue = OfflineDialogue(config, model, today, dict(call.captured), call.taking_over)
        self.dialogue.seed(call.caller_turns)
        self._events_in, self._events_out = trio.open_memory_channel[EngineEvent](math.inf)
        # A turn (its audio, its text in text mode, or its audio already being transcribed) and when its speech began.
        self._turns_in, self._turns_out = trio.open_memory_channel[
            tuple[bytes | str | _EarlyTranscript | _Silence, _Timing]
        ](MAX_QUEUED_TURNS)
        self._caller_audio_in, self._caller_audio_out = trio.open_memory_channel[str](math.inf)  # caller payloads, base64
        self._detector = speech.detector_factory() if speech is not None else None
        self._responding = False
        self._idle = trio.Event()
        self._idle.set()
        self._ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self._closed = False
        self._early: _EarlyTranscript | None = None
        self._answer_due: float | None = None  # Trio time by which the caller should have started answering
        self._speech_started_at: float | None = None  # Trio time the caller's current utterance began
        self._speech_ended_at: float | None = None  # Trio time the caller's last utterance ended
        self._pause_before: float | None = None  # the caller's silence before their current utterance
        self._asked_at: float | None = None  # Trio time the agent's last words began to play
        self._talking_through = False  # the caller's last turn went on with what they said before the question
        self.truncations: list[tuple[str, int]] = []
        self.early_transcripts_used = 0
        self.turn_latencies_ms: list[float] = []  # caller's speech end → the engine's answer ready

    # ------------------------------------------------------------------ TriageEngine

    def caller_pressed_key(self) -> None:
        self._answer_due = None  # set again after the agent's next words

    def send_caller_audio(self, payload_b64: str) -> None:
        if self._detector is None or self._closed:
            return
        self._caller_audio_in.send_nowait(payload_b64)  # heard by _listen: voice detection is no work for a reactor

    async def send_caller_text(self, text: str) -> None:
        """A caller turn as text (text mode: eval and tests)."""
        self._queue_turn(text)

    async def speak(
        self,
        instructions: str | None,
        *,
        tag: str | None,
        request_id: str | None = None,
        line: SpokenLine | None = None,
    ) -> None:
        if self._closed:
            return
        if self._responding:
            self._emit(EngineProblem(ACTIVE_RESPONSE, "a response is in progress", fatal=False, request_id=request_id))
            return
        if line is not None:
            reply = self.dialogue.reply_to_line(line)
        elif instructions is not None:  # a free-text instruction: only lines can be said word for word
            reply = Reply(say=instructions)
        else:
            reply = self.dialogue.on_continue()
        self._respond(reply, tag)

    async def send_tool_output(self, call_id: str, output: str) -> None:
        self.dialogue.on_tool_output(call_id, output)

    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        self.truncations.append((item_id, audio_end_ms))

    async def events(self, on_agent_audio: Callable[[AgentAudio], None] | None = None) -> AsyncIterator[EngineEvent]:
        async for event in self._events_out:
            if on_agent_audio is not None and isinstance(event, AgentAudio):
                on_agent_audio(event)
            else:
                yield event

    # ------------------------------------------------------------------ inside

    def _emit(self, event: EngineEvent) -> None:
        try:
            self._events_in.send_nowait(event)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def _on_voice_event(self, event: object) -> None:
        if isinstance(event, SpeechStarted):
            self._answer_due = None
            now = trio.current_time()
            self._pause_before = now - self._speech_ended_at if self._speech_ended_at is not None else None
            self._speech_started_at = now
            self._emit(CallerSpeechStarted())
        elif isinstance(event, UtteranceEnded):
            early, self._early = self._early, None
            turn = early if early is not None and early.audio == event.mulaw else event.mulaw
            self._speech_ended_at = trio.current_time()
            self._queue_turn(turn, _Timing(self._speech_started_at, self._pause_before))

    def _queue_turn(self, turn: bytes | str | _EarlyTranscript | _Silence, timing: _Timing | None = None) -> None:
        if self._closed:
            return
        self._answer_due = None
        try:
            self._turns_in.send_nowait((turn, timing or _Timing()))
        except trio.WouldBlock:
            log.warning("offline engine: caller turns are arriving faster than they are understood; one dropped")

    def _respond(self, reply: Reply, tag: str | None, heard_at: float | None = None) -> None:
        """Start one response now (the session sees ResponseStarted before `speak` returns)."""
        assert self._nursery is not None
        number = next(self._ids)
        response_id, item_id = f"offline_resp_{number}", f"offline_item_{number}"
        self._responding = True
        self._idle = trio.Event()
        self._emit(ResponseStarted(response_id, tag))
        self._nursery.start_soon(self._finish_response, response_id, item_id, tag, reply, heard_at)

    async def _finish_response(
        self, response_id: str, item_id: str, tag: str | None, reply: Reply, heard_at: float | None
    ) -> None:
        status = "completed"
        try:
            for call in reply.tool_calls:
                self._emit(ToolCallReady(call.call_id, call.name, call.arguments_json, response_id))
            if heard_at is not None:
                self.turn_latencies_ms.append((time.perf_counter() - heard_at) * 1000)
            if reply.say:
                audio = await self._synthesize(reply.say)
                self._asked_at = trio.current_time()
                for start in range(0, len(audio), AUDIO_CHUNK_BYTES):
                    chunk = base64.b64encode(audio[start : start + AUDIO_CHUNK_BYTES]).decode("ascii")
                    self._emit(AgentAudio(response_id, item_id, chunk))
                self._emit(AgentTranscript(reply.say))
                if self._detector is not None:  # the audio plays in real time from now on
                    self._answer_due = trio.current_time() + len(audio) / MULAW_RATE + SILENT_ANSWER_S
        except Exception:  # the caller must not be left waiting for a response that will never finish
            log.exception("offline engine: a response failed")
            status = "failed"
        finally:
            self._responding = False
            self._emit(ResponseFinished(response_id, tag, status))
            self._idle.set()

    async def _synthesize(self, text: str) -> bytes:
        if self.speech is None:
            return b""
        _, slots = self.speech.limits()
        synthesize = self.speech.synthesizer.synthesize  # type: ignore[attr-defined]
        return await trio.to_thread.run_sync(synthesize, text, limiter=slots, abandon_on_cancel=True)

    async def _listen(self) -> None:
        """The caller's audio in order: voice detection, and a transcript started early in a pause."""
        detector = self._detector
        assert detector is not None
        async with self._caller_audio_out:
            async for payload_b64 in self._caller_audio_out:
                try:
                    audio = base64.b64decode(payload_b64, validate=False)
                except ValueError:
                    continue
                for event in detector.feed(audio):
                    self._on_voice_event(event)
                silence_ms = detector.trailing_silence_ms
                if silence_ms == 0:
                    self._early = None  # voice again (or no turn): an early transcript would be of other audio
                elif silence_ms >= TRANSCRIBE_EARLY_AFTER_MS and self._early is None and self._nursery is not None:
                    turn = detector.utterance_if_it_ended_now()
                    if turn:
                        self._early = _EarlyTranscript(turn, trio.Event())
                        self._nursery.start_soon(self._transcribe_early, self._early)

    async def _watch_silence(self) -> None:
        """A turn of silence when the caller has not started answering by `_answer_due`."""
        while True:
            await trio.sleep(SILENCE_POLL_S)
            due = self._answer_due
            if due is not None and trio.current_time() >= due and not self._responding and self._early is None:
                self._queue_turn(_Silence())

    async def _transcribe(self, audio: bytes) -> str:
        assert self.speech is not None
        slots, _ = self.speech.limits()
        # Steered toward the answer to the question asked last (a number, an address...), if any.
        transcribe = functools.partial(
            self.speech.recognizer.transcribe, listening_for=self.dialogue.listening_for()  # type: ignore[attr-defined]
        )
        return await trio.to_thread.run_sync(transcribe, audio, limiter=slots, abandon_on_cancel=True)

    async def _transcribe_early(self, early: _EarlyTranscript) -> None:
        try:
            early.text = await self._transcribe(early.audio)
        except Exception:  # the turn is transcribed again when it ends
            log.exception("offline engine: early speech-to-text failed")
        finally:
            early.done.set()

    async def _heard(self, turn: bytes | _EarlyTranscript) -> str:
        if isinstance(turn, bytes):
            return await self._transcribe(turn)
        await turn.done.wait()
        if turn.text is None:
            return await self._transcribe(turn.audio)
        self.early_transcripts_used += 1
        return turn.text

    async def _converse(self) -> None:
        """Caller turns in order: hear, understand, answer (one response at a time)."""
        async with self._turns_out:
            async for turn, timing in self._turns_out:
                heard_at = time.perf_counter()
                if isinstance(turn, _Silence):
                    talked_through, self._talking_through = self._talking_through, False
                    silent_reply = self.dialogue.ask_again() if talked_through else self.dialogue.on_silence()
                    while self._responding:
                        await self._idle.wait()
                    if not silent_reply.is_empty and not self._closed:
                        self._respond(silent_reply, None)
                    continue
                if not isinstance(turn, str):
                    try:
                        text = await self._heard(turn)
                    except Exception:  # a recogniser failure is a turn not heard, not a dead call
                        log.exception("offline engine: speech-to-text failed")
                        text = ""
                else:
                    text = turn
                if text.strip():
                    self._emit(CallerTranscript(text))
                answering = not self._goes_on_from_before_the_question(timing)
                reply = self.dialogue.on_caller_turn(text, answering=answering)
                if not answering and self.dialogue.is_waiting_for_an_answer():
                    self._answer_due = trio.current_time() + REASK_AFTER_S  # put again once they stop
                while self._responding:  # never two responses at once (the session's rule too)
                    await self._idle.wait()
                # A text turn is always answered by one response, possibly empty (as Realtime does when
                # asked): a replay knows when the engine is done with the turn.
                if (not reply.is_empty or isinstance(turn, str)) and not self._closed:
                    self._respond(reply, None, heard_at)

    def _goes_on_from_before_the_question(self, timing: _Timing) -> bool:
        """Whether a turn is the caller still saying what they began before the agent's last words (a need in
        several breaths): begun before those words played, or after a short breath in such a turn."""
        asked, started = self._asked_at, timing.started_at
        if asked is None or started is None:
            self._talking_through = False
            return False
        pause = timing.pause_before
        self._talking_through = started < asked or (
            self._talking_through and pause is not None and pause < CONTINUATION_PAUSE_S
        )
        return self._talking_through

    async def _run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._converse)
            if self._detector is not None:
                nursery.start_soon(self._listen)
                nursery.start_soon(self._watch_silence)
            task_status.started()

    def _close(self) -> None:
        self._closed = True
        self._events_in.close()
        self._turns_in.close()
        self._caller_audio_in.close()


class OfflineConnector:
    """Opens one `OfflineEngine` per call. Refuses live calls in text mode (no speech extra)."""

    name = "offline"
    # Whisper tiny.en, an English voice, English slot extraction; text mode for replays.
    capabilities = EngineCapabilities(languages=("en",), text_input=True)

    def __init__(
        self,
        config: RoutingConfig,
        model: IntentModel,
        speech: OfflineSpeech | None,
        *,
        text_mode_reason: str | None = None,
        today: Callable[[], datetime.date] = datetime.date.today,
    ) -> None:
        self.config = config
        self.model = model
        self.speech = speech
        self.text_mode_reason = text_mode_reason or ("no speech models" if speech is None else None)
        self.today = today
        self.max_calls = config.engine.offline_max_calls
        self.active_calls = 0

    @classmethod
    def for_config(cls, config: RoutingConfig) -> OfflineConnector:
        """The server's offline engine: the config's model (or one fit on it) and the installed speech."""
        loaded = load_offline_speech()
        return cls(config, load_intent_model(config), loaded.speech, text_mode_reason=loaded.problem)

    @property
    def text_mode(self) -> bool:
        return self.speech is None

    def describe(self) -> str:
        if self.speech is None:
            return f"offline, TEXT MODE ({self.text_mode_reason}): live calls take the fallback route"
        return ("offline (speech-to-text, intent classifier and text-to-speech on this machine; English only: "
                "callers known to speak another language go to the human route)")

    @asynccontextmanager
    async def connect(self, call: EngineCall) -> AsyncIterator[OfflineEngine]:
        if self.speech is None:
            raise EngineUnavailable(f"offline engine in text mode: {self.text_mode_reason}")
        if self.active_calls >= self.max_calls:
            raise EngineUnavailable(f"offline engine at capacity ({self.max_calls} calls)")
        self.active_calls += 1
        try:
            async with self._open(call, self.speech) as engine:
                yield engine
        finally:
            self.active_calls -= 1

    @asynccontextmanager
    async def connect_text(self, call: EngineCall) -> AsyncIterator[OfflineEngine]:
        """An engine driven with `send_caller_text`; it speaks (with audio) only if speech is loaded."""
        async with self._open(call, self.speech) as engine:
            yield engine

    @asynccontextmanager
    async def _open(self, call: EngineCall, speech: OfflineSpeech | None) -> AsyncIterator[OfflineEngine]:
        engine = OfflineEngine(self.config, self.model, call, speech, today=self.today)
        async with trio.open_nursery() as nursery:
            await nursery.start(engine._run)
            try:
                yield engine
            finally:
                engine._close()
                nursery.cancel_scope.cancel()


def model_file_for(config_path: Path) -> Path:
    """Where `orchestrator engine fit` writes by default: next to the config."""
    return config_path.with_suffix(".model.json")

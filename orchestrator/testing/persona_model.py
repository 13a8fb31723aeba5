"""A perfect Realtime "model" for one persona, played by the fake Realtime server: measures everything but
the model's accuracy.

    fake.scenario = PersonaModel(fake, brief, lambda: caller.turns, voice).scenario()

The fake does not understand speech, so this model is told what a perfect listener would make of each caller
turn: the persona caller's own record of what it said (`CallerTurn`: the details it gave, the need it
stated). Everything else it does as the real model would, on the real protocol and with the caller's real
audio: it hears turns with its own voice-activity detection on the audio the server forwards
(`input_audio_buffer.speech_started` at the onset, so barge-in works; `speech_stopped`, `committed` and the
input transcript at the end), records what the caller gave (`record_details`, values as the persona file
expects them), proposes the persona's intent (`propose_route`), says every line the server asks for word
for word (the text in «» of the request's instructions, in the voice given), asks for missing details one
at a time (each at most twice; a phone number or a date with the keypad offered), asks the caller-ID
question for a number the server asks it to confirm, reads back what the config reads back and records the
caller's yes (`confirmed`), and proposes again once it has them. Keys are not heard: what the caller types,
the server takes. Responses the server asks for carry its metadata, so lines are tagged as with the real
model. With `idle_timeout_ms` in the session's server_vad, a caller silent that long after the model's audio
has played out gets `input_audio_buffer.timeout_triggered` and the last question again, as the instructions ask.

The scenario's steps are decided as the call goes (`Scenario.steps` is iterated once per connection), so the
fake must serve one call at a time: the connection is `fake.last_session` when it starts.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import trio

from machines import LANGUAGE_FIELD
from orchestrator.testing.fake_realtime import (
    FakeRealtime,
    FunctionCall,
    Pause,
    RecordedSession,
    Respond,
    Scenario,
    SendEvent,
    Speech,
    Step,
    after_response_create,
    immediately,
    on,
)
from orchestrator.testing.persona_caller import CallerTurn

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # µ-law decoding for the energy of caller audio (stdlib until 3.13)

__all__ = ["ModelBrief", "PersonaModel"]

RECORD_DETAILS = "record_details"  # the tool names the server offers (orchestrator.engines.tools)
PROPOSE_ROUTE = "propose_route"
CONFIRMED = "confirmed"  # record_details' list of the fields the caller confirmed
POLL_S = 0.04  # the model looks at what arrived this often (one append of caller audio)
THINK_S = 0.3  # before it answers a caller turn
VOICED_RMS = 300  # linear 16-bit RMS above which caller audio is speech
SPEECH_START_MS = 100  # voiced audio before a turn starts
SPEECH_END_MS = 500  # silence that ends a turn (server_vad's silence_duration_ms)
HEARD_LAG_S = 0.3  # a turn's start is detected this long at most after the caller began it
MAX_ASKS_PER_FIELD = 2
_QUOTED_LINE = re.compile(r"«(.*?)»", re.DOTALL)
_ASKED_FIELD = re.compile(r"^- (\w+):", re.MULTILINE)
_CALLER_ID_FIELD = re.compile(r"^- (\w+):.*known from caller ID", re.MULTILINE)


@dataclass(frozen=True)
class ModelBrief:
    """What a perfect model knows about the persona's call, as plain data (built from the routing config)."""

    intent: str  # what it proposes: the persona's intent, or "unknown"
    confidence: float
    summary: str
    fields: Mapping[str, tuple[str, str]]  # detail kind the caller gives → (config field, value to record)
    questions: Mapping[str, str]  # config field → how the model asks for it
    field_order: Sequence[str]  # the config's fields, in order
    ask_intent: str = "What can I help you with today?"
    language: str | None = None  # recorded with the caller's first words (multilingual configs)
    read_backs: Mapping[str, str] = field(default_factory=dict)  # config field → its read-back of the value
    caller_id_question: str = "Is the number you're calling from the best one to reach you?"


class PersonaModel:
    def __init__(
        self,
        fake: FakeRealtime,
        brief: ModelBrief,
        caller_turns: Callable[[], Sequence[CallerTurn]],
        voice: Callable[[str], bytes],
    ) -> None:
        self.fake = fake
        self.brief = brief
        self.caller_turns = caller_turns
        self.voice = voice

    def scenario(self) -> Scenario:
        return Scenario(steps=self)  # type: ignore[arg-type]  # iterated once per connection

    def __iter__(self) -> Iterator[Step]:
        return _Conversation(self, self.fake.last_session).steps()


@dataclass
class _Request:
    event_id: str | None
    instructions: str | None
    received_at: float


@dataclass
class _Conversation:
    """One connection's model: what it has heard, recorded, asked and been told."""

    model: PersonaModel
    session: RecordedSession
    seen: int = 0  # events of the session read so far
    detector: _TurnDetector = field(default_factory=lambda: _TurnDetector())
    requests: list[_Request] = field(default_factory=list)
    speech_started: str | None = None  # the item of a caller turn whose start is still to be announced
    turn_item: str | None = None  # the caller turn in progress
    turn_started_at: float = 0.0
    turn_ended: str | None = None  # the caller turn that just ended, still to be answered
    transcribes: bool = False
    turns_heard: int = 0  # caller turns taken in so far
    recorded: dict[str, str] = field(default_factory=dict)
    to_ask: list[str] = field(default_factory=list)
    asks: Counter[str] = field(default_factory=Counter)
    declined: Counter[str] = field(default_factory=Counter)
    to_confirm: set[str] = field(default_factory=set)  # caller-ID fields the server asked to confirm
    confirming: str | None = None  # the field whose yes or no the caller is about to say
    read_back_due: str | None = None  # a value just recorded, to read back next
    need_heard: bool = False
    proposed: bool = False
    propose_again: bool = False  # the system asked for details (or a clearer need): propose once answered
    decided: bool = False
    awaiting: bool = False  # the model asked the caller something and has not heard back yet
    last_question: str | None = None  # the words of the last question the model asked
    idle_timeout_s: float | None = None  # server_vad's idle_timeout_ms, as the session sets it
    idle_at: float | None = None  # when the caller's silence since the model's audio played out is a turn

    def steps(self) -> Iterator[Step]:
        while True:
            self._read()
            if self.speech_started is not None:
                item, self.speech_started = self.speech_started, None
                started = {"type": "input_audio_buffer.speech_started", "audio_start_ms": self.detector.started_ms}
                yield on(immediately(), SendEvent({**started, "item_id": item}))
            elif self.turn_ended is not None:
                item, self.turn_ended = self.turn_ended, None
                actions = self._turn_taken(item)
                yield on(immediately(), *actions)
                self._played(*(action for action in actions if isinstance(action, Respond)))
            elif self._request_due() is not None:
                respond = self._answer_request(self.requests.pop(0))
                yield on(after_response_create(), respond)
                self._played(respond)
            elif self._idle_due():
                self.idle_at = None
                respond = self._ask_again()
                yield on(immediately(), *self._idle_turn(), Pause(THINK_S), respond)
                self._played(respond)
            else:
                yield on(immediately(), Pause(POLL_S))

    # ------------------------------------------------------------------ listening

    def _read(self) -> None:
        received = self.session.received
        for event in received[self.seen :]:
            data = event.data if isinstance(event.data, dict) else {}
            if event.type == "input_audio_buffer.append" and event.event is not None:
                self._hear_audio(str(data.get("audio", "")))
            elif event.type == "response.create" and event.event is not None:
                response = data.get("response") or {}
                self.requests.append(_Request(data.get("event_id"), response.get("instructions"), event.at))
            elif event.type == "conversation.item.create":
                self._told(data.get("item") or {})
            elif event.type == "session.update":
                audio_input = ((data.get("session") or {}).get("audio") or {}).get("input") or {}
                self.transcribes = self.transcribes or bool(audio_input.get("transcription"))
                if "turn_detection" in audio_input:  # replaced as a whole
                    vad = audio_input["turn_detection"] or {}
                    idle_ms = vad.get("idle_timeout_ms") if vad.get("type") == "server_vad" else None
                    self.idle_timeout_s = idle_ms / 1000 if idle_ms else None
        self.seen = len(received)

    def _hear_audio(self, payload: str) -> None:
        try:
            audio = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return
        change = self.detector.feed(audio)
        if change == "started":
            self.idle_at = None
            self.turn_item = self.speech_started = self.model.fake.new_id("item")
            self.turn_started_at = trio.current_time()
        elif change == "ended" and self.turn_item is not None:
            self.turn_ended, self.turn_item = self.turn_item, None

    def _turn_taken(self, item: str) -> list:
        """The end of a caller turn on the wire, then what the model makes of it."""
        # What the caller said up to this turn's start (a turn begun since is heard at its own end).
        turns = [t for t in self.model.caller_turns()[self.turns_heard :] if t.at <= self.turn_started_at + HEARD_LAG_S]
        self.turns_heard += len(turns)
        heard = [turn for turn in turns if turn.text]  # keys are not heard
        actions: list = [
            SendEvent(
                {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": self.detector.stream_ms, "item_id": item}
            ),
            SendEvent({"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": None}),
        ]
        if self.transcribes:
            words = " ".join(turn.text for turn in heard)
            actions.append(
                SendEvent(
                    {
                        "type": "conversation.item.input_audio_transcription.completed",
                        "item_id": item,
                        "content_index": 0,
                        "transcript": words,
                        "usage": {"type": "duration", "seconds": max(1, len(words) // 15)},
                    }
                )
            )
        answer = self._answer_turn(heard)
        return [*actions, Pause(THINK_S), answer] if answer is not None else actions

    def _told(self, item: Mapping) -> None:
        """A tool result from the server (a function_call_output item)."""
        if item.get("type") != "function_call_output":
            return
        try:
            answer = json.loads(str(item.get("output", "")))
        except ValueError:
            return
        status = answer.get("status") if isinstance(answer, dict) else None
        detail = str(answer.get("detail", "")) if isinstance(answer, dict) else ""
        if status in ("accepted", "handed_to_fallback", "ignored"):
            self.decided = True
        elif status == "clarify":
            self.propose_again = True
            if detail.startswith("missing_fields"):
                missing = {name.strip() for name in detail.partition(":")[2].split(",")}
                self.to_ask = [name for name in self.model.brief.field_order if name in missing]

    # ------------------------------------------------------------------ answering

    def _answer_turn(self, turns: list[CallerTurn]) -> Respond | None:
        """What the model does once a caller turn ends: record what was given, propose, or ask."""
        if not turns:
            return None  # the rest of a turn already answered (a pause inside it), or a noise
        brief = self.model.brief
        details: dict[str, str] = {}
        self.awaiting = False
        if brief.language and turns and LANGUAGE_FIELD not in self.recorded:
            details[LANGUAGE_FIELD] = brief.language
        for turn in turns:
            for kind in turn.gives:
                if kind in brief.fields:
                    name, value = brief.fields[kind]
                    details[name] = value
            for kind in turn.declines:
                if kind in brief.fields:
                    self.declined[brief.fields[kind][0]] += 1
            self.need_heard = self.need_heard or turn.states_need
        new: dict[str, object] = {name: value for name, value in details.items() if self.recorded.get(name) != value}
        self.recorded.update(details)
        self.to_confirm.difference_update(details)
        confirming, self.confirming = self.confirming, None
        if confirming is not None and confirming not in details:
            if any(turn.confirms for turn in turns):
                new[CONFIRMED] = [confirming]
                self.to_confirm.discard(confirming)
            else:  # a no: ask for it (again)
                self.to_confirm.discard(confirming)
                self.recorded.pop(confirming, None)
                self.to_ask = [confirming, *(name for name in self.to_ask if name != confirming)]
        self.read_back_due = next((name for name in new if name in brief.read_backs and name != confirming), None)
        calls: list[Speech | FunctionCall] = []
        if new:
            calls.append(FunctionCall(RECORD_DETAILS, new))
        states_need = any(turn.states_need for turn in turns)
        if states_need and (not self.proposed or self.propose_again) and not self.to_ask:
            calls.append(self._proposal())
        if calls:
            return Respond(tuple(calls))  # the server answers the tools, then asks the model to go on
        if self.decided:
            return None
        return Respond(self._next_outputs())

    def _answer_request(self, request: _Request) -> Respond:
        """The server asked for a response: its line word for word, then what the model would say next."""
        line = _QUOTED_LINE.search(request.instructions or "")
        if line is None:  # "go on": unless the model is waiting for the caller to answer it
            return Respond(() if self.decided or self.awaiting else self._next_outputs())
        asked = _ASKED_FIELD.findall(request.instructions or "")
        if asked:
            self.to_confirm = set(_CALLER_ID_FIELD.findall(request.instructions or ""))
            # As the instructions list them: a caller-ID number to confirm after what is missing.
            self.to_ask = sorted((n for n in self.model.brief.field_order if n in asked), key=self.to_confirm.__contains__)
        words = " ".join(line.group(1).split())
        question = self._next_question() if asked else None
        return Respond((self._speech(f"{words} {question}" if question else words),))

    def _next_outputs(self) -> tuple[Speech | FunctionCall, ...]:
        if self.read_back_due is not None:
            name, self.read_back_due = self.read_back_due, None
            self.confirming, self.awaiting = name, True
            self.last_question = self.model.brief.read_backs[name]
            return (self._speech(self.last_question),)
        question = self._next_question()
        if question is not None:
            return (self._speech(question),)
        if self.propose_again and self.need_heard:
            return (self._proposal(),)
        if not self.need_heard:
            self.awaiting = True
            self.last_question = self.model.brief.ask_intent
            return (self._speech(self.last_question),)
        return ()

    def _next_question(self) -> str | None:
        brief = self.model.brief
        for name in self.to_ask:
            if name in self.to_confirm:  # known from caller ID: one question to confirm it
                self.confirming, self.awaiting = name, True
                self.last_question = brief.caller_id_question
                return self.last_question
            done = name in self.recorded or self.declined[name] >= MAX_ASKS_PER_FIELD
            if done or self.asks[name] >= MAX_ASKS_PER_FIELD or name not in brief.questions:
                continue
            self.asks[name] += 1
            self.awaiting = True
            self.last_question = brief.questions[name]
            return self.last_question
        self.to_ask = []
        return None

    def _proposal(self) -> FunctionCall:
        brief = self.model.brief
        self.proposed, self.propose_again = True, False
        arguments = {"intent": brief.intent, "confidence": brief.confidence, "summary": brief.summary}
        return FunctionCall(PROPOSE_ROUTE, arguments)

    # ------------------------------------------------------------------ a silent caller (idle_timeout_ms)

    def _played(self, *responses: Respond) -> None:
        """After a response went out: the caller's silence counts from the end of its audio's playback."""
        audio_ms = sum(out.ms for respond in responses for out in respond.outputs if isinstance(out, Speech))
        if audio_ms and self.idle_timeout_s is not None and self.turn_item is None:
            self.idle_at = trio.current_time() + audio_ms / 1000 + self.idle_timeout_s

    def _idle_due(self) -> bool:
        """The idle timeout runs (not turned off since: a caller typing), the caller is silent, and it is time."""
        if self.idle_at is None or self.idle_timeout_s is None or self.turn_item is not None or self.decided:
            return False
        return trio.current_time() >= self.idle_at

    def _idle_turn(self) -> list[SendEvent]:
        """What the server sends when the idle timeout fires: the silence committed as the caller's turn."""
        item, end_ms = self.model.fake.new_id("item"), self.detector.stream_ms
        start_ms = max(0, end_ms - round((self.idle_timeout_s or 0) * 1000))
        return [
            SendEvent(
                {"type": "input_audio_buffer.timeout_triggered", "audio_start_ms": start_ms,
                 "audio_end_ms": end_ms, "item_id": item}
            ),
            SendEvent({"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": None}),
        ]

    def _ask_again(self) -> Respond:
        """As the instructions say: check the caller can hear, and put the last question again."""
        question = self.last_question if self.need_heard else self.model.brief.ask_intent
        self.awaiting = True
        return Respond((self._speech(f"Are you still there? {question or ''}".strip()),))

    def _speech(self, words: str) -> Speech:
        audio = self.model.voice(words)
        return Speech(ms=len(audio) // 8, transcript=words, audio=audio)

    def _request_due(self) -> _Request | None:
        """The oldest request the fake did not refuse (an `error` naming it), once it had time to be."""
        while self.requests:
            request = self.requests[0]
            refused = any(
                sent.get("type") == "error" and (sent.get("error") or {}).get("event_id") == request.event_id
                for sent in self.session.sent
            )
            if not refused:
                break
            self.requests.pop(0)
        if not self.requests or trio.current_time() - self.requests[0].received_at < POLL_S:
            return None  # a refusal is sent right after the request is recorded: give it the time
        return self.requests[0]


class _TurnDetector:
    """Caller turns in the forwarded audio, by energy: a start after SPEECH_START_MS of voice, an end after
    SPEECH_END_MS of silence. Times are stream milliseconds (the audio fed so far)."""

    def __init__(self) -> None:
        self.stream_ms = 0
        self.started_ms = 0
        self._in_speech = False
        self._voiced_ms = 0
        self._silent_ms = 0

    def feed(self, mulaw: bytes) -> str | None:
        """"started", "ended" or None for the next piece of µ-law audio."""
        ms = len(mulaw) // 8
        self.stream_ms += ms
        voiced = bool(mulaw) and audioop.rms(audioop.ulaw2lin(mulaw, 2), 2) > VOICED_RMS
        if not self._in_speech:
            self._voiced_ms = self._voiced_ms + ms if voiced else 0
            if self._voiced_ms >= SPEECH_START_MS:
                self._in_speech, self._silent_ms = True, 0
                self.started_ms = self.stream_ms - self._voiced_ms
                return "started"
            return None
        self._silent_ms = 0 if voiced else self._silent_ms + ms
        if self._silent_ms >= SPEECH_END_MS:
            self._in_speech, self._voiced_ms = False, 0
            return "ended"
        return None

"""A caller that converses: plays a persona (`personas.py`) against our server over the real wire protocol.

    caller = PersonaCaller(persona, CallerOptions(base_url=..., auth_token=...),
                           voice=SpeechSynthesizer.load(), transcribe=caller_ears(SpeechRecognizer.load()))
    call = await caller.run()
    for at, who, text in call.conversation(): ...

(`caller_ears`, in `orchestrator/commands/call.py`, hears the agent as a caller expecting numbers read back.)

Built on the simulated Twilio caller (`twilio_caller.py`): its script is one `Decide` step that listens,
answers and decides again. The caller hears the agent only as audio (`AgentListener`: the phone's playback
cut into lines and transcribed), works out what was asked (`persona_answers.hear`) and answers as the persona
would (`PersonaMind`), in speech from `voice` (µ-law 8 kHz), or with keys (`dtmf`). Turn-taking: it waits
for the agent's line to end, unless the persona talks over the agent (then it answers as soon as it has
heard enough of the line to know what is asked; the greeting is enough to start on the need). When the agent
says nothing for `patience_s` (the persona's `[behaviour]`) it answers what is still open, or says the need,
or checks someone is there. It hangs up only when the server ends the stream (or at `max_call_s`). `turns`
and the listener's lines are both sides of the conversation, with times, while it runs and after.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from orchestrator.testing.agent_listener import AgentListener, HeardLine
from orchestrator.testing.persona_answers import Heard, Move, PersonaMind, hear
from orchestrator.testing.personas import Persona
from orchestrator.testing.twilio_caller import (
    CallerOptions,
    CallerStep,
    CallResult,
    Decide,
    PressDigit,
    Say,
    SimulatedCaller,
    Wait,
)

__all__ = ["CallerTurn", "PersonaCall", "PersonaCaller", "Voice"]

KEY_GAP_MS = 250  # between two key presses, as a person types
TALK_OVER_GREETING_S = 1.2  # a caller who talks over the agent starts this far into the greeting
TALK_OVER_AFTER_S = 1.5  # ...and into a later line, once they may have heard what it asks
TALK_OVER_RETRY_S = 1.0


class Voice(Protocol):
    def synthesize(self, text: str, *, length_scale: float | None = None) -> bytes: ...


@dataclass(frozen=True)
class CallerTurn:
    """One thing the caller did: words said and/or keys pressed. `at` is `trio.current_time()`."""

    at: float
    text: str
    keys: str = ""
    gives: tuple[str, ...] = ()
    declines: tuple[str, ...] = ()
    states_need: bool = False
    over_agent: bool = False  # started while the agent's line was still playing
    confirms: bool = False  # a yes to a read-back or to the caller-ID question


@dataclass
class PersonaCall:
    """A played persona: what the simulated caller recorded, and both sides of the conversation."""

    persona: Persona
    result: CallResult
    agent_lines: list[HeardLine]
    caller_turns: list[CallerTurn]

    @property
    def questions(self) -> int:
        """Agent lines after the greeting that asked the caller something, as the caller heard them."""
        return sum(1 for line in self.agent_lines[1:] if hear(line.text or "").ask is not None)

    @property
    def reaction_times(self) -> list[float]:
        """For each caller turn that waited for the agent: seconds from the end of the agent's last line
        to the turn (the caller's own part of the call's pace: hearing, understanding, answering)."""
        times = []
        for turn in self.caller_turns:
            ended = [line.ended_at for line in self.agent_lines if line.ended_at is not None]
            ended = [at for at in ended if at <= turn.at]
            if ended and not turn.over_agent:
                times.append(turn.at - max(ended))
        return times

    def conversation(self) -> list[tuple[float, str, str]]:
        """(time, "agent" | "caller", words) in time order; keys show as "(presses 1 2 #)"."""
        said = [(line.started_at, "agent", line.text or "") for line in self.agent_lines]
        for turn in self.caller_turns:
            words = turn.text
            if turn.keys:
                words = f"{words} (presses {' '.join(turn.keys)})".strip()
            if turn.over_agent:
                words += " (over the agent)"
            said.append((turn.at, "caller", words))
        return sorted(said, key=lambda entry: entry[0])


@dataclass
class _Ears:
    """Where the caller is in what the agent said."""

    next_line: int = 0  # the first line not answered yet
    open_question: Heard | None = None  # asked and not answered yet (stayed silent, pressed a menu key)
    talked_over: set[int] = field(default_factory=set)


class PersonaCaller:
    """One call of one persona; the caller ID is the persona's."""

    def __init__(
        self,
        persona: Persona,
        options: CallerOptions,
        *,
        voice: Voice,
        transcribe: Callable[[bytes], str],
        patience_s: float | None = None,  # None: the persona's own
    ) -> None:
        self.persona = persona
        options = dataclasses.replace(options, caller=persona.caller.caller_id)
        self._speed = options.speed
        self._caller = SimulatedCaller(options, [Decide(self._next_move)])
        self.listener = AgentListener(self._caller, transcribe, speed=options.speed)
        self._voice = voice
        self._patience_s = (patience_s or persona.behaviour.patience_s) / options.speed
        self._mind = PersonaMind(persona)
        self._ears = _Ears()
        self._audio: dict[str, bytes] = {}
        self.turns: list[CallerTurn] = []

    @property
    def caller(self) -> SimulatedCaller:
        return self._caller

    async def run(self) -> PersonaCall:
        """Rehearse the likely lines, place the call, and converse until the server ends it."""
        for line in self._mind.rehearsal():
            await self._speech(line)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.listener.listen)
            result = await self._caller.run()
        return PersonaCall(self.persona, result, list(self.listener.lines), list(self.turns))

    # ------------------------------------------------------------------ the conversation

    async def _next_move(self) -> list[CallerStep]:
        """Listen until there is something to answer, answer it, and decide again afterwards."""
        ears = self._ears
        while True:
            heard, line, over_agent = await self._listen()
            if heard is None and self.listener.over:
                return []  # the server ended the stream: silence until the call is over
            if heard is None:  # the agent has gone quiet
                still_open, ears.open_question = ears.open_question, None
                move = self._mind.reply(still_open) if still_open else self._mind.nudge()
            else:
                move = self._mind.reply(heard, first_line=line == 0)
                if heard.ask is not None and not move.answers:
                    ears.open_question = heard
            if move.silent:
                continue
            if move.answers:
                ears.open_question = None
            return [*await self._steps(move, over_agent), Decide(self._next_move)]

    async def _listen(self) -> tuple[Heard | None, int | None, bool]:
        """(what was heard, the line's index, talked over it) for the next agent line, heard whole or, for a
        persona who talks over the agent, enough of it; (None, None, False) once the agent has been quiet
        for `patience_s`, or when the call is over."""
        listener, ears = self.listener, self._ears
        quiet_since = trio.current_time()
        while True:
            line = listener.lines[ears.next_line] if ears.next_line < len(listener.lines) else None
            # The greeting needs no understanding: a caller starts on their need as soon as it ends.
            greeted = line is not None and line.index == 0 and line.ended_at is not None
            if line is not None and (line.complete or greeted):
                ears.next_line += 1
                if line.index in ears.talked_over:
                    continue  # already answered while it played
                return self._heard(line, line.text or ""), line.index, False
            if listener.over:
                return None, None, False
            playing = listener.playing
            if playing is not None:
                quiet_since = trio.current_time()
                heard, listen_s = await self._talk_over(playing)
                if heard is not None:
                    return heard, playing.index, True
                await listener.changed(listen_s)
                continue
            waited = trio.current_time() - quiet_since
            if ears.next_line >= len(listener.lines) and waited >= self._patience_s:
                return None, None, False
            await listener.changed(max(0.0, self._patience_s - waited))

    async def _talk_over(self, line: HeardLine) -> tuple[Heard | None, float]:
        """For a persona who talks over the agent: what the line playing asks, once enough of it was heard
        to tell; else how long to listen before trying again."""
        if not self.persona.behaviour.barge_in or line.index in self._ears.talked_over:
            return None, math.inf
        enough_s = (TALK_OVER_GREETING_S if line.index == 0 else TALK_OVER_AFTER_S) / self._speed
        heard_s = trio.current_time() - line.started_at
        if heard_s < enough_s:
            return None, enough_s - heard_s
        words = await self.listener.transcript_so_far()
        if line.index > 0 and hear(words).ask is None:
            return None, TALK_OVER_RETRY_S / self._speed
        self._ears.talked_over.add(line.index)
        return self._heard(line, words), 0.0

    def _heard(self, line: HeardLine, words: str) -> Heard:
        heard = hear(words)
        if line.index == 0 and heard.ask is None and not self._mind.need_said:
            heard = Heard(words, "need")  # a greeting the caller did not make out still invites the need
        return heard

    async def _steps(self, move: Move, over_agent: bool) -> list[CallerStep]:
        steps: list[CallerStep] = []
        if move.say:
            steps.append(Say(await self._speech(move.say), move.say))
        for index, key in enumerate(move.keys):
            if index:
                steps.append(Wait(KEY_GAP_MS))
            steps.append(PressDigit(key))
        self.turns.append(
            CallerTurn(
                trio.current_time(), move.say, move.keys, move.gives, move.declines, move.states_need, over_agent,
                move.confirms,
            )
        )
        return steps

    async def _speech(self, text: str) -> bytes:
        audio = self._audio.get(text)
        if audio is None:
            pace = self.persona.caller.pace
            audio = await trio.to_thread.run_sync(
                lambda: self._voice.synthesize(text, length_scale=None if pace == 1.0 else pace)
            )
            self._audio[text] = audio
        return audio

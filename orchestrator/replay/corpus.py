"""Reading a corpus of past calls (JSON Lines, one call a line; format in the README, "The offline engine").

A corpus is written by people and by export scripts, so bad content never raises: each line that cannot
be used becomes a `CorpusProblem` (line number and reason) and the rest of the file is still read. Only a
file that cannot be read at all raises `CorpusError`.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from orchestrator.config import first_validation_problem
from orchestrator.engines.offline import LabelledCall, clean_transcript

CALLER_ROLE = "caller"


class CorpusError(Exception):
    """The corpus file itself cannot be read (missing, a directory, no permission)."""


@dataclass(frozen=True)
class CorpusTurn:
    role: str  # "caller" or "agent"
    text: str  # what was said (human-corrected)
    asr: str | None  # what a speech recogniser heard, when the corpus has it
    start_ms: int | None  # from the start of the call
    duration_ms: int | None


@dataclass(frozen=True)
class CorpusCall:
    call_id: str
    turns: tuple[CorpusTurn, ...]
    expected_intent: str | None
    expected_route: str | None
    task_attributes: dict | None
    audio: Path | None  # already resolved relative to the corpus file
    meta: dict
    line_number: int
    language: str | None = None  # the caller's language (BCP-47), when the corpus says


@dataclass(frozen=True)
class CorpusProblem:
    line_number: int
    reason: str


@dataclass
class Corpus:
    calls: list[CorpusCall]
    problems: list[CorpusProblem]
    path: Path


# --- The line schema (pydantic does the checking and names the bad key) -------------------------

_Milliseconds = Annotated[int, Field(strict=True, ge=0)]
_StrictText = Annotated[str, Field(strict=True)]


class _Line(BaseModel):
    model_config = ConfigDict(extra="ignore")  # unknown keys are allowed: the format may grow


class _Turn(_Line):
    role: Annotated[str, Field(strict=True, min_length=1)]
    text: _StrictText
    asr: _StrictText | None = None
    start_ms: _Milliseconds | None = None
    duration_ms: _Milliseconds | None = None


class _Expected(_Line):
    intent: _StrictText | None = None
    route: _StrictText | None = None
    task_attributes: dict[str, JsonValue] | None = None
    audio: Annotated[str, Field(strict=True, min_length=1)] | None = None


class _Call(_Line):
    call_id: Annotated[str, Field(strict=True, min_length=1)]
    turns: list[_Turn]
    expected: _Expected = _Expected()
    meta: dict[str, JsonValue] = {}
    language: Annotated[str, Field(strict=True, min_length=1, max_length=35)] | None = None


def read_input_file(file: Path, what: str) -> bytes:
    """The bytes of an input file, or CorpusError in one line naming the file and the problem."""
    try:
        return file.read_bytes()
    except FileNotFoundError:
        raise CorpusError(f"{file}: {what} file not found") from None
    except IsADirectoryError:
        raise CorpusError(f"{file}: not a file") from None
    except OSError as exc:
        raise CorpusError(f"{file}: cannot read ({exc.strerror or exc})") from None


def read_corpus(path: str | os.PathLike[str]) -> Corpus:
    """Read every call of a JSON Lines corpus; unusable lines are reported in `problems`, not raised."""
    file = Path(path)
    content = read_input_file(file, "corpus")

    corpus = Corpus(calls=[], problems=[], path=file)
    for line_number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        call_or_problem = _parse_line(line, line_number, file.parent)
        if isinstance(call_or_problem, CorpusProblem):
            corpus.problems.append(call_or_problem)
        else:
            corpus.calls.append(call_or_problem)
    return corpus


def _parse_line(line: bytes, line_number: int, base_dir: Path) -> CorpusCall | CorpusProblem:
    try:
        data: Any = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return CorpusProblem(line_number, f"not valid JSON ({exc})")
    if not isinstance(data, dict):
        return CorpusProblem(line_number, f"not a JSON object (got {type(data).__name__})")
    try:
        raw = _Call.model_validate(data)
    except ValidationError as exc:
        return CorpusProblem(line_number, first_validation_problem(exc, nowhere="line"))
    if not any(turn.role == CALLER_ROLE for turn in raw.turns):
        return CorpusProblem(line_number, "no caller turn")
    expected = raw.expected
    return CorpusCall(
        call_id=raw.call_id,
        turns=tuple(
            CorpusTurn(role=t.role, text=t.text, asr=t.asr, start_ms=t.start_ms, duration_ms=t.duration_ms)
            for t in raw.turns
        ),
        expected_intent=expected.intent,
        expected_route=expected.route,
        task_attributes=expected.task_attributes,
        audio=base_dir / expected.audio if expected.audio else None,
        meta=raw.meta,
        line_number=line_number,
        language=raw.language,
    )


# --- Caller text ---------------------------------------------------------------------------------

def caller_text(call: CorpusCall, *, within_ms: int = 30_000, use_asr: bool = False) -> str:
    """What the caller said in the first `within_ms` ms, cleaned and joined with spaces.

    A turn without `start_ms` counts as inside the window. If no caller turn starts inside it, the first
    caller turn is used, so a call always yields something. With `use_asr`, the recogniser's text is used
    and a turn it has no text for contributes nothing (that is what a live engine would have seen).
    """
    return " ".join(caller_turn_texts(call, within_ms=within_ms, use_asr=use_asr))


def caller_turn_texts(call: CorpusCall, *, within_ms: int = 30_000, use_asr: bool = False) -> list[str]:
    """The turns `caller_text` joins, one text per turn (empty ones dropped): what a replay says in turn."""
    caller_turns = [turn for turn in call.turns if turn.role == CALLER_ROLE]
    inside = [turn for turn in caller_turns if turn.start_ms is None or turn.start_ms < within_ms]
    chosen = inside or caller_turns[:1]
    texts = (turn.asr if use_asr else turn.text for turn in chosen)
    return [cleaned for text in texts if text and (cleaned := clean_transcript(text))]


def labelled_calls(
    calls: Iterable[CorpusCall], *, use_asr: bool = False, within_ms: int = 30_000
) -> list[LabelledCall]:
    """The calls as the intent model learns from them: the caller's opening text (`caller_text`), the
    call's intent, and what the agent said before the caller's first word."""
    return [
        LabelledCall(caller_text(call, within_ms=within_ms, use_asr=use_asr), call.expected_intent,
                     _agent_opening(call, use_asr))
        for call in calls
    ]


def _agent_opening(call: CorpusCall, use_asr: bool) -> tuple[str, ...]:
    """What the agent said before the caller's first word: by construction it says nothing of the intent."""
    lines = []
    for turn in call.turns:
        if turn.role != "agent":
            break
        text = clean_transcript((turn.asr if use_asr else turn.text) or "")
        if text:
            lines.append(text)
    return tuple(lines)

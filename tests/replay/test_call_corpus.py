"""The call corpus reader: bad lines are reported, not raised; caller text is windowed and cleaned."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.engines.offline.transcript import clean_transcript
from orchestrator.replay.corpus import CorpusError, CorpusTurn, caller_text, read_corpus

DEV_CORPUS = Path(__file__).resolve().parents[3] / "shared" / "data" / "harper_valley" / "dev.jsonl"


def call_line(call_id: str = "c1", turns: list | None = None, **extra: object) -> str:
    if turns is None:
        turns = [{"role": "caller", "text": "i lost my card", "start_ms": 1000, "duration_ms": 900}]
    return json.dumps({"call_id": call_id, "turns": turns, **extra})


def write_corpus(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "calls.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_good_line_becomes_a_call_with_its_expected_outcome(tmp_path: Path) -> None:
    expected = {"intent": "replace_card", "route": "card_services", "task_attributes": {"skill": "cards"}}
    path = write_corpus(tmp_path, call_line(expected=expected, meta={"caller_rating": "9"}))
    corpus = read_corpus(path)
    assert corpus.problems == []
    assert corpus.path == path
    [call] = corpus.calls
    assert call.call_id == "c1"
    assert call.turns == (CorpusTurn("caller", "i lost my card", None, 1000, 900),)
    assert (call.expected_intent, call.expected_route) == ("replace_card", "card_services")
    assert call.task_attributes == {"skill": "cards"}
    assert call.meta == {"caller_rating": "9"}
    assert call.audio is None
    assert call.line_number == 1


def test_bad_lines_are_reported_with_their_line_number_and_skipped(tmp_path: Path) -> None:
    path = write_corpus(
        tmp_path,
        '{"call_id": "broken", ',  # 1: not JSON
        '["a", "list"]',  # 2: not an object
        "",  # 3: blank, ignored
        call_line("agent_only", turns=[{"role": "agent", "text": "hello"}]),  # 4
        call_line("bad_time", turns=[{"role": "caller", "text": "hi", "start_ms": "soon"}]),  # 5
        call_line("good"),  # 6
        json.dumps({"turns": [{"role": "caller", "text": "hi"}]}),  # 7: no call_id
        call_line("no_text", turns=[{"role": "caller"}]),  # 8
    )
    corpus = read_corpus(path)
    assert [call.call_id for call in corpus.calls] == ["good"]
    reasons = {problem.line_number: problem.reason for problem in corpus.problems}
    assert sorted(reasons) == [1, 2, 4, 5, 7, 8]
    assert reasons[1].startswith("not valid JSON")
    assert reasons[2] == "not a JSON object (got list)"
    assert reasons[4] == "no caller turn"
    assert reasons[5].startswith("turns[0].start_ms:")
    assert reasons[7].startswith("call_id:")
    assert reasons[8].startswith("turns[0].text:")


def test_text_that_is_not_utf8_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    path.write_bytes(call_line("good").encode() + b"\n" + b'{"call_id": "\xff\xfe"}\n')
    corpus = read_corpus(path)
    assert [call.call_id for call in corpus.calls] == ["good"]
    assert [problem.line_number for problem in corpus.problems] == [2]


def test_unknown_keys_are_ignored(tmp_path: Path) -> None:
    turns = [{"role": "caller", "text": "hi", "emotion": "calm"}]
    corpus = read_corpus(write_corpus(tmp_path, call_line(turns=turns, source="x", expected={"intent": "a", "why": 1})))
    assert corpus.problems == []
    assert corpus.calls[0].expected_intent == "a"


def test_audio_is_resolved_relative_to_the_corpus_file(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    path = folder / "calls.jsonl"
    path.write_text(call_line(expected={"intent": "x", "audio": "audio/c1.wav"}) + "\n", encoding="utf-8")
    assert read_corpus(path).calls[0].audio == folder / "audio" / "c1.wav"


def test_a_missing_corpus_file_raises_corpus_error(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="not found"):
        read_corpus(tmp_path / "nowhere.jsonl")
    with pytest.raises(CorpusError, match="not a file"):
        read_corpus(tmp_path)


def test_clean_transcript_removes_tags_and_cut_off_words() -> None:
    assert clean_transcript("[noise] Hi  my name is <unk> I wou~ I need\ta [laughter] card") == (
        "hi my name is i i need a card"
    )
    assert clean_transcript("[noise] <unk>") == ""


def test_caller_text_keeps_caller_turns_inside_the_window(tmp_path: Path) -> None:
    turns = [
        {"role": "agent", "text": "how can i help", "start_ms": 0},
        {"role": "caller", "text": "Hi [noise]", "asr": "high", "start_ms": 2000},
        {"role": "caller", "text": "my card is gone", "start_ms": 5000},  # no asr: the recogniser heard nothing
        {"role": "caller", "text": "no timing here"},  # without start_ms it counts as inside
        {"role": "caller", "text": "much later", "asr": "much later", "start_ms": 40_000},
    ]
    call = read_corpus(write_corpus(tmp_path, call_line(turns=turns))).calls[0]
    assert caller_text(call) == "hi my card is gone no timing here"
    assert caller_text(call, within_ms=3000) == "hi no timing here"
    assert caller_text(call, use_asr=True) == "high"
    assert caller_text(call, within_ms=60_000) == "hi my card is gone no timing here much later"


def test_caller_text_falls_back_to_the_first_caller_turn(tmp_path: Path) -> None:
    turns = [
        {"role": "caller", "text": "I lost my card", "start_ms": 45_000},
        {"role": "caller", "text": "a debit card", "start_ms": 50_000},
    ]
    call = read_corpus(write_corpus(tmp_path, call_line(turns=turns))).calls[0]
    assert caller_text(call, within_ms=30_000) == "i lost my card"


def test_the_development_corpus_reads_cleanly() -> None:
    if not DEV_CORPUS.exists():
        pytest.skip(f"{DEV_CORPUS} not present")
    corpus = read_corpus(DEV_CORPUS)
    assert corpus.problems == []
    lines = [line for line in DEV_CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(corpus.calls) == len(lines)
    assert all(call.expected_intent for call in corpus.calls)
    assert all(caller_text(call) and "[" not in caller_text(call) for call in corpus.calls)

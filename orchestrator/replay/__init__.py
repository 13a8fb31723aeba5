"""Past calls replayed through the triage: the corpus format, text and audio replay, scoring and reports."""
from orchestrator.replay.audio_replay import replay_recordings
from orchestrator.replay.corpus import (
    CALLER_ROLE,
    Corpus,
    CorpusCall,
    CorpusError,
    CorpusProblem,
    CorpusTurn,
    labelled_calls,
    read_corpus,
    read_input_file,
)
from orchestrator.replay.html_report import EvalReportError, write_eval_html
from orchestrator.replay.scoring import scorable_calls, score, write_summary
from orchestrator.replay.terminal_report import print_summary
from orchestrator.replay.text_replay import replay_calls

__all__ = [
    "CALLER_ROLE",
    "Corpus",
    "CorpusCall",
    "CorpusError",
    "CorpusProblem",
    "CorpusTurn",
    "EvalReportError",
    "labelled_calls",
    "print_summary",
    "read_corpus",
    "read_input_file",
    "replay_calls",
    "replay_recordings",
    "scorable_calls",
    "score",
    "write_eval_html",
    "write_summary",
]

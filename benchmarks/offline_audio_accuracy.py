"""Offline triage on audio: TTS caller turns -> µ-law 8 kHz frames -> VAD -> Whisper -> intent model.

For each corpus call, the caller turns that start in the first 30 s are spoken by the bundled Piper
voice (a slightly different pace per call, so the caller does not sound exactly like the agent),
laid out on a µ-law 8 kHz stream with the corpus's pauses, fed in 20 ms frames through
`VoiceActivityDetector`, and every utterance is transcribed as it ends. Prints the word error rate
against the human text of the same turns, intent accuracy on text and on audio with a deterministic
2-fold split (calls sorted by id, alternately A and B; fit on one half's text, score the other half,
and the reverse; mean of the two), and per-utterance latency from the end of the caller's speech to a
classification, p50/p95, with and without the VAD's silence wait.

Run: .venv/bin/python benchmarks/offline_audio_accuracy.py [--corpus CALLS.jsonl]
     [--config examples/harper_valley_bank.toml] [--limit N] [--json OUT]
Needs the `speech` extra. The speech path is simulated in stream time (no real-time waits): the
silence wait is counted from the stream, the compute is measured on the wall clock.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bridge.twilio.mulaw import MULAW_BYTES_PER_MS, frames, silence
from orchestrator.config.routing import load_routing_config
from orchestrator.engines.offline.intent_model import IntentModel
from orchestrator.engines.offline.speech import (
    SpeechRecognizer,
    SpeechSynthesizer,
    UtteranceEnded,
    VoiceActivityDetector,
    speech_support,
    word_error_rate,
)
from orchestrator.engines.offline.transcript import clean_transcript
from orchestrator.replay.corpus import CALLER_ROLE, caller_text, labelled_calls, read_corpus

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "examples" / "harper_valley_bank.toml"
CALLER_WINDOW_MS = 30_000
FRAME_BYTES = 160  # 20 ms, what Twilio sends
LEAD_SILENCE_MS = 500
TAIL_SILENCE_MS = 1_500  # longer than the VAD's end silence, so the last utterance ends by itself
MIN_GAP_MS, MAX_GAP_MS = 300, 2_500  # corpus pauses between caller turns, bounded (the agent talks there)
DEFAULT_GAP_MS = 1_000  # for turns without timings
CALLER_PACES = (0.92, 0.96, 1.0, 1.04, 1.08, 1.12)  # Piper length_scale, picked per call


@dataclass
class PlacedTurn:
    text: str
    end_ms: int  # where the turn's audio ends in the stream


@dataclass
class CallResult:
    call_id: str
    fold: str
    expected_intent: str
    reference: str
    transcript: str
    reference_words: int
    word_error_rate: float
    text_intent: str
    audio_intent: str
    audio_confidence: float
    audio_seconds: float  # the whole stream fed to the VAD
    spoken_seconds: float  # synthesised speech in it
    utterance_seconds: float  # audio handed to the recogniser
    synthesis_seconds: float
    recognition_seconds: float
    utterances: int
    latencies_ms: list[dict[str, float]] = field(default_factory=list)


def caller_turns(call) -> list[tuple]:
    """(turn, cleaned text) of the caller turns `caller_text` joins: those starting in the first 30 s
    (a turn without a start counts as inside), else the first caller turn."""
    spoken = [turn for turn in call.turns if turn.role == CALLER_ROLE]
    inside = [turn for turn in spoken if turn.start_ms is None or turn.start_ms < CALLER_WINDOW_MS]
    chosen = inside or spoken[:1]
    return [(turn, text) for turn in chosen if (text := clean_transcript(turn.text))]


def pause_after(turn, next_turn) -> int:
    if None in (turn.start_ms, turn.duration_ms, next_turn.start_ms):
        return DEFAULT_GAP_MS
    gap = next_turn.start_ms - (turn.start_ms + turn.duration_ms)
    return min(max(gap, MIN_GAP_MS), MAX_GAP_MS)


def spoken_stream(call, synthesizer: SpeechSynthesizer) -> tuple[bytes, list[PlacedTurn], float, float]:
    """The caller's side of the call as µ-law 8 kHz: each turn spoken, pauses from the corpus."""
    pace = CALLER_PACES[zlib.crc32(call.call_id.encode()) % len(CALLER_PACES)]
    turns = caller_turns(call)
    stream = bytearray(silence(LEAD_SILENCE_MS))
    placed: list[PlacedTurn] = []
    synthesis_seconds = spoken_seconds = 0.0
    for index, (turn, text) in enumerate(turns):
        started = time.perf_counter()
        speech = synthesizer.synthesize(text, length_scale=pace)
        synthesis_seconds += time.perf_counter() - started
        spoken_seconds += len(speech) / (MULAW_BYTES_PER_MS * 1000)
        stream += speech
        placed.append(PlacedTurn(text, len(stream) // MULAW_BYTES_PER_MS))
        if index + 1 < len(turns):
            stream += silence(pause_after(turn, turns[index + 1][0]))
    stream += silence(TAIL_SILENCE_MS)
    return bytes(stream), placed, synthesis_seconds, spoken_seconds


def run_call(call, fold: str, model: IntentModel, synthesizer, recognizer) -> CallResult:
    stream, placed, synthesis_seconds, spoken_seconds = spoken_stream(call, synthesizer)
    reference = " ".join(turn.text for turn in placed)
    detector = VoiceActivityDetector()
    transcripts: list[str] = []
    latencies: list[dict[str, float]] = []
    recognition_seconds = utterance_seconds = 0.0

    def on_utterance(event: UtteranceEnded, detected_ms: int) -> None:
        nonlocal recognition_seconds, utterance_seconds
        utterance_seconds += (event.ended_ms - event.started_ms) / 1000
        started = time.perf_counter()
        text = recognizer.transcribe(event.mulaw)
        recognised = time.perf_counter()
        if text:
            transcripts.append(text)
        model.predict(" ".join(transcripts))
        classified = time.perf_counter()
        recognition_seconds += recognised - started
        speech_end = max((turn.end_ms for turn in placed if turn.end_ms <= detected_ms), default=event.ended_ms)
        compute_ms = (classified - started) * 1000
        latencies.append(
            {
                "silence_wait_ms": detected_ms - speech_end,
                "transcribe_ms": (recognised - started) * 1000,
                "classify_ms": (classified - recognised) * 1000,
                "compute_ms": compute_ms,
                "total_ms": detected_ms - speech_end + compute_ms,
            }
        )

    for number, frame in enumerate(frames(stream, FRAME_BYTES), start=1):
        for event in detector.feed(frame):
            if isinstance(event, UtteranceEnded):
                on_utterance(event, number * FRAME_BYTES // MULAW_BYTES_PER_MS)
    for event in detector.flush():
        if isinstance(event, UtteranceEnded):
            on_utterance(event, detector.stream_ms)

    transcript = " ".join(transcripts)
    audio_guess = model.predict(transcript)
    return CallResult(
        call_id=call.call_id,
        fold=fold,
        expected_intent=call.expected_intent,
        reference=reference,
        transcript=transcript,
        reference_words=len(reference.split()),
        word_error_rate=word_error_rate(reference, transcript),
        text_intent=model.predict(caller_text(call)).intent,
        audio_intent=audio_guess.intent,
        audio_confidence=audio_guess.confidence,
        audio_seconds=len(stream) / (MULAW_BYTES_PER_MS * 1000),
        spoken_seconds=spoken_seconds,
        utterance_seconds=utterance_seconds,
        synthesis_seconds=synthesis_seconds,
        recognition_seconds=recognition_seconds,
        utterances=len(latencies),
        latencies_ms=latencies,
    )


def percentile(values: list[float], share: float) -> float:
    if not values:
        return math.nan
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(share * 100) - 1]


def summarise(results: list[CallResult], load_seconds: dict[str, float]) -> dict:
    words = sum(result.reference_words for result in results)
    edits = sum(result.word_error_rate * result.reference_words for result in results)
    folds = {}
    for fold in ("A", "B"):
        scored = [result for result in results if result.fold == fold]
        if scored:
            folds[fold] = {
                "calls": len(scored),
                "text_accuracy": sum(r.text_intent == r.expected_intent for r in scored) / len(scored),
                "audio_accuracy": sum(r.audio_intent == r.expected_intent for r in scored) / len(scored),
            }
    latencies = [latency for result in results for latency in result.latencies_ms]

    def spread(key: str) -> dict[str, float]:
        values = [latency[key] for latency in latencies]
        return {"p50": percentile(values, 0.50), "p95": percentile(values, 0.95)}

    return {
        "calls": len(results),
        "utterances": len(latencies),
        "word_error_rate": edits / words if words else math.nan,
        "folds": folds,
        "text_accuracy": statistics.fmean(fold["text_accuracy"] for fold in folds.values()),
        "audio_accuracy": statistics.fmean(fold["audio_accuracy"] for fold in folds.values()),
        "latency_with_silence_wait_ms": spread("total_ms"),
        "latency_without_silence_wait_ms": spread("compute_ms"),
        "transcribe_ms": spread("transcribe_ms"),
        "classify_ms": spread("classify_ms"),
        "stt_real_time_factor": sum(r.recognition_seconds for r in results) / sum(r.utterance_seconds for r in results),
        "tts_real_time_factor": sum(r.synthesis_seconds for r in results) / sum(r.spoken_seconds for r in results),
        "load_seconds": load_seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True, help="a labelled corpus (JSONL, see README)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N calls (by call id)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for Whisper")
    parser.add_argument("--json", type=Path, default=None, help="write the figures and per-call results here")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 2:
        parser.error("--limit must be at least 2 (one call per fold)")
    support = speech_support()
    if not support.available:
        parser.exit(2, f"needs the speech extra; missing: {', '.join(support.missing)}\n")

    corpus = read_corpus(args.corpus)
    for problem in corpus.problems:
        print(f"skipped line {problem.line_number}: {problem.reason}", file=sys.stderr)
    labelled = [call for call in corpus.calls if call.expected_intent]
    if len(labelled) < len(corpus.calls):
        print(f"skipped {len(corpus.calls) - len(labelled)} call(s) without an expected intent", file=sys.stderr)
    calls = sorted(labelled, key=lambda call: call.call_id)[: args.limit]
    if len(calls) < 2:
        parser.exit(2, f"{args.corpus}: needs at least 2 usable calls, has {len(calls)}\n")
    config = load_routing_config(args.config)
    halves = {"A": calls[0::2], "B": calls[1::2]}

    started = time.perf_counter()
    synthesizer = SpeechSynthesizer.load()
    tts_loaded = time.perf_counter()
    recognizer = SpeechRecognizer.load(threads=args.threads)
    stt_loaded = time.perf_counter()
    recognizer.transcribe(synthesizer.synthesize("hello"))  # warm-up: the first decode pays one-off setup
    load_seconds = {"tts": tts_loaded - started, "stt": stt_loaded - tts_loaded}

    results: list[CallResult] = []
    for test_fold, train_fold in (("B", "A"), ("A", "B")):
        model = IntentModel.fit(config, labelled_calls(halves[train_fold]))
        for call in halves[test_fold]:
            result = run_call(call, test_fold, model, synthesizer, recognizer)
            results.append(result)
            mark = "ok " if result.audio_intent == result.expected_intent else "BAD"
            print(
                f"{mark} {result.call_id} {result.expected_intent:>22} -> {result.audio_intent:<22} "
                f"WER {result.word_error_rate:.2f}  {result.transcript[:70]!r}",
                flush=True,
            )

    figures = summarise(results, load_seconds)
    print()
    print(f"calls {figures['calls']}, utterances {figures['utterances']} (caller turns in the first 30 s)")
    print(f"word error rate (Whisper tiny.en on Piper speech, µ-law 8 kHz): {figures['word_error_rate']:.3f}")
    for fold, scores in figures["folds"].items():
        print(
            f"fold {fold} ({scores['calls']} calls): text {scores['text_accuracy']:.1%}, audio {scores['audio_accuracy']:.1%}"
        )
    print(f"intent accuracy, 2-fold mean: text {figures['text_accuracy']:.1%}, audio {figures['audio_accuracy']:.1%}")
    for label, key in (
        ("speech end -> intent, incl. VAD silence wait", "latency_with_silence_wait_ms"),
        ("utterance end event -> intent (compute only)", "latency_without_silence_wait_ms"),
        ("  of which transcription", "transcribe_ms"),
        ("  of which classification", "classify_ms"),
    ):
        print(f"{label:46} p50 {figures[key]['p50']:7.1f} ms   p95 {figures[key]['p95']:7.1f} ms")
    print(f"STT real-time factor {figures['stt_real_time_factor']:.3f} (compute s per s of utterance audio)")
    print(f"TTS real-time factor {figures['tts_real_time_factor']:.3f} (compute s per s of speech produced)")
    print(f"model load: TTS {load_seconds['tts']:.2f} s, STT {load_seconds['stt']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps({"figures": figures, "calls": [asdict(r) for r in results]}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

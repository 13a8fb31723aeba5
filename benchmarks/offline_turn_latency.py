"""Per-turn latency of the offline engine, speech end → answer, through the engine a live call uses.

Each caller turn of the corpus (those starting in a call's first 30 s) is spoken by the bundled Piper
voice and streamed into `OfflineEngine.send_caller_audio` in 20 ms frames at real-time pace, as Twilio
sends it, followed by silence. Measured per turn, on the wall clock:
- speech end → answer: from the last frame of the caller's words to the engine's first event of its
  answer (the response carrying the proposal or the question). It includes the 600 ms of silence the
  VAD waits for before it ends the turn (Realtime's server VAD waits about as long);
- turn end → answer: from the moment the VAD ended the turn (the engine's own clock) to the answer:
  speech-to-text (started early, during the silence) and the classifier.
`--concurrency N` runs N calls at once (the engine shares one recogniser across calls, as a server does).

Run: .venv/bin/python benchmarks/offline_turn_latency.py [--calls 12] [--concurrency 1] [--json OUT]
Needs the `speech` extra.
"""
from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import time
from pathlib import Path

import trio

from bridge.twilio.mulaw import frames, silence
from orchestrator.config.routing import load_routing_config
from orchestrator.engines.interface import EngineCall, ResponseStarted
from orchestrator.engines.offline.engine import OfflineConnector, load_offline_speech
from orchestrator.engines.offline.transcript import clean_transcript
from orchestrator.replay.corpus import CALLER_ROLE, read_corpus

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "examples" / "harper_valley_bank.toml"
CALLER_WINDOW_MS = 30_000
FRAME_MS = 20
AFTER_TURN_SILENCE_MS = 1_500  # longer than the VAD's end-of-turn wait, so every turn ends by itself
ANSWER_TIMEOUT_S = 10


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


async def one_call(connector: OfflineConnector, call, synthesize, results: list[dict]) -> None:
    turns = [t for t in call.turns if t.role == CALLER_ROLE and (t.start_ms or 0) < CALLER_WINDOW_MS]
    async with connector.connect(EngineCall(f"CA{call.call_id:0>32}"[:34])) as engine:
        answers: trio.MemorySendChannel[float]
        answers, answered = trio.open_memory_channel[float](100)

        async def watch() -> None:
            async for event in engine.events():
                if isinstance(event, ResponseStarted) and event.tag is None:
                    answers.send_nowait(time.perf_counter())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            for turn in turns:
                words = clean_transcript(turn.text)
                if not words:
                    continue
                audio = silence(200) + synthesize(words)
                for frame in frames(audio):
                    engine.send_caller_audio(base64.b64encode(frame).decode())
                    await trio.sleep(FRAME_MS / 1000)
                speech_end = time.perf_counter()
                answer_at = None
                with trio.move_on_after(ANSWER_TIMEOUT_S):
                    for frame in frames(silence(AFTER_TURN_SILENCE_MS)):
                        engine.send_caller_audio(base64.b64encode(frame).decode())
                        await trio.sleep(FRAME_MS / 1000)
                    answer_at = await answered.receive()
                while True:  # one answer per turn; later ones belong to no turn
                    try:
                        answered.receive_nowait()
                    except trio.WouldBlock:
                        break
                if answer_at is not None and engine.turn_latencies_ms:
                    results.append({
                        "call_id": call.call_id,
                        "words": words[:80],
                        "speech_end_to_answer_ms": (answer_at - speech_end) * 1000,
                        "turn_end_to_answer_ms": engine.turn_latencies_ms[-1],
                    })
            nursery.cancel_scope.cancel()
        results.append({"call_id": call.call_id, "early_transcripts": engine.early_transcripts_used,
                        "turns": len(engine.turn_latencies_ms)})


async def run(args: argparse.Namespace) -> dict:
    config = load_routing_config(args.config)
    connector = OfflineConnector.for_config(config)
    assert connector.speech is not None
    synthesize = connector.speech.synthesizer.synthesize  # type: ignore[attr-defined]
    calls = sorted(read_corpus(args.corpus).calls, key=lambda c: c.call_id)[: args.calls]
    results: list[dict] = []
    limit = trio.CapacityLimiter(args.concurrency)

    async def limited(call) -> None:
        async with limit:
            await one_call(connector, call, synthesize, results)

    async with trio.open_nursery() as nursery:
        for call in calls:
            nursery.start_soon(limited, call)
    turns = [r for r in results if "speech_end_to_answer_ms" in r]
    calls_info = [r for r in results if "early_transcripts" in r]
    speech_end = [r["speech_end_to_answer_ms"] for r in turns]
    turn_end = [r["turn_end_to_answer_ms"] for r in turns]
    return {
        "calls": len(calls), "concurrency": args.concurrency, "turns_answered": len(turns),
        "turns_heard": sum(r["turns"] for r in calls_info),
        "early_transcripts_used": sum(r["early_transcripts"] for r in calls_info),
        "speech_end_to_answer_ms": {"p50": percentile(speech_end, 0.5), "p95": percentile(speech_end, 0.95),
                                    "mean": statistics.fmean(speech_end) if speech_end else None},
        "turn_end_to_answer_ms": {"p50": percentile(turn_end, 0.5), "p95": percentile(turn_end, 0.95),
                                  "mean": statistics.fmean(turn_end) if turn_end else None},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, required=True, help="a labelled corpus (JSONL, see README)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--calls", type=int, default=12)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    loaded = load_offline_speech()
    if loaded.speech is None:
        print(f"error: {loaded.problem}", file=sys.stderr)
        return 2
    figures = trio.run(run, args)
    s, t = figures["speech_end_to_answer_ms"], figures["turn_end_to_answer_ms"]
    print(f"offline engine, {figures['calls']} calls, {figures['concurrency']} at a time: "
          f"{figures['turns_answered']} caller turns answered of {figures['turns_heard']} heard "
          f"({figures['early_transcripts_used']} transcribed during the end-of-turn silence)")
    print(f"  speech end -> answer: p50 {s['p50']:.0f} ms, p95 {s['p95']:.0f} ms (includes the VAD's 600 ms wait)")
    print(f"  turn end   -> answer: p50 {t['p50']:.0f} ms, p95 {t['p95']:.0f} ms (speech-to-text + classifier)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

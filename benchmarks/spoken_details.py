"""Details said on the phone, heard and captured: each persona's answers through Piper, µ-law, Whisper and extraction.

    .venv/bin/python benchmarks/spoken_details.py [--json OUT] [--beam-size N]

For every detail a persona of `benchmarks/outcomes` gives (a name, a number, an address, a date...), in the
words it says when asked and when it volunteers it ("my number is ..."), and a number said instead of a yes
to the caller-ID question ("no, it's better to call me on ...", steered as the engine steers the answer to a
read-back), this speaks the words with the offline engine's Piper voice at the persona's pace (µ-law 8 kHz,
as a phone line carries it), transcribes them with the engine's Whisper model twice, unsteered and steered
for the question asked
(`SpeechRecognizer.transcribe(..., listening_for=...)`), and extracts the config's fields from each
transcript as the engine does after asking for that field. It prints, per detail kind, how often the field
came out right (compared as the whole-call benchmark compares it), the transcription time of each mode,
and every miss with what was heard. A quick A/B of the recogniser's steering and of the extraction, without
whole calls: the audio is the same for both modes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.config.routing import load_routing_config  # noqa: E402
from orchestrator.engines.offline import speech  # noqa: E402
from orchestrator.engines.offline.slot_extraction import extract_slots, listening_for  # noqa: E402
from orchestrator.engines.offline.speech import SpeechRecognizer, SpeechSynthesizer  # noqa: E402
from orchestrator.testing.persona_answers import PersonaMind  # noqa: E402
from orchestrator.testing.persona_verdict import same_value  # noqa: E402
from orchestrator.testing.personas import load_personas  # noqa: E402

PERSONAS = REPO / "benchmarks" / "outcomes"
EXAMPLES = REPO / "examples"
MODES = ("unsteered", "steered")


def utterances(today: datetime.date) -> list[dict]:
    """(persona, detail kind, field, the words, accepted values) for every detail a persona gives."""
    found = []
    for persona in load_personas(PERSONAS):
        for detail in persona.details:
            if detail.withheld or detail.field is None or not detail.say:
                continue
            accepted = persona.expect.accepted(detail.field, today)
            if not accepted:
                continue
            mind = PersonaMind(persona)
            said = {detail.say: detail.kind, mind._volunteered(detail.kind): detail.kind}
            if detail.kind == "phone":  # "no, it's better to call me on ..." to the caller-ID question
                said.setdefault(mind._caller_id().say, "phone, to caller ID")
            for words, kind in said.items():
                if kind != detail.kind and not mind._caller_id().gives:
                    continue  # this caller says yes to their own number
                found.append({
                    "persona": persona.name, "config": persona.config, "kind": kind, "field": detail.field,
                    "words": words, "accepted": list(accepted), "pace": persona.caller.pace,
                })
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write every utterance's result here")
    parser.add_argument("--beam-size", type=int, choices=range(1, 9), default=speech.BEAM_SIZE, metavar="N",
                        help=f"Whisper's beam (default: the engine's, {speech.BEAM_SIZE}); 1 is greedy decoding")
    args = parser.parse_args()
    speech.BEAM_SIZE = args.beam_size
    today = datetime.date.today()
    synthesizer, recognizer = SpeechSynthesizer.load(), SpeechRecognizer.load(threads=1)
    configs = {}
    results = []
    for item in utterances(today):
        config = configs.get(item["config"]) or load_routing_config(EXAMPLES / f"{item['config']}.toml")
        configs[item["config"]] = config
        field = next(f for f in config.fields if f.name == item["field"])
        pace = None if item["pace"] == 1.0 else item["pace"]
        audio = synthesizer.synthesize(item["words"], length_scale=pace)
        for mode in MODES:
            hint = listening_for(field) if mode == "steered" else None
            started = time.perf_counter()
            heard = recognizer.transcribe(audio, listening_for=hint)
            seconds = time.perf_counter() - started
            values = extract_slots(heard, config.fields, asked_for=field.name, country=config.company.country,
                                   today=today)
            captured = values.get(field.name)
            right = captured is not None and any(same_value(value, captured) for value in item["accepted"])
            results.append({**item, "mode": mode, "heard": heard, "captured": captured, "right": right,
                            "transcribe_s": round(seconds, 3)})
    by_kind: dict[tuple[str, str], list[bool]] = defaultdict(list)
    times: dict[str, list[float]] = defaultdict(list)
    for result in results:
        by_kind[(result["kind"], result["mode"])].append(result["right"])
        times[result["mode"]].append(result["transcribe_s"])
    for kind in sorted({kind for kind, _ in by_kind}):
        cells = [f"{mode} {sum(by_kind[(kind, mode)])}/{len(by_kind[(kind, mode)])}" for mode in MODES]
        print(f"{kind:<14} " + "   ".join(cells))
    for mode in MODES:
        total = [r["right"] for r in results if r["mode"] == mode]
        print(f"{mode}: {sum(total)}/{len(total)} right; transcription median "
              f"{statistics.median(times[mode]) * 1000:.0f} ms, max {max(times[mode]) * 1000:.0f} ms")
    print("\nmisses (steered):")
    for result in results:
        if result["mode"] == "steered" and not result["right"]:
            print(f"  {result['kind']:<8} said {result['words']!r}\n           heard {result['heard']!r} "
                  f"→ {result['captured']!r}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

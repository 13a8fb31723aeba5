"""Whole calls, judged by where they end: every persona in this folder played through a real `orchestrator serve`.

    bash benchmarks/outcomes/run.sh                                   # both engines, every persona
    bash benchmarks/outcomes/run.sh --engine offline --persona acme_flooded_basement

Each persona (`*.toml` here, `orchestrator.testing.personas`) names the example config it is written for. Per
engine and config, this starts `orchestrator serve` (a subprocess with its own port and data dir) and plays
the config's personas through it with the persona caller: the caller speaks with the offline engine's Piper
voice, hears the agent's audio and transcribes it with the same Whisper model, and answers what was asked.

- `offline`: the server's offline engine, in audio mode (no account): the product as the README's main job
  runs it. At most `--concurrency` calls at once.
- `realtime`: the server's Realtime engine against `orchestrator.testing.fake_realtime`, started here, with a
  perfect model for each persona (`orchestrator.testing.persona_model`): it records the persona's details
  as it hears the caller's turns and proposes the persona's intent, so this run measures everything but the
  model's accuracy. One server and one fake per concurrent call (the fake serves one call at a time).

Each call is judged from the server's record (`orchestrator.testing.persona_verdict`): the route against the
persona's, each expected field, the time to decision, the questions the agent asked. It prints a line per
persona and the totals, and writes `benchmarks/results/outcomes-<engine>-<stamp>.json` and a markdown table
`benchmarks/results/outcomes-<stamp>.md`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout: the package as it is here
sys.path.insert(0, str(HERE.parent))  # the benchmarks' shared helpers

from server_processes import stop  # noqa: E402

from orchestrator.commands.call import caller_ears  # noqa: E402
from orchestrator.config.routing import CapturedField, RoutingConfig, load_routing_config  # noqa: E402
from orchestrator.engines import CALLER_ID_QUESTION, asked_with_keypad, read_back_question  # noqa: E402
from orchestrator.engines.offline.slot_extraction import field_question  # noqa: E402
from orchestrator.engines.offline.speech import SpeechRecognizer, SpeechSynthesizer  # noqa: E402
from orchestrator.testing.fake_realtime import FakeRealtime, run_fake_realtime  # noqa: E402
from orchestrator.testing.persona_answers import PersonaMind  # noqa: E402
from orchestrator.testing.persona_caller import PersonaCall, PersonaCaller  # noqa: E402
from orchestrator.testing.persona_model import ModelBrief, PersonaModel  # noqa: E402
from orchestrator.testing.persona_verdict import Verdict, judge  # noqa: E402
from orchestrator.testing.personas import Persona, load_personas  # noqa: E402
from orchestrator.testing.twilio_caller import CallerOptions, fetch_call_record  # noqa: E402

EXAMPLES = REPO / "examples"
RESULTS = REPO / "benchmarks" / "results"
TOKEN = "outcomes-bench-token"
ENGINES = ("offline", "realtime")
CALL_SLACK_S = 45  # a call may run this long past the triage budget before the caller hangs up
STAGGER_S = 8.0  # concurrent calls start this far apart, so that they do not listen and think in step
PERFECT_CONFIDENCE = 0.95
UNSURE_CONFIDENCE = 0.3  # what a perfect model says when the need matches no intent


@dataclass
class Outcome:
    persona: Persona
    engine: str
    verdict: Verdict
    budget_s: float
    conversation: list[tuple[float, str, str]]  # (seconds from the stream's start, "agent" | "caller", words)
    state_path: list[str]
    final_twiml: str | None
    violations: list[str]
    call_s: float | None
    caller_reaction_s: float | None  # median, from the agent's line ending to the caller's answer
    # Fields the expected route asks for (hard or soft, per the config): the ones the call needs. A persona
    # may expect more (a name the bank's routes never ask); those count only in the "all expected" figure.
    needed_fields: frozenset[str] = frozenset()

    @property
    def within_budget(self) -> bool:
        after = self.verdict.decided_after_s
        return after is not None and after <= self.budget_s and self.verdict.reason != "budget_expired"

    def as_json(self) -> dict[str, Any]:
        return {
            "persona": self.persona.name,
            "description": self.persona.description,
            "tags": self.persona.tags,
            "engine": self.engine,
            **self.verdict.as_json(),
            "budget_s": self.budget_s,
            "within_budget": self.within_budget,
            "state_path": self.state_path,
            "call_s": self.call_s,
            "caller_reaction_s": self.caller_reaction_s,
            "needed_fields": sorted(self.needed_fields),
            "conversation": [{"at": round(at, 2), "who": who, "words": words} for at, who, words in self.conversation],
            "final_twiml": self.final_twiml,
            "violations": self.violations,
        }


# --------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as output:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=log.parent)



@asynccontextmanager
async def served(config: Path, engine: str, logs: Path, realtime_url: str | None = None) -> AsyncIterator[str]:
    """`orchestrator serve` on a free port with its own data dir; yields its base URL."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    data_dir = tempfile.mkdtemp(prefix="outcomes-data-", dir=logs)
    env = {name: value for name, value in os.environ.items() if name != "OPENAI_API_KEY"}
    env |= {"TWILIO_AUTH_TOKEN": TOKEN, "ORCHESTRATOR_PUBLIC_URL": base_url}
    if realtime_url is not None:
        # A Realtime failure must show as one, not be hidden by the offline engine taking over.
        env |= {"OPENAI_API_KEY": "sk-fake", "ORCHESTRATOR_REALTIME_URL": realtime_url,
                "ORCHESTRATOR_ENGINE__FAILOVER": "fallback-route"}
    command = [str(REPO / ".venv" / "bin" / "orchestrator"), "serve", "--port", str(port), "--config", str(config),
               "--engine", engine, "--data-dir", data_dir]
    log = Path(data_dir) / "serve.log"
    process = await trio.to_thread.run_sync(start, command, env, log)
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            with trio.fail_after(180):  # the offline engine loads its models first
                while True:
                    if process.poll() is not None:
                        raise RuntimeError(f"serve exited with {process.returncode}; see {log}")
                    try:
                        if (await http.get(f"{base_url}/healthz")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await trio.sleep(0.2)
        yield base_url
    finally:
        await trio.to_thread.run_sync(stop, process)


# --------------------------------------------------------------------------- a perfect model


def model_brief(persona: Persona, config: RoutingConfig, today: datetime.date) -> ModelBrief:
    """What a perfect Realtime model makes of this persona's call under `config`."""
    intent = next((i.name for i in config.intents if i.route == persona.expect.route), None)
    by_name = {field.name: field for field in config.fields}
    fields = {
        detail.kind: (detail.field, persona.expect.accepted(detail.field, today)[0])
        for detail in persona.details
        if detail.field is not None and not detail.withheld
    }
    return ModelBrief(
        intent=intent or "unknown",
        confidence=PERFECT_CONFIDENCE if intent else UNSURE_CONFIDENCE,
        summary=persona.need.lines[0],
        fields=fields,
        questions={field.name: question_for(field) for field in config.fields},
        field_order=[field.name for field in config.fields],
        ask_intent=config.lines.ask_intent,
        language=persona.caller.language if config.multilingual else None,
        read_backs={
            name: read_back_question(by_name[name], value, config.company.country)
            for name, value in fields.values()
            if name in by_name and by_name[name].read_back
        },
        caller_id_question=CALLER_ID_QUESTION,
    )


def question_for(field: CapturedField) -> str:
    """How the offline dialogue asks for a field, as the perfect model asks too."""
    return asked_with_keypad(field, field.question or field_question(field))


def model_lines(config: RoutingConfig) -> list[str]:
    """Everything the perfect model may be asked to say under `config`, to render before the calls."""
    questions = [question_for(field) for field in config.fields]
    lines = []
    for language in [None, *config.languages.supported]:
        said = config.lines_for(language)
        lines += [said.greeting, said.handoff, said.clarify, said.ask_details, said.ask_intent, CALLER_ID_QUESTION]
        lines += [f"{line} {question}" for line in (said.ask_details, said.keypad_thanks, said.keypad_invalid)
                  for question in questions]
    return list(dict.fromkeys([*lines, *questions]))


class CachedVoice:
    """The Piper voice, keeping everything it said: lines are rendered once, before the calls, so that no call
    waits for speech (nor the fake's lines block the Trio loop) and no call's CPU goes to rendering."""

    def __init__(self, synthesizer: SpeechSynthesizer) -> None:
        self._synthesizer = synthesizer
        self._said: dict[tuple[str, float | None], bytes] = {}

    def synthesize(self, text: str, *, length_scale: float | None = None) -> bytes:
        key = (" ".join(text.split()), length_scale)
        if key not in self._said:
            self._said[key] = self._synthesizer.synthesize(key[0], length_scale=length_scale)
        return self._said[key]

    def __call__(self, text: str) -> bytes:
        return self.synthesize(text)

    def rehearse(self, lines: Sequence[tuple[str, float | None]]) -> None:
        for text, length_scale in lines:
            self.synthesize(text, length_scale=length_scale)


def caller_lines(personas: Sequence[Persona]) -> list[tuple[str, float | None]]:
    """What the personas are likely to say, at their pace."""
    return [
        (line, None if persona.caller.pace == 1.0 else persona.caller.pace)
        for persona in personas
        for line in PersonaMind(persona).rehearsal()
    ]


# --------------------------------------------------------------------------- playing personas


@dataclass
class Bench:
    voice: CachedVoice
    recognizer: SpeechRecognizer
    logs: Path
    concurrency: int
    today: datetime.date

    async def play(
        self, persona: Persona, base_url: str, engine: str, budget_s: float, needed_fields: frozenset[str],
        prepare: Callable[[PersonaCaller], None] | None = None,
    ) -> Outcome:
        options = CallerOptions(base_url=base_url, auth_token=TOKEN, max_call_s=budget_s + CALL_SLACK_S)
        caller = PersonaCaller(persona, options, voice=self.voice, transcribe=caller_ears(self.recognizer))
        if prepare is not None:
            prepare(caller)
        call = await caller.run()
        record = None
        try:
            record = await fetch_call_record(base_url, call.result.call_sid, TOKEN)
        except Exception as error:  # the verdict says "no decision"; the note says why
            print(f"  {persona.name}: no call record ({error})", flush=True)
        outcome = outcome_of(persona, engine, budget_s, call, record, self.today, needed_fields)
        print(row(outcome), flush=True)
        return outcome

    async def play_offline(
        self, config_path: Path, config: RoutingConfig, personas: Sequence[Persona]
    ) -> list[Outcome]:
        outcomes: dict[str, Outcome] = {}
        budget = config.triage.budget_seconds + config.triage.details_seconds  # the most a call is given
        async with served(config_path, "offline", self.logs) as base_url:
            slots = trio.CapacityLimiter(self.concurrency)

            async def one(persona: Persona) -> None:
                async with slots:
                    outcomes[persona.name] = await self.play(
                        persona, base_url, "offline", budget, route_needs(config, persona)
                    )

            async with trio.open_nursery() as nursery:
                for index, persona in enumerate(personas):
                    nursery.start_soon(one, persona)
                    await trio.sleep(STAGGER_S if index < self.concurrency - 1 else 0.5)
        return [outcomes[persona.name] for persona in personas]

    async def play_realtime(
        self, config_path: Path, config: RoutingConfig, personas: Sequence[Persona]
    ) -> list[Outcome]:
        voice = self.voice
        await trio.to_thread.run_sync(voice.rehearse, [(line, None) for line in model_lines(config)])
        outcomes: dict[str, Outcome] = {}
        budget = config.triage.budget_seconds + config.triage.details_seconds  # the most a call is given

        async def slot(index: int, share: Sequence[Persona]) -> None:
            async with run_fake_realtime() as fake, served(config_path, "realtime", self.logs, fake.url) as base_url:
                await trio.sleep(index * STAGGER_S)
                fake.keep_sessions = False
                for persona in share:
                    prepare = partial(self._perfect_model, fake, model_brief(persona, config, self.today), voice)
                    outcomes[persona.name] = await self.play(
                        persona, base_url, "realtime", budget, route_needs(config, persona), prepare
                    )

        async with trio.open_nursery() as nursery:
            for index in range(min(self.concurrency, len(personas))):
                nursery.start_soon(slot, index, personas[index :: self.concurrency])
        return [outcomes[persona.name] for persona in personas]

    @staticmethod
    def _perfect_model(fake: FakeRealtime, brief: ModelBrief, voice: CachedVoice, caller: PersonaCaller) -> None:
        fake.scenario = PersonaModel(fake, brief, lambda: caller.turns, voice).scenario()


def route_needs(config: RoutingConfig, persona: Persona) -> frozenset[str]:
    """The fields the persona's expected route asks for, hard or soft."""
    route = persona.expect.route
    return config.required_fields(route) | config.wanted_fields(route)


def outcome_of(
    persona: Persona, engine: str, budget_s: float, call: PersonaCall, record: dict | None, today: datetime.date,
    needed_fields: frozenset[str] = frozenset(),
) -> Outcome:
    result = call.result
    origin = result.media_opened_at if result.media_opened_at is not None else 0.0
    passes = (record or {}).get("passes") or [{}]
    outcome = passes[-1].get("outcome") or {}
    closed = result.media_closed_at
    return Outcome(
        persona=persona,
        engine=engine,
        verdict=judge(persona, record, questions=call.questions, today=today),
        budget_s=budget_s,
        conversation=[(at - origin, who, words) for at, who, words in call.conversation()],
        state_path=list(outcome.get("state_path") or []),
        final_twiml=result.final_twiml,
        violations=[f"{violation.kind}: {violation.excerpt}" for violation in result.violations],
        call_s=None if closed is None or result.media_opened_at is None else closed - origin,
        caller_reaction_s=round(statistics.median(call.reaction_times), 2) if call.reaction_times else None,
        needed_fields=needed_fields,
    )


# --------------------------------------------------------------------------- reporting


def row(outcome: Outcome) -> str:
    verdict = outcome.verdict
    mark = "ok  " if verdict.route_right else "MISS"
    route = verdict.route or "(no decision)"
    decided = "-" if verdict.decided_after_s is None else f"{verdict.decided_after_s:5.1f} s"
    fields = field_summary(verdict)
    return (
        f"{mark} {outcome.persona.name:<36} {verdict.expected_route:>22} → {route:<22} "
        f"{(verdict.reason or '-'):<16} {decided:>8}  fields {fields:<28} questions {verdict.questions}"
    )


def field_summary(verdict: Verdict) -> str:
    if not verdict.fields:
        return "-"
    wrong = [f.field for f in verdict.fields if not f.right]
    summary = f"{verdict.fields_right}/{len(verdict.fields)}"
    return f"{summary} (wrong: {', '.join(wrong)})" if wrong else summary


def totals(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    verdicts = [outcome.verdict for outcome in outcomes]
    fields = [f for verdict in verdicts for f in verdict.fields]
    needed = [f for outcome in outcomes for f in outcome.verdict.fields if f.field in outcome.needed_fields]
    urgent = [verdict for verdict in verdicts if verdict.urgent]
    decided = [v.decided_after_s for v in verdicts if v.decided_after_s is not None]
    reactions = [o.caller_reaction_s for o in outcomes if o.caller_reaction_s is not None]
    by_field: dict[str, list[bool]] = {}
    for f in fields:
        by_field.setdefault(f.field, []).append(f.right)
    return {
        "calls": len(outcomes),
        "right_route": sum(v.route_right for v in verdicts),
        "right_route_within_budget": sum(o.verdict.route_right and o.within_budget for o in outcomes),
        "urgent_calls": len(urgent),
        "urgent_at_their_route": sum(v.route_right for v in urgent),
        "urgent_in_voicemail": sum(v.urgent_in_voicemail for v in urgent),
        "fields_expected": len(fields),
        "fields_right": sum(f.right for f in fields),
        "fields_right_by_field": {name: f"{sum(rights)}/{len(rights)}" for name, rights in sorted(by_field.items())},
        "fields_needed": len(needed),
        "fields_needed_right": sum(f.right for f in needed),
        "calls_with_every_field_right": sum(all(f.right for f in v.fields) for v in verdicts if v.fields),
        "calls_expecting_fields": sum(1 for v in verdicts if v.fields),
        "decided_after_s_median": round(statistics.median(decided), 2) if decided else None,
        "decided_after_s_max": round(max(decided), 2) if decided else None,
        "questions_mean": round(statistics.fmean(v.questions for v in verdicts), 2) if verdicts else None,
        "caller_reaction_s_median": round(statistics.median(reactions), 2) if reactions else None,
        "by_reason": dict(sorted(Counter(str(v.reason) for v in verdicts).items())),
    }


def percent(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.0f} %)" if whole else "0/0"


def totals_text(engine: str, total: dict[str, Any], duration_s: float) -> str:
    return "\n".join([
        f"{engine}: {total['calls']} calls in {duration_s / 60:.1f} min",
        f"  right route: {percent(total['right_route'], total['calls'])}; "
        f"within the budget: {percent(total['right_route_within_budget'], total['calls'])}",
        f"  urgent calls: {total['urgent_at_their_route']}/{total['urgent_calls']} at their route, "
        f"{total['urgent_in_voicemail']} in voicemail",
        f"  fields right: {percent(total['fields_right'], total['fields_expected'])} "
        f"({', '.join(f'{name} {share}' for name, share in total['fields_right_by_field'].items())}); "
        "calls with every field right: "
        f"{percent(total['calls_with_every_field_right'], total['calls_expecting_fields'])}",
        f"  fields the expected route asks for, right: {percent(total['fields_needed_right'], total['fields_needed'])}",
        f"  time to decision: median {total['decided_after_s_median']} s, max {total['decided_after_s_max']} s; "
        f"questions per call: {total['questions_mean']}; "
        f"the caller's reaction: median {total['caller_reaction_s_median']} s",
        f"  decisions by reason: {', '.join(f'{reason} {count}' for reason, count in total['by_reason'].items())}",
    ])


def markdown(runs: dict[str, tuple[list[Outcome], dict[str, Any], float]], stamp: str) -> str:
    lines = [f"# Whole-call outcomes, {stamp}", "", "`bash benchmarks/outcomes/run.sh` (whole_calls.py).", ""]
    for engine, (outcomes, total, duration_s) in runs.items():
        lines += [f"## {engine}", "", "```", totals_text(engine, total, duration_s), "```", ""]
        lines += [
            "| persona | config | expected route | route | reason | right | decided (s) | fields right | questions |",
            "|---|---|---|---|---|:-:|--:|---|--:|",
        ]
        for outcome in outcomes:
            verdict = outcome.verdict
            decided = "-" if verdict.decided_after_s is None else f"{verdict.decided_after_s:.1f}"
            cells = [
                outcome.persona.name, outcome.persona.config, verdict.expected_route, verdict.route or "-",
                verdict.reason or "-", "yes" if verdict.route_right else "**no**", decided,
                field_summary(verdict), str(verdict.questions),
            ]
            lines.append(f"| {' | '.join(cells)} |")
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def chosen_personas(args: argparse.Namespace) -> list[Persona]:
    personas = load_personas(args.personas)
    if args.persona:
        unknown = sorted(set(args.persona) - {persona.name for persona in personas})
        if unknown:
            raise SystemExit(f"no such persona: {', '.join(unknown)}")
        personas = [persona for persona in personas if persona.name in args.persona]
    if args.config:
        personas = [persona for persona in personas if persona.config in args.config]
    return personas


async def run(args: argparse.Namespace) -> int:
    personas = chosen_personas(args)
    if not personas:
        print("no personas chosen")
        return 1
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    engines = ENGINES if args.engine == "both" else (args.engine,)
    logs = Path(tempfile.mkdtemp(prefix="outcomes-"))
    print(f"{len(personas)} personas, engines {', '.join(engines)}, {args.concurrency} calls at a time; logs in {logs}",
          flush=True)
    voice, recognizer = await trio.to_thread.run_sync(
        lambda: (CachedVoice(SpeechSynthesizer.load()), SpeechRecognizer.load(threads=1))
    )
    started = time.monotonic()
    await trio.to_thread.run_sync(voice.rehearse, caller_lines(personas))
    print(f"rendered the callers' lines in {time.monotonic() - started:.0f} s", flush=True)
    bench = Bench(voice, recognizer, logs, args.concurrency, datetime.date.today())
    runs: dict[str, tuple[list[Outcome], dict[str, Any], float]] = {}
    RESULTS.mkdir(parents=True, exist_ok=True)
    for engine in engines:
        started = time.monotonic()
        outcomes: list[Outcome] = []
        for config_name in sorted({persona.config for persona in personas}):
            config_path = EXAMPLES / f"{config_name}.toml"
            config = load_routing_config(config_path)
            group = [persona for persona in personas if persona.config == config_name]
            print(f"\n{engine} · {config_name} · {len(group)} personas", flush=True)
            play = bench.play_offline if engine == "offline" else bench.play_realtime
            outcomes += await play(config_path, config, group)
        duration_s = time.monotonic() - started
        total = totals(outcomes)
        runs[engine] = (outcomes, total, duration_s)
        print("\n" + totals_text(engine, total, duration_s), flush=True)
        out = RESULTS / f"outcomes-{engine}-{stamp}.json"
        out.write_text(json.dumps({
            "engine": engine, "stamp": stamp, "concurrency": args.concurrency, "duration_s": round(duration_s, 1),
            "totals": total, "calls": [outcome.as_json() for outcome in outcomes],
        }, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {out.relative_to(REPO)}", flush=True)
    table = RESULTS / f"outcomes-{stamp}.md"
    table.write_text(markdown(runs, stamp), encoding="utf-8")
    print(f"wrote {table.relative_to(REPO)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=[*ENGINES, "both"], default="both")
    parser.add_argument("--personas", type=Path, default=HERE, metavar="DIR",
                        help="the folder of persona files (default: the 48 here)")
    parser.add_argument("--persona", action="append", help="play only this persona (repeat for several)")
    parser.add_argument("--config", action="append", help="play only the personas of this example config")
    parser.add_argument("--concurrency", type=int, default=2, choices=[1, 2],
                        help="calls at a time (default 2: a 2-core machine runs the server and the callers)")
    return trio.run(run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

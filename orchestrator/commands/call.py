"""`orchestrator call`: simulate one phone call against a running server and print what happened.

The caller is the same simulated Twilio caller the tests use: it fetches the TwiML with a valid
signature, opens the Media Stream, talks (caller lines or a WAV file), echoes marks and honours
`clear` like Twilio, follows the action URL, and then reads the call's record back from the server.
With the speech extra it also listens: the agent's lines, as the caller heard them, are in the transcript.
`--persona FILE` plays a persona instead (`orchestrator.testing.persona_caller`): a caller that converses,
answering what the agent asks, and the report ends with the persona's verdict.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import httpx
import trio

from bridge.twilio import CallerAudioError, mulaw_to_wav, silence, tone, wav_to_mulaw
from orchestrator.commands.call_report import render_call, render_verdict
from orchestrator.config import DEV_AUTH_TOKEN_FILE, ConfigError
from orchestrator.testing import (
    AgentListener,
    CallerOptions,
    CallerStep,
    CallResult,
    PersonaCall,
    PersonaCaller,
    PersonaError,
    Say,
    SimulatedCaller,
    WaitForAgent,
    fetch_call_record,
    judge,
    load_persona,
)

if TYPE_CHECKING:
    from orchestrator.engines.offline import SpeechRecognizer, SpeechSynthesizer

TURN_PAUSE_MS = 1200  # between saved caller lines: long enough for the engine to take each as a turn
MS_PER_CHARACTER = 70  # a tone this long per character when no text-to-speech is installed
DEFAULT_CALLER = "+14155550100"


def add_call_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the server (default: %(default)s)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--say", action="append", metavar="LINE", help="a caller line (repeat for several turns)")
    what.add_argument("--script", type=Path, help="a text file with one caller line per line")
    what.add_argument("--wav", type=Path, help="a WAV file of the caller (any rate; sent as 8 kHz µ-law)")
    what.add_argument("--persona", type=Path, metavar="FILE",
                      help="a persona (TOML, e.g. benchmarks/outcomes/*.toml): a caller who listens and answers")
    parser.add_argument("--auth-token", help="Twilio auth token to sign with (default: $TWILIO_AUTH_TOKEN, "
                        "else the server's development token in --data-dir)")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("ORCHESTRATOR_DATA_DIR", "var")))
    parser.add_argument("--from", dest="caller", help=f"caller ID (default: the persona's, else {DEFAULT_CALLER})")
    parser.add_argument("--to", dest="called", default="+14155550199")
    parser.add_argument("--call-sid", help="reuse a CallSid (e.g. to play a call coming back from Studio)")
    parser.add_argument("--entry", metavar="FLOW_SID/NODE", help="the Studio node that sends the call to us")
    parser.add_argument("--speed", type=float, default=1.0, help="audio faster than real time (default 1)")
    parser.add_argument("--timeout", type=float, default=90.0, help="give up after this many seconds of call")
    parser.add_argument("--save-heard", type=Path, metavar="WAV", help="save what the caller heard")
    parser.add_argument("--save-said", type=Path, metavar="WAV",
                        help="save the caller's lines as spoken (a WAV to edit, or to replay with --wav)")
    parser.add_argument("--engine", help="ask the server for one of its engines by name for this call "
                        "(e.g. offline; default: the server's own choice)")


def caller_lines(args: argparse.Namespace) -> list[str]:
    if args.script is not None:
        lines = [line.strip() for line in args.script.read_text(encoding="utf-8").splitlines()]
        return [line for line in lines if line and not line.startswith("#")]
    return list(args.say or ["Hello, I have a question about my bill."])


def speech_for(line: str, synthesizer: SpeechSynthesizer | None) -> tuple[bytes, str]:
    """µ-law audio of a caller line: the offline engine's voice (`synthesizer`, from the speech extra) or
    espeak-ng when installed, else a tone as long as the line."""
    if synthesizer is not None:
        return synthesizer.synthesize(line), "piper"
    espeak = shutil.which("espeak-ng") or shutil.which("espeak")
    if espeak:
        with tempfile.TemporaryDirectory() as folder:
            wav = Path(folder) / "line.wav"
            done = subprocess.run([espeak, "-w", str(wav), line], capture_output=True, timeout=30)
            if done.returncode == 0 and wav.is_file():
                return wav_to_mulaw(wav), "espeak-ng"
    return tone(max(400, MS_PER_CHARACTER * len(line)), hz=220.0), "tone"


def caller_ears(recognizer: SpeechRecognizer) -> Callable[[bytes], str]:
    """How a caller hears the agent: expecting digits, as a person who knows their own number hears it read
    back. Unsteered, Whisper tiny.en runs the "5 5 5" of a read-back together (2 of 8 heard right, and the
    caller says no to a right number); steered for numbers, 8 of 8, and the agent's other lines come out as
    before (word error 0.07 against 0.21 on 18 lines of the example configs, the difference all read-backs)."""
    from orchestrator.engines.offline import ListeningFor

    return functools.partial(recognizer.transcribe, listening_for=ListeningFor("phone"))


def offline_ears() -> SpeechRecognizer | None:
    """The offline engine's recogniser when the speech extra is installed: the caller's ears."""
    from orchestrator.engines.offline import SpeechRecognizer, SpeechUnavailable, speech_support

    if not speech_support().stt:
        return None
    try:
        return SpeechRecognizer.load(threads=1)
    except SpeechUnavailable:
        return None


def build_steps(args: argparse.Namespace) -> tuple[list[CallerStep], str]:
    if args.wav is not None:
        audio = wav_to_mulaw(args.wav)
        return [Say(audio, f"({args.wav.name}, {len(audio) // 8} ms)"), WaitForAgent()], "wav"
    from orchestrator.composition import offline_voice

    steps: list[CallerStep] = [WaitForAgent()]  # hear the greeting first
    voice = "tone"
    synthesizer = offline_voice()
    for line in caller_lines(args):
        audio, voice = speech_for(line, synthesizer)
        steps += [Say(audio, line), WaitForAgent()]
    return steps, voice


def save_said(steps: list[CallerStep], path: Path) -> None:
    """The caller's lines in one WAV, a pause between turns (as `--wav` would play them back)."""
    turns = [step.audio for step in steps if isinstance(step, Say)]
    mulaw_to_wav(silence(TURN_PAUSE_MS).join(turns) + silence(TURN_PAUSE_MS), path)
    print(f"saved the caller's lines to {path}")


def auth_token(args: argparse.Namespace) -> str:
    if args.auth_token:
        return args.auth_token
    if os.environ.get("TWILIO_AUTH_TOKEN"):
        return os.environ["TWILIO_AUTH_TOKEN"]
    path = args.data_dir / DEV_AUTH_TOKEN_FILE
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    raise ConfigError(str(path), None, "no auth token: pass --auth-token, set TWILIO_AUTH_TOKEN, or start "
                      "`orchestrator serve` from this folder first (it writes a development token there), "
                      "or pass the --data-dir the server was started with")


def incoming_query(entry: str | None, engine: str | None) -> str:
    """The webhook's query: the Studio node that sent the call, and the engine asked for."""
    parts = {}
    if entry:
        flow_sid, _, node = entry.partition("/")
        parts["flow_sid"] = flow_sid
        if node:
            parts["node"] = node
    if engine:
        parts["engine"] = engine
    return urlencode(parts)


def check_engine_offered(base_url: str, engine: str) -> None:
    """Fail before the call when the server does not have the engine asked for (it would silently use its own)."""
    try:
        health = httpx.get(f"{base_url}/healthz", timeout=10).json()
    except (httpx.HTTPError, ValueError) as error:
        raise ConfigError(base_url, None, f"cannot read /healthz ({error})") from None
    offered = health.get("engines") or [health.get("engine")]
    if engine not in offered:
        raise ConfigError(
            base_url, None, f"the server has no {engine!r} engine (it has: {', '.join(map(str, offered))})"
        )


def caller_options(args: argparse.Namespace, caller_id: str) -> CallerOptions:
    return CallerOptions(
        base_url=args.url,
        auth_token=auth_token(args),
        incoming_query=incoming_query(args.entry, args.engine),
        call_sid=args.call_sid,
        caller=args.caller or caller_id,
        called=args.called,
        speed=args.speed,
        max_call_s=args.timeout,
    )


async def read_record(args: argparse.Namespace, result: CallResult, token: str) -> dict | None:
    if result.webhook_status != 200:
        return None
    try:
        return await fetch_call_record(args.url, result.call_sid, token)
    except Exception as error:  # the call itself is what matters; say why the record is missing
        print(f"note: could not read the call record: {error}")
        return None


def run_call(args: argparse.Namespace) -> int:
    if args.persona is not None:
        return run_persona_call(args)
    try:
        steps, voice = build_steps(args)
    except CallerAudioError as error:
        raise ConfigError(str(args.wav), None, str(error).removeprefix(f"{args.wav}: ")) from None
    if args.save_said is not None:
        save_said(steps, args.save_said)
    if args.engine:
        check_engine_offered(args.url, args.engine)
    options = caller_options(args, DEFAULT_CALLER)
    if voice == "tone":
        print("note: no espeak-ng installed, so caller lines are sent as tones of their length "
              "(an engine that listens hears no words)")
    caller = SimulatedCaller(options, steps)
    recognizer = offline_ears()
    listener = AgentListener(caller, caller_ears(recognizer), speed=args.speed) if recognizer is not None else None

    async def call() -> tuple[CallResult, dict | None, bytes]:
        async with trio.open_nursery() as nursery:
            if listener is not None:
                nursery.start_soon(listener.listen)
            result = await caller.run()
        return result, await read_record(args, result, options.auth_token), caller.heard_audio

    result, record, heard = trio.run(call)
    conversation = None
    if listener is not None:
        heard_lines = [(line.started_at, f"agent: {line.text or '(no words heard)'}") for line in listener.lines]
        conversation = [*result.transcript, *heard_lines]
    print(render_call(result, record, conversation))
    return finish(args, result, heard, options)


def run_persona_call(args: argparse.Namespace) -> int:
    try:
        persona = load_persona(args.persona)
    except PersonaError as error:
        raise ConfigError(str(args.persona), None, str(error).removeprefix(f"{args.persona}: ")) from None
    from orchestrator.composition import offline_voice

    voice, recognizer = offline_voice(), offline_ears()
    if voice is None or recognizer is None:
        raise ConfigError(str(args.persona), None, "a persona speaks and listens: install the speech extra "
                          "(pip install -e '.[speech]')")
    if args.engine:
        check_engine_offered(args.url, args.engine)
    options = caller_options(args, persona.caller.caller_id)
    caller = PersonaCaller(persona, options, voice=voice, transcribe=caller_ears(recognizer))

    async def call() -> tuple[PersonaCall, dict | None, bytes]:
        played = await caller.run()
        return played, await read_record(args, played.result, options.auth_token), caller.caller.heard_audio

    played, record, heard = trio.run(call)
    conversation = [(at, f"{who}: {words or '(no words heard)'}") for at, who, words in played.conversation()]
    print(render_call(played.result, record, conversation))
    if played.result.webhook_status == 200:
        verdict = judge(persona, record, questions=played.questions, today=datetime.date.today())
        print(render_verdict(verdict))
    return finish(args, played.result, heard, options)


def finish(args: argparse.Namespace, result: CallResult, heard: bytes, options: CallerOptions) -> int:
    if args.save_heard is not None:
        mulaw_to_wav(heard, args.save_heard)
        print(f"saved what the caller heard to {args.save_heard}")
    if result.webhook_status != 200:
        print(f"error: {webhook_failure(result, options, args.data_dir)}")
        return 1
    return 0 if result.final_twiml else 1


def webhook_failure(result: CallResult, options: CallerOptions, data_dir: Path) -> str:
    """Why the voice webhook did not take the call, with what to do about it."""
    url = options.webhook_url
    if result.webhook_status == 0:
        reasons = [v.excerpt for v in result.violations if v.kind.startswith("webhook_")]
        cause = reasons[0] if reasons else "no answer"
        return (f"no server answered at {url} ({cause}); start one with `orchestrator serve` "
                "or point --url at it")
    if result.webhook_status == 403:
        return (f"the server at {url} refused the call's signature (HTTP 403): this caller signs with a "
                f"different auth token. A server started with --data-dir DIR keeps its development token in "
                f"DIR; pass the same --data-dir (this call used {data_dir}), or --auth-token / TWILIO_AUTH_TOKEN "
                "with the server's token")
    return f"the webhook answered HTTP {result.webhook_status} at {url}"

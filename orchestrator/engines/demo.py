"""The fake engine of `orchestrator serve --engine fake`: the protocol-faithful fake Realtime server,
run inside the server process on loopback, playing one fixed demo call.

It does NOT listen to the caller. Whatever is said, it greets, waits for about 1.5 s of caller audio,
records placeholder values for the details the first intent's route needs, proposes that intent and
says the handoff line. It exists so the server runs end to end with no OpenAI account; the real engine
is OpenAI Realtime (`--engine realtime`).
"""
from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bridge.openai_realtime import RealtimeSettings
from orchestrator.config import CapturedField, RoutingConfig
from orchestrator.engines.realtime import RealtimeConnector
from orchestrator.engines.tools import PROPOSE_ROUTE, RECORD_DETAILS
from orchestrator.testing import (
    Scenario,
    UserSpeech,
    after_audio_frames,
    after_response_create,
    call_function,
    on,
    run_fake_realtime,
    speak,
)

DEMO_CALLER_FRAMES = 75  # 1.5 s of caller audio before the demo "hears" something
DEMO_CONFIDENCE = 0.92
_DEMO_TEXT = {"phone": "+14155552671", "email": "alex.demo@example.com"}


def _demo_value(field: CapturedField) -> str:
    if field.type == "date":
        return (datetime.date.today() + datetime.timedelta(days=1)).isoformat()
    if field.type == "choice":
        return (field.choices or ["?"])[0]
    return _DEMO_TEXT.get(field.type) or f"demo {field.name.replace('_', ' ')}"


def demo_scenario(config: RoutingConfig) -> Scenario:
    """The demo call for `config`: its first intent, with the details that intent's route requires."""
    if not config.intents:
        # Nothing to propose: greet, then let the triage budget send the call to the fallback route.
        return Scenario(steps=[on(after_response_create(), speak(ms=1200, transcript=config.lines.greeting))])
    intent = config.intents[0]
    required = config.required_fields(intent.route)
    details = {field.name: _demo_value(field) for field in config.fields if field.name in required}
    proposal = call_function(
        PROPOSE_ROUTE,
        {"intent": intent.name, "confidence": DEMO_CONFIDENCE, "summary": f"demo call: {intent.description[:80]}"},
    )
    heard = UserSpeech(transcript="(demo engine: the caller was not listened to)")
    steps = [on(after_response_create(), speak(ms=1200, transcript=config.lines.greeting))]
    if details:
        steps += [
            on(after_audio_frames(DEMO_CALLER_FRAMES), heard, call_function(RECORD_DETAILS, details)),
            on(after_response_create(), proposal),
        ]
    else:
        steps.append(on(after_audio_frames(DEMO_CALLER_FRAMES), heard, proposal))
    steps.append(on(after_response_create(), speak(ms=1500, transcript=config.lines.handoff)))
    return Scenario(steps=steps, record_audio=False)


@asynccontextmanager
async def run_demo_engine(
    config: RoutingConfig, *, instructions: str, tools: list[dict], transcription_model: str | None
) -> AsyncIterator[RealtimeConnector]:
    """Serve the fake on loopback for the block; yield a connector to it labelled "fake"."""
    async with run_fake_realtime(demo_scenario(config)) as fake:
        # Keep no per-connection history in a long-running server.
        fake.keep_sessions = False
        settings = RealtimeSettings(url=fake.url, api_key="sk-fake-demo")
        yield RealtimeConnector(
            settings,
            instructions=instructions,
            tools=tools,
            transcription_model=transcription_model,
            label="fake",
        )

"""Shared set-up of the end-to-end tests: the real server (same composition root as `orchestrator serve`),
the fake Realtime server it talks to, and simulated Twilio callers, all over loopback in one Trio run."""
from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from twilio.request_validator import RequestValidator

from bridge.openai_realtime.client import RealtimeSettings
from bridge.twilio.mulaw import tone
from orchestrator.composition import RunningServer, run_server
from orchestrator.config.routing import RoutingConfig, load_routing_config
from orchestrator.config.server_settings import load_server_settings
from orchestrator.engines.interface import SILENT_ANSWER_S, EngineConnector
from orchestrator.engines.realtime import RealtimeConnector
from orchestrator.engines.tools import PROPOSE_ROUTE, RECORD_DETAILS, agent_instructions, realtime_tools
from orchestrator.testing.fake_realtime import (
    FakeRealtime,
    RecordedSession,
    Respond,
    Scenario,
    Step,
    UserSpeech,
    after_audio_frames,
    after_response_create,
    call_function,
    on,
    run_fake_realtime,
    speak,
)
from orchestrator.testing.twilio_caller import CallerOptions, CallerStep, CallResult, Say, SimulatedCaller, WaitForAgent
from tests import suite_secrets

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ACME = EXAMPLES / "acme_plumbing.toml"
CALL_TIMEOUT_S = 20  # a call that takes longer than this in a test is hung
SPEED = 8.0  # callers stream and play audio this much faster than real time

# Acme's routing plus a Studio route in fresh mode and a SIP route, so every route kind is reachable.
EXTRA_ROUTES = """
[routes.feedback_survey]
kind = "studio"
flow_sid = "FW0123456789abcdef0123456789abcdef"
mode = "fresh"

[routes.sales_line]
kind = "sip"
uri = "sip:sales@pbx.example.com"

[[intents]]
name = "feedback"
description = "The caller wants to give feedback about a visit."
route = "feedback_survey"

[[intents]]
name = "sales"
description = "The caller wants to buy a service plan."
route = "sales_line"
"""


def every_route_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "every_route.toml"
    path.write_text(ACME.read_text(encoding="utf-8") + EXTRA_ROUTES + extra, encoding="utf-8")
    return path


def with_triage(tmp_path: Path, **triage: Any) -> Path:
    """Acme with some [triage] values replaced (e.g. budget_seconds=1)."""
    text = ACME.read_text(encoding="utf-8")
    for key, value in triage.items():
        text, count = re.subn(rf"(?m)^{key}\s*=.*$", f"{key} = {value!r}".replace("'", '"'), text)
        assert count == 1, key
    path = tmp_path / "triage.toml"
    path.write_text(text, encoding="utf-8")
    return path


DETAILS = {"caller_name": "Ann Lee", "callback_number": "+14155552671", "address": "1 Main St, Springfield"}


def greeting() -> Step:
    return on(after_response_create(), speak(ms=400, transcript="Thanks for calling, how can I help?"))


def handoff_line(ms: int = 300) -> Step:
    return on(after_response_create(), speak(ms=ms, transcript="Putting you through now."))


def propose(intent: str, confidence: float = 0.9, summary: str = "caller needs help") -> Respond:
    return call_function(PROPOSE_ROUTE, {"intent": intent, "confidence": confidence, "summary": summary})


def triage_scenario(intent: str, *, details: dict[str, str] | None = None, frames: int = 10, **options: Any) -> Scenario:
    """Greeting; the caller speaks; details recorded (if any); the intent proposed; the handoff line."""
    heard = UserSpeech(transcript=f"I need help ({intent})")
    steps = [greeting()]
    if details:
        steps += [
            on(after_audio_frames(frames), heard, call_function(RECORD_DETAILS, details)),
            on(after_response_create(), propose(intent)),
        ]
    else:
        steps.append(on(after_audio_frames(frames), heard, propose(intent)))
    steps.append(handoff_line())
    return Scenario(steps=steps, **options)


CALLER_SPEAKS: tuple[CallerStep, ...] = (Say(tone(1200), "I need some help"), WaitForAgent(quiet_ms=400))


@dataclass
class FrontDesk:
    server: RunningServer
    fake: FakeRealtime
    config: RoutingConfig

    def caller(self, steps: Sequence[CallerStep] = (), *, http: Any = None, **options: Any) -> SimulatedCaller:
        defaults: dict[str, Any] = {
            "base_url": self.server.base_url, "auth_token": self.server.auth_token, "speed": SPEED,
            "max_call_s": CALL_TIMEOUT_S * SPEED,
        }
        return SimulatedCaller(
            CallerOptions(**{**defaults, **options}),
            steps,
            http=http,
        )

    async def call(self, steps: Sequence[CallerStep] = CALLER_SPEAKS, **options: Any) -> CallResult:
        with trio.fail_after(CALL_TIMEOUT_S):
            return await self.caller(steps, **options).run()

    def realtime_session_of(self, result: CallResult) -> RecordedSession:
        """The fake's record of the call's Realtime connection (the Authorization header names no call, so
        connections are matched by order: tests with one call per fake, or the n-th call)."""
        return self.fake.last_session

    def assert_nothing_of_the_call_remains(self) -> None:
        state = self.server.state
        assert state.sessions == {}
        assert state.flow.active_calls == 0
        assert all(session.is_closed for session in self.fake.sessions)
        assert _sample(state, "active_calls") == 0
        leftovers = call_task_names()
        assert leftovers == [], leftovers


# Tasks that belong to a call: its session's (its Realtime socket has no task of its own: the session's
# engine reader reads it).
CALL_TASK_PREFIXES = ("orchestrator.call.", "bridge.openai_realtime.", "bridge.websocket.", "bridge.twilio.")


def call_task_names() -> list[str]:
    return [name for name in _task_names() if name.startswith(CALL_TASK_PREFIXES)]


def _task_names(task: trio.lowlevel.Task | None = None) -> list[str]:
    """Every live Trio task in this run (the server's, the fake's, the test's)."""
    task = task or trio.lowlevel.current_root_task()
    names = [task.name]
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            names += _task_names(child)
    return names



def _sample(state: Any, name: str) -> float:
    return state.metrics.registry.get_sample_value(name) or 0.0


def metric(front_desk: FrontDesk, name: str, **labels: str) -> float:
    return front_desk.server.state.metrics.registry.get_sample_value(name, labels or None) or 0.0


@asynccontextmanager
async def front_desk(
    tmp_path: Path,
    scenario: Scenario,
    *,
    config_path: Path = ACME,
    failover: Callable[[RoutingConfig], EngineConnector] | None = None,
    keepalive_s: float | None = 15.0,
    serving_tls: ssl.SSLContext | None = None,
    ca_file: str | None = None,
    silent_answer_s: float = SILENT_ANSWER_S,
    **settings: Any,
) -> AsyncIterator[FrontDesk]:
    """The server on the fake Realtime, with the suite's secrets (`tests/suite_secrets.py`) unless `settings`
    say otherwise; `failover` builds the engine that takes over failed calls.
    `serving_tls`: the fake serves wss:// with that context (reached as `localhost`); `ca_file`: the CA the
    server trusts beside the system's."""
    config = load_routing_config(config_path)
    async with run_fake_realtime(scenario, ssl_context=serving_tls) as fake:
        url = fake.url.replace("127.0.0.1", "localhost") if serving_tls else fake.url
        connector = RealtimeConnector(
            RealtimeSettings(
                url=url, api_key=suite_secrets.OPENAI_API_KEY, connect_timeout_s=2, configure_timeout_s=2, keepalive_s=keepalive_s,
                ca_file=ca_file,
            ),
            instructions=agent_instructions(config),
            tools=realtime_tools(config),
            transcription_model="gpt-4o-mini-transcribe",
            silent_answer_s=silent_answer_s,
        )
        secrets = {"twilio_auth_token": suite_secrets.TWILIO_AUTH_TOKEN, "openai_api_key": suite_secrets.OPENAI_API_KEY,
                   "handoff_token": suite_secrets.HANDOFF_TOKEN}
        server_settings = load_server_settings(
            data_dir=tmp_path / "var", graceful_shutdown_seconds=2, after_wait_seconds=3, **{**secrets, **settings}
        )
        async with run_server(
            server_settings, port=0, config=config, connector=connector,
            failover=failover(config) if failover else None,
        ) as server:
            yield FrontDesk(server, fake, config)


def assert_closed_in_order(desk: FrontDesk, result: CallResult) -> None:
    """Realtime closed, then the Media Stream, then the action URL answered."""
    realtime = desk.realtime_session_of(result)
    assert realtime.closed_at is not None and realtime.closed_by == "client", (realtime.closed_by, realtime.close_code)
    assert result.media_closed_at is not None and result.action_answered_at is not None
    if result.media_closed_by == "server":
        assert realtime.closed_at <= result.media_closed_at
    assert realtime.closed_at <= result.action_answered_at
    assert result.media_closed_at <= result.action_answered_at


def signed_headers(url: str, auth_token: str, params: dict[str, str] | None = None) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(auth_token).compute_signature(url, params or {})}


async def open_ai_pass(desk: FrontDesk, call_sid: str) -> None:
    """A pass in the store as `/voice/incoming` opens one, for tests of what arrives after the call."""
    await desk.server.state.store.open_pass(
        call_sid, caller="+15551230000", called="+15557650000", account_sid="AC" + "0" * 32, entry_node=None, arm="ai"
    )


async def facts_of_call(desk: FrontDesk, call_sid: str) -> dict:
    record = await desk.server.state.store.call_record(call_sid)
    assert record is not None
    return dict(record.facts)

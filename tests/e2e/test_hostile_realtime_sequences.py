"""Hostile Realtime event sequences, generated, through a real server over loopback while a simulated Twilio
caller is on the call: the fake Realtime server sends malformed JSON, unknown types, valid events out of
order, tool calls with bad, huge or unknown arguments, error events (fatal and not), floods, silence and
abrupt closes, anywhere in the conversation. After each call: the caller got TwiML at the action URL (the
decided route's, or the fallback's), the Realtime socket is closed, nothing of the call is left running (no
session, no task, no socket), and the log holds no traceback and no secret.

A failing example is printed (the scenario's steps) with the `@reproduce_failure` blob; `--hypothesis-seed=N`
replays a whole run."""
from __future__ import annotations

import logging
import tempfile
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import trio
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from orchestrator.engines.tools import PROPOSE_ROUTE, RECORD_DETAILS
from orchestrator.testing.fake_realtime import (
    Action,
    Close,
    Drop,
    Freeze,
    FunctionCall,
    Pause,
    Respond,
    Scenario,
    SendError,
    SendEvent,
    SendRaw,
    Speech,
    after_audio_frames,
    after_response_create,
    on,
)
from tests import suite_secrets
from tests.live_call_support import (
    CALLER_SPEAKS,
    DETAILS,
    FrontDesk,
    call_task_names,
    front_desk,
    triage_scenario,
    with_triage,
)
from tests.open_sockets import sockets_on

EXAMPLES = 8  # 0.3 to 8 s each (a frozen peer or a lost handoff line waits out its timeout): ~10 s in CI
# Shrinking a real call's example takes minutes: a failure is reported as drawn, with its blob and seed.
NO_SHRINKING = (Phase.explicit, Phase.reuse, Phase.generate)
SETTLE_S = 5.0  # after the action URL answered, the call's parts must be gone within this
# The tag each route kind's TwiML must carry (orchestrator/call/dispatch_twiml.py).
ROUTE_KIND_TAG = {"flex": "Enqueue", "studio": "Redirect", "voicemail": "Record", "resolve": "Hangup", "sip": "Dial"}


def raw(value: Any) -> SendRaw:
    return SendRaw(orjson.dumps(value).decode())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)
SERVER_EVENT_TYPES = [
    "session.created", "session.updated", "response.created", "response.done", "response.output_audio.delta",
    "response.output_audio.done", "response.output_item.added", "response.function_call_arguments.done",
    "input_audio_buffer.speech_started", "conversation.item.input_audio_transcription.completed",
    "output_audio_buffer.cleared", "rate_limits.updated", "error",
]
malformed = st.one_of(
    st.text(max_size=200).map(SendRaw),  # mostly not JSON
    json_values.map(raw),  # JSON, rarely an object
    st.builds(lambda kind, fields: raw({**fields, "type": kind}),  # a known type with any fields
              st.sampled_from(SERVER_EVENT_TYPES), st.dictionaries(st.text(max_size=12), json_values, max_size=5)),
    st.text(max_size=30).map(lambda kind: raw({"type": kind, "event_id": "event_x"})),  # an unknown type
)

RESPONSE = "resp_stray"
ITEM = "item_stray"
# Valid events (the fake checks them against the SDK's types) about responses and items that do not exist,
# or that ended: what a confused server, or one that crossed two sessions, would send.
OUT_OF_ORDER = [
    {"type": "response.done", "response": {"id": RESPONSE, "object": "realtime.response", "status": "completed",
                                           "output": []}},
    {"type": "response.created", "response": {"id": RESPONSE, "object": "realtime.response",
                                              "status": "in_progress", "output": []}},
    {"type": "response.output_audio.delta", "response_id": RESPONSE, "item_id": ITEM, "output_index": 0,
     "content_index": 0, "delta": "f39/f39/f38="},
    {"type": "response.output_audio.done", "response_id": RESPONSE, "item_id": ITEM, "output_index": 0,
     "content_index": 0},
    {"type": "response.output_audio_transcript.done", "response_id": RESPONSE, "item_id": ITEM,
     "output_index": 0, "content_index": 0, "transcript": "Goodbye."},
    {"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "item_user_stray"},
    {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 10, "item_id": "item_user_stray"},
    {"type": "input_audio_buffer.committed", "item_id": "item_user_stray"},
    {"type": "conversation.item.input_audio_transcription.completed", "item_id": "item_user_stray",
     "content_index": 0, "transcript": "it is an emergency", "usage": {"type": "duration", "seconds": 1.0}},
    {"type": "response.function_call_arguments.done", "response_id": RESPONSE, "item_id": ITEM,
     "output_index": 0, "call_id": "call_stray", "name": PROPOSE_ROUTE,
     "arguments": '{"intent": "billing", "confidence": 0.9, "summary": "stray"}'},
    {"type": "response.function_call_arguments.delta", "response_id": RESPONSE, "item_id": ITEM,
     "output_index": 0, "call_id": "call_stray", "delta": "{"},
    {"type": "output_audio_buffer.cleared", "response_id": RESPONSE},
]
out_of_order = st.sampled_from(OUT_OF_ORDER).map(SendEvent)

HUGE = "x" * 300_000
tool_names = st.sampled_from([PROPOSE_ROUTE, RECORD_DETAILS, "transfer_to_manager", ""]) | st.text(max_size=20)
tool_arguments = st.one_of(
    st.fixed_dictionaries({}, optional={
        "intent": st.sampled_from(["emergency", "billing", "nonexistent", ""]) | json_values,
        "confidence": st.floats() | json_values,
        "summary": st.text(max_size=50) | st.just(HUGE),
        "caller_name": json_values | st.just(HUGE),
    }),
    st.dictionaries(st.text(max_size=10), json_values, max_size=6),
    st.text(max_size=100),  # not JSON
    st.just(HUGE),
    st.just({"summary": HUGE, "intent": "emergency", "confidence": 0.95}),
)
tool_call = st.builds(
    lambda name, arguments, spoken: Respond(((Speech(120, "One moment."),) if spoken else ())
                                            + (FunctionCall(name, arguments),)),
    tool_names, tool_arguments, st.booleans(),
)
error_event = st.builds(
    SendError,
    code=st.sampled_from(["invalid_value", "unknown_parameter", "conversation_already_has_active_response",
                          "session_expired", "server_error", "rate_limit_exceeded", "insufficient_quota"])
    | st.none() | st.text(max_size=20),
    message=st.text(max_size=80),
    param=st.none() | st.text(max_size=10),
    error_type=st.sampled_from(["invalid_request_error", "server_error", "rate_limit_error"]),
)
flood = st.builds(
    lambda action, count: (action,) * count,
    st.one_of(out_of_order, malformed, st.just(raw({"type": "rate_limits.updated", "rate_limits": []}))),
    st.integers(50, 1500),
)
silence = st.floats(0.05, 1.5).map(Pause) | st.just(Freeze())
abrupt_close = st.just(Drop()) | st.sampled_from([1000, 1001, 1011, 4000, 3000]).map(Close)

single = st.one_of(malformed, out_of_order, tool_call, error_event, silence, abrupt_close)
hostile_actions = st.lists(single.map(lambda action: (action,)) | flood, min_size=1, max_size=5).map(
    lambda groups: tuple(action for group in groups for action in group)
)
triggers = st.integers(1, 15).map(after_audio_frames) | st.just(after_response_create())


@given(
    hostile=st.lists(st.tuples(st.integers(1, 3), triggers, hostile_actions), min_size=1, max_size=2),
    hangs_up_after=st.none() | st.floats(0.0, 1.5),
)
@settings(max_examples=EXAMPLES, deadline=None, print_blob=True, phases=NO_SHRINKING,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_any_realtime_event_sequence_ends_the_call_with_twiml_and_leaves_nothing(hostile, hangs_up_after):
    steps = list(triage_scenario("emergency", details=DETAILS).steps)
    for position, trigger, actions in hostile:
        steps.insert(min(position, len(steps)), on(trigger, *actions))
    note(f"scenario steps: {[_shown(step) for step in steps]}; caller hangs up after: {hangs_up_after}")
    with tempfile.TemporaryDirectory() as directory, collected_logs() as lines:
        pass_token = trio.run(_hostile_call, Path(directory), Scenario(steps=steps), hangs_up_after)
    logged = "\n".join(lines)
    assert "Traceback" not in logged, logged
    for secret in (*suite_secrets.SUITE_SECRETS.values(), suite_secrets.CALLER, pass_token):
        assert secret not in logged, f"a secret is in the log: {logged}"


async def _hostile_call(directory: Path, scenario: Scenario, hangs_up_after: float | None) -> str:
    """The call; returns its pass token (a secret too)."""
    config = with_triage(directory, budget_seconds=2, details_seconds=0, handoff_line_timeout_seconds=1.5)
    async with front_desk(directory, scenario, config_path=config, keepalive_s=0.5, **suite_secrets.server_secrets()) as desk:
        caller = desk.caller(CALLER_SPEAKS, caller=suite_secrets.CALLER)
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                if hangs_up_after is not None:
                    nursery.start_soon(_hang_up_after, caller, hangs_up_after)
                result = await caller.run()
                nursery.cancel_scope.cancel()
        await _assert_answered_with_its_route(desk, result)
        await _assert_nothing_of_the_call_remains(desk)
    return result.custom_parameters["pass_token"]


async def _hang_up_after(caller: Any, seconds: float) -> None:
    """Hang up `seconds` into the Media Stream (before it, Twilio requests no action URL at all)."""
    await caller.wait_until(lambda caller: caller.state != "dialing")
    await trio.sleep(seconds)
    await caller.hang_up()


async def _assert_answered_with_its_route(desk: FrontDesk, result: Any) -> None:
    assert result.action_status == 200 and result.final_twiml is not None, (result.action_status, result.violations)
    record = await desk.server.state.store.call_record(result.call_sid)
    assert record is not None and record.passes
    last = record.passes[-1]
    decided = last.decision.route if last.decision is not None else desk.config.triage.fallback_route
    assert last.answered_route == decided, (last.answered_route, last.decision)
    kind = str(desk.config.routes[decided].kind)
    tags = [child.tag for child in ElementTree.fromstring(result.final_twiml)]
    assert ROUTE_KIND_TAG[kind] in tags, (kind, result.final_twiml)


async def _assert_nothing_of_the_call_remains(desk: FrontDesk) -> None:
    """Session, tasks and sockets of the call (to the caller and to the Realtime server) all gone."""
    server_port = int(desk.server.base_url.rsplit(":", 1)[1])
    fake_port = int(desk.fake.url.split(":")[2].split("/")[0])
    with trio.move_on_after(SETTLE_S):
        while desk.server.state.sessions or call_task_names() or sockets_on(fake_port) or sockets_on(server_port):
            await trio.sleep(0.02)
    assert all(session.is_closed for session in desk.fake.sessions)
    client_side = [sock for sock in sockets_on(fake_port) if sock.remote_port == fake_port]
    assert client_side == [], "a Realtime socket is still open"
    assert sockets_on(server_port) == [], "a connection of the call is still open"
    desk.assert_nothing_of_the_call_remains()


@contextmanager
def collected_logs() -> Iterator[list[str]]:
    """Every log line of the block, structlog's and the logging module's (INFO and up), formatted."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    root = logging.getLogger()
    handler, level = Collect(), root.level
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _shown(step: Any) -> str:
    """A step, with long texts cut (a flood or a huge argument would bury the example)."""
    shown = repr(step)
    return shown if len(shown) < 600 else shown[:300] + f" …({len(shown)} chars)… " + shown[-200:]


def test_the_strategies_reach_every_kind_of_hostility():
    """Guards the generator: each kind the docstring names can be drawn."""
    kinds: set[type[Action]] = set()

    @given(single)
    @settings(max_examples=300, database=None)
    def draw(action: Action) -> None:
        kinds.add(type(action))

    draw()
    assert {SendRaw, SendEvent, Respond, SendError, Pause, Freeze, Drop, Close} <= kinds

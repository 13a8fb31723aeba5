"""Two server instances behind one public URL, sharing one Redis: each of Twilio's requests of a call may
land on either, and every one of them still finds the call's pass, decision and visited Studio nodes.

Both instances are real (`run_server`, the composition root `orchestrator serve` runs) and open their
store from the `store` setting, as deployed. Twilio signs the public URL, so both are told the same one;
`LoadBalancer`, an httpx transport, plays the balancer in front of them and sends each request of the
simulated caller to the instance the test chose. The Media Stream goes where `ws_origin` points.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import trio

from bridge.openai_realtime.client import RealtimeSettings
from orchestrator.composition import RunningServer, run_server
from orchestrator.config.routing import load_routing_config
from orchestrator.config.server_settings import load_server_settings
from orchestrator.engines.realtime import RealtimeConnector
from orchestrator.engines.tools import agent_instructions, realtime_tools
from orchestrator.testing.fake_realtime import FakeRealtime, Scenario, run_fake_realtime
from orchestrator.testing.twilio_caller import CallerOptions, CallResult, SimulatedCaller, fetch_call_record
from tests.live_call_support import (
    ACME,
    CALL_TIMEOUT_S,
    CALLER_SPEAKS,
    DETAILS,
    SPEED,
    triage_scenario,
)
from tests.redis_server import redis_server, redis_url  # noqa: F401 (fixtures)

PUBLIC_URL = "https://front-desk.example.com"  # what Twilio is told, and signs; never resolved
AUTH_TOKEN = "shared-test-auth-token"  # the account's: the same for every instance
SCHEDULE_FLOW = "FW5670575a869e4a142814c71a1217f9f0"
SCHEDULE_NODE = f"{SCHEDULE_FLOW}/schedule_visit"
FRONT_DESK_WORKFLOW = "WW145f0063e82132d8795bc84716172e7c"  # Acme's human route


class LoadBalancer(httpx.AsyncBaseTransport):
    """Sends each request for the public URL to the base URL `pick(request)` chooses, and keeps a log
    of (path, base URL) so a test can show where every request landed."""

    def __init__(self, pick: Callable[[httpx.Request], str]) -> None:
        self._pick = pick
        self._upstream = httpx.AsyncHTTPTransport()
        self.landed: list[tuple[str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = httpx.URL(self._pick(request))
        self.landed.append((request.url.path, str(target)))
        request.url = request.url.copy_with(scheme=target.scheme, host=target.host, port=target.port)
        return await self._upstream.handle_async_request(request)

    async def aclose(self) -> None:
        await self._upstream.aclose()


def by_path(**routes: str) -> Callable[[httpx.Request], str]:
    """pick() by the request's path: by_path(incoming=a, after=b) sends /voice/incoming to a, /voice/after to b."""
    return lambda request: routes[request.url.path.rsplit("/", 1)[-1]]


def websocket_origin(server: RunningServer) -> str:
    return server.base_url.replace("http://", "ws://", 1)


@dataclass
class TwoInstances:
    a: RunningServer
    b: RunningServer
    fake: FakeRealtime

    async def call(self, *, incoming: RunningServer, stream: RunningServer, after: RunningServer,
                   **options: Any) -> tuple[CallResult, LoadBalancer]:
        """One call: the webhook on `incoming`, the Media Stream on `stream`, the action URL on `after`."""
        balancer = LoadBalancer(by_path(incoming=incoming.base_url, after=after.base_url))
        async with httpx.AsyncClient(transport=balancer, timeout=15) as http:
            caller = SimulatedCaller(
                CallerOptions(base_url=PUBLIC_URL, auth_token=AUTH_TOKEN, ws_origin=websocket_origin(stream),
                              speed=SPEED, max_call_s=CALL_TIMEOUT_S * SPEED, **options),
                CALLER_SPEAKS,
                http=http,
            )
            with trio.fail_after(CALL_TIMEOUT_S):
                return await caller.run(), balancer


async def record_on(server: RunningServer, call_sid: str) -> dict | None:
    """GET /calls/{sid} of one instance, signed over the public URL as the instance checks it."""
    async with httpx.AsyncClient(transport=LoadBalancer(lambda request: server.base_url)) as http:
        return await fetch_call_record(PUBLIC_URL, call_sid, AUTH_TOKEN, http=http)


def shared_store_settings(data_dir: Path, store: str) -> Any:
    return load_server_settings(
        data_dir=data_dir, store=store, public_url=PUBLIC_URL, TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        graceful_shutdown_seconds=2, after_wait_seconds=3,
    )


@asynccontextmanager
async def two_instances(tmp_path: Path, scenario: Scenario, store: str) -> AsyncIterator[TwoInstances]:
    """Instances A and B (own data folders, one store) on one fake Realtime."""
    config = load_routing_config(ACME)
    async with run_fake_realtime(scenario) as fake, AsyncExitStack() as stack:
        servers = []
        for name in ("a", "b"):
            connector = RealtimeConnector(
                RealtimeSettings(url=fake.url, api_key="sk-test", connect_timeout_s=2, configure_timeout_s=2),
                instructions=agent_instructions(config), tools=realtime_tools(config),
                transcription_model="gpt-4o-mini-transcribe",
            )
            settings = shared_store_settings(tmp_path / name, store)
            servers.append(await stack.enter_async_context(
                run_server(settings, port=0, config=config, connector=connector)
            ))
        yield TwoInstances(*servers, fake)


def parse(twiml: str | None) -> ElementTree.Element:
    assert twiml is not None
    return ElementTree.fromstring(twiml)


def task_attributes(twiml: str | None) -> dict[str, Any]:
    enqueue = parse(twiml).find("Enqueue")
    assert enqueue is not None, twiml
    return {"workflow": enqueue.get("workflowSid"), **json.loads(enqueue.find("Task").text)}


async def test_the_action_url_on_the_other_instance_enqueues_the_decided_call_to_flex(tmp_path, redis_url):
    async with two_instances(tmp_path, triage_scenario("emergency", details=DETAILS), redis_url) as desks:
        assert any(line.startswith("store: Redis at redis://127.0.0.1:") for line in desks.a.announcements)
        result, balancer = await desks.call(incoming=desks.a, stream=desks.a, after=desks.b,
                                            caller="+14155550123")

        assert balancer.landed == [("/voice/incoming", desks.a.base_url), ("/voice/after", desks.b.base_url)]
        assert result.violations == [] and result.action_status == 200
        assert_closed_in_order_of(desks, result)
        enqueue = parse(result.final_twiml).find("Enqueue")
        assert enqueue is not None and enqueue.get("workflowSid") == "WW37efa99795cd582f2f4c31893159fe53"
        attributes = json.loads(enqueue.find("Task").text)
        assert attributes["call_sid"] == result.call_sid and attributes["from"] == "+14155550123"
        assert attributes["intent"] == "emergency" and attributes["captured"] == DETAILS

        # B answered from the decision A saved, and marked the pass answered in the shared store.
        assert (answered_from_a_decision(desks.a), answered_from_a_decision(desks.b)) == (0, 1)
        on_a = await record_on(desks.a, result.call_sid)
        on_b = await record_on(desks.b, result.call_sid)
        assert on_a == on_b
        (first,) = on_a["passes"]
        assert first["decision"]["route"] == "emergency_desk" and first["answered_route"] == "emergency_desk"
        assert first["outcome"]["state_path"][-3:] == ["dispatch", "teardown", "ended"]


async def test_a_call_back_from_studio_on_the_other_instance_is_not_sent_to_the_same_node(tmp_path, redis_url):
    call_sid = "CA" + "5" * 32
    details = {"caller_name": "Bo Chen", "address": "9 Elm Rd"}
    async with two_instances(tmp_path, triage_scenario("schedule", details=details), redis_url) as desks:
        first, _ = await desks.call(incoming=desks.a, stream=desks.a, after=desks.b, call_sid=call_sid)
        assert_closed_in_order_of(desks, first)
        redirect = parse(first.final_twiml).find("Redirect")
        url = urlsplit(redirect.text)
        assert url.path.endswith(f"/Flows/{SCHEDULE_FLOW}")
        assert parse_qs(url.query)["FlowEvent"] == ["return"]

        # Studio's ai_triage widget sends the same live call back: this time to B, its stream to A, and
        # the action URL to B again. A reads the node that B recorded when it answered the first pass.
        entry = f"flow_sid={SCHEDULE_FLOW}&node=ai_triage"
        second, balancer = await desks.call(incoming=desks.b, stream=desks.a, after=desks.b,
                                            call_sid=call_sid, incoming_query=entry)
        assert balancer.landed == [("/voice/incoming", desks.b.base_url), ("/voice/after", desks.b.base_url)]
        attributes = task_attributes(second.final_twiml)
        assert attributes["workflow"] == FRONT_DESK_WORKFLOW
        assert attributes["ai_reason"] == "reentry_refused" and attributes["intent"] == "schedule"

        record = await record_on(desks.a, call_sid)
        assert record == await record_on(desks.b, call_sid)
        assert record["visited_nodes"] == [SCHEDULE_NODE]
        assert [p["number"] for p in record["passes"]] == [1, 2]
        assert record["passes"][1]["entry_node"] == f"{SCHEDULE_FLOW}/ai_triage"
        assert record["passes"][1]["decision"]["proposed_route"] == "schedule_visit"
        assert record["passes"][1]["decision"]["route"] == "front_desk"
        assert [p["answered_route"] for p in record["passes"]] == ["schedule_visit", "front_desk"]


def assert_closed_in_order_of(desks: TwoInstances, result: CallResult) -> None:
    """The order holds across instances too: Realtime closed (on A), then the stream, then B answered."""
    realtime = desks.fake.last_session
    assert realtime.closed_at is not None and realtime.closed_by == "client"
    assert result.media_closed_by == "server" and result.action_answered_at is not None
    assert realtime.closed_at <= result.media_closed_at <= result.action_answered_at


def answered_from_a_decision(server: RunningServer) -> float:
    return server.state.metrics.registry.get_sample_value("action_answers_total", {"source": "decision"}) or 0.0

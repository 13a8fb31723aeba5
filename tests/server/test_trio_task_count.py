"""/healthz and /metrics count the worker's live Trio tasks (the soak benchmark's leak accounting): more while
a call is in progress, back to the idle count once it ended."""
from __future__ import annotations

import os

import httpx
import trio

from bridge.twilio.mulaw import tone
from orchestrator.testing.twilio_caller import Say, Wait
from tests.live_call_support import CALLER_SPEAKS, front_desk, metric, triage_scenario


async def _health(client: httpx.AsyncClient) -> dict:
    return (await client.get("/healthz")).json()


async def _idle_count(client: httpx.AsyncClient, expected: int | None = None) -> dict:
    """/healthz once the last call's connections have closed (the count stops changing, or is `expected`)."""
    answer = await _health(client)
    with trio.move_on_after(10):
        while True:
            await trio.sleep(0.2)
            previous, answer = answer, await _health(client)
            if answer["trio_tasks"] == (expected if expected is not None else previous["trio_tasks"]):
                break
    return answer


async def test_the_trio_task_count_rises_during_a_call_and_comes_back_after(tmp_path):
    async with front_desk(tmp_path, triage_scenario("billing")) as desk:
        async with httpx.AsyncClient(base_url=desk.server.base_url) as client:
            assert (await _health(client))["calls_started"] == 0
            await desk.call(CALLER_SPEAKS)  # the worker's first call starts what lives as long as it does
            desk.fake.scenario = triage_scenario("billing")
            idle = await _idle_count(client)
            assert idle["pid"] == os.getpid() and idle["calls_started"] == 1
            caller = desk.caller((Say(tone(1200), "I was charged twice"), Wait(20_000)))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(caller.run)
                await caller.wait_until(lambda caller: desk.server.state.sessions != {})
                during = await _health(client)
                await caller.hang_up()
            after = await _idle_count(client, expected=idle["trio_tasks"])
            unscraped = metric(desk, "trio_tasks")
            await client.get("/metrics")
    assert during["trio_tasks"] > idle["trio_tasks"]
    assert after["trio_tasks"] == idle["trio_tasks"] and after["calls_started"] == 2
    assert unscraped == 0 and metric(desk, "trio_tasks") >= idle["trio_tasks"] > 0  # set as it is scraped

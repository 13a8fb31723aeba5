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


async def _idle_count(client: httpx.AsyncClient, at_most: int | None = None) -> dict:
    """/healthz at its smallest Trio task count over 2 s (the last call's connections close meanwhile), or as
    soon as the count is down to `at_most`; gives up after 10 s."""
    lowest = await _health(client)
    with trio.move_on_after(10):
        for reading in range(1000):
            if at_most is not None and lowest["trio_tasks"] <= at_most or at_most is None and reading == 10:
                break
            await trio.sleep(0.2)
            answer = await _health(client)
            if answer["trio_tasks"] < lowest["trio_tasks"]:
                lowest = answer
    return lowest


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
            after = await _idle_count(client, at_most=idle["trio_tasks"])
            unscraped = metric(desk, "trio_tasks")
            await client.get("/metrics")
    assert during["trio_tasks"] > idle["trio_tasks"]
    assert after["trio_tasks"] == idle["trio_tasks"] and after["calls_started"] == 2
    assert unscraped == 0 and metric(desk, "trio_tasks") >= idle["trio_tasks"] > 0  # set as it is scraped

"""POST /taskrouter/events over loopback against the real server: Flex task facts and handle time, in any
order, duplicates included; tasks of other calls ignored; bad signatures and malformed events refused."""
from __future__ import annotations

import itertools
import json

import httpx
import pytest

from orchestrator.testing.fake_realtime import Scenario
from tests.live_call_support import FrontDesk, facts_of_call, front_desk, metric, open_ai_pass, signed_headers

CALL = "CA" + "a" * 32
TASK = "WT" + "b" * 32
WORKSPACE = "WS" + "c" * 32
T0 = 1_800_000_000  # when the task was created, unix seconds


async def open_call(desk: FrontDesk, call_sid: str = CALL) -> None:
    await open_ai_pass(desk, call_sid)


async def facts_of(desk: FrontDesk, call_sid: str = CALL) -> dict:
    return await facts_of_call(desk, call_sid)


def event(event_type: str, at: float, *, call_sid: str | None = CALL, task_sid: str = TASK, **extra: str) -> dict:
    attributes = {"type": "inbound", "name": "+15551230000", "from": "+15551230000"}
    if call_sid is not None:
        attributes["call_sid"] = call_sid
    fields = {
        "EventType": event_type, "TaskSid": task_sid, "TaskAttributes": json.dumps(attributes),
        "Timestamp": str(int(at)), "TaskAge": str(int(at - T0)), "WorkspaceSid": WORKSPACE,
        "AccountSid": "AC" + "0" * 32,
    }
    if event_type.startswith("reservation."):
        fields |= {"ReservationSid": "WR" + "d" * 32, "WorkerSid": "WK" + "e" * 32}
    return fields | extra


async def post(desk: FrontDesk, fields: dict, *, sign: bool = True, bad_signature: bool = False) -> httpx.Response:
    url = desk.server.base_url + "/taskrouter/events"
    headers = signed_headers(url, desk.server.auth_token, fields) if sign else {}
    if bad_signature:
        headers = signed_headers(url, "not-the-auth-token", fields)
    async with httpx.AsyncClient() as http:
        return await http.post(url, data=fields, headers=headers)


LIFECYCLE = [
    event("task.created", T0),
    event("reservation.accepted", T0 + 20),
    event("task.wrapup", T0 + 200),
    event("task.completed", T0 + 260),
]
EXPECTED = {
    "flex_task_sid": TASK,
    "flex_created_at": float(T0),
    "flex_accepted_at": float(T0 + 20),
    "flex_wrapup_at": float(T0 + 200),
    "flex_completed_at": float(T0 + 260),
    "handle_time_s": 240.0,  # accepted → completed, after-call work included
}


async def test_a_task_lifecycle_becomes_call_facts_and_handle_time(tmp_path):
    async with front_desk(tmp_path, Scenario(steps=[])) as desk:
        await open_call(desk)
        answers = [await post(desk, fields) for fields in LIFECYCLE]
        assert [answer.status_code for answer in answers] == [200] * 4
        assert [answer.json()["result"] for answer in answers] == ["recorded"] * 4
        assert answers[-1].json()["facts"]["handle_time_s"] == 240.0
        assert await facts_of(desk) == EXPECTED
        assert metric(desk, "taskrouter_events_total", result="recorded") == 4


async def test_any_order_and_duplicates_settle_to_the_same_facts(tmp_path):
    orders = list(itertools.permutations(LIFECYCLE))[::5]  # 5 of the 24 orders, each with every event twice
    async with front_desk(tmp_path, Scenario(steps=[])) as desk:
        for index, order in enumerate(orders):
            call_sid = f"CA{index:032x}"
            await open_call(desk, call_sid)
            for fields in [*order, *reversed(order)]:
                attributes = fields["TaskAttributes"].replace(CALL, call_sid)
                answer = await post(desk, {**fields, "TaskAttributes": attributes})
                assert answer.status_code == 200, answer.text
            assert await facts_of(desk, call_sid) == EXPECTED, order
        assert metric(desk, "taskrouter_events_total", result="unchanged") == 4 * len(orders)


async def test_the_earliest_acceptance_and_the_latest_completion_count(tmp_path):
    async with front_desk(tmp_path, Scenario(steps=[])) as desk:
        await open_call(desk)
        for fields in (
            event("reservation.accepted", T0 + 50),
            event("task.completed", T0 + 100),
            event("reservation.accepted", T0 + 10),  # arrives late, happened first
            event("task.completed", T0 + 300),  # a transfer: handling went on
            event("task.completed", T0 + 200),
        ):
            assert (await post(desk, fields)).status_code == 200
        facts = await facts_of(desk)
        assert facts["flex_accepted_at"] == T0 + 10 and facts["flex_completed_at"] == T0 + 300
        assert facts["handle_time_s"] == 290.0


async def test_a_completion_before_the_acceptance_gives_no_handle_time(tmp_path):
    async with front_desk(tmp_path, Scenario(steps=[])) as desk:
        await open_call(desk)
        await post(desk, event("reservation.accepted", T0 + 100))
        await post(desk, event("task.completed", T0 + 50))
        facts = await facts_of(desk)
        assert "handle_time_s" not in facts and facts["flex_completed_at"] == T0 + 50


async def test_a_canceled_task_and_millisecond_timestamps(tmp_path):
    async with front_desk(tmp_path, Scenario(steps=[])) as desk:
        await open_call(desk)
        created = await post(desk, event("task.created", T0, TimestampMs=str(T0 * 1000 + 250)))
        assert created.status_code == 200
        assert (await post(desk, event("task.canceled", T0 + 30))).json()["result"] == "recorded"
        assert (await post(desk, event("task.canceled", T0 + 30))).json()["result"] == "unchanged"
        facts = await facts_of(desk)
        assert facts["flex_created_at"] == T0 + 0.25 and facts["flex_canceled"] is True


async def test_tasks_of_other_calls_and_other_events_are_answered_and_ignored(tmp_path):
    async with front_desk(tmp_path, Scenario(steps=[])) as desk:
        await open_call(desk)
        unknown_call = "CA" + "f" * 32
        answers = [
            await post(desk, event("task.created", T0, call_sid=None)),  # a chat task, say
            await post(desk, event("task.created", T0, call_sid="not-a-call-sid")),
            await post(desk, event("task.created", T0, call_sid=unknown_call)),  # another system's call
            await post(desk, {"EventType": "worker.activity.update", "WorkerSid": "WK" + "e" * 32,
                              "Timestamp": str(T0)}),
            await post(desk, event("reservation.created", T0)),
        ]
        assert [answer.status_code for answer in answers] == [200] * 5
        assert [answer.json()["result"] for answer in answers] == ["not_ours"] * 3 + ["ignored_event"] * 2
        assert await desk.server.state.store.call_record(unknown_call) is None  # nothing stored for it
        assert await facts_of(desk) == {}
        assert metric(desk, "taskrouter_events_total", result="not_ours") == 3
        assert metric(desk, "taskrouter_events_total", result="ignored_event") == 2


async def test_unsigned_or_badly_signed_events_are_refused(tmp_path):
    async with front_desk(tmp_path, Scenario(steps=[])) as desk:
        await open_call(desk)
        assert (await post(desk, LIFECYCLE[0], sign=False)).status_code == 403
        assert (await post(desk, LIFECYCLE[0], bad_signature=True)).status_code == 403
        assert await facts_of(desk) == {}
        assert metric(desk, "signature_failures_total", endpoint="taskrouter_events") == 2


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"EventType": ""}, "EventType missing"),
        ({"TaskSid": "WT123"}, "TaskSid missing or malformed"),
        ({"TaskAttributes": ""}, "TaskAttributes missing"),
        ({"TaskAttributes": "{not json"}, "TaskAttributes is not JSON"),
        ({"TaskAttributes": "[1, 2]"}, "TaskAttributes is not a JSON object"),
        ({"Timestamp": ""}, "Timestamp missing"),
        ({"Timestamp": "yesterday"}, "neither unix seconds nor ISO 8601"),
        ({"Timestamp": "-5"}, "before 1970"),
        ({"Timestamp": "nan"}, "neither unix seconds nor ISO 8601"),
        ({"TimestampMs": "soon"}, "not a number of milliseconds"),
    ],
)
async def test_malformed_events_get_400_with_the_reason(tmp_path, change, reason):
    async with front_desk(tmp_path, Scenario(steps=[])) as desk:
        await open_call(desk)
        answer = await post(desk, {**event("task.created", T0), **change})
        assert answer.status_code == 400 and reason in answer.text
        assert await facts_of(desk) == {}
        assert metric(desk, "taskrouter_events_total", result="malformed") == 1


async def test_an_iso_timestamp_is_read_too(tmp_path):
    async with front_desk(tmp_path, Scenario(steps=[])) as desk:
        await open_call(desk)
        answer = await post(desk, event("task.created", T0, Timestamp="2027-01-15T09:00:30+01:00"))
        assert answer.status_code == 200
        assert (await facts_of(desk))["flex_created_at"] == T0 + 30


async def test_a_body_that_is_not_a_form_gets_400(tmp_path):
    async with front_desk(tmp_path, Scenario(steps=[])) as desk:
        url = desk.server.base_url + "/taskrouter/events"
        async with httpx.AsyncClient() as http:
            answer = await http.post(url, content=b"--x\r\nnot multipart", headers={
                "Content-Type": "multipart/form-data; boundary=x", **signed_headers(url, desk.server.auth_token)})
        assert answer.status_code == 400 and "not a form" in answer.text

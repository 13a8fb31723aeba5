"""The `CallStore` contract, run against both stores (SQLite in a file, Redis on a real redis-server), then
what only Redis has: TTLs, the trimmed time index, key prefixes, a Redis that is down or slow."""
from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Awaitable, Callable

import pytest
import trio

from machines.decision import DecisionReason, DispatchDecision
from machines.policy import RouteKind
from orchestrator.config.routing import ConfigError
from orchestrator.store.interface import CallStore, CallStoreError
from orchestrator.store.location import STORE_FILE, describe_store_location, open_call_store
from orchestrator.store.records import PassOutcome
from orchestrator.store.redis_store import RedisCallStore, mask_url_password, parse_redis_url
from orchestrator.store.sqlite_store import SqliteCallStore
from tests.redis_server import free_port, redis_server, redis_url, start_redis_server  # noqa: F401 (fixtures)

CALL = "CA11111111111111111111111111111111"
OTHER_CALL = "CA22222222222222222222222222222222"
THIRD_CALL = "CA33333333333333333333333333333333"
ACCOUNT = "AC00000000000000000000000000000001"
CALLER = "+15551234567"
CALLED = "+15557654321"
NODE = "FW5670575a869e4a142814c71a1217f9f0/schedule"
OTHER_NODE = "FW5670575a869e4a142814c71a1217f9f0/billing"
RETENTION_S = 30 * 86400
START = 1764000000.0

BILLING = DispatchDecision(
    route="billing_desk", route_kind=RouteKind.FLEX, reason=DecisionReason.ACCEPTED, intent="billing", confidence=0.9,
    summary="Question about the last invoice", captured={"caller_name": "Ann"}, decided_after_s=3.2,
)
VOICEMAIL = DispatchDecision(route="voicemail", route_kind=RouteKind.VOICEMAIL, reason=DecisionReason.BUDGET_EXPIRED)
FLEX_OUTCOME = PassOutcome(
    outcome="flex", state_path=("greeting", "capture", "classify", "dispatch", "teardown", "ended"),
    notes=("handoff line played",), engine_seconds=7.5,
)
ABANDONED = PassOutcome(outcome="abandoned", state_path=("greeting", "ended"), faults=2)

Opener = Callable[..., Awaitable[CallStore]]


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sqlite", "redis"])
def open_store(request, tmp_path) -> Opener:
    """Opens the store under test (again, for a second instance on the same location)."""
    if request.param == "sqlite":
        return lambda clock=time.time: SqliteCallStore.open(tmp_path / STORE_FILE, clock=clock)
    url = request.getfixturevalue("redis_url")
    return lambda clock=time.time: RedisCallStore.open(url, retention_seconds=RETENTION_S, clock=clock)


@pytest.fixture
async def store(open_store, clock):
    async with await open_store(clock) as opened:
        yield opened


async def open_pass(store: CallStore, call_sid: str = CALL, **more):
    facts = {"caller": CALLER, "called": CALLED, "account_sid": ACCOUNT, "entry_node": None, "arm": "ai"} | more
    return await store.open_pass(call_sid, **facts)


# -- passes ---------------------------------------------------------------------------------------


async def test_pass_numbers_count_up_per_call_sid_and_read_back(store, clock):
    first = await open_pass(store, entry_node=NODE)
    clock.now += 5
    second = await open_pass(store, caller="")
    other = await open_pass(store, OTHER_CALL)

    assert [first.number, second.number, other.number] == [1, 2, 1]
    assert await store.get_pass(CALL, 1) == first
    assert await store.get_pass(CALL, 2) == second
    assert first.entry_node == NODE and second.entry_node is None and second.caller == ""
    assert (first.opened_at, second.opened_at) == (START, START + 5)
    assert first.token != second.token
    assert await store.get_pass(CALL, 3) is None
    assert await store.get_pass(THIRD_CALL, 1) is None


async def test_twenty_concurrent_passes_of_one_call_are_numbered_1_to_20(store):
    numbers: list[int] = []

    async def arrive() -> None:
        numbers.append((await open_pass(store)).number)

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(arrive)

    assert sorted(numbers) == list(range(1, 21))


async def test_two_instances_on_one_location_never_hand_out_the_same_number(open_store):
    numbers: list[int] = []
    async with await open_store() as one, await open_store() as two:

        async def arrive(instance: CallStore) -> None:
            numbers.append((await open_pass(instance)).number)

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(arrive, one)
                nursery.start_soon(arrive, two)

    assert sorted(numbers) == list(range(1, 21))


# -- first write wins -------------------------------------------------------------------------------


async def test_the_first_decision_of_a_pass_wins_and_keeps_its_time(store, clock):
    await open_pass(store)
    await open_pass(store)
    clock.now = START + 3

    assert await store.save_decision(CALL, 1, BILLING) == BILLING
    clock.now = START + 9
    assert await store.save_decision(CALL, 1, VOICEMAIL) == BILLING
    assert await store.get_decision(CALL, 1) == BILLING
    assert await store.get_decision(CALL, 2) is None
    (first, _) = (await store.call_record(CALL)).passes
    assert first.decided_at == START + 3


async def test_decisions_for_passes_that_do_not_exist_are_refused(store):
    await open_pass(store)

    with pytest.raises(CallStoreError, match="no pass 2"):
        await store.save_decision(CALL, 2, BILLING)
    with pytest.raises(CallStoreError, match="no pass 1"):
        await store.save_decision(OTHER_CALL, 1, BILLING)
    assert await store.call_record(OTHER_CALL) is None


async def test_a_decision_that_would_not_read_back_is_refused_and_not_stored(store):
    await open_pass(store)
    not_a_number = DispatchDecision(route="r", route_kind="flex", reason=DecisionReason.ACCEPTED,
                                    confidence=float("nan"))

    with pytest.raises(CallStoreError, match="cannot be stored"):
        await store.save_decision(CALL, 1, not_a_number)
    assert await store.get_decision(CALL, 1) is None
    assert await store.save_decision(CALL, 1, BILLING) == BILLING


async def test_the_first_outcome_wins(store, clock):
    await open_pass(store)
    clock.now = START + 4
    await store.finish_pass(CALL, 1, FLEX_OUTCOME)
    clock.now = START + 100
    await store.finish_pass(CALL, 1, ABANDONED)

    (record,) = (await store.call_record(CALL)).passes
    assert record.outcome == FLEX_OUTCOME and record.finished_at == START + 4
    with pytest.raises(CallStoreError, match="no pass 2"):
        await store.finish_pass(CALL, 2, FLEX_OUTCOME)


async def test_mark_answered_is_true_once_per_pass(store):
    await open_pass(store)
    await open_pass(store)

    assert await store.mark_answered(CALL, 1, "billing_desk") is True
    assert await store.mark_answered(CALL, 1, "voicemail") is False
    assert await store.mark_answered(CALL, 2, "voicemail") is True
    passes = (await store.call_record(CALL)).passes
    assert [record.answered_route for record in passes] == ["billing_desk", "voicemail"]
    with pytest.raises(CallStoreError, match="no pass 1"):
        await store.mark_answered(OTHER_CALL, 1, "billing_desk")


async def test_concurrent_first_writes_agree_on_one_winner(store):
    await open_pass(store)
    saved: list[DispatchDecision] = []
    answered: list[bool] = []

    async def race(decision: DispatchDecision) -> None:
        saved.append(await store.save_decision(CALL, 1, decision))
        answered.append(await store.mark_answered(CALL, 1, decision.route))

    async with trio.open_nursery() as nursery:
        for decision in [BILLING, VOICEMAIL] * 5:
            nursery.start_soon(race, decision)

    assert len(set(map(repr, saved))) == 1 and saved[0] == await store.get_decision(CALL, 1)
    assert sorted(answered) == [False] * 9 + [True]


# -- visits and facts ---------------------------------------------------------------------------------


async def test_visits_are_idempotent_per_call_and_create_the_call(store):
    assert await store.visited_nodes(CALL) == frozenset()
    assert await store.call_record(CALL) is None

    await store.record_visit(CALL, NODE)
    await store.record_visit(CALL, NODE)
    await store.record_visit(CALL, OTHER_NODE)
    await store.record_visit(OTHER_CALL, OTHER_NODE)

    assert await store.visited_nodes(CALL) == {NODE, OTHER_NODE}
    assert await store.visited_nodes(OTHER_CALL) == {OTHER_NODE}
    record = await store.call_record(CALL)
    assert record.passes == () and record.visited_nodes == {NODE, OTHER_NODE}


async def test_call_facts_merge_a_later_value_replaces_an_earlier_one(store):
    await store.record_call_facts(CALL, {"csat": 4, "handle_seconds": 93.5, "queue": "billing"})
    await store.record_call_facts(CALL, {"csat": 5, "transferred": True, "wrap_up": None})
    await store.record_call_facts(CALL, {})

    record = await store.call_record(CALL)
    assert record.facts == {"csat": 5, "handle_seconds": 93.5, "queue": "billing", "transferred": True,
                            "wrap_up": None}
    assert record.passes == ()
    await open_pass(store)
    assert (await store.call_record(CALL)).facts["csat"] == 5


@pytest.mark.parametrize(
    "facts",
    [
        {"CSAT": 5},
        {"9lives": 1},
        {"a" * 65: 1},
        {"csat": float("nan")},
        {"csat": float("inf")},
        {"csat": [5]},
        {"csat": {"score": 5}},
        {"note": "x" * 1025},
        ["csat", 5],
    ],
)
async def test_bad_call_facts_are_value_errors_and_store_nothing(store, facts):
    with pytest.raises(ValueError):
        await store.record_call_facts(CALL, facts)
    assert await store.call_record(CALL) is None


# -- records and recent calls -----------------------------------------------------------------------


async def test_calls_since_lists_newest_first_with_limit_and_since(store, clock):
    await open_pass(store, CALL)  # START
    clock.now = START + 10
    await open_pass(store, OTHER_CALL)
    clock.now = START + 20
    await open_pass(store, THIRD_CALL)
    clock.now = START + 30
    await open_pass(store, CALL)  # CALL's newest pass is now the newest of all
    await store.record_call_facts("CA" + "9" * 32, {"csat": 3})  # no pass: not a recent call

    def sids(records) -> list[str]:
        return [record.call_sid for record in records]

    assert sids(await store.calls_since(START)) == [CALL, THIRD_CALL, OTHER_CALL]
    assert sids(await store.calls_since(START, limit=2)) == [CALL, THIRD_CALL]
    assert sids(await store.calls_since(START + 10)) == [CALL, THIRD_CALL, OTHER_CALL]
    assert sids(await store.calls_since(START + 10.5)) == [CALL, THIRD_CALL]
    assert sids(await store.calls_since(START + 31)) == []
    assert await store.calls_since(START, limit=0) == []
    (newest,) = await store.calls_since(START + 25)
    assert [p.triage_pass.number for p in newest.passes] == [1, 2]  # whole records, every pass


async def test_calls_since_orders_calls_of_the_same_time_by_call_sid(store):
    for call_sid in (THIRD_CALL, CALL, OTHER_CALL):
        await open_pass(store, call_sid)

    records = await store.calls_since(START, limit=2)
    assert [record.call_sid for record in records] == [CALL, OTHER_CALL]


async def test_calls_since_with_an_arm_lists_only_calls_with_a_pass_in_it(store, clock):
    await open_pass(store, CALL, arm="ai")  # START
    clock.now = START + 10
    await open_pass(store, OTHER_CALL, arm="legacy")
    clock.now = START + 20
    await open_pass(store, THIRD_CALL, arm="ai")
    clock.now = START + 30
    await open_pass(store, CALL, arm="legacy")  # CALL's newest pass is legacy; its AI pass is the oldest

    def sids(records) -> list[str]:
        return [record.call_sid for record in records]

    assert sids(await store.calls_since(START, arm="ai")) == [THIRD_CALL, CALL]
    assert sids(await store.calls_since(START, arm="ai", limit=1)) == [THIRD_CALL]
    assert sids(await store.calls_since(START + 5, arm="ai")) == [THIRD_CALL]
    assert sids(await store.calls_since(START, arm="legacy")) == [CALL, OTHER_CALL]
    assert await store.calls_since(START, arm="nobody") == []
    with pytest.raises(ValueError, match="arm"):
        await store.calls_since(START, arm="")


async def record_the_same_call(store: CallStore, clock: FakeClock) -> None:
    clock.now = START
    await open_pass(store, entry_node=NODE)
    clock.now = START + 2.25
    await store.save_decision(CALL, 1, BILLING)
    clock.now = START + 4.5
    await store.finish_pass(CALL, 1, FLEX_OUTCOME)
    await store.mark_answered(CALL, 1, "billing_desk")
    await store.record_visit(CALL, OTHER_NODE)
    await store.record_call_facts(CALL, {"csat": 5, "queue": "billing", "wrap_up": None})
    clock.now = START + 60
    await open_pass(store, arm="legacy")
    await store.save_decision(CALL, 2, VOICEMAIL)


async def test_both_stores_keep_the_same_record_for_the_same_operations(tmp_path, redis_url):
    records = []
    for opened in (
        SqliteCallStore.open(tmp_path / STORE_FILE, clock=(clock := FakeClock())),
        RedisCallStore.open(redis_url, retention_seconds=RETENTION_S, clock=clock),
    ):
        async with await opened as store:
            await record_the_same_call(store, clock)
            records.append(await store.call_record(CALL))
            assert await store.calls_since(START) == [records[-1]]

    sqlite_record, redis_record = records
    assert sqlite_record.to_json() == redis_record.to_json()
    assert list(sqlite_record.to_json()["facts"]) == list(redis_record.to_json()["facts"])  # same order too
    without_tokens = [
        [(record.triage_pass.__class__(**{**_fields(record.triage_pass), "token": ""}), record.decision,
          record.outcome, record.finished_at, record.answered_route, record.decided_at)
         for record in call_record.passes]
        for call_record in records
    ]
    assert without_tokens[0] == without_tokens[1]
    assert sqlite_record.passes[0].decided_at == START + 2.25


def _fields(triage_pass) -> dict:
    return {name: getattr(triage_pass, name) for name in triage_pass.__slots__}


async def test_a_record_outlives_the_instance_that_wrote_it(open_store, clock):
    async with await open_store(clock) as first:
        await record_the_same_call(first, clock)
        written = await first.call_record(CALL)
    async with await open_store(clock) as second:
        assert await second.call_record(CALL) == written
        assert await second.get_decision(CALL, 1) == BILLING


# -- settings --------------------------------------------------------------------------------------


async def test_settings_round_trip_and_the_last_write_wins_across_instances(open_store):
    async with await open_store() as one, await open_store() as two:
        assert await one.get_setting("rollout") is None
        await one.put_setting("rollout", {"ai_percent": 10, "brake": {"on": False}})
        assert await two.get_setting("rollout") == {"ai_percent": 10, "brake": {"on": False}}
        await two.put_setting("rollout", {"ai_percent": 50})
        assert await one.get_setting("rollout") == {"ai_percent": 50}
        assert await one.get_setting("other") is None


@pytest.mark.parametrize("name, value", [("", {}), (7, {}), ("rollout", [1]), ("rollout", {"x": math.nan}),
                                         ("rollout", {"x": object()}), ("rollout", "on")])
async def test_bad_settings_are_value_errors(store, name, value):
    with pytest.raises(ValueError):
        await store.put_setting(name, value)


# -- purging, closing, bad arguments ---------------------------------------------------------------


async def test_purge_drops_calls_by_their_newest_pass_and_counts_them(store, clock):
    await open_pass(store, CALL)
    await store.record_visit(OTHER_CALL, NODE)  # no pass: ages from when it was first seen
    clock.now = START + 50
    await open_pass(store, THIRD_CALL)
    await open_pass(store, CALL)  # CALL is young again
    clock.now = START + 100

    assert await store.purge_older_than(60) == 1
    assert await store.call_record(OTHER_CALL) is None
    assert await store.call_record(CALL) is not None and await store.call_record(THIRD_CALL) is not None
    assert await store.purge_older_than(60) == 0
    assert await store.purge_older_than(0) == 2
    assert await store.calls_since(0) == []
    assert (await open_pass(store, CALL)).number == 1  # a purged call starts over


async def test_a_closed_store_refuses_every_operation(open_store):
    store = await open_store()
    await store.aclose()
    await store.aclose()  # idempotent

    operations = [
        lambda: open_pass(store),
        lambda: store.get_pass(CALL, 1),
        lambda: store.save_decision(CALL, 1, BILLING),
        lambda: store.get_decision(CALL, 1),
        lambda: store.finish_pass(CALL, 1, FLEX_OUTCOME),
        lambda: store.mark_answered(CALL, 1, "billing_desk"),
        lambda: store.record_visit(CALL, NODE),
        lambda: store.visited_nodes(CALL),
        lambda: store.call_record(CALL),
        lambda: store.record_call_facts(CALL, {"csat": 5}),
        lambda: store.calls_since(0),
        lambda: store.get_setting("rollout"),
        lambda: store.put_setting("rollout", {}),
        lambda: store.purge_older_than(0),
    ]
    for operation in operations:
        with pytest.raises(CallStoreError, match="closed") as caught:
            await operation()
        assert "\n" not in str(caught.value)


BAD_ARGUMENTS = {
    "empty call_sid": lambda store: open_pass(store, ""),
    "call_sid not text": lambda store: open_pass(store, 7),
    "caller not text": lambda store: open_pass(store, caller=None),
    "empty entry node": lambda store: open_pass(store, entry_node=""),
    "empty arm": lambda store: open_pass(store, arm=""),
    "pass number not an int": lambda store: store.get_pass(CALL, "1"),
    "pass number a bool": lambda store: store.get_decision(CALL, True),
    "decision of an empty call_sid": lambda store: store.save_decision("", 1, BILLING),
    "empty route": lambda store: store.mark_answered(CALL, 1, ""),
    "empty node": lambda store: store.record_visit(CALL, ""),
    "visited nodes of None": lambda store: store.visited_nodes(None),
    "record of an empty call_sid": lambda store: store.call_record(""),
    "since not a number": lambda store: store.calls_since("yesterday"),
    "since infinite": lambda store: store.calls_since(math.inf),
    "negative limit": lambda store: store.calls_since(0, limit=-1),
    "limit a float": lambda store: store.calls_since(0, limit=2.5),
    "empty setting name": lambda store: store.get_setting(""),
    "negative purge age": lambda store: store.purge_older_than(-1),
    "purge age NaN": lambda store: store.purge_older_than(math.nan),
}


@pytest.mark.parametrize("case", BAD_ARGUMENTS)
async def test_bad_arguments_are_value_errors(store, case):
    with pytest.raises(ValueError):
        await BAD_ARGUMENTS[case](store)


# -- Redis only ------------------------------------------------------------------------------------


def prefix_of(url: str) -> str:
    return parse_redis_url(url).key_prefix


async def test_every_key_of_a_call_gets_the_retention_ttl_refreshed_on_each_write(redis_server, redis_url):
    prefix, client = prefix_of(redis_url), redis_server.client()
    async with await RedisCallStore.open(redis_url, retention_seconds=1000) as store:
        await open_pass(store)
        await store.record_visit(OTHER_CALL, NODE)
        await store.record_call_facts(THIRD_CALL, {"csat": 5})
        call_keys = sorted(client.scan_iter(match=f"{prefix}call:*"))
        assert call_keys == [f"{prefix}call:{sid}" for sid in (CALL, OTHER_CALL, THIRD_CALL)]
        for key in call_keys:
            assert 990_000 < client.pttl(key) <= 1_000_000, key

        writes = [
            lambda: store.save_decision(CALL, 1, BILLING),
            lambda: store.finish_pass(CALL, 1, FLEX_OUTCOME),
            lambda: store.mark_answered(CALL, 1, "billing_desk"),
            lambda: store.record_visit(CALL, NODE),
            lambda: store.record_call_facts(CALL, {"csat": 4}),
            lambda: open_pass(store),
        ]
        for write in writes:
            client.pexpire(f"{prefix}call:{CALL}", 5000)
            await write()
            assert client.pttl(f"{prefix}call:{CALL}") > 990_000
        for index in ("calls", "recent"):
            assert 0 < client.pttl(prefix + index) <= 1_000_000
        await store.put_setting("rollout", {"ai_percent": 5})
        assert client.ttl(prefix + "settings") == -1  # settings do not expire
    client.close()


async def test_the_time_indexes_are_trimmed_to_the_retention_window_as_writes_go(redis_server, redis_url):
    prefix, client, clock = prefix_of(redis_url), redis_server.client(), FakeClock()
    async with await RedisCallStore.open(redis_url, retention_seconds=100, clock=clock) as store:
        await open_pass(store, CALL)
        await store.record_visit(OTHER_CALL, NODE)
        assert client.zcard(prefix + "calls") == 2 and client.zcard(prefix + "recent") == 1
        clock.now = START + 101
        await open_pass(store, THIRD_CALL)

        assert client.zrange(prefix + "calls", 0, -1) == [THIRD_CALL]
        assert client.zrange(prefix + "recent", 0, -1) == [THIRD_CALL]
        assert [record.call_sid for record in await store.calls_since(0)] == [THIRD_CALL]
    client.close()


async def test_an_index_entry_whose_record_expired_is_skipped(redis_server, redis_url):
    prefix, client = prefix_of(redis_url), redis_server.client()
    async with await RedisCallStore.open(redis_url, retention_seconds=RETENTION_S) as store:
        for call_sid in (CALL, OTHER_CALL, THIRD_CALL):
            await open_pass(store, call_sid)
        client.delete(f"{prefix}call:{OTHER_CALL}")  # as its TTL would

        assert {record.call_sid for record in await store.calls_since(0)} == {CALL, THIRD_CALL}
        assert len(await store.calls_since(0, limit=2)) == 2
    client.close()


async def test_unreadable_stored_data_reads_as_none_with_a_warning(redis_server, redis_url, caplog):
    prefix, client = prefix_of(redis_url), redis_server.client()
    async with await RedisCallStore.open(redis_url, retention_seconds=RETENTION_S) as store:
        await open_pass(store)
        await store.record_call_facts(CALL, {"csat": 5})
        client.hset(f"{prefix}call:{CALL}", mapping={"pass:1:decision": "{not json", "pass:1:outcome": "[]",
                                                     "fact:csat": "{", "pass:1:finished_at": "soon"})
        client.hset(prefix + "settings", "rollout", "[1, 2]")
        with caplog.at_level(logging.WARNING, logger="orchestrator.store.redis_store"):
            assert await store.get_decision(CALL, 1) is None
            (record,) = (await store.call_record(CALL)).passes
            assert record.decision is None and record.outcome is None and record.finished_at is None
            assert (await store.call_record(CALL)).facts == {}
            assert await store.get_setting("rollout") is None
        assert any("unreadable decision" in message for message in caplog.messages)
        with pytest.raises(CallStoreError, match="cannot be read"):
            await store.save_decision(CALL, 1, BILLING)
    client.close()


async def test_deployments_with_their_own_key_prefix_do_not_see_each_other(redis_server):
    async with await RedisCallStore.open(redis_server.url("acme:"), retention_seconds=60) as acme, \
            await RedisCallStore.open(redis_server.url("globex:"), retention_seconds=60) as globex:
        await open_pass(acme)
        await acme.put_setting("rollout", {"ai_percent": 100})

        assert await globex.call_record(CALL) is None and await globex.get_setting("rollout") is None
        assert (await open_pass(globex)).number == 1
        assert (await open_pass(acme)).number == 2
        await acme.purge_older_than(0)
        await globex.purge_older_than(0)


async def test_a_redis_that_is_not_listening_is_a_call_store_error_in_about_a_second():
    url = f"redis://127.0.0.1:{free_port()}/0"
    with trio.fail_after(5):  # a hang guard; the refusal itself is immediate
        with pytest.raises(CallStoreError, match=r"^call store redis://127\.0\.0\.1:\d+/0: cannot reach Redis"):
            await RedisCallStore.open(url, retention_seconds=60)


async def test_a_redis_that_goes_away_gives_call_store_errors_and_one_that_comes_back_is_used_again():
    with start_redis_server() as server:
        store = await RedisCallStore.open(server.base_url, retention_seconds=60)
        await open_pass(store)
        server.process.kill()
        server.process.wait()
        with trio.fail_after(5):
            with pytest.raises(CallStoreError, match="cannot open a pass") as caught:
                await open_pass(store)
        assert "\n" not in str(caught.value)
    with start_redis_server(port=server.port):  # the same address, empty: a restarted Redis
        assert (await open_pass(store)).number == 1  # the pool's dead connections are replaced
        await store.aclose()


async def test_a_redis_that_accepts_but_never_answers_times_out_instead_of_hanging():
    with socket.socket() as silent:  # the kernel completes the handshake; nobody ever reads or writes
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        started = trio.current_time()
        with trio.fail_after(8):
            with pytest.raises(CallStoreError, match="cannot reach Redis: no answer within 0.5 s") as caught:
                await RedisCallStore.open(url, retention_seconds=60, operation_timeout_s=0.5)
        assert caught.value.kind == "timeout"
        assert trio.current_time() - started < 2
        print(f"silent Redis refused after {trio.current_time() - started:.2f} s")


async def test_operations_given_up_on_while_redis_sleeps_leave_the_store_usable():
    """Callers that stop waiting while new connections are in their handshake (Redis asleep) must not cost
    the pool those connections: once Redis answers again, so does the store, without a restart."""
    with start_redis_server("--enable-debug-command", "yes") as server:
        async with await RedisCallStore.open(server.base_url, retention_seconds=60, operation_timeout_s=0.2) as store:
            admin = server.client()
            admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")  # the store's connection
            kinds: list[str] = []

            async def given_up_on(call_sid: str) -> None:
                with pytest.raises(CallStoreError) as given_up:
                    await open_pass(store, call_sid)
                kinds.append(given_up.value.kind)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.to_thread.run_sync, admin.execute_command, "DEBUG", "SLEEP", "1.5")
                await trio.sleep(0.3)
                async with trio.open_nursery() as callers:
                    for index in range(40):  # at once: more than the pool's 16 connections
                        callers.start_soon(given_up_on, f"CA{index:032d}")
            admin.close()
            assert kinds == ["timeout"] * 40
            with trio.fail_after(5):
                while True:  # the connections made during the sleep finish their handshakes, then serve
                    try:
                        assert (await open_pass(store)).number == 1
                        break
                    except CallStoreError:
                        await trio.sleep(0.1)
            for index in range(40):
                assert (await open_pass(store, f"CB{index:032d}")).number == 1


async def test_a_wrong_password_is_a_call_store_error_that_does_not_show_the_password():
    with start_redis_server(password="right-secret") as server:
        with pytest.raises(CallStoreError, match="cannot reach Redis") as caught:
            await RedisCallStore.open(f"redis://:wrong-secret@127.0.0.1:{server.port}/0", retention_seconds=60)
        assert "wrong-secret" not in str(caught.value) and ":***@" in str(caught.value)
        async with await RedisCallStore.open(
            f"redis://:right-secret@127.0.0.1:{server.port}/0", retention_seconds=60
        ) as store:
            assert (await open_pass(store)).number == 1


# -- where the store is -----------------------------------------------------------------------------


async def test_open_call_store_picks_sqlite_by_default_and_redis_for_its_urls(tmp_path, redis_url):
    async with await open_call_store("", data_dir=tmp_path / "var", retention_seconds=60) as default:
        assert isinstance(default, SqliteCallStore)
    assert (tmp_path / "var" / STORE_FILE).is_file()
    async with await open_call_store(str(tmp_path / "elsewhere.db"), data_dir=tmp_path, retention_seconds=60):
        pass
    assert (tmp_path / "elsewhere.db").is_file()
    async with await open_call_store(redis_url, data_dir=tmp_path, retention_seconds=60) as shared:
        assert isinstance(shared, RedisCallStore)

    assert describe_store_location("", data_dir=tmp_path / "var") == f"SQLite file {tmp_path / 'var' / STORE_FILE}"
    assert describe_store_location("redis://:s3cret@cache:6380/2?key_prefix=acme:", data_dir=tmp_path) == (
        "Redis at redis://:***@cache:6380/2?key_prefix=acme: (key prefix acme:), shared by every instance using it"
    )


@pytest.mark.parametrize(
    "location, problem",
    [
        ("redis://cache:port/0", "the port must be a number"),
        ("redis://cache:0/0", "the port must be a number"),
        ("redis://cache/zero", "must be a number, got 'zero'"),
        ("redis:///0", "no host"),
        ("unix://", "needs the socket's path"),
        ("redis://cache/0?key_prefix=", "key_prefix must be non-empty"),
        ("redis://:pw@cache/0?colour=blue", "unknown option 'colour'"),
        ("postgres://db/calls", "postgres:// is not a store this server knows"),
    ],
)
async def test_a_bad_store_location_is_a_one_line_config_error(tmp_path, location, problem):
    for attempt in (
        lambda: open_call_store(location, data_dir=tmp_path, retention_seconds=60),
        lambda: _describe(location, tmp_path),
    ):
        with pytest.raises(ConfigError, match="ORCHESTRATOR_STORE") as caught:
            await attempt()
        assert problem in str(caught.value) and "\n" not in str(caught.value)
        assert "pw@" not in str(caught.value)


async def _describe(location, tmp_path):
    return describe_store_location(location, data_dir=tmp_path)


async def test_a_bad_option_value_is_a_call_store_error_from_the_store_itself():
    with pytest.raises(CallStoreError, match="'soon'"):
        await RedisCallStore.open("redis://127.0.0.1:1/0?connect_timeout=soon", retention_seconds=60)
    with pytest.raises(ValueError, match="operation_timeout_s"):
        await RedisCallStore.open("redis://127.0.0.1:1/0", retention_seconds=60, operation_timeout_s=0)
    with pytest.raises(ValueError, match="retention_seconds"):
        await RedisCallStore.open("redis://127.0.0.1:1/0", retention_seconds=0)


def test_passwords_are_masked_in_urls():
    assert mask_url_password("redis://user:pa%40ss@host:1/0") == "redis://user:***@host:1/0"
    assert mask_url_password("redis://host/0?password=x&db=1") == "redis://host/0?password=***&db=1"
    assert mask_url_password("redis://host:1/0") == "redis://host:1/0"


async def test_a_retention_longer_than_redis_can_expire_is_kept_as_long_as_it_can(redis_server, redis_url):
    client = redis_server.client()
    async with await RedisCallStore.open(redis_url, retention_seconds=1e18) as store:  # retention_days=1e13
        await open_pass(store)
        await store.record_call_facts(CALL, {"csat": 5})
        assert client.pttl(f"{prefix_of(redis_url)}call:{CALL}") > 99 * 365 * 86400 * 1000
    client.close()

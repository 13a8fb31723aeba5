"""The SQLite call store: JSON shapes, persistence, migration and every way a file can be bad (the contract both
stores keep is in test_store_contract.py)."""
from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from machines.decision import DecisionReason, DispatchDecision
from orchestrator.store.interface import CallStoreError
from orchestrator.store.records import PassOutcome, decision_from_json, decision_to_json
from orchestrator.store.sqlite_store import SCHEMA_VERSION, SqliteCallStore

CALL = "CA11111111111111111111111111111111"
OTHER_CALL = "CA22222222222222222222222222222222"
ACCOUNT = "AC00000000000000000000000000000001"
CALLER = "+15551234567"
CALLED = "+15557654321"
NODE = "FW5670575a869e4a142814c71a1217f9f0/schedule"
OTHER_NODE = "FW5670575a869e4a142814c71a1217f9f0/billing"

BILLING = DispatchDecision(
    route="billing_desk",
    route_kind="flex",
    reason=DecisionReason.ACCEPTED,
    intent="billing",
    confidence=0.9,
    summary="Question about the last invoice",
    captured={"caller_name": "Ann"},
    decided_after_s=3.2,
    routed_on_intent=True,
)
VOICEMAIL = DispatchDecision(route="voicemail", route_kind="voicemail", reason=DecisionReason.BUDGET_EXPIRED)
FLEX_OUTCOME = PassOutcome(
    outcome="flex", state_path=("greeting", "capture", "classify", "dispatch", "teardown", "ended")
)


class FakeClock:
    def __init__(self, now: float = 1764000000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store():
    async with await SqliteCallStore.open(":memory:") as opened:
        yield opened


async def open_pass(store: SqliteCallStore, call_sid: str = CALL, **more):
    facts = {"caller": CALLER, "called": CALLED, "account_sid": ACCOUNT, "entry_node": None, "arm": "ai"} | more
    return await store.open_pass(call_sid, **facts)


# -- passes ----------------------------------------------------------------------------------------


async def test_tokens_are_random_and_url_safe(store):
    tokens = [(await open_pass(store)).token for _ in range(30)]

    assert len(set(tokens)) == len(tokens)
    for token in tokens:
        assert re.fullmatch(r"[A-Za-z0-9_-]{24}", token)


async def test_opened_at_comes_from_the_store_clock():
    clock = FakeClock(1234.5)
    async with await SqliteCallStore.open(":memory:", clock=clock) as store:
        triage_pass = await open_pass(store)

    assert triage_pass.opened_at == 1234.5


# -- decisions and outcomes ---------------------------------------------------------------------------


async def test_decisions_are_per_pass(store):
    await open_pass(store)
    await open_pass(store)
    await store.save_decision(CALL, 2, VOICEMAIL)

    assert await store.get_decision(CALL, 1) is None
    assert await store.get_decision(CALL, 2) == VOICEMAIL
    assert await store.get_decision(CALL, 3) is None


async def test_finishing_a_pass_that_does_not_exist_is_refused(store):
    with pytest.raises(CallStoreError, match="no pass 1"):
        await store.finish_pass(CALL, 1, FLEX_OUTCOME)


@pytest.mark.parametrize("reason", list(DecisionReason))
async def test_decision_round_trip_for_every_reason(store, reason):
    decision = DispatchDecision(
        route="studio_schedule",
        route_kind="studio",
        reason=reason,
        intent="schedule",
        confidence=0.42,
        summary="Rendez-vous pour une fuite d'eau, cuisine 🚰",
        captured={
            "caller_name": "Zoë Ñúñez 李小龍",
            "address": "Straße 5, Köln",
            "note": "\"quoted\" \\ back",
        },
        proposed_route="billing_desk",
        decided_after_s=12.5,
    )
    await open_pass(store)
    await store.save_decision(CALL, 1, decision)

    read_back = await store.get_decision(CALL, 1)
    assert read_back == decision
    assert read_back.reason is reason


decisions = st.builds(
    DispatchDecision,
    route=st.text(min_size=1),
    route_kind=st.sampled_from(["resolve", "studio", "flex", "voicemail", "sip"]),
    reason=st.sampled_from(DecisionReason),
    intent=st.none() | st.text(),
    confidence=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    summary=st.text(),
    captured=st.dictionaries(st.text(), st.text(), max_size=5),
    proposed_route=st.none() | st.text(),
    decided_after_s=st.floats(allow_nan=False, allow_infinity=False),
    missing_fields=st.lists(st.text(), max_size=3).map(tuple),
    unconfirmed_fields=st.lists(st.text(), max_size=3).map(tuple),
    routed_on_intent=st.booleans(),
)


@settings(max_examples=60)
@given(decision=decisions)
async def test_any_decision_reads_back_from_the_store_as_it_was_saved(decision):
    assert decision_from_json(json.loads(json.dumps(decision_to_json(decision)))) == decision
    async with await SqliteCallStore.open(":memory:") as store:
        await open_pass(store)
        await store.save_decision(CALL, 1, decision)
        assert await store.get_decision(CALL, 1) == decision


@pytest.mark.parametrize(
    "data",
    [
        [],
        {},
        {"route": "r", "route_kind": "flex"},
        {"route": "r", "route_kind": "flex", "reason": "teleported"},
        {"route": "", "route_kind": "flex", "reason": "accepted"},
        {"route": "r", "route_kind": "flex", "reason": "accepted", "confidence": "high"},
        {"route": "r", "route_kind": "flex", "reason": "accepted", "confidence": True},
        {"route": "r", "route_kind": "flex", "reason": "accepted", "captured": {"age": 7}},
        {"route": "r", "route_kind": "flex", "reason": "accepted", "captured": ["Ann"]},
        {"route": "r", "route_kind": "flex", "reason": "accepted", "intent": 3},
        {"route": "r", "route_kind": "flex", "reason": "accepted", "from_the_future": 1},
        {"route": "r", "route_kind": "flex", "reason": "accepted", "missing_fields": "phone"},
        {"route": "r", "route_kind": "flex", "reason": "accepted", "unconfirmed_fields": [1]},
        {"route": "r", "route_kind": "flex", "reason": "accepted", "routed_on_intent": "yes"},
    ],
)
def test_decision_from_json_refuses_shapes_it_cannot_read(data):
    with pytest.raises(ValueError):
        decision_from_json(data)


# -- answering and visits ---------------------------------------------------------------------------


async def test_mark_answered_for_a_pass_that_does_not_exist_is_refused(store):
    with pytest.raises(CallStoreError, match="no pass 1"):
        await store.mark_answered(CALL, 1, "billing_desk")


# -- call records -------------------------------------------------------------------------------------


async def test_call_record_json_has_the_documented_shape():
    clock = FakeClock(1764000000.0)
    async with await SqliteCallStore.open(":memory:", clock=clock) as store:
        first = await open_pass(store)
        await store.save_decision(CALL, 1, BILLING)
        clock.now = 1764000004.0
        await store.finish_pass(CALL, 1, FLEX_OUTCOME)
        await store.mark_answered(CALL, 1, "billing_desk")
        await store.record_visit(CALL, NODE)
        clock.now = 1764000010.0
        await open_pass(store, entry_node=NODE, arm="legacy")

        record = await store.call_record(CALL)

    assert record.to_json() == {
        "call_sid": CALL,
        "visited_nodes": [NODE],
        "passes": [
            {
                "number": 1, "entry_node": None, "arm": "ai", "opened_at": 1764000000.0,
                "caller": CALLER, "called": CALLED,
                "decision": {
                    "route": "billing_desk", "route_kind": "flex", "reason": "accepted", "intent": "billing",
                    "confidence": 0.9, "summary": "Question about the last invoice",
                    "captured": {"caller_name": "Ann"}, "proposed_route": None, "decided_after_s": 3.2,
                    "missing_fields": [], "unconfirmed_fields": [], "routed_on_intent": True,
                },
                "outcome": {
                    "outcome": "flex",
                    "state_path": ["greeting", "capture", "classify", "dispatch", "teardown", "ended"],
                    "faults": 0,
                    "notes": [],
                    "engine_seconds": 0.0,
                },
                "finished_at": 1764000004.0,
                "answered_route": "billing_desk",
                "decided_at": 1764000000.0,
            },
            {
                "number": 2, "entry_node": NODE, "arm": "legacy", "opened_at": 1764000010.0,
                "caller": CALLER, "called": CALLED,
                "decision": None, "outcome": None, "finished_at": None, "answered_route": None,
                "decided_at": None,
            },
        ],
        "facts": {},
    }
    assert first.token not in json.dumps(record.to_json())
    assert record.passes[0].triage_pass == first


async def test_call_record_of_an_unknown_call_is_none(store):
    assert await store.call_record(CALL) is None


async def test_call_record_of_a_call_with_visits_only(store):
    await store.record_visit(CALL, NODE)

    record = await store.call_record(CALL)

    assert record.passes == ()
    assert record.visited_nodes == {NODE}


# -- purge ------------------------------------------------------------------------------------------


async def test_purge_deletes_calls_whose_newest_pass_is_old():
    clock = FakeClock(1000.0)
    async with await SqliteCallStore.open(":memory:", clock=clock) as store:
        await open_pass(store, CALL)
        await store.save_decision(CALL, 1, BILLING)
        await store.record_visit(CALL, NODE)
        await open_pass(store, OTHER_CALL)
        clock.now = 5000.0
        await open_pass(store, OTHER_CALL)
        clock.now = 6000.0

        assert await store.purge_older_than(2000) == 1
        assert await store.call_record(CALL) is None
        assert await store.visited_nodes(CALL) == frozenset()
        assert await store.get_decision(CALL, 1) is None
        assert [p.triage_pass.number for p in (await store.call_record(OTHER_CALL)).passes] == [1, 2]
        assert await store.purge_older_than(2000) == 0
        # A purged call that comes back starts again at pass 1.
        assert (await open_pass(store, CALL)).number == 1
        assert await store.purge_older_than(0) == 1


async def test_purge_refuses_a_negative_age(store):
    with pytest.raises(ValueError):
        await store.purge_older_than(-1)


# -- the file -------------------------------------------------------------------------------------------


async def test_everything_survives_close_and_reopen(tmp_path):
    path = tmp_path / "state" / "nested" / "calls.db"
    async with await SqliteCallStore.open(path) as store:
        first = await open_pass(store, entry_node=NODE)
        await store.save_decision(CALL, 1, BILLING)
        await store.finish_pass(CALL, 1, FLEX_OUTCOME)
        await store.mark_answered(CALL, 1, "billing_desk")
        await store.record_visit(CALL, OTHER_NODE)
        before = await store.call_record(CALL)

    async with await SqliteCallStore.open(str(path)) as store:
        assert await store.call_record(CALL) == before
        assert await store.get_pass(CALL, 1) == first
        assert await store.mark_answered(CALL, 1, "voicemail") is False
        assert (await open_pass(store)).number == 2


async def test_a_file_store_uses_wal_and_records_its_schema_version(tmp_path):
    path = tmp_path / "calls.db"
    async with await SqliteCallStore.open(path) as store:
        await open_pass(store)

    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    finally:
        raw.close()


def write_raw(path: Path, sql: str, *params) -> None:
    raw = sqlite3.connect(path)
    try:
        with raw:
            raw.execute(sql, params)
    finally:
        raw.close()


async def test_an_unreadable_decision_reads_as_none_with_a_warning(tmp_path, caplog):
    path = tmp_path / "calls.db"
    async with await SqliteCallStore.open(path) as store:
        for _ in range(3):
            await open_pass(store)
            await store.save_decision(CALL, _ + 1, BILLING)
    newer = json.dumps(decision_to_json(BILLING) | {"reason": "teleported"})
    write_raw(path, "UPDATE passes SET decision_json = ? WHERE number = 1", "{not json")
    write_raw(path, "UPDATE passes SET decision_json = ? WHERE number = 2", newer)
    write_raw(path, "UPDATE passes SET outcome_json = ? WHERE number = 3", '{"outcome": 5}')

    caplog.set_level(logging.WARNING, logger="orchestrator.store.sqlite_store")
    async with await SqliteCallStore.open(path) as store:
        assert await store.get_decision(CALL, 1) is None
        assert await store.get_decision(CALL, 2) is None
        assert await store.get_decision(CALL, 3) == BILLING
        record = await store.call_record(CALL)
        with pytest.raises(CallStoreError, match="cannot be read"):
            await store.save_decision(CALL, 1, VOICEMAIL)

    assert [(p.decision, p.outcome) for p in record.passes] == [(None, None), (None, None), (BILLING, None)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("decision" in message and "pass 1" in message for message in warnings)
    assert any("decision" in message and "pass 2" in message for message in warnings)
    assert any("outcome" in message and "pass 3" in message for message in warnings)


async def test_a_file_that_is_not_a_database_is_refused_at_open(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a database\n" * 40)

    with pytest.raises(CallStoreError, match="not a usable SQLite database") as caught:
        await SqliteCallStore.open(path)
    assert str(path) in str(caught.value)


async def test_a_newer_schema_version_is_refused(tmp_path):
    path = tmp_path / "calls.db"
    async with await SqliteCallStore.open(path):
        pass
    write_raw(path, f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    with pytest.raises(CallStoreError, match="newer than this code knows") as caught:
        await SqliteCallStore.open(path)
    assert str(path) in str(caught.value)


async def test_a_database_of_something_else_is_refused(tmp_path):
    path = tmp_path / "other.db"
    write_raw(path, "CREATE TABLE invoices (id INTEGER PRIMARY KEY)")

    with pytest.raises(CallStoreError, match="invoices"):
        await SqliteCallStore.open(path)


async def test_a_folder_that_cannot_be_created_is_refused_at_open(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the folder should be")
    path = blocker / "calls.db"

    with pytest.raises(CallStoreError, match="cannot create folder") as caught:
        await SqliteCallStore.open(path)
    assert str(path) in str(caught.value)


async def test_a_folder_in_place_of_the_file_is_refused_at_open(tmp_path):
    with pytest.raises(CallStoreError, match="is a folder"):
        await SqliteCallStore.open(tmp_path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a POSIX user that permissions apply to")
async def test_a_folder_that_cannot_be_written_is_refused_at_open(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(CallStoreError, match="not writable"):
            await SqliteCallStore.open(folder / "calls.db")
    finally:
        folder.chmod(0o700)


# -- closing and bad input -------------------------------------------------------------------------------


async def test_leaving_async_with_closes_the_store():
    async with await SqliteCallStore.open(":memory:") as store:
        await open_pass(store)

    with pytest.raises(CallStoreError, match="closed"):
        await store.get_pass(CALL, 1)


# The schema of version 1, as stores written before call facts and settings have it on disk.
_SCHEMA_1 = """
CREATE TABLE calls (call_sid TEXT PRIMARY KEY, created_at REAL NOT NULL);
CREATE TABLE passes (
    call_sid TEXT NOT NULL REFERENCES calls(call_sid) ON DELETE CASCADE,
    number INTEGER NOT NULL CHECK (number >= 1), token TEXT NOT NULL, caller TEXT NOT NULL,
    called TEXT NOT NULL, account_sid TEXT NOT NULL, entry_node TEXT, arm TEXT NOT NULL,
    opened_at REAL NOT NULL, decision_json TEXT, outcome_json TEXT, finished_at REAL, answered_route TEXT,
    PRIMARY KEY (call_sid, number)
);
CREATE TABLE visits (
    call_sid TEXT NOT NULL REFERENCES calls(call_sid) ON DELETE CASCADE, node TEXT NOT NULL,
    PRIMARY KEY (call_sid, node)
);
INSERT INTO calls VALUES ('CA00000000000000000000000000000001', 1764000000.0);
INSERT INTO passes VALUES ('CA00000000000000000000000000000001', 1, 'tok', '+14155550100', '+14155550199',
    'AC00000000000000000000000000000001', NULL, 'ai', 1764000000.0,
    '{"route": "voicemail", "route_kind": "voicemail", "reason": "budget_expired"}',
    '{"outcome": "voicemail", "state_path": ["greeting", "ended"], "faults": 0, "notes": []}', 1764000005.0, NULL);
PRAGMA user_version = 1;
"""


async def test_a_version_1_store_is_migrated_and_keeps_its_calls(tmp_path):
    path = tmp_path / "calls.db"
    raw = sqlite3.connect(path)
    raw.executescript(_SCHEMA_1)
    raw.close()

    async with await SqliteCallStore.open(path) as store:
        record = await store.call_record("CA00000000000000000000000000000001")
        await store.record_call_facts("CA00000000000000000000000000000001", {"csat": 4})
        await store.put_setting("rollout", {"percent": 5})
        assert await store.get_setting("rollout") == {"percent": 5}
        (recent,) = await store.calls_since(0)

    (only,) = record.passes
    assert only.decision.route == "voicemail" and only.decided_at is None
    assert only.outcome.state_path == ("greeting", "ended") and only.outcome.engine_seconds == 0.0
    assert recent.facts == {"csat": 4}
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    finally:
        raw.close()


async def test_a_write_waits_for_another_process_lock_without_stalling_the_event_loop(tmp_path):
    """Another worker holding the write lock must not freeze this worker's calls while the write waits."""
    import trio

    path = tmp_path / "calls.sqlite3"
    async with await SqliteCallStore.open(path) as store:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the other worker's transaction, holding the write lock
        ticks = 0
        written = trio.Event()

        async def write() -> None:
            await store.record_visit(CALL, "FW_node")
            written.set()

        async def tick() -> None:
            nonlocal ticks
            while not written.is_set():
                ticks += 1
                await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            nursery.start_soon(tick)
            await trio.sleep(0.3)
            assert not written.is_set()  # still waiting for the lock...
            assert ticks >= 10  # ...while the loop kept running the other tasks
            other.execute("COMMIT")
            with trio.fail_after(2):
                await written.wait()
        other.close()
        assert list(await store.visited_nodes(CALL)) == ["FW_node"]


async def test_a_lock_held_past_the_operation_time_bound_is_a_locked_store_error(tmp_path):
    import trio

    path = tmp_path / "calls.sqlite3"
    async with await SqliteCallStore.open(path, operation_timeout_s=0.2) as store:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            started = trio.current_time()
            with pytest.raises(CallStoreError, match="locked") as raised:
                await store.record_visit(CALL, "FW_node")
            assert raised.value.kind == "locked"
            assert 0.2 <= trio.current_time() - started < 1.0
        finally:
            other.execute("ROLLBACK")
            other.close()
        await store.record_visit(CALL, "FW_node")  # usable again once the lock is gone

"""The call store: triage passes, their dispatch decisions and outcomes, and visited Studio nodes.

Each request of `/voice/incoming` for a call opens a *triage pass* (1, 2, … per CallSid). During a
pass the machine makes at most one `DispatchDecision`; it is saved here before the call moves on,
and `/voice/after?pass=N` answers the TwiML of that pass's saved decision (or the fallback when
there is none). The re-entry guard reads the Studio nodes the call already entered, across passes.

`CallStore` is the interface the server depends on; `SqliteCallStore` is the default, one SQLite
file (so the record survives the call coming back and server restarts). Writes that matter are
first-write-wins: Twilio retries webhooks, and the first decision of a pass is the one that counts.
"""
from __future__ import annotations

import abc
import json
import logging
import math
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import trio

from machines.decision import DecisionReason, DispatchDecision

log = logging.getLogger(__name__)

# Bump when the schema changes; a file with a newer version is refused instead of misread.
SCHEMA_VERSION = 2
BUSY_TIMEOUT_MS = 5000
# Operations run in the event loop's thread, where SQLite's own busy wait (a sleep in C while another
# process, e.g. another worker, holds the write lock) would stall every call of this worker: there the
# busy timeout is 0 and a locked database is retried after these pauses, until BUSY_TIMEOUT_MS.
_LOCKED_RETRY_PAUSES_S = (0.0005, 0.001, 0.002, 0.005, 0.01)
_SQLITE_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
MEMORY = ":memory:"

# Tables added by schema version 2 (call facts, shared settings): in the schema and in the migration.
_TABLES_SINCE_2 = """
CREATE TABLE call_facts (
    call_sid TEXT NOT NULL REFERENCES calls(call_sid) ON DELETE CASCADE,
    name     TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (call_sid, name)
);
CREATE TABLE settings (
    name       TEXT PRIMARY KEY,
    value_json TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""

_SCHEMA = """
CREATE TABLE calls (
    call_sid   TEXT PRIMARY KEY,
    created_at REAL NOT NULL
);
CREATE TABLE passes (
    call_sid       TEXT NOT NULL REFERENCES calls(call_sid) ON DELETE CASCADE,
    number         INTEGER NOT NULL CHECK (number >= 1),
    token          TEXT NOT NULL,
    caller         TEXT NOT NULL,
    called         TEXT NOT NULL,
    account_sid    TEXT NOT NULL,
    entry_node     TEXT,
    arm            TEXT NOT NULL,
    opened_at      REAL NOT NULL,
    decision_json  TEXT,
    outcome_json   TEXT,
    finished_at    REAL,
    answered_route TEXT,
    decided_at     REAL,
    PRIMARY KEY (call_sid, number)
);
CREATE INDEX passes_by_opened_at ON passes (opened_at);
CREATE TABLE visits (
    call_sid TEXT NOT NULL REFERENCES calls(call_sid) ON DELETE CASCADE,
    node     TEXT NOT NULL,
    PRIMARY KEY (call_sid, node)
);
""" + _TABLES_SINCE_2

# From schema version 1 (issue 3's store) to 2: decision times, call facts, settings.
_MIGRATE_FROM_1 = """
ALTER TABLE passes ADD COLUMN decided_at REAL;
CREATE INDEX passes_by_opened_at ON passes (opened_at);
""" + _TABLES_SINCE_2

_PASS_COLUMNS = (
    "call_sid, number, token, caller, called, account_sid, entry_node, arm, opened_at,"
    " decision_json, outcome_json, finished_at, answered_route, decided_at"
)

_DECISION_KEYS = frozenset(
    {
        "route", "route_kind", "reason", "intent", "confidence",
        "summary", "captured", "proposed_route", "decided_after_s",
    }
)
_OUTCOME_KEYS = frozenset({"outcome", "state_path", "faults", "notes", "engine_seconds"})
# A call fact is a scalar learned after (or outside) the triage: TaskRouter handle time, CSAT, duration.
FactValue = str | int | float | bool | None
_FACT_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")

T = TypeVar("T")


class CallStoreError(Exception):
    """A store that cannot be opened or used; the message is one line naming the store and the problem."""


@dataclass(frozen=True, slots=True)
class TriagePass:
    call_sid: str
    number: int  # 1, 2, … per call_sid
    token: str  # checked on the Media Stream; never leaves the server in call records
    caller: str  # From
    called: str  # To
    account_sid: str
    entry_node: str | None  # Studio node that handed the call to us ("FW…/widget"), if known
    arm: str  # rollout arm, e.g. "ai"
    opened_at: float  # unix seconds, from the store's clock


@dataclass(frozen=True, slots=True)
class PassOutcome:
    outcome: str  # route kind of the decision, or "abandoned"
    state_path: tuple[str, ...]  # machine states in order
    faults: int = 0  # internal errors the machine absorbed
    notes: tuple[str, ...] = ()  # short trail notes worth keeping (no audio, no secrets)
    engine_seconds: float = 0.0  # how long an AI engine (Realtime or offline) was connected: the cost


@dataclass(frozen=True, slots=True)
class PassRecord:
    triage_pass: TriagePass
    decision: DispatchDecision | None
    outcome: PassOutcome | None
    finished_at: float | None
    answered_route: str | None  # the route whose TwiML /voice/after served for this pass, once it did
    decided_at: float | None = None  # unix seconds when the decision was first saved


@dataclass(frozen=True, slots=True)
class CallRecord:
    call_sid: str
    passes: tuple[PassRecord, ...]  # by number
    visited_nodes: frozenset[str]
    facts: Mapping[str, FactValue] = field(default_factory=dict)  # see `CallStore.record_call_facts`

    def to_json(self) -> dict:
        """The shape `GET /calls/{CallSid}` returns. The pass token is deliberately left out."""
        return {
            "call_sid": self.call_sid,
            "visited_nodes": sorted(self.visited_nodes),
            "passes": [_pass_record_to_json(record) for record in self.passes],
            "facts": dict(self.facts),
        }


def _pass_record_to_json(record: PassRecord) -> dict:
    triage_pass = record.triage_pass
    return {
        "number": triage_pass.number,
        "entry_node": triage_pass.entry_node,
        "arm": triage_pass.arm,
        "opened_at": triage_pass.opened_at,
        "caller": triage_pass.caller,
        "called": triage_pass.called,
        "decision": None if record.decision is None else decision_to_json(record.decision),
        "outcome": None if record.outcome is None else outcome_to_json(record.outcome),
        "finished_at": record.finished_at,
        "answered_route": record.answered_route,
        "decided_at": record.decided_at,
    }


def decision_to_json(decision: DispatchDecision) -> dict:
    return {
        "route": decision.route,
        "route_kind": decision.route_kind,
        "reason": str(decision.reason),
        "intent": decision.intent,
        "confidence": decision.confidence,
        "summary": decision.summary,
        "captured": dict(decision.captured),
        "proposed_route": decision.proposed_route,
        "decided_after_s": decision.decided_after_s,
    }


def decision_from_json(data: dict) -> DispatchDecision:
    """Read a decision written by `decision_to_json`; ValueError on any shape it cannot read."""
    if not isinstance(data, dict):
        raise ValueError(f"a decision must be a JSON object, got {type(data).__name__}")
    unknown = set(data) - _DECISION_KEYS
    if unknown:
        raise ValueError(f"decision has unknown keys: {', '.join(sorted(map(str, unknown)))}")
    reason = _required_text(data, "reason")
    try:
        decision_reason = DecisionReason(reason)
    except ValueError:
        raise ValueError(f"decision reason {reason!r} is not one of: {', '.join(DecisionReason)}") from None
    captured = data.get("captured", {})
    if not isinstance(captured, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in captured.items()
    ):
        raise ValueError("decision 'captured' must be an object of text values")
    return DispatchDecision(
        route=_required_text(data, "route"),
        route_kind=_required_text(data, "route_kind"),
        reason=decision_reason,
        intent=_optional_text(data, "intent"),
        confidence=_optional_number(data, "confidence"),
        summary=_text(data, "summary", default=""),
        captured=captured,
        proposed_route=_optional_text(data, "proposed_route"),
        decided_after_s=_number(data, "decided_after_s", default=0.0),
    )


def outcome_to_json(outcome: PassOutcome) -> dict:
    return {
        "outcome": outcome.outcome,
        "state_path": list(outcome.state_path),
        "faults": outcome.faults,
        "notes": list(outcome.notes),
        "engine_seconds": outcome.engine_seconds,
    }


def outcome_from_json(data: Any) -> PassOutcome:
    if not isinstance(data, dict):
        raise ValueError(f"an outcome must be a JSON object, got {type(data).__name__}")
    unknown = set(data) - _OUTCOME_KEYS
    if unknown:
        raise ValueError(f"outcome has unknown keys: {', '.join(sorted(map(str, unknown)))}")
    faults = data.get("faults", 0)
    if not isinstance(faults, int) or isinstance(faults, bool) or faults < 0:
        raise ValueError("outcome 'faults' must be a whole number of at least 0")
    return PassOutcome(
        outcome=_required_text(data, "outcome"),
        state_path=_text_list(data, "state_path"),
        faults=faults,
        notes=_text_list(data, "notes"),
        engine_seconds=_number(data, "engine_seconds", default=0.0),
    )


def _required_text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key!r} must be non-empty text")
    return value


def _text(data: Mapping[str, Any], key: str, *, default: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"{key!r} must be text")
    return value


def _optional_text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key!r} must be text or null")
    return value


def _number(data: Mapping[str, Any], key: str, *, default: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key!r} must be a finite number")
    return float(value)


def _optional_number(data: Mapping[str, Any], key: str) -> float | None:
    if data.get(key) is None:
        return None
    return _number(data, key, default=0.0)


def _text_list(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{key!r} must be a list of text")
    return tuple(value)


def check_text(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be non-empty text, got {value!r}")


def check_call_facts(facts: Mapping[str, FactValue]) -> dict[str, FactValue]:
    """The facts as a plain dict, or ValueError naming the first bad name or value."""
    if not isinstance(facts, Mapping):
        raise ValueError(f"call facts must be a mapping, got {type(facts).__name__}")
    checked: dict[str, FactValue] = {}
    for name, value in facts.items():
        if not isinstance(name, str) or not _FACT_NAME.fullmatch(name):
            raise ValueError(f"call fact name {name!r} must be lower_snake_case, at most 64 characters")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"call fact {name!r} must be finite, got {value!r}")
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise ValueError(f"call fact {name!r} must be text, a number, true/false or null")
        if isinstance(value, str) and len(value) > 1024:
            raise ValueError(f"call fact {name!r} is longer than 1024 characters")
        checked[name] = value
    return checked


def check_open_pass(
    call_sid: object, caller: object, called: object, account_sid: object, entry_node: object, arm: object
) -> None:
    check_text("call_sid", call_sid)
    for name, value in (("caller", caller), ("called", called), ("account_sid", account_sid)):
        if not isinstance(value, str):
            raise ValueError(f"{name} must be text, got {value!r}")
    if entry_node is not None:
        check_text("entry_node", entry_node)
    check_text("arm", arm)


def read_setting(name: str, stored_json: str | bytes | None) -> dict | None:
    """A stored setting's JSON as a dict; None (with a warning) when it cannot be read."""
    if stored_json is None:
        return None
    try:
        value = json.loads(stored_json)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        log.warning("unreadable setting %r, treated as unset", name)
        return None
    return value


def check_calls_since(since: object, limit: object, arm: object) -> None:
    if isinstance(since, bool) or not isinstance(since, (int, float)) or not math.isfinite(since):
        raise ValueError(f"since must be a finite number of unix seconds, got {since!r}")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise ValueError(f"limit must be a whole number of at least 0, got {limit!r}")
    if arm is not None:
        check_text("arm", arm)


def check_setting(name: object, value: object) -> str:
    """The setting as JSON text, or ValueError."""
    check_text("setting name", name)
    if not isinstance(value, dict):
        raise ValueError(f"setting {name!r} must be a JSON object, got {type(value).__name__}")
    try:
        return json.dumps(value, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"setting {name!r} is not plain JSON: {exc}") from None


def check_pass_key(call_sid: object, number: object) -> None:
    check_text("call_sid", call_sid)
    if not isinstance(number, int) or isinstance(number, bool):
        raise ValueError(f"pass number must be an int, got {number!r}")


class CallStore(abc.ABC):
    """Where triage passes, decisions, outcomes and visited nodes are kept. Usable under Trio."""

    @abc.abstractmethod
    async def open_pass(
        self, call_sid: str, *, caller: str, called: str, account_sid: str, entry_node: str | None, arm: str
    ) -> TriagePass:
        """Start the next pass of the call (1 for its first arrival), with a fresh random token."""

    @abc.abstractmethod
    async def get_pass(self, call_sid: str, number: int) -> TriagePass | None: ...

    @abc.abstractmethod
    async def save_decision(self, call_sid: str, number: int, decision: DispatchDecision) -> DispatchDecision:
        """First write wins: returns the stored decision. CallStoreError if the pass does not exist."""

    @abc.abstractmethod
    async def get_decision(self, call_sid: str, number: int) -> DispatchDecision | None:
        """None when there is none, or when the stored one cannot be read (the caller answers its fallback)."""

    @abc.abstractmethod
    async def finish_pass(self, call_sid: str, number: int, outcome: PassOutcome) -> None:
        """First write wins. CallStoreError if the pass does not exist."""

    @abc.abstractmethod
    async def mark_answered(self, call_sid: str, number: int, route: str) -> bool:
        """True the first time; False if this pass was already answered (Twilio retries the action URL)."""

    @abc.abstractmethod
    async def record_visit(self, call_sid: str, node: str) -> None:
        """Note that the call entered a Studio node; idempotent."""

    @abc.abstractmethod
    async def visited_nodes(self, call_sid: str) -> frozenset[str]: ...

    @abc.abstractmethod
    async def call_record(self, call_sid: str) -> CallRecord | None: ...

    @abc.abstractmethod
    async def record_call_facts(self, call_sid: str, facts: Mapping[str, FactValue]) -> None:
        """Merge facts about the call learned outside the triage (names lower_snake_case; a later value of
        a name replaces the earlier one; None stores null). A call not seen before is created, since a
        TaskRouter or status callback can arrive before, or without, any pass. ValueError on bad facts."""

    @abc.abstractmethod
    async def calls_since(
        self, since: float, *, limit: int | None = None, arm: str | None = None
    ) -> list[CallRecord]:
        """Whole records (all passes, visits, facts) of the calls with a pass opened at or after `since`
        (unix seconds), newest first by their latest pass; at most `limit` of them. With `arm`, only
        calls with a pass in that arm, ordered by their latest pass in it."""

    @abc.abstractmethod
    async def get_setting(self, name: str) -> dict | None:
        """A shared setting (for example the rollout), as last written by any instance; None if never set."""

    @abc.abstractmethod
    async def put_setting(self, name: str, value: dict) -> None:
        """Replace a shared setting (a JSON object); the last write wins. ValueError if not plain JSON."""

    @abc.abstractmethod
    async def purge_older_than(self, seconds: float) -> int:
        """Delete calls whose newest pass opened more than `seconds` ago; returns how many calls went."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Idempotent; any use afterwards raises CallStoreError."""

    async def __aenter__(self) -> CallStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class SqliteCallStore(CallStore):
    """One SQLite file (or `":memory:"`) on one connection; each operation is one transaction, run
    synchronously in the event loop thread (so operations never interleave)."""

    def __init__(self, connection: sqlite3.Connection, location: str, clock: Callable[[], float]) -> None:
        # Use `await SqliteCallStore.open(path)`: it creates the schema and fails early on a bad file.
        self._connection: sqlite3.Connection | None = connection
        self._location = location
        self._clock = clock
        self._closed = False

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time
    ) -> SqliteCallStore:
        location = os.fsdecode(path)
        connection = await trio.to_thread.run_sync(_connect, location)
        return cls(connection, location, clock)

    async def __aenter__(self) -> SqliteCallStore:
        return self

    # -- the operations ------------------------------------------------------------------------

    async def open_pass(
        self, call_sid: str, *, caller: str, called: str, account_sid: str, entry_node: str | None, arm: str
    ) -> TriagePass:
        check_open_pass(call_sid, caller, called, account_sid, entry_node, arm)
        token = secrets.token_urlsafe(18)
        opened_at = float(self._clock())

        def insert(connection: sqlite3.Connection) -> TriagePass:
            connection.execute(
                "INSERT INTO calls (call_sid, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (call_sid, opened_at),
            )
            (number,) = connection.execute(
                "SELECT coalesce(max(number), 0) + 1 FROM passes WHERE call_sid = ?", (call_sid,)
            ).fetchone()
            values = (call_sid, number, token, caller, called, account_sid, entry_node, arm, opened_at)
            connection.execute(
                "INSERT INTO passes (call_sid, number, token, caller, called, account_sid, entry_node, arm,"
                " opened_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            return TriagePass(*values)

        return await self._run("open a pass", insert, write=True)

    async def get_pass(self, call_sid: str, number: int) -> TriagePass | None:
        check_pass_key(call_sid, number)

        def select(connection: sqlite3.Connection) -> TriagePass | None:
            row = _pass_row(connection, call_sid, number)
            return None if row is None else _triage_pass(row)

        return await self._run("read a pass", select)

    async def save_decision(self, call_sid: str, number: int, decision: DispatchDecision) -> DispatchDecision:
        check_pass_key(call_sid, number)
        try:
            # Only what reads back is stored: a decision the reader would drop is refused now.
            stored_json = json.dumps(decision_to_json(decision), allow_nan=False)
            decision_from_json(json.loads(stored_json))
        except (TypeError, ValueError, AttributeError) as exc:
            raise CallStoreError(
                f"call store {self._location}: decision for {call_sid} pass {number} cannot be stored: {exc}"
            ) from None

        decided_at = float(self._clock())

        def save(connection: sqlite3.Connection) -> DispatchDecision:
            row = connection.execute(
                "SELECT decision_json FROM passes WHERE call_sid = ? AND number = ?", (call_sid, number)
            ).fetchone()
            if row is None:
                raise CallStoreError(f"call store {self._location}: no pass {number} for {call_sid}")
            (earlier_json,) = row
            if earlier_json is None:
                connection.execute(
                    "UPDATE passes SET decision_json = ?, decided_at = ? WHERE call_sid = ? AND number = ?",
                    (stored_json, decided_at, call_sid, number),
                )
                return decision
            earlier = self._read_decision(earlier_json, call_sid, number)
            if earlier is None:
                raise CallStoreError(
                    f"call store {self._location}: {call_sid} pass {number} already has a decision"
                    " that cannot be read"
                )
            return earlier

        return await self._run("save a decision", save, write=True)

    async def get_decision(self, call_sid: str, number: int) -> DispatchDecision | None:
        check_pass_key(call_sid, number)

        def select(connection: sqlite3.Connection) -> DispatchDecision | None:
            row = connection.execute(
                "SELECT decision_json FROM passes WHERE call_sid = ? AND number = ?", (call_sid, number)
            ).fetchone()
            if row is None or row[0] is None:
                return None
            return self._read_decision(row[0], call_sid, number)

        return await self._run("read a decision", select)

    async def finish_pass(self, call_sid: str, number: int, outcome: PassOutcome) -> None:
        check_pass_key(call_sid, number)
        try:
            stored_json = json.dumps(outcome_to_json(outcome))
            outcome_from_json(json.loads(stored_json))
        except (TypeError, ValueError, AttributeError) as exc:
            raise CallStoreError(
                f"call store {self._location}: outcome for {call_sid} pass {number} cannot be stored: {exc}"
            ) from None
        finished_at = float(self._clock())

        def finish(connection: sqlite3.Connection) -> None:
            changed = connection.execute(
                "UPDATE passes SET outcome_json = ?, finished_at = ?"
                " WHERE call_sid = ? AND number = ? AND outcome_json IS NULL",
                (stored_json, finished_at, call_sid, number),
            ).rowcount
            if not changed and _pass_row(connection, call_sid, number) is None:
                raise CallStoreError(f"call store {self._location}: no pass {number} for {call_sid}")

        await self._run("finish a pass", finish, write=True)

    async def mark_answered(self, call_sid: str, number: int, route: str) -> bool:
        check_pass_key(call_sid, number)
        check_text("route", route)

        def mark(connection: sqlite3.Connection) -> bool:
            changed = connection.execute(
                "UPDATE passes SET answered_route = ?"
                " WHERE call_sid = ? AND number = ? AND answered_route IS NULL",
                (route, call_sid, number),
            ).rowcount
            if changed:
                return True
            if _pass_row(connection, call_sid, number) is None:
                raise CallStoreError(f"call store {self._location}: no pass {number} for {call_sid}")
            return False

        return await self._run("mark a pass answered", mark, write=True)

    async def record_visit(self, call_sid: str, node: str) -> None:
        check_text("call_sid", call_sid)
        check_text("node", node)
        now = float(self._clock())

        def insert(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT INTO calls (call_sid, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING", (call_sid, now)
            )
            connection.execute(
                "INSERT INTO visits (call_sid, node) VALUES (?, ?) ON CONFLICT DO NOTHING", (call_sid, node)
            )

        await self._run("record a visit", insert, write=True)

    async def visited_nodes(self, call_sid: str) -> frozenset[str]:
        check_text("call_sid", call_sid)
        return await self._run("read visited nodes", lambda connection: _visits(connection, call_sid))

    async def call_record(self, call_sid: str) -> CallRecord | None:
        check_text("call_sid", call_sid)

        def select(connection: sqlite3.Connection) -> CallRecord | None:
            if connection.execute("SELECT 1 FROM calls WHERE call_sid = ?", (call_sid,)).fetchone() is None:
                return None
            return self._call_record(connection, call_sid)

        return await self._run("read a call record", select)

    async def record_call_facts(self, call_sid: str, facts: Mapping[str, FactValue]) -> None:
        check_text("call_sid", call_sid)
        checked = check_call_facts(facts)
        now = float(self._clock())

        def merge(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT INTO calls (call_sid, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING", (call_sid, now)
            )
            connection.executemany(
                "INSERT INTO call_facts (call_sid, name, value) VALUES (?, ?, ?)"
                " ON CONFLICT (call_sid, name) DO UPDATE SET value = excluded.value",
                [(call_sid, name, json.dumps(value)) for name, value in checked.items()],
            )

        await self._run("record call facts", merge, write=True)

    async def calls_since(
        self, since: float, *, limit: int | None = None, arm: str | None = None
    ) -> list[CallRecord]:
        check_calls_since(since, limit, arm)

        def select(connection: sqlite3.Connection) -> list[CallRecord]:
            rows = connection.execute(
                "SELECT call_sid, max(opened_at) AS latest FROM passes WHERE ? IS NULL OR arm = ?"
                " GROUP BY call_sid HAVING latest >= ? ORDER BY latest DESC, call_sid LIMIT ?",
                (arm, arm, float(since), -1 if limit is None else limit),
            ).fetchall()
            return [self._call_record(connection, call_sid) for call_sid, _ in rows]

        return await self._run("list recent calls", select)

    async def get_setting(self, name: str) -> dict | None:
        check_text("setting name", name)

        def select(connection: sqlite3.Connection) -> dict | None:
            row = connection.execute("SELECT value_json FROM settings WHERE name = ?", (name,)).fetchone()
            return read_setting(name, None if row is None else row[0])

        return await self._run("read a setting", select)

    async def put_setting(self, name: str, value: dict) -> None:
        stored_json = check_setting(name, value)
        now = float(self._clock())

        def upsert(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT INTO settings (name, value_json, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value_json = excluded.value_json, updated_at = excluded.updated_at",
                (name, stored_json, now),
            )

        await self._run("write a setting", upsert, write=True)

    async def purge_older_than(self, seconds: float) -> int:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
            raise ValueError(f"seconds must be a number of at least 0, got {seconds!r}")
        cutoff = float(self._clock()) - seconds

        def purge(connection: sqlite3.Connection) -> int:
            # A call with no pass yet (only visits) ages from when it was first seen.
            return connection.execute(
                "DELETE FROM calls WHERE coalesce("
                " (SELECT max(opened_at) FROM passes WHERE passes.call_sid = calls.call_sid), created_at) < ?",
                (cutoff,),
            ).rowcount

        return await self._run("purge old calls", purge, write=True)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_connection()
        await trio.lowlevel.checkpoint()

    # -- plumbing --------------------------------------------------------------------------------

    def _close_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    async def _run(self, what: str, operation: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        if self._closed:
            raise CallStoreError(f"call store {self._location}: cannot {what}, the store is closed")
        # In the event loop's own thread, not a worker: one operation is ~50 µs (WAL, synchronous=NORMAL,
        # no fsync per commit), while a thread hop costs ~100 µs idle and tens of ms when the loop is
        # busy and holds the GIL, which is exactly when calls pile up (measured: 200 concurrent calls).
        await trio.lowlevel.checkpoint()
        give_up_at = trio.current_time() + BUSY_TIMEOUT_MS / 1000
        pauses = iter(_LOCKED_RETRY_PAUSES_S)
        while True:
            try:
                return self._transaction(what, operation, write)
            except _DatabaseLocked as locked:
                if trio.current_time() >= give_up_at:
                    raise CallStoreError(f"call store {self._location}: cannot {what}: {locked}") from None
                await trio.sleep(next(pauses, _LOCKED_RETRY_PAUSES_S[-1]))

    def _transaction(self, what: str, operation: Callable[[sqlite3.Connection], T], write: bool) -> T:
        connection = self._connection
        if connection is None:
            raise CallStoreError(f"call store {self._location}: cannot {what}, the store is closed")
        try:
            # IMMEDIATE takes the write lock up front, so pass numbers stay atomic across processes too.
            connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = operation(connection)
            except BaseException:
                connection.rollback()
                raise
            connection.execute("COMMIT")
            return result
        except sqlite3.Error as exc:
            if connection.in_transaction:
                connection.rollback()
            if getattr(exc, "sqlite_errorcode", None) in _SQLITE_BUSY_CODES:
                raise _DatabaseLocked(str(exc)) from exc
            raise CallStoreError(f"call store {self._location}: cannot {what}: {exc}") from exc

    def _read_decision(self, stored_json: str, call_sid: str, number: int) -> DispatchDecision | None:
        try:
            return decision_from_json(json.loads(stored_json))
        except (ValueError, TypeError) as exc:
            log.warning("unreadable decision for %s pass %d, treated as none: %s", call_sid, number, exc)
            return None

    def _read_outcome(self, stored_json: str, call_sid: str, number: int) -> PassOutcome | None:
        try:
            return outcome_from_json(json.loads(stored_json))
        except (ValueError, TypeError) as exc:
            log.warning("unreadable outcome for %s pass %d, treated as none: %s", call_sid, number, exc)
            return None

    def _call_record(self, connection: sqlite3.Connection, call_sid: str) -> CallRecord:
        rows = connection.execute(
            f"SELECT {_PASS_COLUMNS} FROM passes WHERE call_sid = ? ORDER BY number", (call_sid,)
        ).fetchall()
        facts: dict[str, FactValue] = {}
        for name, value_json in connection.execute(
            "SELECT name, value FROM call_facts WHERE call_sid = ? ORDER BY name", (call_sid,)
        ):
            try:
                facts[name] = json.loads(value_json)
            except ValueError:
                log.warning("unreadable fact %r of %s, left out", name, call_sid)
        return CallRecord(
            call_sid=call_sid,
            passes=tuple(self._pass_record(row) for row in rows),
            visited_nodes=_visits(connection, call_sid),
            facts=facts,
        )

    def _pass_record(self, row: tuple) -> PassRecord:
        triage_pass = _triage_pass(row)
        decision_json, outcome_json, finished_at, answered_route, decided_at = row[9:14]
        return PassRecord(
            triage_pass=triage_pass,
            decision=None
            if decision_json is None
            else self._read_decision(decision_json, triage_pass.call_sid, triage_pass.number),
            outcome=None
            if outcome_json is None
            else self._read_outcome(outcome_json, triage_pass.call_sid, triage_pass.number),
            finished_at=finished_at,
            answered_route=answered_route,
            decided_at=decided_at,
        )


def _pass_row(connection: sqlite3.Connection, call_sid: str, number: int) -> tuple | None:
    return connection.execute(
        f"SELECT {_PASS_COLUMNS} FROM passes WHERE call_sid = ? AND number = ?", (call_sid, number)
    ).fetchone()


def _triage_pass(row: tuple) -> TriagePass:
    return TriagePass(*row[:9])


def _visits(connection: sqlite3.Connection, call_sid: str) -> frozenset[str]:
    rows = connection.execute("SELECT node FROM visits WHERE call_sid = ?", (call_sid,)).fetchall()
    return frozenset(node for (node,) in rows)


def _connect(location: str) -> sqlite3.Connection:
    """Open, configure and (on first use) create the store; every problem becomes a CallStoreError now."""
    in_memory = location == MEMORY
    if not in_memory:
        _prepare_folder(location)
    try:
        connection = sqlite3.connect(
            location, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise CallStoreError(f"call store {location}: cannot open: {exc}") from None
    try:
        _configure(connection, location, in_memory)
    except CallStoreError:
        connection.close()
        raise
    except sqlite3.OperationalError as exc:  # e.g. a read-only file, or locked longer than the busy timeout
        connection.close()
        raise CallStoreError(f"call store {location}: cannot use the database file: {exc}") from None
    except sqlite3.DatabaseError as exc:  # e.g. "file is not a database"
        connection.close()
        raise CallStoreError(f"call store {location}: not a usable SQLite database: {exc}") from None
    connection.execute("PRAGMA busy_timeout = 0")  # from here on, SqliteCallStore._run waits for locks
    return connection


class _DatabaseLocked(Exception):
    """Another connection holds the lock this operation needs (retried by SqliteCallStore._run)."""


def _execute_script(connection: sqlite3.Connection, script: str) -> None:
    # Statement by statement: executescript() would commit the transaction this runs in.
    for statement in script.split(";"):
        if statement.strip():
            connection.execute(statement)


def _prepare_folder(location: str) -> None:
    path = Path(location)
    if path.is_dir():
        raise CallStoreError(f"call store {location}: is a folder, not a database file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        problem = exc.strerror or exc
        raise CallStoreError(f"call store {location}: cannot create folder {path.parent}: {problem}") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        # SQLite needs to create its journal files next to the database.
        raise CallStoreError(f"call store {location}: folder {path.parent} is not writable")


def _configure(connection: sqlite3.Connection, location: str, in_memory: bool) -> None:
    connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    connection.execute("PRAGMA foreign_keys = ON")
    if not in_memory:
        # The first real read of the file: a file that is not a database fails here.
        (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal":
            raise CallStoreError(f"call store {location}: cannot switch to WAL journal mode (got {mode!r})")
        connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("BEGIN IMMEDIATE")
    try:
        (version,) = connection.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise CallStoreError(
                f"call store {location}: schema version {version} is newer than this code knows ({SCHEMA_VERSION})"
            )
        if version == 0:
            tables = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
            if tables:
                raise CallStoreError(
                    f"call store {location}: a SQLite database of something else (tables: "
                    f"{', '.join(name for (name,) in tables)})"
                )
            _execute_script(connection, _SCHEMA)
        elif version == 1:
            _execute_script(connection, _MIGRATE_FROM_1)
        # Also a write on every open, so a read-only file fails here rather than on the first call.
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        connection.rollback()
        raise

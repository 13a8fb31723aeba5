"""The SQLite call store: triage passes, their dispatch decisions and outcomes, visited Studio nodes, call
facts and shared settings, in one file (or `":memory:"`).
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import trio

from machines import DispatchDecision
from orchestrator.store.interface import (
    DEFAULT_OPERATION_TIMEOUT_S,
    CallStore,
    CallStoreError,
    check_call_facts,
    check_calls_since,
    check_open_pass,
    check_operation_timeout,
    check_pass_key,
    check_setting,
    check_text,
    read_setting,
)
from orchestrator.store.records import (
    CallRecord,
    FactValue,
    PassOutcome,
    PassRecord,
    TriagePass,
    decision_from_json,
    decision_to_json,
    outcome_from_json,
    outcome_to_json,
)

log = logging.getLogger(__name__)

# Bump when the schema changes; a file with a newer version is refused instead of misread.
SCHEMA_VERSION = 2
BUSY_TIMEOUT_MS = 5000  # while opening (in a worker thread)
# Operations run in the event loop's thread, where SQLite's own busy wait (a sleep in C while another
# process, e.g. another worker, holds the write lock) would stall every call of this worker: there the
# busy timeout is 0 and a locked database is retried after these pauses, until the operation's time bound.
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

T = TypeVar("T")


class SqliteCallStore(CallStore):
    """One SQLite file (or `":memory:"`) on one connection; each operation is one transaction, run
    synchronously in the event loop thread (so operations never interleave)."""

    def __init__(
        self, connection: sqlite3.Connection, location: str, clock: Callable[[], float], operation_timeout_s: float
    ) -> None:
        # Use `await SqliteCallStore.open(path)`: it creates the schema and fails early on a bad file.
        self._connection: sqlite3.Connection | None = connection
        self._location = location
        self._clock = clock
        self._operation_timeout_s = operation_timeout_s
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        operation_timeout_s: float = DEFAULT_OPERATION_TIMEOUT_S,
    ) -> SqliteCallStore:
        """`operation_timeout_s`: how long an operation waits for a lock another process holds."""
        timeout_s = check_operation_timeout(operation_timeout_s)
        location = os.fsdecode(path)
        connection = await trio.to_thread.run_sync(_connect, location)
        return cls(connection, location, clock, timeout_s)

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
            raise CallStoreError(f"call store {self._location}: cannot {what}, the store is closed", kind="closed")
        # In the event loop's own thread, not a worker: one operation is ~50 µs (WAL, synchronous=NORMAL,
        # no fsync per commit), while a thread hop costs ~100 µs idle and tens of ms when the loop is
        # busy and holds the GIL, which is exactly when calls pile up (measured: 200 concurrent calls).
        await trio.lowlevel.checkpoint()
        give_up_at = trio.current_time() + self._operation_timeout_s
        pauses = iter(_LOCKED_RETRY_PAUSES_S)
        while True:
            try:
                return self._transaction(what, operation, write)
            except _DatabaseLocked as locked:
                if trio.current_time() >= give_up_at:
                    raise CallStoreError(
                        f"call store {self._location}: cannot {what}: {locked} (for {self._operation_timeout_s:g} s)",
                        kind="locked",
                    ) from None
                await trio.sleep(next(pauses, _LOCKED_RETRY_PAUSES_S[-1]))

    def _transaction(self, what: str, operation: Callable[[sqlite3.Connection], T], write: bool) -> T:
        connection = self._connection
        if connection is None:
            raise CallStoreError(f"call store {self._location}: cannot {what}, the store is closed", kind="closed")
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

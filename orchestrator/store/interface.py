"""The call store's interface: `CallStore`, its error, and the argument checks every implementation makes.

`CallStore` is what the server depends on; `sqlite_store.SqliteCallStore` is the default (one SQLite
file, so the record survives the call coming back and server restarts) and `redis_store.RedisCallStore`
the one shared by instances. Writes that matter are first-write-wins: Twilio retries webhooks, and the
first decision of a pass is the one that counts.
"""
from __future__ import annotations

import abc
import json
import logging
import math
import re
from collections.abc import Mapping

import trio

from machines import DispatchDecision
from orchestrator.store.records import CallRecord, FactValue, PassOutcome, TriagePass

log = logging.getLogger(__name__)

_FACT_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


# Seconds one store operation may take before it gives up (CallStoreError of kind "timeout" or "locked"):
# a store that hangs must not hang a call's TwiML. The action URL makes up to four operations in a row, all
# well within the 15 s Twilio waits for a webhook's answer.
DEFAULT_OPERATION_TIMEOUT_S = 2.0

# What went wrong, as counted in /metrics (`store_errors_total{kind=…}`).
STORE_ERROR_KINDS = ("timeout", "unavailable", "locked", "closed", "refused", "error")


class CallStoreError(Exception):
    """A store that cannot be opened or used; the message is one line naming the store and the problem.
    `kind` is one of STORE_ERROR_KINDS: timeout (the operation's time bound ran out), unavailable (no
    connection), locked (another process holds the SQLite file's lock), closed (used after aclose),
    refused (the store answered with an error), error (anything else)."""

    def __init__(self, message: str, *, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind if kind in STORE_ERROR_KINDS else "error"


def store_error_kind(error: BaseException) -> str:
    """The kind of a failure met while using a store, for counting: a CallStoreError's own, "timeout" for a
    caller's own time bound (trio.TooSlowError), else "error"."""
    if isinstance(error, CallStoreError):
        return error.kind
    return "timeout" if isinstance(error, trio.TooSlowError) else "error"


def check_operation_timeout(seconds: object) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not (
        math.isfinite(seconds) and seconds > 0
    ):
        raise ValueError(f"operation_timeout_s must be a positive number of seconds, got {seconds!r}")
    return float(seconds)


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
    """Where triage passes, decisions, outcomes and visited nodes are kept. Usable under Trio. An operation
    that cannot finish within the store's time bound (DEFAULT_OPERATION_TIMEOUT_S unless opened with
    another) raises CallStoreError instead of waiting on."""

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

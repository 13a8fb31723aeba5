"""The call store on Redis, so several server instances share every call's passes, decisions and visits.

Twilio's next request for a call may land on any instance: `/voice/after` on another one than the Media
Stream, a call coming back from Studio on a third. With this store each of them finds the pass, its
decision and the visited nodes. Same contract as `SqliteCallStore` (see `CallStore`).

Keys, under a prefix (default `orchestrator:`, `?key_prefix=` on the URL) so deployments can share a Redis:

    {prefix}call:{CallSid}  one hash per call: `created_at`, `passes` (the counter), `pass:{n}:{field}`,
                            `visit:{node}`, `fact:{name}` (JSON); expires `retention_seconds` after its last write
    {prefix}calls           sorted set of CallSids by last activity (newest pass, else first seen): purging
    {prefix}recent          sorted set of CallSids by minus their newest pass time: `calls_since`, whose order
                            (newest first, ties by CallSid) is then the set's natural ascending order
    {prefix}settings        hash of shared settings (JSON); never expires

Every write is one Lua script, so pass numbering and first-write-wins are atomic across instances, and
the two indexes are trimmed to the retention window as the writes go. One call is one key: a record
never comes back half expired. The indexes are global keys, so this needs one Redis (with replicas or
Sentinel if wanted), not Redis Cluster.

The client is coredis, async on anyio and so native to Trio: no worker threads, and many calls' commands
share (pipeline on) a few connections. Every operation has a time bound (`operation_timeout_s`, 2 s by
default): a Redis that is slow or gone gives CallStoreError within it (kind "timeout" or "unavailable"),
never a hung webhook. The operation itself runs in a task of the store's own and is left to finish there
(bounded by coredis's own timeouts), so a caller that stops waiting never cancels coredis mid-operation:
cancelled while a pipeline held its connection, coredis was seen to keep timing out after Redis came back,
and its pool's wait for a connection leaves a stale waiter behind when cancelled. A dropped
connection (a Redis restart leaves dead pooled sockets) is retried once; a timeout is not, since the script
may have run and running it again would open a second pass.
"""
from __future__ import annotations

import json
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import coredis
import outcome
import trio
from coredis.exceptions import ConnectionError as RedisConnectionError
from coredis.exceptions import RedisError, ResponseError
from coredis.retry import ConstantRetryPolicy
from coredis.tokens import PureToken

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
# Every coredis failure reaches the store as an exception and is logged once, by whoever meets it, with the
# URL's password masked; coredis's own lines repeat each one (a traceback per reconnect attempt while Redis
# is down, a line per retry), so only its critical ones are let through.
logging.getLogger("coredis").setLevel(logging.CRITICAL)

REDIS_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_KEY_PREFIX = "orchestrator:"
POOL_SIZE = 16  # connections; each carries many calls' commands at once
CONNECT_TIMEOUT_S = 1.0
# coredis's bound on an answer (and on the wait for a pooled connection): what an operation whose caller
# has stopped waiting may still take in the background.
ANSWER_TIMEOUT_S = 10.0
MINIMUM_VERSION = (6, 2)  # ZADD GT/LT
MAX_TTL_MS = 100 * 365 * 86400 * 1000  # a longer retention is forever in practice, and past Redis's limit
_PAGE = 500  # calls read (or purged) per round trip
# URL query options passed on to coredis (its own parser reads them), and the rediss:// (TLS) ones.
_CONNECTION_OPTIONS = frozenset({"db", "stream_timeout", "connect_timeout", "max_connections", "max_idle_time",
                                 "client_name"})
_TLS_OPTIONS = frozenset({"ssl_keyfile", "ssl_certfile", "ssl_check_hostname", "ssl_ca_certs", "ssl_cert_reqs"})
_PASS_FIELDS = ("token", "caller", "called", "account_sid", "entry_node", "arm", "opened_at")

T = TypeVar("T")

# Shared by the scripts that add to the indexes: drop what fell out of the retention window, and let an
# index expire too when nothing was written for that long (everything in it would be older).
_TRIM_CALLS = """
local function trim_calls(calls, cutoff, ttl_ms)
  redis.call('ZREMRANGEBYSCORE', calls, '-inf', '(' .. cutoff)
  redis.call('PEXPIRE', calls, ttl_ms)
end
"""

# KEYS: call, calls, recent. ARGV: sid, opened_at, -opened_at, ttl_ms, cutoff, -cutoff, then field/value
# pairs of the pass (opened_at included). Returns the pass number.
_OPEN_PASS = _TRIM_CALLS + """
local number = redis.call('HINCRBY', KEYS[1], 'passes', 1)
redis.call('HSETNX', KEYS[1], 'created_at', ARGV[2])
local prefix = 'pass:' .. number .. ':'
for i = 7, #ARGV, 2 do
  redis.call('HSET', KEYS[1], prefix .. ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if number == 1 then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])  -- the first pass replaces "first seen"
else
  redis.call('ZADD', KEYS[2], 'GT', ARGV[2], ARGV[1])
end
trim_calls(KEYS[2], ARGV[5], ARGV[4])
redis.call('ZADD', KEYS[3], 'LT', ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '(' .. ARGV[6], '+inf')
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return number
"""

# First write wins on one field of a pass. KEYS: call. ARGV: pass prefix, guarded field, ttl_ms, then
# field/value pairs (the guarded field among them). Returns {0} no such pass, {1} written, {2, earlier}.
_SET_ONCE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1] .. 'token') == 0 then
  return {0}
end
local earlier = redis.call('HGET', KEYS[1], ARGV[1] .. ARGV[2])
if earlier then
  return {2, earlier}
end
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[1] .. ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1}
"""

# Visits and facts; creates the call when it is new. KEYS: call, calls, recent. ARGV: sid, now, ttl_ms,
# cutoff, then field/value pairs.
_TOUCH_CALL = _TRIM_CALLS + """
if redis.call('HSETNX', KEYS[1], 'created_at', ARGV[2]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])  -- an expired earlier life of this CallSid
  trim_calls(KEYS[2], ARGV[4], ARGV[3])
end
for i = 5, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: calls, recent, then the call keys of ARGV[2..] (their sids). ARGV[1]: cutoff. A call whose
# activity moved past the cutoff since it was listed stays. Returns how many call records went.
_PURGE = """
local gone = 0
for i = 3, #KEYS do
  local sid = ARGV[i - 1]
  local score = redis.call('ZSCORE', KEYS[1], sid)
  if score and tonumber(score) < tonumber(ARGV[1]) then
    gone = gone + redis.call('DEL', KEYS[i])
    redis.call('ZREM', KEYS[1], sid)
    redis.call('ZREM', KEYS[2], sid)
  end
end
return gone
"""

# The whole hash of each key, as flat field/value lists: a page of records in one command, so no connection
# is held across round trips (as a pipeline would; see the module doc).
_HGETALL_EACH = """
local records = {}
for i, key in ipairs(KEYS) do
  records[i] = redis.call('HGETALL', key)
end
return records
"""


@dataclass(frozen=True, slots=True)
class RedisLocation:
    url: str  # for coredis: the given URL without our own options
    key_prefix: str
    shown: str  # the URL with its password masked, for messages and announcements


def parse_redis_url(url: str) -> RedisLocation:
    """`redis://[user:password@]host[:port][/db][?key_prefix=…&connect_timeout=…]`, `rediss://…` (TLS) or
    `unix:///path/to/redis.sock[?db=…]`. ValueError (one line) when coredis could not use it."""
    if not isinstance(url, str):
        raise ValueError(f"a Redis URL must be text, got {type(url).__name__}")
    try:
        parts = urlsplit(url)
        shown = mask_url_password(url)
    except ValueError as exc:
        raise ValueError(f"not a usable Redis URL: {exc}") from None
    if parts.scheme not in REDIS_SCHEMES:
        raise ValueError(f"{shown}: a Redis URL starts with redis://, rediss:// or unix://")
    if parts.scheme == "unix" and not parts.path:
        raise ValueError(f"{shown}: a unix:// URL needs the socket's path (unix:///run/redis.sock)")
    if parts.scheme != "unix":
        if not parts.hostname:
            raise ValueError(f"{shown}: no host")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{shown}: the port must be a number from 1 to 65535") from None
        if port == 0:
            raise ValueError(f"{shown}: the port must be a number from 1 to 65535")
        database = parts.path.strip("/")
        if database and not database.isdigit():
            raise ValueError(f"{shown}: the path names the database and must be a number, got {database!r}")
    options, key_prefix = [], DEFAULT_KEY_PREFIX
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "key_prefix":
            if not value or any(char.isspace() for char in value):
                raise ValueError(f"{shown}: key_prefix must be non-empty text without spaces")
            key_prefix = value
        elif name in _CONNECTION_OPTIONS or (parts.scheme == "rediss" and name in _TLS_OPTIONS):
            options.append((name, value))
        else:
            known = sorted(_CONNECTION_OPTIONS | (_TLS_OPTIONS if parts.scheme == "rediss" else frozenset()))
            raise ValueError(f"{shown}: unknown option {name!r} (known: key_prefix, {', '.join(known)})")
    return RedisLocation(urlunsplit(parts._replace(query=urlencode(options))), key_prefix, shown)


def mask_url_password(url: str) -> str:
    """The URL with its password (if any) replaced by ***, so it can be printed or logged."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    if "password" in parts.query:  # ?password=… (or rediss://'s ssl_password)
        query = [(name, "***" if "password" in name else value)
                 for name, value in parse_qsl(parts.query, keep_blank_values=True)]
        parts = parts._replace(query=urlencode(query, safe="*:"))
    return urlunsplit(parts)


class RedisCallStore(CallStore):
    """Every call's record on one Redis, shared by all the instances that open the same URL and prefix."""

    def __init__(
        self,
        client: coredis.Redis[str],
        location: RedisLocation,
        retention_seconds: float,
        clock: Callable[[], float],
        operation_timeout_s: float,
    ) -> None:
        # Use `await RedisCallStore.open(url, retention_seconds=…)`: it enters the client and checks that
        # Redis answers.
        self._client = client
        self._location = location
        self._retention_s = float(retention_seconds)
        self._ttl_ms = min(max(1, math.ceil(retention_seconds * 1000)), MAX_TTL_MS)
        self._clock = clock
        self._operation_timeout_s = operation_timeout_s
        # The client's connection tasks, and the operations (see the module doc), live in task groups entered
        # by `open` and left by `aclose`.
        self._client_context = AsyncExitStack()
        self._operations: trio.Nursery | None = None
        self._closed = False
        prefix = location.key_prefix
        self._calls_key = prefix + "calls"
        self._recent_key = prefix + "recent"
        self._settings_key = prefix + "settings"
        self._open_pass_script = client.register_script(_OPEN_PASS)
        self._set_once_script = client.register_script(_SET_ONCE)
        self._touch_script = client.register_script(_TOUCH_CALL)
        self._purge_script = client.register_script(_PURGE)
        self._hgetall_each_script = client.register_script(_HGETALL_EACH)

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        retention_seconds: float,
        clock: Callable[[], float] = time.time,
        operation_timeout_s: float = DEFAULT_OPERATION_TIMEOUT_S,
    ) -> RedisCallStore:
        """The store, with its client entered: leave it with `aclose` (or `async with`) in the same task."""
        if isinstance(retention_seconds, bool) or not isinstance(retention_seconds, (int, float)) or not (
            math.isfinite(retention_seconds) and retention_seconds > 0
        ):
            raise ValueError(f"retention_seconds must be a positive number, got {retention_seconds!r}")
        timeout_s = check_operation_timeout(operation_timeout_s)
        try:
            location = parse_redis_url(url)
        except ValueError as exc:
            raise CallStoreError(f"call store {exc}") from None
        try:
            client: coredis.Redis[str] = coredis.Redis(
                decode_responses=True,
                # Once, and only when the connection broke; not on a timeout (see the module doc).
                retry_policy=ConstantRetryPolicy((RedisConnectionError,), retries=1, delay=0),
                connection_pool=coredis.ConnectionPool.from_url(
                    location.url,
                    decode_components=True,
                    decode_responses=True,
                    max_connections=POOL_SIZE,
                    connect_timeout=CONNECT_TIMEOUT_S,
                    stream_timeout=ANSWER_TIMEOUT_S,
                ),
                pool_timeout=ANSWER_TIMEOUT_S,
            )
        except (ValueError, TypeError) as exc:  # an option's value coredis cannot read
            raise CallStoreError(f"call store {location.shown}: {exc}") from None
        store = cls(client, location, retention_seconds, clock, timeout_s)
        try:
            await store._client_context.enter_async_context(client)
            store._operations = await store._client_context.enter_async_context(trio.open_nursery())
            info = await store._run("reach Redis", lambda: client.info("server"))
            version = str(info.get("redis_version", ""))
            if _version(version) < MINIMUM_VERSION:
                raise CallStoreError(
                    f"call store {location.shown}: needs Redis {'.'.join(map(str, MINIMUM_VERSION))} or newer,"
                    f" this one is {version or 'of unknown version'}",
                    kind="refused",
                )
        except BaseException:
            await store.aclose()
            raise
        return store

    async def __aenter__(self) -> RedisCallStore:
        return self

    # -- the operations ------------------------------------------------------------------------

    async def open_pass(
        self, call_sid: str, *, caller: str, called: str, account_sid: str, entry_node: str | None, arm: str
    ) -> TriagePass:
        check_open_pass(call_sid, caller, called, account_sid, entry_node, arm)
        token = secrets.token_urlsafe(18)
        opened_at = float(self._clock())
        cutoff = opened_at - self._retention_s
        fields = {"token": token, "caller": caller, "called": called, "account_sid": account_sid, "arm": arm,
                  "opened_at": repr(opened_at)}
        if entry_node is not None:
            fields["entry_node"] = entry_node
        number = await self._run("open a pass", lambda: self._open_pass_script(
            keys=[self._call_key(call_sid), self._calls_key, self._recent_key],
            args=[call_sid, repr(opened_at), repr(-opened_at), self._ttl_ms, repr(cutoff), repr(-cutoff),
                  *_pairs(fields)],
        ))
        return TriagePass(call_sid, int(number), token, caller, called, account_sid, entry_node, arm, opened_at)

    async def get_pass(self, call_sid: str, number: int) -> TriagePass | None:
        check_pass_key(call_sid, number)
        prefix = _pass_prefix(number)
        values = await self._run("read a pass", lambda: self._client.hmget(
            self._call_key(call_sid), [prefix + name for name in _PASS_FIELDS]
        ))
        return self._triage_pass(call_sid, number, dict(zip(_PASS_FIELDS, values)))

    async def save_decision(self, call_sid: str, number: int, decision: DispatchDecision) -> DispatchDecision:
        check_pass_key(call_sid, number)
        try:
            # Only what reads back is stored: a decision the reader would drop is refused now.
            stored_json = json.dumps(decision_to_json(decision), allow_nan=False)
            decision_from_json(json.loads(stored_json))
        except (TypeError, ValueError, AttributeError) as exc:
            raise CallStoreError(
                f"call store {self._location.shown}: decision for {call_sid} pass {number} cannot be stored: {exc}"
            ) from None
        decided_at = float(self._clock())
        earlier_json = await self._set_once(
            "save a decision", call_sid, number, "decision", {"decision": stored_json, "decided_at": repr(decided_at)}
        )
        if earlier_json is None:
            return decision
        earlier = _read_decision(earlier_json, call_sid, number)
        if earlier is None:
            raise CallStoreError(
                f"call store {self._location.shown}: {call_sid} pass {number} already has a decision that cannot be read"
            )
        return earlier

    async def get_decision(self, call_sid: str, number: int) -> DispatchDecision | None:
        check_pass_key(call_sid, number)
        stored = await self._run(
            "read a decision", lambda: self._client.hget(self._call_key(call_sid), _pass_prefix(number) + "decision")
        )
        return None if stored is None else _read_decision(stored, call_sid, number)

    async def finish_pass(self, call_sid: str, number: int, outcome: PassOutcome) -> None:
        check_pass_key(call_sid, number)
        try:
            stored_json = json.dumps(outcome_to_json(outcome))
            outcome_from_json(json.loads(stored_json))
        except (TypeError, ValueError, AttributeError) as exc:
            raise CallStoreError(
                f"call store {self._location.shown}: outcome for {call_sid} pass {number} cannot be stored: {exc}"
            ) from None
        finished_at = float(self._clock())
        await self._set_once(
            "finish a pass", call_sid, number, "outcome", {"outcome": stored_json, "finished_at": repr(finished_at)}
        )

    async def mark_answered(self, call_sid: str, number: int, route: str) -> bool:
        check_pass_key(call_sid, number)
        check_text("route", route)
        earlier = await self._set_once(
            "mark a pass answered", call_sid, number, "answered_route", {"answered_route": route}
        )
        return earlier is None

    async def record_visit(self, call_sid: str, node: str) -> None:
        check_text("call_sid", call_sid)
        check_text("node", node)
        await self._touch("record a visit", call_sid, {"visit:" + node: "1"})

    async def visited_nodes(self, call_sid: str) -> frozenset[str]:
        check_text("call_sid", call_sid)
        fields = await self._run("read visited nodes", lambda: self._client.hgetall(self._call_key(call_sid)))
        return frozenset(name.removeprefix("visit:") for name in fields if name.startswith("visit:"))

    async def call_record(self, call_sid: str) -> CallRecord | None:
        check_text("call_sid", call_sid)
        fields = await self._run("read a call record", lambda: self._client.hgetall(self._call_key(call_sid)))
        return self._call_record(call_sid, fields) if fields else None

    async def record_call_facts(self, call_sid: str, facts: Mapping[str, FactValue]) -> None:
        check_text("call_sid", call_sid)
        checked = check_call_facts(facts)
        await self._touch(
            "record call facts", call_sid, {"fact:" + name: json.dumps(value) for name, value in checked.items()}
        )

    async def calls_since(
        self, since: float, *, limit: int | None = None, arm: str | None = None
    ) -> list[CallRecord]:
        check_calls_since(since, limit, arm)
        records: list[CallRecord] = []
        offset = 0
        while arm is not None or limit is None or len(records) < limit:
            # A page at a time: an index entry may outlive its record (expired, not trimmed yet), so a
            # page can hold fewer records than CallSids.
            page = _PAGE if limit is None or arm is not None else min(_PAGE, limit - len(records))
            sids, pages = await self._run("list recent calls", lambda offset=offset, page=page: self._page_of_calls(-since, offset, page))
            found = [self._call_record(sid, fields) for sid, fields in zip(sids, pages) if _has_pass(fields)]
            if arm is None:
                records += found
            else:
                # The index orders by a call's latest pass of any arm, which is never older than its
                # latest in `arm`: once a page is older than the limit-th best so far, no later page beats it.
                records = _by_latest_in_arm(records + _latest_in_arm(found, arm, since), arm)
                if limit is not None and len(records) >= limit and found and (
                    _latest_opened(found[-1], None) < _latest_opened(records[limit - 1], arm)
                ):
                    break
            if len(sids) < page:
                break
            offset += page
        return records[:limit] if limit is not None else records

    async def get_setting(self, name: str) -> dict | None:
        check_text("setting name", name)
        stored = await self._run("read a setting", lambda: self._client.hget(self._settings_key, name))
        return read_setting(name, stored)

    async def put_setting(self, name: str, value: dict) -> None:
        stored_json = check_setting(name, value)
        await self._run("write a setting", lambda: self._client.hset(self._settings_key, {name: stored_json}))

    async def purge_older_than(self, seconds: float) -> int:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
            raise ValueError(f"seconds must be a number of at least 0, got {seconds!r}")
        cutoff = float(self._clock()) - seconds
        gone = 0
        while True:
            sids = await self._run("purge old calls", lambda: self._client.zrange(
                self._calls_key, "-inf", f"({cutoff!r}", sortby=PureToken.BYSCORE, offset=0, count=_PAGE
            ))
            if not sids:
                return gone
            gone += await self._run("purge old calls", lambda sids=sids: self._purge_script(
                keys=[self._calls_key, self._recent_key, *map(self._call_key, sids)], args=[repr(cutoff), *sids]
            ))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._operations is not None:
            self._operations.cancel_scope.cancel()  # what no caller waits for any more
        await self._client_context.aclose()

    # -- plumbing --------------------------------------------------------------------------------

    def _call_key(self, call_sid: str) -> str:
        return f"{self._location.key_prefix}call:{call_sid}"

    async def _run(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """The operation's result, within its time bound; CallStoreError (with its kind) otherwise."""
        shown = self._location.shown
        if self._closed or self._operations is None:
            raise CallStoreError(f"call store {shown}: cannot {what}, the store is closed", kind="closed")
        finished: list[outcome.Outcome[T]] = []
        done = trio.Event()

        async def run() -> None:
            try:
                finished.append(outcome.Value(await operation()))
            except Exception as error:
                finished.append(outcome.Error(error))
            finally:
                done.set()

        self._operations.start_soon(run)
        with trio.move_on_after(self._operation_timeout_s):
            await done.wait()
        if finished:
            try:
                return finished[0].unwrap()
            except RedisConnectionError as exc:
                raise CallStoreError(f"call store {shown}: cannot {what}: {_one_line(exc)}", kind="unavailable") from exc
            except ResponseError as exc:
                raise CallStoreError(f"call store {shown}: cannot {what}: {_one_line(exc)}", kind="refused") from exc
            except TimeoutError as exc:  # a stream_timeout or connect_timeout of the URL's, shorter than ours
                raise CallStoreError(f"call store {shown}: cannot {what}: {_one_line(exc)}", kind="timeout") from exc
            except (RedisError, UnicodeDecodeError) as exc:
                raise CallStoreError(f"call store {shown}: cannot {what}: {_one_line(exc)}") from exc
        raise CallStoreError(
            f"call store {shown}: cannot {what}: no answer within {self._operation_timeout_s:g} s", kind="timeout"
        )

    async def _set_once(
        self, what: str, call_sid: str, number: int, guarded: str, fields: dict[str, str]
    ) -> str | None:
        """Write the pass's fields unless `guarded` is already set: None when written, else its value."""
        answer = await self._run(what, lambda: self._set_once_script(
            keys=[self._call_key(call_sid)], args=[_pass_prefix(number), guarded, self._ttl_ms, *_pairs(fields)]
        ))
        if answer[0] == 0:
            raise CallStoreError(f"call store {self._location.shown}: no pass {number} for {call_sid}", kind="refused")
        return None if answer[0] == 1 else answer[1]

    async def _touch(self, what: str, call_sid: str, fields: dict[str, str]) -> None:
        now = float(self._clock())
        await self._run(what, lambda: self._touch_script(
            keys=[self._call_key(call_sid), self._calls_key, self._recent_key],
            args=[call_sid, repr(now), self._ttl_ms, repr(now - self._retention_s), *_pairs(fields)],
        ))

    async def _page_of_calls(self, newest_score: float, offset: int, count: int) -> tuple[list[str], list[dict]]:
        # The CallSids, then their records in one round trip.
        sids = list(await self._client.zrange(
            self._recent_key, "-inf", repr(newest_score), sortby=PureToken.BYSCORE, offset=offset, count=count
        ))
        if not sids:
            return sids, []
        records = await self._hgetall_each_script(keys=[self._call_key(sid) for sid in sids], args=[])
        return sids, [dict(zip(fields[::2], fields[1::2])) for fields in records]

    def _triage_pass(self, call_sid: str, number: int, fields: Mapping[str, str | None]) -> TriagePass | None:
        if fields.get("token") is None:
            return None
        try:
            return TriagePass(
                call_sid=call_sid,
                number=number,
                token=_present(fields, "token"),
                caller=_present(fields, "caller"),
                called=_present(fields, "called"),
                account_sid=_present(fields, "account_sid"),
                entry_node=fields.get("entry_node"),
                arm=_present(fields, "arm"),
                opened_at=float(_present(fields, "opened_at")),
            )
        except (KeyError, ValueError) as exc:
            log.warning("unreadable pass %d of %s, left out: %s", number, call_sid, exc)
            return None

    def _call_record(self, call_sid: str, fields: Mapping[str, str]) -> CallRecord:
        by_pass: dict[int, dict[str, str]] = {}
        visits: set[str] = set()
        facts: dict[str, FactValue] = {}
        for name, value in fields.items():
            kind, _, rest = name.partition(":")
            if kind == "pass":
                number, _, key = rest.partition(":")
                if number.isdigit():
                    by_pass.setdefault(int(number), {})[key] = value
            elif kind == "visit":
                visits.add(rest)
            elif kind == "fact":
                try:
                    facts[rest] = json.loads(value)
                except ValueError:
                    log.warning("unreadable fact %r of %s, left out", rest, call_sid)
        passes = []
        for number in sorted(by_pass):
            record = self._pass_record(call_sid, number, by_pass[number])
            if record is not None:
                passes.append(record)
        return CallRecord(call_sid, tuple(passes), frozenset(visits), dict(sorted(facts.items())))

    def _pass_record(self, call_sid: str, number: int, fields: Mapping[str, str]) -> PassRecord | None:
        triage_pass = self._triage_pass(call_sid, number, fields)
        if triage_pass is None:
            return None
        decision_json, outcome_json = fields.get("decision"), fields.get("outcome")
        return PassRecord(
            triage_pass=triage_pass,
            decision=None if decision_json is None else _read_decision(decision_json, call_sid, number),
            outcome=None if outcome_json is None else _read_outcome(outcome_json, call_sid, number),
            finished_at=_optional_float(fields, "finished_at", call_sid, number),
            answered_route=fields.get("answered_route"),
            decided_at=_optional_float(fields, "decided_at", call_sid, number),
        )


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _pass_prefix(number: int) -> str:
    return f"pass:{number}:"


def _pairs(fields: Mapping[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]


def _has_pass(fields: Mapping[str, str]) -> bool:
    return any(name.startswith("pass:") for name in fields)


def _present(fields: Mapping[str, Any], name: str) -> str:
    value = fields.get(name)
    if value is None:
        raise KeyError(f"no {name}")
    return value


def _optional_float(fields: Mapping[str, str], name: str, call_sid: str, number: int) -> float | None:
    value = fields.get(name)
    try:
        return None if value is None else float(value)
    except ValueError:
        log.warning("unreadable %s of %s pass %d, treated as none", name, call_sid, number)
        return None


def _read_decision(stored_json: str, call_sid: str, number: int) -> DispatchDecision | None:
    try:
        return decision_from_json(json.loads(stored_json))
    except (ValueError, TypeError) as exc:
        log.warning("unreadable decision for %s pass %d, treated as none: %s", call_sid, number, exc)
        return None


def _read_outcome(stored_json: str, call_sid: str, number: int) -> PassOutcome | None:
    try:
        return outcome_from_json(json.loads(stored_json))
    except (ValueError, TypeError) as exc:
        log.warning("unreadable outcome for %s pass %d, treated as none: %s", call_sid, number, exc)
        return None


def _version(text: str) -> tuple[int, ...]:
    numbers = []
    for part in text.split(".")[:2]:
        if not part.isdigit():
            return ()
        numbers.append(int(part))
    return tuple(numbers)


def _latest_opened(record: CallRecord, arm: str | None) -> float:
    return max(
        (p.triage_pass.opened_at for p in record.passes if arm is None or p.triage_pass.arm == arm),
        default=-math.inf,
    )


def _by_latest_in_arm(records: list[CallRecord], arm: str) -> list[CallRecord]:
    return sorted(records, key=lambda record: (-_latest_opened(record, arm), record.call_sid))


def _latest_in_arm(records: list[CallRecord], arm: str, since: float) -> list[CallRecord]:
    return [record for record in records if _latest_opened(record, arm) >= since]

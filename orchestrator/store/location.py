"""Which call store a server uses, from one setting (`ORCHESTRATOR_STORE`).

    ""                                   the SQLite file `calls.sqlite3` in the data folder (the default)
    path/to/calls.sqlite3                that SQLite file: one machine (processes on it may share it)
    redis://[:password@]host:6379/0      a Redis shared by every instance (also rediss:// and unix://);
                                         `?key_prefix=acme:` keeps deployments on one Redis apart
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.config import ENV_PREFIX, ConfigError
from orchestrator.store.interface import DEFAULT_OPERATION_TIMEOUT_S, CallStore
from orchestrator.store.sqlite_store import SqliteCallStore

if TYPE_CHECKING:
    from orchestrator.store.redis_store import RedisLocation

STORE_FILE = "calls.sqlite3"
STORE_VARIABLE = f"${ENV_PREFIX}STORE"
_REDIS_URL = re.compile(r"(redis|rediss|unix)://", re.IGNORECASE)
# A scheme followed by "://": a URL, never a file name (one-letter schemes are Windows drive letters).
_OTHER_URL = re.compile(r"([a-z][a-z0-9+.-]+)://", re.IGNORECASE)


def is_redis_location(location: str) -> bool:
    return _REDIS_URL.match(location) is not None


async def open_call_store(
    location: str,
    *,
    data_dir: Path,
    retention_seconds: float,
    operation_timeout_s: float = DEFAULT_OPERATION_TIMEOUT_S,
) -> CallStore:
    """The store `location` names (see the module doc), each of its operations bounded by
    `operation_timeout_s`. ConfigError (one line, blamed on $ORCHESTRATOR_STORE) when the location cannot
    be read; CallStoreError when the store it names cannot be opened or reached."""
    if is_redis_location(location):
        # Imported here: a server on SQLite (and the commands that only read SQLite) never loads coredis.
        from orchestrator.store.redis_store import RedisCallStore

        _check_redis_url(location)
        return await RedisCallStore.open(
            location, retention_seconds=retention_seconds, operation_timeout_s=operation_timeout_s
        )
    return await SqliteCallStore.open(sqlite_path(location, data_dir=data_dir), operation_timeout_s=operation_timeout_s)


def sqlite_path(location: str, *, data_dir: Path) -> Path:
    """The SQLite file of a location that is not a Redis URL; ConfigError for a URL of another kind."""
    other = _OTHER_URL.match(location)
    if other:
        raise ConfigError(
            STORE_VARIABLE, None,
            f"{other.group(1)}:// is not a store this server knows: use redis://, rediss://, unix:// or a SQLite file path",
        )
    return Path(location) if location.strip() else data_dir / STORE_FILE


def describe_store_location(location: str, *, data_dir: Path) -> str:
    """One line for the start-up announcement; a password in the location is masked."""
    if is_redis_location(location):
        parsed = _check_redis_url(location)
        return f"Redis at {parsed.shown} (key prefix {parsed.key_prefix}), shared by every instance using it"
    return f"SQLite file {sqlite_path(location, data_dir=data_dir)}"


def _check_redis_url(location: str) -> RedisLocation:
    from orchestrator.store.redis_store import parse_redis_url

    try:
        return parse_redis_url(location)
    except ValueError as exc:
        raise ConfigError(STORE_VARIABLE, None, str(exc)) from None

"""The call store: triage passes, decisions, outcomes, visited Studio nodes, call facts and shared settings.

`CallStore` is the interface; `open_call_store` opens the one `ORCHESTRATOR_STORE` names (SQLite or Redis).
"""
from orchestrator.store.interface import (
    DEFAULT_OPERATION_TIMEOUT_S,
    STORE_ERROR_KINDS,
    CallStore,
    CallStoreError,
    store_error_kind,
)
from orchestrator.store.location import (
    describe_store_location,
    is_redis_location,
    open_call_store,
    sqlite_path,
)
from orchestrator.store.records import (
    CallRecord,
    FactValue,
    PassOutcome,
    PassRecord,
    TriagePass,
    decision_to_json,
)

__all__ = [
    "DEFAULT_OPERATION_TIMEOUT_S",
    "STORE_ERROR_KINDS",
    "CallRecord",
    "CallStore",
    "CallStoreError",
    "FactValue",
    "PassOutcome",
    "PassRecord",
    "TriagePass",
    "decision_to_json",
    "describe_store_location",
    "is_redis_location",
    "open_call_store",
    "sqlite_path",
    "store_error_kind",
]

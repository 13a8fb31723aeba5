"""The live rollout: the store's shared setting "rollout", which overrides the config's `[rollout]`.

Every instance reads the same store on every call, so `orchestrator rollout set 25` (or the brake)
applies to the next call on every instance, without a restart. The setting's JSON (read raw by the
/ops page, keep the shape):

    {"percent": 5.0, "allow": ["+1…"], "deny": ["+1…"], "salt": "…",
     "brake": null | {"tripped_at": unix_s, "failure_rate": 0.4, "window_calls": 50,
                      "previous_percent": 5.0, "reason": "…"},
     "updated_at": unix_s, "updated_by": "cli"}

The arithmetic (arms, the brake's verdict) is `machines/rollout.py`. Writes are read-modify-write of
one setting, last write wins: two people changing it in the same second may lose one change.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import structlog

from machines import (
    Arm,
    ArmAssignment,
    ArmRule,
    BrakeReading,
    BrakeRule,
    FinishedPass,
    assign_arm,
    read_brake,
)
from orchestrator.config import RolloutSettings, e164_number
from orchestrator.store import CallRecord, CallStore

log = structlog.get_logger("orchestrator.rollout.live")

ROLLOUT_SETTING = "rollout"
# The brake reads at most this many recent calls (both arms) per finished AI pass: ~30 ms on SQLite.
MAX_BRAKE_SCAN_CALLS = 1000
# The trail note of a pass the server moved on because it was shutting down (`orchestrator/call/session.py`).
SHUTDOWN_NOTE = "server_shutdown"


class RolloutError(ValueError):
    """A rollout change that cannot be made (bad percentage, bad number). `str()` is one line."""


@dataclass(frozen=True, slots=True)
class BrakeTrip:
    tripped_at: float
    failure_rate: float
    window_calls: int  # AI passes the verdict was made on
    previous_percent: float
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "tripped_at": self.tripped_at,
            "failure_rate": self.failure_rate,
            "window_calls": self.window_calls,
            "previous_percent": self.previous_percent,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class RolloutSetting:
    percent: float
    allow: tuple[str, ...]
    deny: tuple[str, ...]
    salt: str
    brake: BrakeTrip | None
    updated_at: float | None  # None: never written (the config's values)
    updated_by: str | None
    source: Literal["config", "store"]

    @property
    def arm_rule(self) -> ArmRule:
        return ArmRule(self.percent, self.salt, frozenset(self.allow), frozenset(self.deny))

    def to_json(self) -> dict[str, Any]:
        return {
            "percent": self.percent,
            "allow": list(self.allow),
            "deny": list(self.deny),
            "salt": self.salt,
            "brake": None if self.brake is None else self.brake.to_json(),
            "updated_at": self.updated_at,
            "updated_by": self.updated_by,
        }


def setting_from_config(config: RolloutSettings) -> RolloutSetting:
    return RolloutSetting(
        percent=config.percent,
        allow=tuple(config.allow),
        deny=tuple(config.deny),
        salt=config.salt,
        brake=None,
        updated_at=None,
        updated_by=None,
        source="config",
    )


def setting_from_json(data: Mapping[str, Any]) -> RolloutSetting:
    """The stored setting; ValueError naming the first thing that is not as `to_json` writes it."""
    percent = _number(data, "percent")
    if not 0 <= percent <= 100:
        raise ValueError(f"'percent' must be between 0 and 100, got {percent!r}")
    salt = data.get("salt")
    if not isinstance(salt, str) or not salt:
        raise ValueError("'salt' must be non-empty text")
    brake = data.get("brake")
    if brake is not None and not isinstance(brake, Mapping):
        raise ValueError("'brake' must be null or an object")
    updated_by = data.get("updated_by")
    return RolloutSetting(
        percent=percent,
        allow=_numbers(data, "allow"),
        deny=_numbers(data, "deny"),
        salt=salt,
        brake=None if brake is None else _brake_from_json(brake),
        updated_at=_number(data, "updated_at"),
        updated_by=updated_by if isinstance(updated_by, str) else None,
        source="store",
    )


def _brake_from_json(data: Mapping[str, Any]) -> BrakeTrip:
    window = data.get("window_calls")
    if not isinstance(window, int) or isinstance(window, bool) or window < 0:
        raise ValueError("'brake.window_calls' must be a whole number")
    reason = data.get("reason")
    return BrakeTrip(
        tripped_at=_number(data, "tripped_at"),
        failure_rate=_number(data, "failure_rate"),
        window_calls=window,
        previous_percent=_number(data, "previous_percent"),
        reason=reason if isinstance(reason, str) else "",
    )


def _number(data: Mapping[str, Any], key: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key!r} must be a finite number, got {value!r}")
    return float(value)


def _numbers(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{key!r} must be a list of phone numbers")
    return tuple(e164_number(item) for item in value)


def check_percent(value: object) -> float:
    """A percentage from the CLI or a caller of `set_percent`; RolloutError when it is not 0..100."""
    try:
        percent = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise RolloutError(f"percent must be a number from 0 to 100, got {value!r}") from None
    if not (math.isfinite(percent) and 0 <= percent <= 100):
        raise RolloutError(f"percent must be a number from 0 to 100, got {value!r}")
    return percent


def finished_passes(records: Iterable[CallRecord], *, since: float) -> list[FinishedPass]:
    """The AI-arm passes opened at or after `since`, as the brake sees them."""
    found = []
    for record in records:
        for entry in record.passes:
            triage_pass = entry.triage_pass
            if triage_pass.arm != Arm.AI or triage_pass.opened_at < since:
                continue
            outcome = entry.outcome
            found.append(
                FinishedPass(
                    opened_at=triage_pass.opened_at,
                    decision_reason=None if entry.decision is None else str(entry.decision.reason),
                    outcome=None if outcome is None else outcome.outcome,
                    faults=0 if outcome is None else outcome.faults,
                    answered=entry.answered_route is not None,
                    shut_down=outcome is not None and any(SHUTDOWN_NOTE in note for note in outcome.notes),
                    routed_on_intent=entry.decision is not None and entry.decision.routed_on_intent,
                )
            )
    return found


class RolloutControl:
    """Reads and changes the live setting; assigns arms; pulls the brake."""

    def __init__(
        self,
        store: CallStore,
        config_rollout: RolloutSettings,
        clock: Callable[[], float] = time.time,
        *,
        region: str | None = None,  # how numbers written without "+" are read (the company's country)
    ) -> None:
        self.store = store
        self.config = config_rollout
        self.clock = clock
        self.region = region
        self.brake_rule = BrakeRule(
            window_calls=config_rollout.brake.window_calls,
            min_calls=config_rollout.brake.min_calls,
            max_failure_rate=config_rollout.brake.max_failure_rate,
            enabled=config_rollout.brake.enabled,
        )
        self._last_known = setting_from_config(config_rollout)
        self._brake_busy = False

    async def current(self) -> RolloutSetting:
        """The live setting: the store's, else the config's. On a store error, the last one read."""
        try:
            stored = await self.store.get_setting(ROLLOUT_SETTING)
        except Exception as error:
            log.error("cannot read the rollout setting: keeping the last known one", error=repr(error))
            return self._last_known
        if stored is None:
            setting = setting_from_config(self.config)
        else:
            try:
                setting = setting_from_json(stored)
            except ValueError as error:
                log.error("unreadable rollout setting in the store: using the config's", problem=str(error))
                setting = setting_from_config(self.config)
        self._last_known = setting
        return setting

    def assign(self, setting: RolloutSetting, caller: str | None, call_sid: str) -> ArmAssignment:
        return assign_arm(setting.arm_rule, caller, call_sid)

    async def set_percent(self, percent: float, by: str = "cli") -> RolloutSetting:
        """A person's choice: it also clears a tripped brake."""
        checked = check_percent(percent)
        return await self._write(lambda setting: replace(setting, percent=checked, brake=None), by)

    async def allow(self, number: str, by: str = "cli") -> RolloutSetting:
        """Always the AI for this number (and off the deny list)."""
        e164 = self.number(number)
        return await self._write(
            lambda s: replace(s, allow=_with(s.allow, e164), deny=_without(s.deny, e164)), by
        )

    async def deny(self, number: str, by: str = "cli") -> RolloutSetting:
        """Always the legacy path for this number (and off the allow list)."""
        e164 = self.number(number)
        return await self._write(
            lambda s: replace(s, deny=_with(s.deny, e164), allow=_without(s.allow, e164)), by
        )

    async def unlist(self, number: str, by: str = "cli") -> RolloutSetting:
        """Back to the percentage for this number."""
        e164 = self.number(number)
        return await self._write(lambda s: replace(s, allow=_without(s.allow, e164), deny=_without(s.deny, e164)), by)

    async def release_brake(self, by: str = "cli") -> RolloutSetting:
        """Back to the percentage before the brake; the brake then judges only calls from now on."""
        return await self._write(
            lambda s: s if s.brake is None else replace(s, percent=s.brake.previous_percent, brake=None), by
        )

    def number(self, text: str) -> str:
        try:
            return e164_number(text, self.region)
        except ValueError as error:
            raise RolloutError(f"{text!r}: {error}") from None

    async def check_brake(self) -> BrakeTrip | None:
        """Pull the brake if the AI arm fails too often; the trip when it was pulled now, else None.

        Called once per finished AI pass. It judges the AI passes opened since the setting last changed
        (a release or a new percentage starts afresh, so the failures that tripped it do not trip it
        again), among the recent calls of the AI arm (about two windows). One look at a time per instance: in a
        burst of finished calls, the passes that find it busy are judged by the next look."""
        if self._brake_busy:
            return None
        self._brake_busy = True
        try:
            return await self._check_brake()
        finally:
            self._brake_busy = False

    async def _check_brake(self) -> BrakeTrip | None:
        setting = await self.current()
        if not self.brake_rule.enabled or setting.brake is not None or setting.percent <= 0:
            return None
        since = setting.updated_at or 0.0
        # Twice the window: some passes are not counted (still running, or ended by a shutdown).
        limit = min(2 * self.brake_rule.window_calls + 1, MAX_BRAKE_SCAN_CALLS)
        records = await self.store.calls_since(since, limit=limit, arm=Arm.AI)
        now = float(self.clock())
        reading = read_brake(self.brake_rule, finished_passes(records, since=since), now)
        if not reading.trips:
            return None
        trip = BrakeTrip(
            tripped_at=now,
            failure_rate=round(reading.failure_rate, 4),
            window_calls=reading.calls,
            previous_percent=setting.percent,
            reason=_brake_reason(self.brake_rule, reading),
        )
        await self.store.put_setting(
            ROLLOUT_SETTING, replace(setting, percent=0.0, brake=trip, updated_at=now, updated_by="brake").to_json()
        )
        log.critical(
            "ROLLOUT BRAKE: the AI arm fails too often; every caller now goes to the legacy path",
            failure_rate=trip.failure_rate,
            failures=reading.failures,
            window_calls=reading.calls,
            max_failure_rate=self.brake_rule.max_failure_rate,
            previous_percent=setting.percent,
        )
        return trip

    async def _write(self, change: Callable[[RolloutSetting], RolloutSetting], by: str) -> RolloutSetting:
        current = await self._read_for_write()
        now = float(self.clock())
        changed = replace(change(current), updated_at=now, updated_by=by, source="store")
        await self.store.put_setting(ROLLOUT_SETTING, changed.to_json())
        self._last_known = changed
        return changed

    async def _read_for_write(self) -> RolloutSetting:
        # Unlike `current`, a store that cannot be read is an error here: a change must not be made
        # over a setting we could not see.
        stored = await self.store.get_setting(ROLLOUT_SETTING)
        if stored is None:
            return setting_from_config(self.config)
        try:
            return setting_from_json(stored)
        except ValueError as error:
            log.warning("unreadable rollout setting replaced, starting from the config's", problem=str(error))
            return setting_from_config(self.config)


def _brake_reason(rule: BrakeRule, reading: BrakeReading) -> str:
    return (
        f"{reading.failures} of the AI arm's last {reading.calls} calls failed ({reading.failure_rate:.0%},"
        f" above the {rule.max_failure_rate:.0%} limit)"
    )


def _with(numbers: tuple[str, ...], number: str) -> tuple[str, ...]:
    return numbers if number in numbers else (*numbers, number)


def _without(numbers: tuple[str, ...], number: str) -> tuple[str, ...]:
    return tuple(item for item in numbers if item != number)

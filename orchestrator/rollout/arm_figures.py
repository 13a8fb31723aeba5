"""Figures per rollout arm, from call records: what the AI front desk does compared with the legacy path.

Pure: call records in, figures out (no store, no clock; `now` is given). Used by `orchestrator report`
and the /ops page.

Each call falls in exactly one category, read from its *last* triage pass (a call Studio sent back to us
is judged by where it finally went), checked in this order:

    legacy            its arm is `legacy`: the old path answered it, the AI never triaged it
    in_progress       its last pass has no outcome yet and opened less than UNSETTLED_GRACE_S (120 s) ago
    abandoned         the caller hung up before a decision (outcome `abandoned`, no decision, no fault)
    fallback          the AI could not do its job: reason `engine_failed` or `budget_expired` on a route
                      that no trusted intent chose (`machines.decision_failed`); or no
                      decision and an internal error ended the pass; or no decision and no outcome long
                      after it opened (its session never ran or died). The brake's reading of a failed pass
                      (`machines/rollout.py`), so the report and the brake agree.
    resolved_by_ai    a `resolve` route: the AI ended the call itself, no person involved
    handed_to_studio  a `studio` route
    handed_to_flex    a `flex` route (Flex, via <Enqueue>)
    handed_to_number  a `sip` route (a number or PBX)
    voicemail         a `voicemail` route

Guarded decisions (low confidence, missing fields, re-entry refused, unsupported language…) count by
where they sent the call: they are the design working, not a failure.

Rates are shares of the *triaged* calls (every AI-arm call except those still in progress):
containment = resolved_by_ai / triaged; transfer rate = (studio + flex + number) / triaged. They are
None for an arm with no triaged call (the legacy arm). AHT is the mean `handle_time_s` fact (Flex task
accepted → completed, after-call work included), CSAT the mean `csat` fact (1–5); both come from facts,
so they exist for legacy calls too. Engine cost = engine seconds of every pass / 60 × price per minute.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from machines import ABANDONED, UNSETTLED_GRACE_S, Arm, RouteKind, decision_failed
from orchestrator.store import CallRecord, PassRecord

# Realtime's price per minute of connected audio is the operator's to set; this is only the default.
DEFAULT_PRICE_PER_MINUTE = 0.024

CATEGORIES = (
    "resolved_by_ai",
    "handed_to_studio",
    "handed_to_flex",
    "handed_to_number",
    "voicemail",
    "abandoned",
    "fallback",
    "legacy",
    "in_progress",
)
CATEGORY_LABELS = {
    "resolved_by_ai": "resolved by AI",
    "handed_to_studio": "handed to Studio",
    "handed_to_flex": "handed to Flex",
    "handed_to_number": "handed to a number",
    "voicemail": "voicemail",
    "abandoned": "abandoned",
    "fallback": "fallback",
    "legacy": "legacy path",
    "in_progress": "in progress",
}
_CATEGORY_OF_ROUTE_KIND = {
    RouteKind.RESOLVE: "resolved_by_ai",
    RouteKind.STUDIO: "handed_to_studio",
    RouteKind.FLEX: "handed_to_flex",
    RouteKind.SIP: "handed_to_number",
    RouteKind.VOICEMAIL: "voicemail",
}
_TRANSFERS = ("handed_to_studio", "handed_to_flex", "handed_to_number")


@dataclass(frozen=True, slots=True)
class ArmFigures:
    arm: str
    calls: int
    categories: Mapping[str, int]  # every name of CATEGORIES, 0 when none
    triaged: int  # calls the AI triaged to an end: the denominator of the rates
    containment: float | None
    transfer_rate: float | None
    aht_s: float | None  # mean handle time of the calls Flex handled
    handled: int  # calls with a handle time
    csat_mean: float | None
    csat_count: int
    engine_seconds: float
    engine_cost: float
    decision_s_mean: float | None  # mean time to decision of the passes that made one
    queue_abandoned: int  # Flex tasks canceled (the caller hung up in the queue)
    price_per_minute: float = field(default=DEFAULT_PRICE_PER_MINUTE)

    @property
    def fallbacks(self) -> int:
        return self.categories["fallback"]

    @property
    def abandoned(self) -> int:
        return self.categories["abandoned"]

    @property
    def voicemail(self) -> int:
        return self.categories["voicemail"]

    def to_json(self) -> dict:
        return {
            "arm": self.arm,
            "calls": self.calls,
            "categories": dict(self.categories),
            "triaged": self.triaged,
            "containment": self.containment,
            "transfer_rate": self.transfer_rate,
            "aht_s": self.aht_s,
            "handled": self.handled,
            "csat_mean": self.csat_mean,
            "csat_count": self.csat_count,
            "engine_seconds": self.engine_seconds,
            "engine_minutes": self.engine_seconds / 60,
            "engine_cost": self.engine_cost,
            "price_per_minute": self.price_per_minute,
            "decision_s_mean": self.decision_s_mean,
            "queue_abandoned": self.queue_abandoned,
            "fallbacks": self.fallbacks,
            "abandoned": self.abandoned,
            "voicemail": self.voicemail,
        }


def call_arm(record: CallRecord) -> str | None:
    """The arm the call was assigned when it first arrived; None for a record with no pass."""
    return record.passes[0].triage_pass.arm if record.passes else None


def call_category(record: CallRecord, *, now: float, stale_after_s: float = UNSETTLED_GRACE_S) -> str | None:
    """One of CATEGORIES (see the module's docstring); None for a record with no pass."""
    if not record.passes:
        return None
    if call_arm(record) == Arm.LEGACY:
        return "legacy"
    return _pass_category(record.passes[-1], now=now, stale_after_s=stale_after_s)


def _pass_category(last: PassRecord, *, now: float, stale_after_s: float) -> str:
    decision = last.decision
    if decision is None:
        if last.outcome is None:
            return "in_progress" if now - last.triage_pass.opened_at < stale_after_s else "fallback"
        if last.outcome.outcome == ABANDONED and last.outcome.faults == 0:
            return "abandoned"
        return "fallback"
    if decision_failed(decision.reason, routed_on_intent=decision.routed_on_intent):
        return "fallback"
    # A route kind this code does not know is still a call handed on: counted as a transfer to a number.
    return _CATEGORY_OF_ROUTE_KIND.get(decision.route_kind, "handed_to_number")


def arm_figures(
    records: Iterable[CallRecord],
    *,
    now: float,
    price_per_minute: float = DEFAULT_PRICE_PER_MINUTE,
    stale_after_s: float = UNSETTLED_GRACE_S,
) -> list[ArmFigures]:
    """Figures per arm: `ai` first, `legacy` next, any other arm after them by name."""
    if isinstance(price_per_minute, bool) or not (
        isinstance(price_per_minute, (int, float)) and math.isfinite(price_per_minute) and price_per_minute >= 0
    ):
        raise ValueError(f"price per minute must be a finite number of at least 0, got {price_per_minute!r}")
    by_arm: dict[str, list[CallRecord]] = {}
    for record in records:
        arm = call_arm(record)
        if arm is not None:
            by_arm.setdefault(arm, []).append(record)
    order = sorted(by_arm, key=lambda arm: (arm != Arm.AI, arm != Arm.LEGACY, arm))
    return [
        _figures_of(arm, by_arm[arm], now=now, price_per_minute=price_per_minute, stale_after_s=stale_after_s)
        for arm in order
    ]


def _figures_of(
    arm: str, records: list[CallRecord], *, now: float, price_per_minute: float, stale_after_s: float
) -> ArmFigures:
    categories = dict.fromkeys(CATEGORIES, 0)
    handle_times: list[float] = []
    scores: list[int] = []
    decision_times: list[float] = []
    engine_seconds = 0.0
    queue_abandoned = 0
    for record in records:
        category = call_category(record, now=now, stale_after_s=stale_after_s)
        assert category is not None  # grouped by arm, so it has a pass
        categories[category] += 1
        handle_time = _duration(record.facts.get("handle_time_s"))
        if handle_time is not None:
            handle_times.append(handle_time)
        score = csat_score(record.facts.get("csat"))
        if score is not None:
            scores.append(score)
        if record.facts.get("flex_canceled") is True:
            queue_abandoned += 1
        for triage_pass in record.passes:
            if triage_pass.outcome is not None:
                engine_seconds += _duration(triage_pass.outcome.engine_seconds) or 0.0
            if triage_pass.decision is not None:
                decided_after = _duration(triage_pass.decision.decided_after_s)
                if decided_after is not None:
                    decision_times.append(decided_after)
    triaged = len(records) - categories["legacy"] - categories["in_progress"]
    return ArmFigures(
        arm=arm,
        calls=len(records),
        categories=categories,
        triaged=triaged,
        containment=_share(categories["resolved_by_ai"], triaged),
        transfer_rate=_share(sum(categories[name] for name in _TRANSFERS), triaged),
        aht_s=_mean(handle_times),
        handled=len(handle_times),
        csat_mean=_mean(scores),
        csat_count=len(scores),
        engine_seconds=engine_seconds,
        engine_cost=engine_seconds / 60 * price_per_minute,
        decision_s_mean=_mean(decision_times),
        queue_abandoned=queue_abandoned,
        price_per_minute=float(price_per_minute),
    )


def csat_score(value: object) -> int | None:
    """A CSAT fact as a score 1–5, or None for anything else (facts are plain scalars anyone could write)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 1 <= value <= 5 else None


def _duration(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _mean(values: list[float] | list[int]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass(frozen=True, slots=True)
class RolloutBrake:
    tripped_at: float | None
    failure_rate: float | None
    window_calls: int | None
    previous_percent: float | None
    reason: str


@dataclass(frozen=True, slots=True)
class RolloutView:
    """The shared `rollout` setting as the report and /ops show it; odd values read as unknown (None)."""

    percent: float | None  # share of callers sent to the AI, 0–100
    allow: int  # callers always sent to the AI
    deny: int  # callers never sent to it
    brake: RolloutBrake | None  # set when the brake tripped
    updated_at: float | None
    updated_by: str | None

    def to_json(self) -> dict:
        brake = self.brake
        return {
            "percent": self.percent,
            "allow": self.allow,
            "deny": self.deny,
            "brake": None if brake is None else {
                "tripped_at": brake.tripped_at,
                "failure_rate": brake.failure_rate,
                "window_calls": brake.window_calls,
                "previous_percent": brake.previous_percent,
                "reason": brake.reason,
            },
            "updated_at": self.updated_at,
            "updated_by": self.updated_by,
        }


def rollout_view(setting: Mapping[str, object] | None) -> RolloutView | None:
    """None when the setting was never written."""
    if not isinstance(setting, Mapping):
        return None
    brake = setting.get("brake")
    return RolloutView(
        percent=_number_or_none(setting.get("percent")),
        allow=_count_of(setting.get("allow")),
        deny=_count_of(setting.get("deny")),
        brake=None if not isinstance(brake, Mapping) else RolloutBrake(
            tripped_at=_number_or_none(brake.get("tripped_at")),
            failure_rate=_number_or_none(brake.get("failure_rate")),
            window_calls=_whole_or_none(brake.get("window_calls")),
            previous_percent=_number_or_none(brake.get("previous_percent")),
            reason=str(brake.get("reason") or "")[:200],
        ),
        updated_at=_number_or_none(setting.get("updated_at")),
        updated_by=str(setting["updated_by"])[:100] if setting.get("updated_by") else None,
    )


def _number_or_none(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _whole_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _count_of(value: object) -> int:
    return len(value) if isinstance(value, (list, tuple)) else 0

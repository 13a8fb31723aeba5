"""Figures per arm from call records: one category per call, rates over triaged calls, AHT, CSAT, cost."""
from __future__ import annotations

import math

import pytest

from machines.decision import DecisionReason, DispatchDecision
from orchestrator.rollout.arm_figures import CATEGORIES, arm_figures, call_category, csat_score, rollout_view
from orchestrator.store.records import CallRecord, PassOutcome, PassRecord, TriagePass

NOW = 1_800_000_000.0


def a_pass(
    number: int = 1,
    *,
    arm: str = "ai",
    kind: str | None = "flex",
    reason: DecisionReason = DecisionReason.ACCEPTED,
    outcome: str | None = None,
    faults: int = 0,
    engine_seconds: float = 0.0,
    decided_after_s: float = 4.0,
    opened_ago_s: float = 3600.0,
    finished: bool = True,
) -> PassRecord:
    triage_pass = TriagePass("CA" + "1" * 32, number, "token", "+15551230000", "+15557650000", "AC" + "0" * 32,
                             None, arm, NOW - opened_ago_s)
    decision = None if kind is None else DispatchDecision(
        route=f"{kind}_route", route_kind=kind, reason=reason, decided_after_s=decided_after_s
    )
    if not finished:
        return PassRecord(triage_pass, decision, None, None, None)
    pass_outcome = PassOutcome(outcome or (kind or "abandoned"), ("greeting", "ended"), faults,
                               engine_seconds=engine_seconds)
    return PassRecord(triage_pass, decision, pass_outcome, NOW - opened_ago_s + 30, None)


def a_call(*passes: PassRecord, sid: str = "CA" + "1" * 32, **facts) -> CallRecord:
    return CallRecord(sid, tuple(passes), frozenset(), facts)


@pytest.mark.parametrize(
    ("record", "category"),
    [
        (a_call(a_pass(kind="resolve")), "resolved_by_ai"),
        (a_call(a_pass(kind="studio")), "handed_to_studio"),
        (a_call(a_pass(kind="flex")), "handed_to_flex"),
        (a_call(a_pass(kind="sip")), "handed_to_number"),
        (a_call(a_pass(kind="voicemail")), "voicemail"),
        (a_call(a_pass(kind=None, outcome="abandoned")), "abandoned"),
        # an internal error that ended the pass before a decision is the AI failing, not the caller leaving
        (a_call(a_pass(kind=None, outcome="abandoned", faults=1)), "fallback"),
        (a_call(a_pass(kind="voicemail", reason=DecisionReason.BUDGET_EXPIRED)), "fallback"),
        (a_call(a_pass(kind="flex", reason=DecisionReason.ENGINE_FAILED)), "fallback"),
        # a guard sending the call to a person is the design working
        (a_call(a_pass(kind="flex", reason=DecisionReason.LOW_CONFIDENCE)), "handed_to_flex"),
        (a_call(a_pass(kind=None, finished=False, opened_ago_s=10)), "in_progress"),
        (a_call(a_pass(kind=None, finished=False, opened_ago_s=3600)), "fallback"),  # its session died
        (a_call(a_pass(arm="legacy", kind=None, outcome="legacy")), "legacy"),
        # judged by the last pass: Studio sent the call back and the AI resolved it
        (a_call(a_pass(1, kind="studio"), a_pass(2, kind="resolve")), "resolved_by_ai"),
    ],
)
def test_each_call_falls_in_one_category(record, category):
    assert call_category(record, now=NOW) == category


def test_a_record_with_no_pass_has_no_category_and_is_left_out():
    empty = a_call()
    assert call_category(empty, now=NOW) is None
    assert arm_figures([empty], now=NOW) == []


def test_figures_per_arm():
    records = [
        a_call(a_pass(kind="resolve", engine_seconds=60, decided_after_s=2), csat=5),
        a_call(a_pass(kind="resolve", engine_seconds=30, decided_after_s=4), csat=4),
        a_call(a_pass(kind="flex", engine_seconds=90, decided_after_s=6), handle_time_s=300.0, csat=2),
        a_call(a_pass(kind="studio", engine_seconds=0)),
        a_call(a_pass(kind=None, outcome="abandoned", engine_seconds=12)),
        a_call(a_pass(kind=None, finished=False, opened_ago_s=5)),  # live: not in the rates
        a_call(a_pass(arm="legacy", kind=None, outcome="legacy"), handle_time_s=200, csat=3, flex_canceled=True),
        a_call(a_pass(arm="legacy", kind=None, outcome="legacy"), handle_time_s=400),
    ]
    ai, legacy = arm_figures(records, now=NOW, price_per_minute=0.06)

    assert ai.arm == "ai" and ai.calls == 6 and ai.triaged == 5
    assert ai.categories["resolved_by_ai"] == 2 and ai.categories["in_progress"] == 1
    assert ai.containment == pytest.approx(2 / 5)
    assert ai.transfer_rate == pytest.approx(2 / 5)  # Flex and Studio
    assert ai.abandoned == 1 and ai.fallbacks == 0 and ai.voicemail == 0
    assert ai.aht_s == 300.0 and ai.handled == 1
    assert ai.csat_mean == pytest.approx(11 / 3) and ai.csat_count == 3
    assert ai.engine_seconds == 192 and ai.engine_cost == pytest.approx(192 / 60 * 0.06)
    assert ai.decision_s_mean == pytest.approx(4.0)
    assert sum(ai.categories.values()) == ai.calls and set(ai.categories) == set(CATEGORIES)

    assert legacy.arm == "legacy" and legacy.calls == 2 and legacy.categories["legacy"] == 2
    assert legacy.triaged == 0 and legacy.containment is None and legacy.transfer_rate is None
    assert legacy.aht_s == 300.0 and legacy.csat_mean == 3.0 and legacy.queue_abandoned == 1
    assert legacy.engine_cost == 0


def test_arms_are_ordered_ai_legacy_then_by_name():
    records = [a_call(a_pass(arm=arm)) for arm in ("zeta", "legacy", "beta", "ai")]
    assert [figures.arm for figures in arm_figures(records, now=NOW)] == ["ai", "legacy", "beta", "zeta"]


def test_odd_facts_are_left_out_of_the_means():
    records = [
        a_call(a_pass(), handle_time_s="300", csat=True),
        a_call(a_pass(), handle_time_s=-5, csat=6),
        a_call(a_pass(), handle_time_s=float("nan"), csat=4.5),
        a_call(a_pass(), handle_time_s=120, csat=1),
    ]
    (ai,) = arm_figures(records, now=NOW)
    assert ai.aht_s == 120 and ai.handled == 1
    assert ai.csat_mean == 1 and ai.csat_count == 1


@pytest.mark.parametrize("price", [-0.1, math.inf, math.nan, True, "0.02"])
def test_a_bad_price_is_refused(price):
    with pytest.raises(ValueError, match="price per minute"):
        arm_figures([], now=NOW, price_per_minute=price)


def test_csat_score_accepts_whole_numbers_one_to_five_only():
    assert [csat_score(value) for value in (1, 5, 0, 6, 3.0, "3", None, False)] == [1, 5, None, None, None, None,
                                                                                   None, None]


def test_rollout_view_reads_the_setting_defensively():
    assert rollout_view(None) is None
    view = rollout_view({
        "percent": 25.0, "allow": ["+15551230000"], "deny": [], "salt": "s",
        "brake": {"tripped_at": NOW, "failure_rate": 0.4, "window_calls": 50, "previous_percent": 25.0,
                  "reason": "too many fallbacks"},
        "updated_at": NOW, "updated_by": "brake",
    })
    assert view.percent == 25.0 and view.allow == 1 and view.deny == 0
    assert view.brake.tripped_at == NOW and view.brake.window_calls == 50 and view.brake.reason == "too many fallbacks"
    odd = rollout_view({"percent": "lots", "allow": "x", "brake": "yes", "updated_by": 7})
    assert odd.percent is None and odd.allow == 0 and odd.brake is None and odd.updated_by == "7"

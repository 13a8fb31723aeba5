"""A small policy and a controllable clock shared by the machine tests."""
from __future__ import annotations

from machines.policy import CallHistory, RouteRule, TriagePolicy

ENTRY_NODE = "FW0/ai_triage"
VISITED_NODE = "FW0/schedule_visit"

POLICY = TriagePolicy(
    intents={
        "emergency": "emergency_desk",
        "schedule": "schedule_visit",
        "billing": "billing_desk",
        "opening_hours": "hours",
        "survey": "survey_node",
        "back_to_menu": "main_menu",
        "gas_smell": "gas_advice",  # urgent, and its own route hangs up
        "flood": "flood_node",  # urgent, routed to a Studio node: a failure goes to a person
        "callback": "callback_desk",  # a person's route with hard and soft fields
        "quote": "quote_node",  # a Studio route with hard and soft fields
        "leave_message": "voicemail",
    },
    routes={
        "emergency_desk": RouteRule("emergency_desk", "flex", frozenset({"caller_name", "callback_number"})),
        "schedule_visit": RouteRule("schedule_visit", "studio", frozenset({"caller_name"}), studio_node=VISITED_NODE),
        "billing_desk": RouteRule("billing_desk", "flex"),
        "hours": RouteRule("hours", "resolve"),
        "survey_node": RouteRule("survey_node", "studio", studio_node="FW0/survey"),
        "main_menu": RouteRule("main_menu", "studio", studio_node=ENTRY_NODE),
        "sales_line": RouteRule("sales_line", "sip"),
        "voicemail": RouteRule("voicemail", "voicemail"),
        "front_desk": RouteRule("front_desk", "flex"),
        "gas_advice": RouteRule("gas_advice", "resolve"),
        "flood_node": RouteRule("flood_node", "studio", frozenset({"address"}), studio_node="FW0/flood"),
        "callback_desk": RouteRule(
            "callback_desk", "flex", frozenset({"caller_name"}), wanted_fields=frozenset({"callback_number", "address"})
        ),
        "quote_node": RouteRule(
            "quote_node", "studio", frozenset({"address"}), studio_node="FW0/quote",
            wanted_fields=frozenset({"preferred_date"}),
        ),
    },
    fallback_route="voicemail",
    human_route="front_desk",
    min_confidence=0.6,
    max_clarifications=2,
    budget_s=20.0,
    handoff_line_timeout_s=8.0,
    urgent_intents=frozenset({"emergency", "gas_smell", "flood"}),
    keys={"1": "emergency", "2": "schedule", "3": "billing", "4": "callback", "9": "gas_smell", "0": "leave_message"},
    caller_id_field="callback_number",  # a hard field of emergency_desk, a soft one of callback_desk
    keyable_fields=frozenset({"callback_number", "preferred_date"}),  # typed on the keypad when asked
    read_back_fields=frozenset({"callback_number"}),
    keypad_timeout_s=5.0,
)

HISTORY = CallHistory(entry_node=ENTRY_NODE, visited_nodes=frozenset({VISITED_NODE}))


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

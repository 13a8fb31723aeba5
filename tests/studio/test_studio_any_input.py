"""Any input at all is imported (adding no format problem, keeping every widget) or refused with one line."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.studio import StudioImportError, import_flow
from tests.studio.menu_shapes import taxi_flow
from tests.studio.studio_flows import (
    EVENTS_BY_TYPE,
    PUBLIC_URL,
    WORKFLOW_SID,
    gather,
    menu_flow,
    states_by_name,
    widget_format_problems,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
widget_names = st.sampled_from(["Trigger", "menu", "by_speech", "desk", "bye", "ai_front_desk", "a b", ""])
widget_types = st.sampled_from([*EVENTS_BY_TYPE, "capture-payments"])
events = st.sampled_from(sorted({event for events in EVENTS_BY_TYPE.values() for event in events}))
inputs = st.sampled_from(["{{widgets.menu.SpeechResult}}", "{{ widgets.menu.Digits }}", "{{trigger.call.From}}", "x"])
conditions = st.fixed_dictionaries(
    {
        "friendly_name": st.text(max_size=8),
        "type": st.sampled_from(["equal_to", "matches_any_of", "regex", "is_blank"]),
        "arguments": st.just(["{{widgets.menu.SpeechResult}}"]),
    },
    optional={"value": json_values},
)
transitions = st.fixed_dictionaries(
    {"event": events}, optional={"next": widget_names | st.none(), "conditions": st.lists(conditions, max_size=2)}
)
properties = st.fixed_dictionaries(
    {},
    optional={
        "input": inputs,
        "workflow": st.sampled_from([WORKFLOW_SID, "${WORKFLOW_SID}", "WW1"]) | json_values,
        "priority": json_values,
        "timeout": json_values,
        "attributes": st.sampled_from(['{"a": 1}', '{"type": "x"}', "{"]) | json_values,
        "noun": st.sampled_from(["sip", "number"]),
        "to": st.sampled_from(["sip:a@b", "+1555"]) | json_values,
        "max_length": json_values,
        "say": st.sampled_from(["Press 1 for sales.", "For help, press 2"]) | json_values,
        "offset": json_values,
        "workflow_sid": json_values,
        "queue_name": json_values,
        "task_attributes": json_values,
    },
)
flow_states = st.fixed_dictionaries(
    {"name": widget_names, "type": widget_types, "transitions": st.lists(transitions, max_size=4)},
    optional={"properties": properties},
)
flows = st.fixed_dictionaries({"states": st.lists(flow_states, max_size=7)}, optional={"initial_state": widget_names})


def import_or_refuse(text: str) -> None:
    try:
        result = import_flow(text, source="fuzz.json", public_url=PUBLIC_URL)
    except StudioImportError as error:
        assert str(error) and "\n" not in str(error)
    else:
        # The patch adds no format problem of its own (a damaged flow keeps the ones it had).
        original = json.loads(text)
        problems_before = set(widget_format_problems(original))
        assert set(widget_format_problems(result.patched_flow)) <= problems_before
        after = states_by_name(result.patched_flow)
        for before in original["states"]:
            if before["name"] not in result.changed_widgets:
                assert json.dumps(after[before["name"]]) == json.dumps(before)
        assert len(result.patched_flow["states"]) == len(original["states"]) + len(result.added_widgets)
        assert result.report.mapped and result.routing_toml


def damage(flow: dict[str, Any], data: st.DataObject) -> None:
    """Up to four random changes to a flow's widgets: a property, a transition, a name, a type, a condition."""
    for _ in range(data.draw(st.integers(1, 4))):
        target = data.draw(st.sampled_from(flow["states"]))
        where = data.draw(st.sampled_from(["properties", "transitions", "name", "type", "condition"]))
        if where == "properties":
            target["properties"][data.draw(st.sampled_from(sorted(properties.wrapped_strategy.optional)))] = data.draw(
                json_values
            )
        elif where == "transitions" and target["transitions"]:
            transition = data.draw(st.sampled_from(target["transitions"]))
            transition[data.draw(st.sampled_from(["next", "event"]))] = data.draw(widget_names | json_values)
        elif where == "condition" and any("conditions" in t for t in target["transitions"]):
            condition = next(t for t in target["transitions"] if "conditions" in t)["conditions"][0]
            condition[data.draw(st.sampled_from(["value", "type", "friendly_name", "arguments"]))] = data.draw(
                json_values
            )
        elif where in ("name", "type"):
            target[where] = data.draw(widget_names if where == "name" else widget_types)


@settings(max_examples=150)
@given(json_values)
def test_any_json_is_imported_or_refused_with_a_reason(value: Any) -> None:
    import_or_refuse(json.dumps(value))


@settings(max_examples=300)
@given(flows)
def test_any_flow_shaped_json_is_imported_or_refused_with_a_reason(flow: dict[str, Any]) -> None:
    import_or_refuse(json.dumps(flow))


@settings(max_examples=300)
@given(st.data())
def test_a_working_menu_with_random_damage_is_imported_or_refused_with_a_reason(data: st.DataObject) -> None:
    # Random flows rarely get as far as a menu; damaging one that imports reaches every mapping step.
    flow = menu_flow(
        menu=gather(
            "menu",
            speech="by_speech",
            keypress="by_speech",
            timeout="goodbye",
            say="For sales, press 1. Press 2 for support.",
        )
    )
    damage(flow, data)
    import_or_refuse(json.dumps(flow))


@settings(max_examples=200)
@given(st.data())
def test_the_taxi_menu_with_random_damage_is_imported_or_refused_with_a_reason(data: st.DataObject) -> None:
    # Damage after the menu reaches the pairing, the capture fields, the skipped paths and the reading copies.
    flow = taxi_flow()
    damage(flow, data)
    import_or_refuse(json.dumps(flow))


@settings(max_examples=100)
@given(st.text(max_size=40))
def test_any_text_is_imported_or_refused_with_a_reason(text: str) -> None:
    import_or_refuse(text)

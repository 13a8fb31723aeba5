"""Studio executions exports read as a call corpus: each accepted shape, DTMF and speech, the widget taken
after the Split, and bad entries reported rather than raised."""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.replay.corpus import CorpusError, CorpusTurn, caller_text
from orchestrator.studio.executions import read_studio_executions
from tests.studio.menu_shapes import taxi_execution, taxi_flow


def execution(
    sid: str = "FN0001",
    *,
    speech: str | None = "my pipe burst",
    digits: str | int | None = None,
    gather: str = "gather_main",
    steps: list[dict[str, Any]] | None = None,
    call_sid: str | None = "CA0001",
    caller: str | None = "+15005550006",
    confidence: str | None = "0.91",
) -> dict[str, Any]:
    answer: dict[str, Any] = {"CallSid": "CA-from-gather"}
    if speech is not None:
        answer["SpeechResult"] = speech
    if digits is not None:
        answer["Digits"] = digits
    if confidence is not None:
        answer["Confidence"] = confidence
    call = {key: value for key, value in (("CallSid", call_sid), ("From", caller)) if value is not None}
    if steps is None:
        steps = path_steps("Trigger", gather, "split_main", "send_to_emergency")
    return {
        "sid": sid,
        "flow_sid": "FW0001",
        "context": {"trigger": {"call": call}, "widgets": {"say_welcome": {}, gather: answer}},
        "steps": steps,
    }


def path_steps(*widgets: str, events: list[str] | None = None) -> list[dict[str, Any]]:
    """Steps along a path of widgets, in the order they happened."""
    events = events or ["incomingCall"] + ["next"] * (len(widgets) - 2)
    return [
        {"transitioned_from": source, "transitioned_to": target, "name": event}
        for source, target, event in zip(widgets, widgets[1:], events, strict=False)
    ]


def write_json(tmp_path: Path, data: Any, name: str = "executions.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_lines(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "executions.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- The shapes accepted -------------------------------------------------------------------------

def test_a_speech_answer_becomes_one_caller_turn_routed_to_the_widget_after_the_split(tmp_path: Path) -> None:
    path = write_json(tmp_path, [execution()])
    corpus = read_studio_executions(path)
    assert corpus.problems == []
    assert corpus.path == path
    [call] = corpus.calls
    assert call.call_id == "CA0001"
    assert call.turns == (CorpusTurn("caller", "my pipe burst", "my pipe burst", None, None),)
    assert call.expected_route == "send_to_emergency"
    assert call.expected_intent is None  # routes are mapped to intents by whoever has the config
    assert call.meta == {
        "execution_sid": "FN0001", "gather": "gather_main", "input": "speech",
        "caller": "+15005550006", "flow_sid": "FW0001", "asr_confidence": 0.91,
    }
    assert call.line_number == 1
    assert caller_text(call) == "my pipe burst"


@pytest.mark.parametrize("shape", ["list", "rest_page", "single_object", "json_lines"])
def test_every_file_shape_gives_the_same_calls(tmp_path: Path, shape: str) -> None:
    executions = [execution("FN0001", call_sid="CA1"), execution("FN0002", call_sid="CA2", speech="billing")]
    if shape == "list":
        path = write_json(tmp_path, executions)
    elif shape == "rest_page":
        path = write_json(tmp_path, {"executions": executions, "meta": {"page": 0, "next_page_url": None}})
    elif shape == "single_object":
        path = write_json(tmp_path, executions[0])
        executions = executions[:1]
    else:
        path = write_lines(tmp_path, *(json.dumps(item) for item in executions))
    corpus = read_studio_executions(path)
    assert corpus.problems == []
    assert [(c.call_id, c.turns[0].text, c.line_number) for c in corpus.calls] == [
        (item["context"]["trigger"]["call"]["CallSid"], item["context"]["widgets"]["gather_main"]["SpeechResult"], n)
        for n, item in enumerate(executions, start=1)
    ]


def test_context_as_a_string_or_as_the_context_resource_and_camel_case_keys(tmp_path: Path) -> None:
    as_string = execution("FN0001", call_sid="CA1")
    as_string["context"] = json.dumps(as_string["context"])
    resource = execution("FN0002", call_sid="CA2")
    resource["context"] = {"account_sid": "AC1", "execution_sid": "FN0002", "context": resource["context"]}
    camel = execution("FN0003", call_sid="CA3")
    camel["executionSid"] = camel.pop("sid")
    camel["steps"] = {"steps": [  # a Steps list page, as the CLI would print it
        {"transitionedFrom": step["transitioned_from"], "transitionedTo": step["transitioned_to"]}
        for step in camel["steps"]
    ]}
    corpus = read_studio_executions(write_json(tmp_path, [as_string, resource, camel]))
    assert corpus.problems == []
    assert [(c.call_id, c.meta["execution_sid"], c.expected_route) for c in corpus.calls] == [
        ("CA1", "FN0001", "send_to_emergency"),
        ("CA2", "FN0002", "send_to_emergency"),
        ("CA3", "FN0003", "send_to_emergency"),
    ]


# --- DTMF and speech -----------------------------------------------------------------------------

def test_digits_are_kept_as_the_turn_text_and_marked_dtmf(tmp_path: Path) -> None:
    keys = execution("FN0001", speech=None, digits="2", confidence=None)
    number = execution("FN0002", speech="", digits=3)  # Studio may hold digits as a number
    corpus = read_studio_executions(write_json(tmp_path, [keys, number]))
    assert corpus.problems == []
    assert [(c.turns[0].text, c.meta["input"]) for c in corpus.calls] == [("2", "dtmf"), ("3", "dtmf")]
    assert all("asr_confidence" not in c.meta for c in corpus.calls)  # a confidence is the recogniser's


def test_with_both_answers_the_gathers_keypress_event_decides(tmp_path: Path) -> None:
    pressed = execution("FN0001", speech="uh", digits="1", steps=path_steps(
        "Trigger", "gather_main", "split_main", "flex_billing", events=["incomingCall", "keypress", "match"]))
    spoke = execution("FN0002", speech="billing please", digits="1", steps=path_steps(
        "Trigger", "gather_main", "split_main", "flex_billing", events=["incomingCall", "speech", "match"]))
    corpus = read_studio_executions(write_json(tmp_path, [pressed, spoke]))
    assert [(c.turns[0].text, c.meta["input"]) for c in corpus.calls] == [("1", "dtmf"), ("billing please", "speech")]


# --- Which Gather, which route --------------------------------------------------------------------

def test_the_gather_is_found_or_named(tmp_path: Path) -> None:
    two = execution("FN0001")
    two["context"]["widgets"]["gather_survey"] = {"Digits": "5"}
    path = write_json(tmp_path, [two])
    [problem] = read_studio_executions(path).problems
    assert problem.reason == (
        "FN0001: several widgets have a SpeechResult or Digits (gather_main, gather_survey): choose one with gather"
    )
    [call] = read_studio_executions(path, gather="gather_main").calls
    assert (call.turns[0].text, call.meta["gather"]) == ("my pipe burst", "gather_main")
    [call] = read_studio_executions(path, gather="gather_survey").calls
    assert (call.turns[0].text, call.meta["input"], call.expected_route) == ("5", "dtmf", None)
    assert call.meta["route_unknown"] == "no step leaves the Gather 'gather_survey'"


def test_steps_out_of_order_are_sorted_by_their_dates(tmp_path: Path) -> None:
    steps = path_steps("Trigger", "gather_main", "split_main", "send_to_emergency")
    for second, step in enumerate(steps):
        step["date_created"] = f"2024-05-01T10:00:0{second}Z"
    random.Random(7).shuffle(steps)
    [call] = read_studio_executions(write_json(tmp_path, [execution(steps=steps)])).calls
    assert call.expected_route == "send_to_emergency"


def test_undated_steps_listed_newest_first_still_give_the_route(tmp_path: Path) -> None:
    steps = path_steps("Trigger", "gather_main", "split_main", "send_to_emergency")[::-1]
    [call] = read_studio_executions(write_json(tmp_path, [execution(steps=steps)])).calls
    assert call.expected_route == "send_to_emergency"


def test_a_caller_asked_again_is_routed_by_the_last_answer(tmp_path: Path) -> None:
    steps = path_steps("Trigger", "gather_main", "split_main", "say_sorry", "gather_main", "split_main", "voicemail")
    [call] = read_studio_executions(write_json(tmp_path, [execution(steps=steps)])).calls
    assert call.expected_route == "voicemail"


def test_named_splits_are_walked_through_in_a_chain(tmp_path: Path) -> None:
    steps = path_steps("Trigger", "gather_main", "split_digits", "split_speech", "flex_billing")
    path = write_json(tmp_path, [execution(steps=steps)])
    [call] = read_studio_executions(path, splits={"split_digits", "split_speech"}).calls
    assert call.expected_route == "flex_billing"
    [call] = read_studio_executions(path).calls  # by default one Split is assumed
    assert call.expected_route == "split_speech"
    direct = path_steps("Trigger", "gather_main", "flex_billing")
    [call] = read_studio_executions(write_json(tmp_path, [execution(steps=direct)]), splits={"split_main"}).calls
    assert call.expected_route == "flex_billing"


@pytest.mark.parametrize(
    ("steps", "why"),
    [
        ([], "no steps in the export"),
        (path_steps("Trigger", "gather_main", "split_main"), "the execution ended at the Split 'split_main'"),
        (path_steps("Trigger", "gather_main", "split_main", "gather_main"),
         "the Split sent the caller back to the Gather 'gather_main'"),
    ],
)
def test_a_call_without_a_known_route_is_kept_with_the_reason(tmp_path: Path, steps: list, why: str) -> None:
    corpus = read_studio_executions(write_json(tmp_path, [execution(steps=steps)]))
    assert corpus.problems == []
    [call] = corpus.calls
    assert call.expected_route is None
    assert call.meta["route_unknown"] == why


def test_a_loop_among_named_splits_is_reported_not_followed_forever(tmp_path: Path) -> None:
    steps = path_steps("Trigger", "gather_main", "split_a", "split_b", "split_a")
    [call] = read_studio_executions(write_json(tmp_path, [execution(steps=steps)]), splits={"split_a", "split_b"}).calls
    assert call.meta["route_unknown"] == "the flow loops back to 'split_a'"


def test_the_call_id_falls_back_to_the_gathers_call_sid_then_the_execution(tmp_path: Path) -> None:
    no_trigger = execution("FN0001", call_sid=None)
    bare = execution("FN0002", call_sid=None, caller=None)
    del bare["context"]["widgets"]["gather_main"]["CallSid"]
    corpus = read_studio_executions(write_json(tmp_path, [no_trigger, bare]))
    assert [c.call_id for c in corpus.calls] == ["CA-from-gather", "FN0002"]
    assert "caller" not in corpus.calls[1].meta


# --- Bad entries and bad files --------------------------------------------------------------------

def test_bad_entries_are_reported_by_position_and_the_rest_is_read(tmp_path: Path) -> None:
    no_context = execution("FN0003")
    del no_context["context"]
    broken_context = execution("FN0004")
    broken_context["context"] = "{not json"
    silent = execution("FN0006", speech="  ", confidence=None)
    entries = [
        "just a string",  # 1
        {"context": {}},  # 2: no sid
        no_context,  # 3
        broken_context,  # 4
        {"sid": "FN0005", "context": {"trigger": {}}},  # 5: no widgets
        silent,  # 6
        execution("FN0007"),  # 7: good
        {"sid": "FN0008", "context": {"widgets": {}}, "steps": [{"transitioned_from": 3}]},  # 8
        {"sid": "FN0009", "context": ["widgets"]},  # 9
        {"sid": "FN0010", "context": '"widgets"'},  # 10: a JSON string, but not of an object
    ]
    corpus = read_studio_executions(write_json(tmp_path, entries))
    assert [c.meta["execution_sid"] for c in corpus.calls] == ["FN0007"]
    reasons = {problem.line_number: problem.reason for problem in corpus.problems}
    assert reasons == {
        1: "not a JSON object (got str)",
        2: "sid: field required",
        3: "FN0003: no context (export each execution's Context too)",
        4: reasons[4],
        5: "FN0005: context has no widgets object",
        6: "FN0006: no widget has a SpeechResult or Digits (the caller said nothing?)",
        8: "steps[0].transitioned_from: input should be a valid string",
        9: "FN0009: context: not a JSON object (got list)",
        10: "FN0010: context: not a JSON object (got str)",
    }
    assert reasons[4].startswith("FN0004: context: not valid JSON")


def test_a_named_gather_the_call_never_reached_or_left_silent_is_reported(tmp_path: Path) -> None:
    silent = execution("FN0002", speech=None, confidence=None)
    corpus = read_studio_executions(write_json(tmp_path, [execution("FN0001"), silent]), gather="gather_other")
    assert corpus.calls == []
    assert [p.reason for p in corpus.problems] == [
        "FN0001: widgets.gather_other: not in the context (the call never reached it)",
        "FN0002: widgets.gather_other: not in the context (the call never reached it)",
    ]
    [problem] = read_studio_executions(write_json(tmp_path, [silent]), gather="gather_main").problems
    assert problem.reason == "FN0002: widgets.gather_main: no SpeechResult or Digits (the caller said nothing)"


def test_json_lines_report_each_broken_line_by_its_number(tmp_path: Path) -> None:
    path = write_lines(tmp_path, json.dumps(execution("FN0001")), "", '{"sid": "FN0002", ', "[1, 2]",
                       json.dumps(execution("FN0005")))
    corpus = read_studio_executions(path)
    assert [(c.meta["execution_sid"], c.line_number) for c in corpus.calls] == [("FN0001", 1), ("FN0005", 5)]
    assert [(p.line_number, p.reason.split(" (")[0]) for p in corpus.problems] == [
        (3, "not valid JSON"), (4, "not a JSON object"),
    ]


def test_a_file_that_is_not_executions_raises_a_corpus_error(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="executions file not found"):
        read_studio_executions(tmp_path / "missing.json")
    with pytest.raises(CorpusError, match="not a file"):
        read_studio_executions(tmp_path)
    with pytest.raises(CorpusError, match=r"expected executions, a list of them or JSON Lines \(got int\)"):
        read_studio_executions(write_json(tmp_path, 42))
    with pytest.raises(CorpusError, match=r"executions: expected a list \(got dict\)"):
        read_studio_executions(write_json(tmp_path, {"executions": {"sid": "FN1"}}))


def test_an_empty_file_is_an_empty_corpus(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    corpus = read_studio_executions(path)
    assert (corpus.calls, corpus.problems) == ([], [])


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["sid", "context", "steps", "widgets", "trigger", "call", "gather_main", "SpeechResult",
                         "Digits", "transitioned_from", "transitioned_to", "date_created", "executions"]),
        inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=150, suppress_health_check=[*settings.default.suppress_health_check, HealthCheck.function_scoped_fixture])
@given(entries=st.lists(_JSON, max_size=4))
def test_any_json_entries_become_calls_or_problems_never_a_traceback(tmp_path: Path, entries: list) -> None:
    corpus = read_studio_executions(write_json(tmp_path, entries))
    assert len(corpus.calls) + len(corpus.problems) == len(entries)


def test_chained_splits_are_told_by_their_match_and_no_match_steps(tmp_path: Path) -> None:
    # A Digits Split whose noMatch leads to a Speech Split: the second one is not the route.
    steps = path_steps("Trigger", "gather_main", "split_digits", "split_speech", "flex_billing",
                       events=["incomingCall", "speech", "noMatch", "match"])
    [call] = read_studio_executions(write_json(tmp_path, [execution(steps=steps)])).calls
    assert call.expected_route == "flex_billing"


# --- Read against the flow the calls ran in --------------------------------------------------------

def taxi_export(tmp_path: Path) -> tuple[Path, Path]:
    flow = tmp_path / "taxi.json"
    flow.write_text(json.dumps(taxi_flow()), encoding="utf-8")
    calls = [taxi_execution("FN1", said="taxi"), taxi_execution("FN2", pressed="1"),
             taxi_execution("FN3", said="payment"), taxi_execution("FN4", pressed="2")]
    return write_json(tmp_path, calls), flow


def test_with_the_flow_calls_get_the_imported_intent_and_the_answers_to_its_details(tmp_path: Path) -> None:
    export, flow = taxi_export(tmp_path)
    corpus = read_studio_executions(export, flow=flow)
    assert corpus.problems == []
    summary = [(c.expected_intent, c.expected_route, c.meta.get("flow_route"), [t.text for t in c.turns])
               for c in corpus.calls]
    details = ["Sam Jones", "12 High Street", "seven in the morning"]
    assert summary == [
        ("taxi", "said_taxi", "said_taxi", ["taxi", *details]),
        ("taxi", "said_taxi", "pressed_taxi", ["1", *details]),
        ("payment", "said_payment", "said_payment", ["payment"]),
        ("payment", "said_payment", "pressed_payment", ["2"]),
    ]
    assert all(c.meta["gather"] == "main_menu" for c in corpus.calls)


def test_a_flow_that_cannot_be_read_is_a_corpus_error(tmp_path: Path) -> None:
    export = write_json(tmp_path, [execution()])
    broken = tmp_path / "flow.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"flow\.json: not JSON"):
        read_studio_executions(export, flow=broken)
    with pytest.raises(CorpusError, match="flow file not found"):
        read_studio_executions(export, flow=tmp_path / "missing.json")

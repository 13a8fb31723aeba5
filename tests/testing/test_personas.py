"""Persona files: every one in benchmarks/outcomes (and its holdout/) is valid and fits the example config it names; a broken
file is refused with a message that names the file and the problem."""
from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from orchestrator.config.routing import load_routing_config
from orchestrator.testing.personas import PersonaError, load_persona, load_personas, resolve_day

REPO = Path(__file__).resolve().parents[2]
OUTCOMES = REPO / "benchmarks" / "outcomes"
PERSONAS = load_personas(OUTCOMES)
HOLDOUT = load_personas(OUTCOMES / "holdout")  # written blind, by another author: never tuned against

MINIMAL = """
config = "acme_plumbing"
description = "A billing question."
[need]
lines = ["I have a question about my bill."]
[expect]
route = "billing_desk"
"""


def test_the_benchmark_has_at_least_forty_personas_across_the_three_example_configs():
    assert len(PERSONAS) >= 40
    assert {persona.config for persona in PERSONAS} == {"acme_plumbing", "harper_valley_bank", "bilingual_plumbing"}
    behaviours = [persona.behaviour for persona in PERSONAS]
    assert {b.style for b in behaviours} == {"answers_what_is_asked", "one_per_turn", "all_at_once"}
    assert any(b.barge_in for b in behaviours) and any(b.silent_once for b in behaviours)
    assert any(b.menu_key for b in behaviours) and any(b.keypad for b in behaviours)
    details = [detail for persona in PERSONAS for detail in persona.details]
    assert any(d.refuses for d in details) and any(d.unknown for d in details)
    assert any(persona.expect.urgent for persona in PERSONAS)


@pytest.mark.parametrize("persona", PERSONAS + HOLDOUT, ids=[persona.name for persona in PERSONAS + HOLDOUT])
def test_every_persona_fits_the_config_it_is_written_for(persona):
    config = load_routing_config(REPO / "examples" / f"{persona.config}.toml")
    assert persona.expect.route in config.routes
    fields = {field.name for field in config.fields}
    assert set(persona.expect.expected_fields) <= fields
    assert {detail.field for detail in persona.details if detail.field} <= fields
    for name in persona.expect.days:
        assert next(field for field in config.fields if field.name == name).type == "date"


def test_a_minimal_persona_takes_the_defaults_and_is_named_after_its_file(tmp_path):
    path = tmp_path / "billing_question.toml"
    path.write_text(MINIMAL, encoding="utf-8")
    persona = load_persona(path)
    assert persona.name == "billing_question"
    assert persona.behaviour.style == "answers_what_is_asked" and not persona.behaviour.barge_in
    assert persona.behaviour.patience_s == 4.0
    assert persona.caller.caller_id == "+14155550100" and persona.details == []


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ('[behaviour]\nstyle = "chatty"', "behaviour.style"),
        ('[caller]\nfrom = "415 555 0100"', "caller.from"),
        ('[[details]]\nkind = "phone"\nsay = "four one five"', "`digits` is needed"),
        ('[[details]]\nkind = "name"', "`say` is needed"),
        ('[[details]]\nkind = "name"\nrefuses = true\nunknown = true', "refuses a detail or does not know it"),
        ('[[details]]\nkind = "shoe_size"\nsay = "nine"', "details.0.kind"),
        ('[[details]]\nkind = "name"\nsay = "Ann"\nfield = "caller_name"', "which [expect] does not list"),
        ('[behaviour]\nkeypad = true', "no detail has `digits`"),
        ('[behaviour]\npatience_s = 0', "behaviour.patience_s"),
        ('mood = "grumpy"', "mood: Extra inputs are not permitted"),
    ],
)
def test_a_broken_persona_is_refused_with_the_file_and_the_problem(tmp_path, extra, problem):
    path = tmp_path / "broken.toml"
    path.write_text(MINIMAL.replace("[expect]", f"{extra}\n[expect]") if extra.startswith("[") else extra + MINIMAL)
    with pytest.raises(PersonaError) as refused:
        load_persona(path)
    assert str(refused.value).startswith(f"{path}: ")
    assert problem in str(refused.value)


def test_files_that_are_not_personas_say_why(tmp_path):
    with pytest.raises(PersonaError, match="cannot read it"):
        load_persona(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("config = ")
    with pytest.raises(PersonaError, match="not valid TOML"):
        load_persona(tmp_path / "bad.toml")
    (tmp_path / "named.toml").write_text('name = "x"\n' + MINIMAL)
    with pytest.raises(PersonaError, match="named after its file"):
        load_persona(tmp_path / "named.toml")


def test_a_day_is_the_next_one_after_the_call():
    thursday = datetime.date(2026, 12, 3)
    assert resolve_day("thursday", thursday) == datetime.date(2026, 12, 10)  # said on a Thursday: next week's
    assert resolve_day("friday", thursday) == datetime.date(2026, 12, 4)
    assert resolve_day("monday", thursday) == datetime.date(2026, 12, 7)
    assert resolve_day("tomorrow", thursday) == datetime.date(2026, 12, 4)
    assert resolve_day("today", thursday) == thursday

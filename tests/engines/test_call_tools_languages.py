"""The model's tools and lines in a multilingual config: the language field, its checks, lines per language."""
from __future__ import annotations

import json

from machines.effects import Line, Speak
from machines.events import DetailsCaptured
from orchestrator.config.routing import load_routing_config
from orchestrator.engines.tools import (
    RECORD_DETAILS,
    ToolRejected,
    agent_instructions,
    interpret_tool_call,
    line_instructions,
    realtime_tools,
    spoken_line,
)
from tests.live_call_support import ACME, EXAMPLES

BILINGUAL = load_routing_config(EXAMPLES / "bilingual_plumbing.toml")
MONOLINGUAL = load_routing_config(ACME)


def record(config, **values) -> DetailsCaptured | ToolRejected:
    return interpret_tool_call(config, RECORD_DETAILS, json.dumps(values), "c1")


def test_record_details_offers_the_language_only_when_there_are_several():
    details = next(tool for tool in realtime_tools(BILINGUAL) if tool["name"] == RECORD_DETAILS)
    assert "language" in details["parameters"]["properties"]
    plain = next(tool for tool in realtime_tools(MONOLINGUAL) if tool["name"] == RECORD_DETAILS)
    assert "language" not in plain["parameters"]["properties"]
    assert "es-US" in agent_instructions(BILINGUAL) and "language" not in agent_instructions(MONOLINGUAL).lower()


def test_a_recorded_language_is_matched_to_the_config_or_kept_in_canonical_case():
    assert record(BILINGUAL, language="es-us").fields == {"language": "es-US"}
    assert record(BILINGUAL, language="es").fields == {"language": "es-US"}  # the Spanish served here
    assert record(BILINGUAL, language="fr-fr").fields == {"language": "fr-FR"}  # not served: kept, the machine decides
    rejected = record(BILINGUAL, language="Spanish please")
    assert isinstance(rejected, ToolRejected) and "not a language code" in rejected.problems[0]
    # A config with one language has no language field to record.
    assert isinstance(record(MONOLINGUAL, language="es-US"), ToolRejected)


def test_lines_come_in_the_callers_language_when_the_config_words_them():
    greeting = Speak(Line.GREETING)
    spanish = BILINGUAL.lines_for("es-US").greeting
    assert spoken_line(BILINGUAL, greeting, "es-US").text == spanish
    assert line_instructions(BILINGUAL, greeting, "es-US") == f"Say exactly the following, then stop: «{spanish}»"
    assert spoken_line(BILINGUAL, greeting, None).text == BILINGUAL.lines.greeting


def test_a_line_the_config_does_not_word_in_the_language_is_asked_for_as_a_translation():
    # fr-FR is not served: the model is asked to translate the default line rather than read English to the caller.
    text = line_instructions(BILINGUAL, Speak(Line.HANDOFF), "fr-FR")
    assert text.startswith("Say the following in the caller's language (fr-FR), translated faithfully")
    assert BILINGUAL.lines.handoff in text

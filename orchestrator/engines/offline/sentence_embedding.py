"""Sentence embeddings for the offline intent classifier: what a caller's words mean, beyond the words.

WordLlama (the `speech` extra) ships its weights and tokenizer inside its wheel: 32,000 token vectors of
256 dimensions (16 MB), mean-pooled over the text's tokens, numpy only, no torch and no download. Two
texts that say the same thing in other words ("are you lot around at the weekend?", "are you open on
Saturdays") get close vectors, which TF-IDF n-grams cannot see. Without the package the classifier is
lexical only, as before.
"""
from __future__ import annotations

import importlib.util
import logging
from functools import lru_cache
from pathlib import Path

import numpy as np

EMBEDDING_DIMENSIONS = 256
EMBEDDING_MODEL = f"wordllama/l2_supercat/{EMBEDDING_DIMENSIONS}"


class SentenceEmbedder:
    """Unit-length vectors for texts, from WordLlama's bundled model."""

    name = EMBEDDING_MODEL

    def __init__(self, model: object) -> None:
        self._model = model
        self.dimensions = EMBEDDING_DIMENSIONS

    @classmethod
    def load(cls) -> SentenceEmbedder:
        package = _package_folder()
        if package is None:
            raise ModuleNotFoundError("wordllama")
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            from wordllama import WordLlama
        finally:  # wordllama calls logging.basicConfig() when imported: the root logger is ours to configure
            root.handlers[:], root.level = handlers, level
        # The package's own folder as the cache, with downloads disabled: it looks for the tokenizer in
        # `tokenizer/` but ships it in `tokenizers/`, which is where it looks in a cache folder.
        return cls(WordLlama.load(config="l2_supercat", dim=EMBEDDING_DIMENSIONS, cache_dir=package, disable_download=True))

    def embed(self, texts: list[str]) -> np.ndarray:
        """One unit-length row per text (a zero row for a text with no token)."""
        vectors = np.asarray(self._model.embed(texts, norm=False), dtype=float)  # type: ignore[attr-defined]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def _package_folder() -> Path | None:
    """Where wordllama is installed, found without importing it; None when it is not installed."""
    spec = importlib.util.find_spec("wordllama")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@lru_cache(maxsize=1)
def installed_embedder() -> SentenceEmbedder | None:
    """The sentence embedder, loaded once per process; None when the speech extra is not installed."""
    try:
        return SentenceEmbedder.load()
    except (ModuleNotFoundError, FileNotFoundError, ValueError):
        return None

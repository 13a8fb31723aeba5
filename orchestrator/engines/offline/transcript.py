"""A transcript as the offline engine compares it: what it hears live, and what it learns from past calls."""
from __future__ import annotations

import re

# Transcriber annotations such as "[noise]", "[laughter]", "<unk>", and words cut off mid-way ("wou~").
_ANNOTATION = re.compile(r"\[[^\]]*\]|<[^>]*>|\S*~")


def clean_transcript(text: str) -> str:
    """Lower-case, without transcriber tags or cut-off words, whitespace collapsed."""
    return " ".join(_ANNOTATION.sub(" ", text.lower()).split())

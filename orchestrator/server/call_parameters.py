"""What ties a call's requests together: the CallSid's shape, the pass number, and the `<Parameter>`s
that `/voice/incoming` puts on the Media Stream and `/media` reads back."""
from __future__ import annotations

import re

from orchestrator.config import RoutingConfig, canonical_language_code

CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")
# Names of the <Parameter>s that tie a Media Stream to the pass that /voice/incoming opened.
PASS_PARAMETER = "pass"
TOKEN_PARAMETER = "pass_token"
ENGINE_PARAMETER = "engine"  # a call may ask for one of the server's engines by name
LANGUAGE_PARAMETER = "language"  # a language Studio already chose (`?language=es-US` on the webhook)


def known_language(config: RoutingConfig, given: str | None, caller: str | None) -> str | None:
    """The caller's language before they speak: what Studio passed in (kept as given, supported or not:
    an unsupported one sends the call to a person), else what the caller's number suggests."""
    code = canonical_language_code(given) if given else None
    if code is not None:
        return config.match_language(code) or code
    return config.language_for_caller(caller) if config.multilingual else None


def pass_number(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None

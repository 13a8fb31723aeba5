"""`X-Twilio-Signature` checks for webhooks and for the Media Stream WebSocket upgrade. Fails closed.

Twilio signs the URL it requested, which is the public one, so the URL is rebuilt from the configured
public base plus the path and query the app received, never from what a proxy hands over. The
algorithm itself is `twilio.request_validator.RequestValidator`'s (protocols/twilio.md §5).
"""
from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from twilio.request_validator import RequestValidator

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-twilio-signature"
BODY_HASH_PARAMETER = "bodySHA256"  # on the URL of a signed JSON request: the body's SHA-256, hex


class TwilioSignatureCheck:
    """`enabled=False` accepts everything (an explicit development setting, announced at start)."""

    def __init__(self, auth_token: str, public_url: str, *, enabled: bool = True) -> None:
        self._validator = RequestValidator(auth_token)
        self._public_url = public_url.rstrip("/")
        self.enabled = enabled

    def public_url_of(self, path: str, query: str = "") -> str:
        return self._public_url + path + (f"?{query}" if query else "")

    def check_webhook(self, path: str, query: str, params: Any, signature: str | None) -> bool:
        """A form POST (params: the form, a dict or a multidict with getlist) or a GET (params: {})."""
        if not self.enabled:
            return True
        if not signature:
            return False
        return bool(self._validator.validate(self.public_url_of(path, query), params, signature))

    def check_json_webhook(self, path: str, query: str, body: bytes, signature: str | None) -> bool:
        """A JSON POST: the signature covers the URL, and the URL carries the body's hash (`bodySHA256`).
        A URL without it covers no body, so the request is refused."""
        if not self.enabled:
            return True
        if not signature or BODY_HASH_PARAMETER not in parse_qs(query):
            return False
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return bool(self._validator.validate(self.public_url_of(path, query), text, signature))

    def check_websocket(self, path: str, query: str, signature: str | None) -> bool:
        """The upgrade is signed over the `wss://` URL as written in the TwiML, with no params. Which scheme
        Twilio signs for Media Streams is UNVERIFIED (protocols/twilio.md §5), so both forms are accepted."""
        if not self.enabled:
            return True
        if not signature:
            return False
        http_url = self.public_url_of(path, query)
        parts = urlsplit(http_url)
        ws_url = urlunsplit(parts._replace(scheme="wss" if parts.scheme == "https" else "ws"))
        return any(self._validator.validate(url, {}, signature) for url in (ws_url, http_url))

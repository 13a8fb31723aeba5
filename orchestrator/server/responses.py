"""The answers every endpoint module gives alike: TwiML, and the refusal of a request not signed."""
from __future__ import annotations

from starlette.responses import PlainTextResponse, Response

TWIML_MEDIA_TYPE = "application/xml"


def twiml_response(xml: str) -> Response:
    return Response(xml, media_type=TWIML_MEDIA_TYPE)


def forbidden(reason: str = "invalid or missing X-Twilio-Signature") -> Response:
    return PlainTextResponse(reason, status_code=403)

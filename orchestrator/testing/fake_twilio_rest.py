"""A fake of Twilio's REST API for the one request the server makes to it: the update of a live call,
`POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json` (protocols/twilio.md section 2), served over
loopback HTTP and validated as Twilio would:

- HTTP Basic auth with the account SID and its auth token (else 401, Twilio error 20003);
- the account in the path is the authenticated one (else 404, 20404), and the CallSid looks like one;
- a form body with known update parameters only, exactly one of `Twiml` and `Url` (21218 otherwise);
- `Twiml` is at most 4000 characters (21218) and well-formed TwiML (a `<Response>` root, 12100 otherwise), and
  every URL in it is absolute, since an in-progress call has no document to resolve a relative one against
  (15004).

A valid update is answered with the call resource (as twilio-python parses it) and kept in `updates`; every
refused request is kept in `refused` with its reason. `refuse_with = (status, code)` refuses valid updates too
(e.g. (400, 21220): the call is not in progress).

    async with run_fake_twilio_rest("AC…", "token") as twilio:
        ...  # point the server at twilio.url (ORCHESTRATOR_TWILIO_API_URL)
        update = await twilio.next_update()
"""
from __future__ import annotations

import base64
import binascii
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit
from xml.etree import ElementTree

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["CallUpdate", "FakeTwilioRest", "RefusedRequest", "run_fake_twilio_rest"]

API_VERSION = "2010-04-01"
MAX_TWIML_CHARS = 4000
UPDATE_PARAMETERS = frozenset(
    {"Twiml", "Url", "Method", "Status", "FallbackUrl", "FallbackMethod", "StatusCallback", "StatusCallbackMethod",
     "TimeLimit"}
)
URL_ATTRIBUTES = frozenset({"action", "url", "statusCallback", "waitUrl", "recordingStatusCallback"})
_CALL_SID = re.compile(r"CA[0-9a-f]{32}")


@dataclass(frozen=True)
class CallUpdate:
    account_sid: str
    call_sid: str
    twiml: str
    at: float  # trio.current_time()


@dataclass(frozen=True)
class RefusedRequest:
    method: str
    path: str
    status: int
    code: int
    reason: str


@dataclass
class FakeTwilioRest:
    account_sid: str
    auth_token: str
    url: str = ""  # http://127.0.0.1:PORT once running
    refuse_with: tuple[int, int] | None = None
    updates: list[CallUpdate] = field(default_factory=list)
    refused: list[RefusedRequest] = field(default_factory=list)
    _changed: trio.Event = field(default_factory=trio.Event)

    async def next_update(self, index: int = 0) -> CallUpdate:
        """The update number `index` (0: the first), once it came."""
        while len(self.updates) <= index:
            await self._changed.wait()
        return self.updates[index]

    async def _calls(self, request: Request) -> Response:
        account_sid, call_sid = request.path_params["account_sid"], request.path_params["call_sid"]
        if not self._authenticated(request):
            return self._refuse(request, 401, 20003, "authentication failed")
        if account_sid != self.account_sid:
            return self._refuse(request, 404, 20404, f"account {account_sid} is not the authenticated one")
        if not _CALL_SID.fullmatch(call_sid):
            return self._refuse(request, 404, 20404, f"no call {call_sid}")
        if request.headers.get("content-type", "").split(";")[0] != "application/x-www-form-urlencoded":
            return self._refuse(request, 400, 21218, "the body is not form-encoded")
        form = await request.form()
        unknown = sorted(set(form.keys()) - UPDATE_PARAMETERS)
        if unknown:
            return self._refuse(request, 400, 21218, f"unknown parameters {unknown}")
        if ("Twiml" in form) == ("Url" in form):
            return self._refuse(request, 400, 21218, "exactly one of Twiml and Url is required")
        twiml = str(form.get("Twiml", ""))
        problem = twiml_problem(twiml) if "Twiml" in form else None
        if problem is not None:
            return self._refuse(request, 400, *problem)
        if self.refuse_with is not None:
            status, code = self.refuse_with
            return self._refuse(request, status, code, "refused as configured")
        self.updates.append(CallUpdate(account_sid, call_sid, twiml, trio.current_time()))
        self._notify()
        return JSONResponse(
            {"sid": call_sid, "account_sid": account_sid, "status": "in-progress", "api_version": API_VERSION,
             "uri": f"/{API_VERSION}/Accounts/{account_sid}/Calls/{call_sid}.json"}
        )

    def _authenticated(self, request: Request) -> bool:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return (user, password) == (self.account_sid, self.auth_token)

    def _refuse(self, request: Request, status: int, code: int, reason: str) -> Response:
        self.refused.append(RefusedRequest(request.method, request.url.path, status, code, reason))
        self._notify()
        return JSONResponse(
            {"code": code, "message": reason, "more_info": f"https://www.twilio.com/docs/errors/{code}",
             "status": status},
            status_code=status,
        )

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


def twiml_problem(twiml: str) -> tuple[int, str] | None:
    """The Twilio error code and reason for refusing this TwiML on a call update, or None."""
    if len(twiml) > MAX_TWIML_CHARS:
        return 21218, f"TwiML of {len(twiml)} characters (at most {MAX_TWIML_CHARS})"
    try:
        root = ElementTree.fromstring(twiml)
    except ElementTree.ParseError as error:
        return 12100, f"not well-formed XML: {error}"
    if root.tag != "Response":
        return 12100, f"not TwiML: the root is <{root.tag}>"
    for element in root.iter():
        urls = [value for name, value in element.attrib.items() if name in URL_ATTRIBUTES]
        if element.tag == "Redirect":
            urls.append((element.text or "").strip())
        for url in urls:
            if urlsplit(url).scheme not in ("http", "https"):
                return 15004, f"<{element.tag}> has a URL that is not absolute: {url!r}"
    return None


@asynccontextmanager
async def run_fake_twilio_rest(account_sid: str, auth_token: str, *, host: str = "127.0.0.1") -> AsyncIterator[FakeTwilioRest]:
    fake = FakeTwilioRest(account_sid, auth_token)
    app = Starlette(routes=[
        Route(f"/{API_VERSION}/Accounts/{{account_sid}}/Calls/{{call_sid}}.json", fake._calls, methods=["POST"]),
    ])
    config = HypercornConfig()
    config.bind = [f"{host}:0"]
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, app, config)
        fake.url = binds[0]
        try:
            yield fake
        finally:
            nursery.cancel_scope.cancel()

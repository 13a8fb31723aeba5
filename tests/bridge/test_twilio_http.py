"""HttpxTwilioClient: twilio-python's async REST calls over httpx, under Trio."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs

import httpx
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from bridge.twilio.rest_client import HttpxTwilioClient

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "secret-token"
CALL_SID = "CA" + "2" * 32
HANGUP_TWIML = "<Response><Hangup/></Response>"
EXPECTED_BASIC_AUTH = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()


class RecordingHandler:
    """A MockTransport handler that records requests and answers with a canned response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.response

    @property
    def only_request(self) -> httpx.Request:
        assert len(self.requests) == 1
        return self.requests[0]


def twilio_client(handler: RecordingHandler) -> Client:
    return Client(ACCOUNT_SID, AUTH_TOKEN, http_client=HttpxTwilioClient(transport=httpx.MockTransport(handler)))


def call_resource(**overrides: object) -> dict[str, object]:
    return {"sid": CALL_SID, "account_sid": ACCOUNT_SID, "status": "completed", "to": "+15550001111"} | overrides


async def test_call_update_sends_form_body_with_basic_auth() -> None:
    handler = RecordingHandler(httpx.Response(200, json=call_resource()))
    client = twilio_client(handler)

    call = await client.calls(CALL_SID).update_async(twiml=HANGUP_TWIML)

    request = handler.only_request
    assert request.method == "POST"
    assert str(request.url) == f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{CALL_SID}.json"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.content.decode()) == {"Twiml": [HANGUP_TWIML]}
    assert request.headers["Authorization"] == EXPECTED_BASIC_AUTH
    assert call.sid == CALL_SID
    assert call.status == "completed"


async def test_json_content_type_sends_a_json_body() -> None:
    handler = RecordingHandler(httpx.Response(201, json={"ok": True}))
    client = twilio_client(handler)
    body = {"name": "x", "nested": {"list": [1, 2]}}

    response = await client.request_async(
        "POST",
        "https://flex-api.twilio.com/v1/Interactions/KD1/Channels/UO1/Transfers",
        data=body,
        headers={"Content-Type": "application/json"},
    )

    request = handler.only_request
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == body
    assert request.headers["Authorization"] == EXPECTED_BASIC_AUTH
    assert response.status_code == 201
    assert json.loads(response.text) == {"ok": True}


async def test_error_status_raises_twilio_rest_exception() -> None:
    error_body = {
        "code": 20404,
        "message": f"The requested resource /Calls/{CALL_SID}.json was not found",
        "more_info": "https://www.twilio.com/docs/errors/20404",
        "status": 404,
    }
    handler = RecordingHandler(httpx.Response(404, json=error_body))
    client = twilio_client(handler)

    with pytest.raises(TwilioRestException) as caught:
        await client.calls(CALL_SID).update_async(twiml=HANGUP_TWIML)

    assert caught.value.status == 404
    assert caught.value.code == 20404


async def test_list_values_become_repeated_form_fields_and_params_go_in_the_query() -> None:
    handler = RecordingHandler(httpx.Response(200, text="{}"))
    http = HttpxTwilioClient(transport=httpx.MockTransport(handler))

    await http.request(
        "post",
        "https://api.twilio.com/x",
        params={"PageSize": 20},
        data={"StatusCallbackEvent": ["initiated", "completed"]},
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    request = handler.only_request
    assert request.method == "POST"
    assert request.url.params["PageSize"] == "20"
    assert parse_qs(request.content.decode()) == {"StatusCallbackEvent": ["initiated", "completed"]}
    assert "Authorization" not in request.headers


async def test_timeout_falls_back_to_the_client_default() -> None:
    handler = RecordingHandler(httpx.Response(200, text="{}"))
    http = HttpxTwilioClient(transport=httpx.MockTransport(handler), timeout=3.5)

    await http.request("GET", "https://api.twilio.com/a")
    await http.request("GET", "https://api.twilio.com/b", timeout=1.0)

    first, second = handler.requests
    assert first.extensions["timeout"] == {"connect": 3.5, "read": 3.5, "write": 3.5, "pool": 3.5}
    assert second.extensions["timeout"]["read"] == 1.0


async def test_non_positive_timeouts_are_rejected() -> None:
    with pytest.raises(ValueError):
        HttpxTwilioClient(timeout=0)
    http = HttpxTwilioClient(transport=httpx.MockTransport(RecordingHandler(httpx.Response(200))))
    with pytest.raises(ValueError):
        await http.request("GET", "https://api.twilio.com/a", timeout=-1)


async def test_redirects_are_followed_only_when_allowed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/old":
            return httpx.Response(307, headers={"Location": "https://api.twilio.com/new"})
        return httpx.Response(200, text="moved here")

    http = HttpxTwilioClient(transport=httpx.MockTransport(handler))

    not_followed = await http.request("GET", "https://api.twilio.com/old")
    followed = await http.request("GET", "https://api.twilio.com/old", allow_redirects=True)

    assert not_followed.status_code == 307
    assert (followed.status_code, followed.text) == (200, "moved here")


async def test_injected_client_is_used_and_left_open() -> None:
    handler = RecordingHandler(httpx.Response(200, text="{}"))
    injected = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    http = HttpxTwilioClient(injected)
    assert http.is_async

    await http.request("GET", "https://api.twilio.com/a")
    await http.aclose()

    assert len(handler.requests) == 1
    assert not injected.is_closed
    await injected.aclose()


async def test_owned_client_is_closed() -> None:
    async with HttpxTwilioClient(transport=httpx.MockTransport(RecordingHandler(httpx.Response(200)))) as http:
        pass
    assert http._client.is_closed


def test_client_and_transport_are_exclusive() -> None:
    with pytest.raises(ValueError):
        HttpxTwilioClient(httpx.AsyncClient(), transport=httpx.MockTransport(RecordingHandler(httpx.Response(200))))


async def test_an_origin_sends_every_request_there_with_its_path_kept() -> None:
    handler = RecordingHandler(httpx.Response(200, json=call_resource()))
    http = HttpxTwilioClient(transport=httpx.MockTransport(handler), origin="http://127.0.0.1:8999")
    client = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=http)

    await client.calls(CALL_SID).update_async(twiml=HANGUP_TWIML)

    assert str(handler.only_request.url) == f"http://127.0.0.1:8999/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{CALL_SID}.json"
    assert handler.only_request.headers["Authorization"] == EXPECTED_BASIC_AUTH

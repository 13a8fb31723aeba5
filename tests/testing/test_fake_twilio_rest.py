"""The fake Twilio REST API refuses what Twilio would refuse on a live-call update, so a test that finds no
refusal means the update was valid."""
from __future__ import annotations

import httpx
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from bridge.twilio import HttpxTwilioClient
from orchestrator.testing.fake_twilio_rest import run_fake_twilio_rest

ACCOUNT = "AC" + "1" * 32
TOKEN = "secret-token"
CALL = "CA" + "2" * 32
GOOD = '<?xml version="1.0" encoding="UTF-8"?><Response><Record action="https://desk.example.com/voice/recorded"/></Response>'


async def update(origin: str, *, token: str = TOKEN, account: str = ACCOUNT, **parameters: str) -> None:
    async with HttpxTwilioClient(origin=origin) as http:
        await Client(account, token, http_client=http).calls(CALL).update_async(**parameters)


async def test_a_valid_update_is_kept_and_answered_with_the_call():
    async with run_fake_twilio_rest(ACCOUNT, TOKEN) as twilio:
        await update(twilio.url, twiml=GOOD)
    assert [(u.account_sid, u.call_sid, u.twiml) for u in twilio.updates] == [(ACCOUNT, CALL, GOOD)]
    assert twilio.refused == []


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"token": "wrong"}, 401, 20003),
        ({"twiml": "<Response><Redirect>/voice/after</Redirect></Response>"}, 400, 15004),  # relative URL
        ({"twiml": '<Response><Enqueue action="after">q</Enqueue></Response>'}, 400, 15004),
        ({"twiml": "<Response><Say>unclosed</Response>"}, 400, 12100),
        ({"twiml": "<Say>no response root</Say>"}, 400, 12100),
        ({"twiml": "<Response>" + "<Pause/>" * 600 + "</Response>"}, 400, 21218),  # over 4000 characters
        ({"twiml": GOOD, "url": "https://desk.example.com/twiml"}, 400, 21218),
    ],
)
async def test_an_update_twilio_would_refuse_is_refused(change, status, code):
    parameters = {"twiml": GOOD, **change}
    async with run_fake_twilio_rest(ACCOUNT, TOKEN) as twilio:
        with pytest.raises(TwilioRestException) as refused:
            await update(twilio.url, **parameters)
    assert (refused.value.status, refused.value.code) == (status, code)
    assert twilio.updates == [] and [r.code for r in twilio.refused] == [code]


async def test_a_request_for_another_account_is_not_found():
    async with run_fake_twilio_rest(ACCOUNT, TOKEN) as twilio:
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{twilio.url}/2010-04-01/Accounts/AC{'9' * 32}/Calls/{CALL}.json", data={"Twiml": GOOD},
                auth=(ACCOUNT, TOKEN),
            )
    assert response.status_code == 404 and twilio.updates == []

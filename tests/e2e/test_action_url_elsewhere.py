"""`/voice/after` on an instance that did not run the call's stream (another worker or machine).

The session there may still be closing its engine when Twilio asks for the hand-back, and the hand-back
must come after that close (the Realtime stream closes before any Studio redirect). This instance cannot
see the other one's session, only the store: a decided pass that has not finished is waited for.
"""
from __future__ import annotations

import xml.etree.ElementTree as ElementTree

import httpx
import trio
from twilio.request_validator import RequestValidator

from machines.decision import DecisionReason, DispatchDecision
from orchestrator.store.records import PassOutcome
from tests.live_call_support import front_desk, triage_scenario

CALL_SID = "CA" + "7" * 32
BILLING = DispatchDecision(route="billing_desk", route_kind="flex", reason=DecisionReason.ACCEPTED,
                           intent="billing", confidence=0.9)
FORM = {"AccountSid": "AC" + "0" * 32, "CallSid": CALL_SID, "CallStatus": "in-progress",
        "From": "+14155550123", "To": "+15557650000"}


async def post_action_url(desk) -> httpx.Response:
    server = desk.server
    url = f"{server.public_url}/voice/after?pass=1"
    signature = RequestValidator(server.auth_token).compute_signature(url, FORM)
    async with httpx.AsyncClient(timeout=15) as http:
        return await http.post(f"{server.base_url}/voice/after?pass=1", data=FORM,
                               headers={"X-Twilio-Signature": signature})


async def open_decided_pass(store) -> None:
    await store.open_pass(CALL_SID, caller=FORM["From"], called=FORM["To"], account_sid=FORM["AccountSid"],
                          entry_node=None, arm="ai")
    await store.save_decision(CALL_SID, 1, BILLING)


async def test_the_hand_back_waits_for_a_session_elsewhere_to_finish(tmp_path):
    async with front_desk(tmp_path, triage_scenario("billing")) as desk:
        store = desk.server.state.store
        await open_decided_pass(store)
        finished_when_answered = []

        async def answer() -> None:
            response = await post_action_url(desk)
            record = await store.call_record(CALL_SID)
            finished_when_answered.append((response, record.passes[0].finished_at is not None))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer)
            await trio.sleep(0.3)  # the other instance's engine is still closing
            assert finished_when_answered == []
            await store.finish_pass(CALL_SID, 1, PassOutcome("flex", ("dispatch", "teardown", "ended")))

    ((response, finished),) = finished_when_answered
    assert finished
    assert ElementTree.fromstring(response.text).find("Enqueue") is not None


async def test_a_session_that_never_finishes_elsewhere_still_gets_its_decided_hand_back(tmp_path):
    async with front_desk(tmp_path, triage_scenario("billing")) as desk:
        await open_decided_pass(desk.server.state.store)  # the instance that decided died: no finish, ever
        response = await post_action_url(desk)
    assert response.status_code == 200
    assert ElementTree.fromstring(response.text).find("Enqueue") is not None


async def test_an_undecided_pass_gets_the_fallback(tmp_path):
    async with front_desk(tmp_path, triage_scenario("billing")) as desk:
        store = desk.server.state.store
        await store.open_pass(CALL_SID, caller=FORM["From"], called=FORM["To"], account_sid=FORM["AccountSid"],
                              entry_node=None, arm="ai")
        response = await post_action_url(desk)
    assert ElementTree.fromstring(response.text).find("Record") is not None  # Acme's fallback is voicemail

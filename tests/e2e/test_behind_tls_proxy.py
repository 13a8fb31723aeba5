"""The server behind a TLS-terminating proxy, as production runs it (README "Behind a TLS proxy";
`examples/tls/`): Twilio reaches `https://` and `wss://` on the proxy, which passes plain HTTP to us with
`X-Forwarded-*`. Over loopback, with a test CA: a signed webhook is accepted at the public https URL, the
`<Stream url>` is wss:// on the public host, and a whole call over the proxied wss:// Media Stream routes."""
from __future__ import annotations

import logging
import ssl
import xml.etree.ElementTree as ElementTree

import httpx
import trio
import trustme

from orchestrator.testing.twilio_caller import parse_connect_twiml
from tests.live_call_support import (
    CALL_TIMEOUT_S,
    CALLER_SPEAKS,
    DETAILS,
    assert_closed_in_order,
    front_desk,
    signed_headers,
    triage_scenario,
)
from tests.tls_proxy import tls_proxy

INCOMING = {"CallSid": "CA" + "1" * 32, "AccountSid": "AC" + "0" * 32, "From": "+15551230000", "To": "+15557650000",
            "CallStatus": "ringing"}


def certificates(tmp_path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """The proxy's serving context (a certificate for `localhost`) and a client context that trusts it."""
    ca = trustme.CA()
    serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(serving)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return serving, client


async def test_a_signed_webhook_at_the_public_https_url_gets_a_wss_stream_on_the_public_host(tmp_path):
    serving, client = certificates(tmp_path)
    async with tls_proxy(serving) as proxy:
        public_url = f"https://localhost:{proxy.port}"
        async with front_desk(tmp_path, triage_scenario("billing"), public_url=public_url) as desk:
            proxy.forward_to(int(desk.server.base_url.rsplit(":", 1)[1]))
            token = desk.server.auth_token
            async with httpx.AsyncClient(verify=client, timeout=CALL_TIMEOUT_S) as http:
                url = public_url + "/voice/incoming"
                accepted = await http.post(url, data=INCOMING, headers=signed_headers(url, token, INCOMING))
                # Signed over the address behind the proxy instead: not what Twilio signs, refused.
                inner = desk.server.base_url + "/voice/incoming"
                refused = await http.post(inner, data=INCOMING, headers=signed_headers(inner, token, INCOMING))

    assert accepted.status_code == 200, accepted.text
    action_url, stream_url, _ = parse_connect_twiml(accepted.text)
    assert stream_url == f"wss://localhost:{proxy.port}/media"
    assert action_url is not None and action_url.startswith(public_url + "/voice/after?")
    assert refused.status_code == 403
    request_line, headers = proxy.passed_on[0]
    assert request_line.startswith("POST /voice/incoming ")
    assert headers["x-forwarded-proto"] == "https" and headers["x-forwarded-host"] == f"localhost:{proxy.port}"


async def test_a_whole_call_over_the_proxied_wss_media_stream_routes(tmp_path):
    serving, client = certificates(tmp_path)
    async with tls_proxy(serving) as proxy:
        public_url = f"https://localhost:{proxy.port}"
        async with front_desk(tmp_path, triage_scenario("emergency", details=DETAILS), public_url=public_url) as desk:
            proxy.forward_to(int(desk.server.base_url.rsplit(":", 1)[1]))
            with trio.fail_after(CALL_TIMEOUT_S):
                result = await desk.caller(CALLER_SPEAKS, base_url=public_url, tls=client).run()
            assert_closed_in_order(desk, result)
            desk.assert_nothing_of_the_call_remains()

    assert result.violations == [] and result.stream_url == f"wss://localhost:{proxy.port}/media"
    assert result.media_opened_at is not None and result.action_status == 200
    enqueue = ElementTree.fromstring(result.final_twiml).find("Enqueue")
    assert enqueue is not None and enqueue.get("workflowSid") == "WW37efa99795cd582f2f4c31893159fe53"
    upgrades = [headers for line, headers in proxy.passed_on if line.startswith("GET /media ")]
    assert len(upgrades) == 1
    assert upgrades[0]["upgrade"] == "websocket" and upgrades[0]["connection"] == "upgrade"
    assert upgrades[0]["x-forwarded-proto"] == "https"


async def test_a_public_url_that_is_not_the_proxys_is_named_when_signatures_fail(tmp_path, caplog):
    caplog.set_level(logging.INFO)  # an in-process server logs through the logging module, as `serve` does
    serving, client = certificates(tmp_path)
    async with tls_proxy(serving) as proxy:
        public_url = f"https://localhost:{proxy.port}"
        async with front_desk(tmp_path, triage_scenario("billing")) as desk:  # ORCHESTRATOR_PUBLIC_URL forgotten
            proxy.forward_to(int(desk.server.base_url.rsplit(":", 1)[1]))
            async with httpx.AsyncClient(verify=client, timeout=CALL_TIMEOUT_S) as http:
                url = public_url + "/voice/incoming"
                refused = await http.post(url, data=INCOMING, headers=signed_headers(url, desk.server.auth_token, INCOMING))

    assert refused.status_code == 403
    logged = caplog.text
    assert f"forwarded_origin=https://localhost:{proxy.port}" in logged
    assert f"public_url={desk.server.base_url}" in logged

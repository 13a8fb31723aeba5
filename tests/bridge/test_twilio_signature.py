"""X-Twilio-Signature checks: webhooks and the Media Stream upgrade, rebuilt from the public URL."""
from __future__ import annotations

from twilio.request_validator import RequestValidator

from bridge.twilio.signature import TwilioSignatureCheck

# The example of Twilio's webhook security page (token 12345, this URL and these parameters).
PUBLISHED_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}


def test_the_published_example_validates_from_the_public_base_path_and_query():
    check = TwilioSignatureCheck("12345", "https://mycompany.com")
    assert check.check_webhook("/myapp.php", "foo=1&bar=2", PUBLISHED_PARAMS, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
    assert not check.check_webhook("/myapp.php", "foo=1&bar=3", PUBLISHED_PARAMS, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
    assert not check.check_webhook("/myapp.php", "foo=1&bar=2", {**PUBLISHED_PARAMS, "Digits": "9"},
                                   "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")


def test_missing_or_empty_signatures_fail_closed():
    check = TwilioSignatureCheck("12345", "https://mycompany.com")
    assert not check.check_webhook("/voice/incoming", "", {}, None)
    assert not check.check_webhook("/voice/incoming", "", {}, "")
    assert not check.check_websocket("/media", "", None)


def test_a_path_prefix_of_the_public_url_is_part_of_what_is_signed():
    token, params = "secret", {"CallSid": "CA" + "1" * 32}
    signed = RequestValidator(token).compute_signature("https://desk.example.com/frontdesk/voice/incoming", params)
    assert TwilioSignatureCheck(token, "https://desk.example.com/frontdesk/").check_webhook(
        "/voice/incoming", "", params, signed)
    assert not TwilioSignatureCheck(token, "https://desk.example.com").check_webhook(
        "/voice/incoming", "", params, signed)


def test_the_stream_upgrade_is_accepted_signed_over_wss_or_https_and_nothing_else():
    token = "secret"
    check = TwilioSignatureCheck(token, "https://desk.example.com")
    validator = RequestValidator(token)
    assert check.check_websocket("/media", "", validator.compute_signature("wss://desk.example.com/media", {}))
    assert check.check_websocket("/media", "", validator.compute_signature("https://desk.example.com/media", {}))
    assert not check.check_websocket("/media", "", validator.compute_signature("ws://desk.example.com/media", {}))
    assert not check.check_websocket("/media", "", validator.compute_signature("wss://other.example.com/media", {}))
    assert not check.check_websocket("/media", "", RequestValidator("wrong").compute_signature(
        "wss://desk.example.com/media", {}))


def test_a_plain_http_base_signs_the_stream_over_ws():
    token = "secret"
    check = TwilioSignatureCheck(token, "http://127.0.0.1:8080")
    assert check.check_websocket("/media", "", RequestValidator(token).compute_signature("ws://127.0.0.1:8080/media", {}))


def test_the_development_switch_accepts_anything():
    check = TwilioSignatureCheck("secret", "https://desk.example.com", enabled=False)
    assert check.check_webhook("/voice/incoming", "", {}, None)
    assert check.check_websocket("/media", "", "garbage")

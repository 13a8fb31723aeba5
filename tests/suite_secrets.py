"""The secrets the test suite configures for the servers it starts, and a caller number (the hostile-input
calls dial from it): known values, so that every log the suite writes can be searched for them at the end
(`tests/log_secret_check.py`). Long and unlike anything else, so a find is a leak, not a coincidence."""
from __future__ import annotations

TWILIO_AUTH_TOKEN = "suite-twilio-auth-token-5d0c7e21f4a9"
OPENAI_API_KEY = "sk-suite-openai-key-83b6a0f2c917"
OPS_TOKEN = "suite-ops-token-e4a1970bd35c"
HANDOFF_TOKEN = "suite-handoff-token-0f6c2b9d8e17"
CALLER = "+15017122661"

SUITE_SECRETS = {
    "TWILIO_AUTH_TOKEN": TWILIO_AUTH_TOKEN,
    "OPENAI_API_KEY": OPENAI_API_KEY,
    "ORCHESTRATOR_OPS_TOKEN": OPS_TOKEN,
    "ORCHESTRATOR_HANDOFF_TOKEN": HANDOFF_TOKEN,
}

# What no log may show: the secrets, and the caller's number unmasked.
NEVER_LOGGED = {**SUITE_SECRETS, "the suite's caller number": CALLER}


def server_secrets() -> dict[str, str]:
    """`load_server_settings` overrides that configure the suite's secrets."""
    return {
        "twilio_auth_token": TWILIO_AUTH_TOKEN,
        "openai_api_key": OPENAI_API_KEY,
        "ops_token": OPS_TOKEN,
        "handoff_token": HANDOFF_TOKEN,
    }

"""OpenAI models with an announced shutdown date, as the installed `openai` package's type docstrings list
them (openai/types/realtime/: the session's `model` and the transcription's `model`). The server and
`check-config` warn when a configured model is here; add a line when OpenAI announces another."""
from __future__ import annotations

from datetime import date

from orchestrator.config.server_settings import ServerSettings

ANNOUNCED_SHUTDOWNS: dict[str, date] = {
    # Realtime models (shutdown announced for 2027-01-20).
    "gpt-realtime": date(2027, 1, 20),
    "gpt-realtime-2025-08-28": date(2027, 1, 20),
    "gpt-realtime-mini": date(2027, 1, 20),
    "gpt-realtime-mini-2025-12-15": date(2027, 1, 20),
    "gpt-audio-mini": date(2027, 1, 20),
    "gpt-audio-mini-2025-12-15": date(2027, 1, 20),
    # Transcription models (shutdown announced for 2027-02-26).
    "whisper-1": date(2027, 2, 26),
    "gpt-4o-mini-transcribe": date(2027, 2, 26),
    "gpt-4o-mini-transcribe-2025-12-15": date(2027, 2, 26),
    "gpt-4o-transcribe": date(2027, 2, 26),
    "gpt-4o-transcribe-diarize": date(2027, 2, 26),
}


def model_shutdown_warnings(settings: ServerSettings) -> list[str]:
    """One warning per configured model whose shutdown OpenAI has announced."""
    configured = (
        ("ORCHESTRATOR_REALTIME_MODEL", settings.realtime_model),
        ("ORCHESTRATOR_TRANSCRIPTION_MODEL", settings.transcription_model),
    )
    return [
        f"WARNING: {variable}={model} has an announced shutdown on {ANNOUNCED_SHUTDOWNS[model].isoformat()} "
        "(https://developers.openai.com/api/docs/deprecations); choose a current model."
        for variable, model in configured
        if model in ANNOUNCED_SHUTDOWNS
    ]

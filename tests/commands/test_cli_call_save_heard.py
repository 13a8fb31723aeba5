"""`orchestrator call --save-heard FILE` against a real server writes what the caller heard as a WAV file."""
from __future__ import annotations

import wave

from tests.cli_support import orchestrator, served_fake  # noqa: F401 (fixtures)


def test_save_heard_writes_the_agent_audio_the_caller_heard(served_fake, tmp_path):
    base_url, _ = served_fake
    heard = tmp_path / "heard.wav"
    done = orchestrator(tmp_path, "call", "--url", base_url, "--say", "my basement is flooding", "--speed", "4",
                        "--save-heard", str(heard))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert f"saved what the caller heard to {heard}" in done.stdout
    with wave.open(str(heard), "rb") as recording:
        assert recording.getnframes() > 0  # the fake engine's greeting and handoff line

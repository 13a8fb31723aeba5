"""The main job as a user runs it: `orchestrator serve` with no accounts, then `orchestrator call` against it."""
from __future__ import annotations

import pytest

from orchestrator.engines.offline.speech import speech_support
from tests.cli_support import orchestrator, served, served_fake  # noqa: F401 (fixtures)


def test_serve_starts_with_no_account_and_says_which_engine_it_uses(served):
    base_url, printed = served
    text = "\n".join(printed)
    if speech_support().available:
        assert "engine: offline (speech-to-text, intent classifier and text-to-speech on this machine; English only" in text
    else:
        assert "engine: offline, TEXT MODE (speech extra not installed" in text
    assert "(no OPENAI_API_KEY)" in text
    assert "TWILIO_AUTH_TOKEN is not set" in text
    assert f"voice webhook: {base_url}/voice/incoming" in text


def test_orchestrator_call_prints_a_complete_call_against_the_fake_engine(served_fake, tmp_path):
    base_url, _ = served_fake
    done = orchestrator(tmp_path, "call", "--url", base_url, "--say", "my basement is flooding", "--speed", "4")
    assert done.returncode == 0, done.stdout + done.stderr
    output = done.stdout
    assert "greeting → capture → classify → dispatch → teardown → ended" in output
    assert "caller: my basement is flooding" in output
    assert "decision: route emergency_desk (flex), reason accepted, intent emergency" in output
    assert "callback_number: +14155552671" in output
    assert '<Enqueue workflowSid="WW37efa99795cd582f2f4c31893159fe53">' in output


@pytest.mark.skipif(not speech_support().available, reason="the speech extra is not installed")
def test_a_call_from_a_wav_file_goes_through_the_offline_engine_to_the_right_flex_queue(served, tmp_path):
    base_url, _ = served
    from bridge.twilio.mulaw import mulaw_to_wav, silence
    from orchestrator.engines.offline.engine import load_offline_speech

    speech = load_offline_speech().speech
    wav = tmp_path / "caller.wav"
    mulaw_to_wav(silence(300) + speech.synthesizer.synthesize(
        "Hi, I have a question about my invoice. I think I was charged twice.") + silence(1000), wav)
    done = orchestrator(tmp_path, "call", "--url", base_url, "--wav", str(wav), "--engine", "offline",
                        "--speed", "2", timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    output = done.stdout
    assert "greeting → capture → classify → dispatch → teardown → ended" in output
    assert "decision: route billing_desk (flex), reason accepted, intent billing" in output
    assert '<Enqueue workflowSid="WW77927f36a49d594244217cbcbcae9cee">' in output


def test_asking_for_an_engine_the_server_does_not_have_fails_before_the_call(served_fake, tmp_path):
    base_url, _ = served_fake
    done = orchestrator(tmp_path, "call", "--url", base_url, "--engine", "realtime")
    assert done.returncode == 2
    assert "has no 'realtime' engine" in done.stderr and "Traceback" not in done.stderr


def test_orchestrator_call_without_a_token_explains_itself(tmp_path):
    done = orchestrator(tmp_path, "call", "--url", "http://127.0.0.1:9")
    assert done.returncode == 2
    assert "no auth token" in done.stderr and "Traceback" not in done.stderr


def test_a_call_with_no_server_listening_says_so_and_what_to_do(tmp_path):
    done = orchestrator(tmp_path, "call", "--url", "http://127.0.0.1:9", "--auth-token", "t", "--say", "hi")
    assert done.returncode == 1
    assert "no server answered at http://127.0.0.1:9/voice/incoming" in done.stdout
    assert "ConnectError" in done.stdout and "orchestrator serve" in done.stdout
    assert "HTTP nothing" not in done.stdout


def test_a_call_signed_with_another_token_points_at_the_servers_data_dir(served_fake, tmp_path):
    base_url, _ = served_fake
    done = orchestrator(tmp_path, "call", "--url", base_url, "--auth-token", "not-the-servers", "--say", "hi")
    assert done.returncode == 1
    assert "refused the call's signature (HTTP 403)" in done.stdout
    assert "pass the same --data-dir" in done.stdout


def test_a_file_that_is_not_a_wav_is_named_once(tmp_path):
    not_wav = tmp_path / "notes.txt"
    not_wav.write_text("hello")
    done = orchestrator(tmp_path, "call", "--url", "http://127.0.0.1:9", "--auth-token", "t", "--wav", str(not_wav))
    assert done.returncode == 2
    assert done.stderr.count(str(not_wav)) == 1, done.stderr
    assert "not a WAV file" in done.stderr


def test_the_callers_lines_can_be_saved_as_a_wav_that_call_plays_back(tmp_path):
    import wave

    said = tmp_path / "said.wav"
    done = orchestrator(tmp_path, "call", "--url", "http://127.0.0.1:9", "--auth-token", "t",
                        "--say", "my basement is flooding", "--say", "four one five", "--save-said", str(said))
    assert f"saved the caller's lines to {said}" in done.stdout
    with wave.open(str(said), "rb") as reader:
        seconds = reader.getnframes() / reader.getframerate()
    assert seconds > 3 * 1.2  # two lines and three pauses
    replay = orchestrator(tmp_path, "call", "--url", "http://127.0.0.1:9", "--auth-token", "t", "--wav", str(said))
    assert "not a WAV" not in replay.stderr and "no server answered" in replay.stdout

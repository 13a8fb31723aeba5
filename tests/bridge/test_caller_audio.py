"""Caller audio: µ-law silence and tones, WAV files in every common shape to 8 kHz µ-law, and back."""

from __future__ import annotations

import math
import struct
import warnings
import wave
from array import array
from pathlib import Path

import pytest

from bridge.twilio.mulaw import (
    MULAW_SILENCE,
    CallerAudioError,
    frames,
    mulaw_to_wav,
    silence,
    tone,
    wav_to_mulaw,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


def linear(mulaw: bytes) -> array:
    return array("h", audioop.ulaw2lin(mulaw, 2))


def zero_crossings(samples: array) -> int:
    return sum(1 for a, b in zip(samples, samples[1:]) if (a < 0) != (b < 0))


def assert_tone(mulaw: bytes, hz: float, ms: int) -> None:
    """A sine at `hz` survived: real energy, and about two zero crossings per period."""
    samples = linear(mulaw)
    assert audioop.rms(samples.tobytes(), 2) > 2000
    expected = 2 * hz * ms / 1000
    assert abs(zero_crossings(samples) - expected) <= expected * 0.05 + 2


def write_pcm_wav(path: Path, *, rate: int, width: int, channels: int, ms: int, hz: float = 440.0) -> Path:
    """A sine at half scale, the same in every channel."""
    count = rate * ms // 1000
    peak = (1 << (8 * width - 1)) - 1
    frames_out = bytearray()
    for n in range(count):
        value = round(0.5 * peak * math.sin(2 * math.pi * hz * n / rate))
        for _ in range(channels):
            if width == 1:
                frames_out += struct.pack("<B", value + 128)
            elif width == 3:
                frames_out += struct.pack("<i", value)[:3]
            else:
                frames_out += struct.pack({2: "<h", 4: "<i"}[width], value)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(bytes(frames_out))
    return path


def riff(fmt: bytes, data: bytes | None) -> bytes:
    """A RIFF/WAVE file from its 'fmt ' chunk body and its 'data' chunk body (None: no data chunk)."""
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    if data is not None:
        body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def write_riff(path: Path, format_tag: int, channels: int, rate: int, bits: int, data: bytes) -> Path:
    block_align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", format_tag, channels, rate, rate * block_align, block_align, bits)
    path.write_bytes(riff(fmt, data))
    return path


def test_silence_is_mulaw_silence_of_the_asked_length() -> None:
    assert MULAW_SILENCE == b"\xff"
    assert silence(0) == b""
    assert silence(20) == b"\xff" * 160
    assert len(silence(1234)) == 1234 * 8
    with pytest.raises(ValueError):
        silence(-1)


def test_tone_has_the_length_the_frequency_and_the_level_asked_for() -> None:
    audio = tone(500, hz=440.0, level=0.3)
    assert len(audio) == 4000
    assert_tone(audio, 440.0, 500)
    peak = max(abs(sample) for sample in linear(audio))
    assert 0.27 * 32767 < peak < 0.33 * 32767
    assert len(tone(1000, hz=1000.0)) == 8000
    assert_tone(tone(1000, hz=1000.0), 1000.0, 1000)
    assert max(abs(sample) for sample in linear(tone(100, level=0.0))) < 100
    for bad in ({"hz": 0}, {"hz": 4000}, {"level": 1.5}, {"level": -0.1}):
        with pytest.raises(ValueError):
            tone(100, **bad)


@pytest.mark.parametrize(
    ("rate", "width", "channels"),
    [
        (8000, 2, 1),
        (16000, 2, 1),
        (44100, 2, 1),
        (8000, 1, 1),
        (16000, 1, 1),
        (44100, 2, 2),
        (22050, 3, 1),
        (48000, 4, 2),
        (16000, 2, 3),
    ],
)
def test_wav_to_mulaw_converts_any_pcm_wav_to_8k_mono(
    tmp_path: Path, rate: int, width: int, channels: int
) -> None:
    path = write_pcm_wav(tmp_path / "in.wav", rate=rate, width=width, channels=channels, ms=1000)
    mulaw = wav_to_mulaw(path)
    assert abs(len(mulaw) / 8 - 1000) <= 2  # milliseconds at 8 bytes per ms
    assert_tone(mulaw, 440.0, 1000)


def test_wav_at_8k_mono_16_bit_keeps_every_sample(tmp_path: Path) -> None:
    path = write_pcm_wav(tmp_path / "in.wav", rate=8000, width=2, channels=1, ms=250)
    assert len(wav_to_mulaw(str(path))) == 2000


def test_mulaw_wav_passes_through_untouched_and_alaw_is_decoded(tmp_path: Path) -> None:
    original = tone(400, hz=600.0)
    assert wav_to_mulaw(write_riff(tmp_path / "u.wav", 7, 1, 8000, 8, original)) == original

    pcm = audioop.ulaw2lin(original, 2)
    alaw = audioop.lin2alaw(pcm, 2)
    converted = wav_to_mulaw(write_riff(tmp_path / "a.wav", 6, 1, 8000, 8, alaw))
    assert len(converted) == len(original)
    assert_tone(converted, 600.0, 400)

    stereo_16k = audioop.ratecv(audioop.tostereo(pcm, 2, 1, 1), 2, 2, 8000, 16000, None)[0]
    mulaw_16k_stereo = audioop.lin2ulaw(stereo_16k, 2)
    resampled = wav_to_mulaw(write_riff(tmp_path / "u16.wav", 7, 2, 16000, 8, mulaw_16k_stereo))
    assert abs(len(resampled) - len(original)) <= 16
    assert_tone(resampled, 600.0, 400)


def test_float_and_extensible_wavs_are_read(tmp_path: Path) -> None:
    samples = array("f", (0.5 * math.sin(2 * math.pi * 440 * n / 16000) for n in range(16000)))
    converted = wav_to_mulaw(write_riff(tmp_path / "f.wav", 3, 1, 16000, 32, samples.tobytes()))
    assert abs(len(converted) - 8000) <= 16
    assert_tone(converted, 440.0, 1000)

    pcm = write_pcm_wav(tmp_path / "p.wav", rate=8000, width=2, channels=1, ms=300)
    with wave.open(str(pcm), "rb") as reader:
        data = reader.readframes(reader.getnframes())
    # WAVE_FORMAT_EXTENSIBLE: 40-byte fmt, the sub-format GUID starts with the real format tag (1 = PCM).
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 1, 8000, 16000, 2, 16, 22, 16, 4)
    fmt += struct.pack("<H", 1) + bytes(14)
    (tmp_path / "x.wav").write_bytes(riff(fmt, data))
    assert len(wav_to_mulaw(tmp_path / "x.wav")) == 2400


def test_not_a_wav_is_a_clear_error(tmp_path: Path) -> None:
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    with pytest.raises(CallerAudioError, match="not a WAV file"):
        wav_to_mulaw(text)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(CallerAudioError, match="not a WAV file"):
        wav_to_mulaw(empty)
    riff_without_data = tmp_path / "nodata.wav"
    riff_without_data.write_bytes(riff(struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16), None))
    with pytest.raises(CallerAudioError, match="no 'data' chunk"):
        wav_to_mulaw(riff_without_data)
    adpcm = write_riff(tmp_path / "adpcm.wav", 2, 1, 8000, 4, b"\x00" * 100)
    with pytest.raises(CallerAudioError, match="unsupported"):
        wav_to_mulaw(adpcm)
    assert issubclass(CallerAudioError, ValueError)


def test_mulaw_to_wav_round_trip_keeps_length_and_sound(tmp_path: Path) -> None:
    heard = tone(700, hz=500.0) + silence(300)
    path = tmp_path / "heard.wav"
    mulaw_to_wav(heard, path)
    with wave.open(str(path), "rb") as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, 8000)
        assert reader.getnframes() == len(heard)
    back = wav_to_mulaw(path)
    assert len(back) == len(heard)
    assert_tone(back[:5600], 500.0, 700)
    assert set(back[5600:]) <= {0xFF, 0x7F}  # µ-law silence (positive or negative zero)


def test_frames_split_and_pad_the_last_frame_with_silence() -> None:
    assert frames(b"") == []
    exact = frames(b"\x01" * 320)
    assert exact == [b"\x01" * 160, b"\x01" * 160]
    padded = frames(b"\x01" * 170)
    assert [len(frame) for frame in padded] == [160, 160]
    assert padded[1] == b"\x01" * 10 + b"\xff" * 150
    assert frames(b"\x02" * 5, frame_bytes=4) == [b"\x02" * 4, b"\x02" + b"\xff" * 3]
    with pytest.raises(ValueError):
        frames(b"x", frame_bytes=0)

"""Audio for the simulated caller: µ-law 8 kHz mono bytes, the format of a Twilio Media Stream.

Pure helpers (no Trio, no network): silence and tones for scripted callers, WAV files in and out.

    from bridge.twilio.mulaw import tone, wav_to_mulaw
    Say(tone(1200), "my boiler is leaking")           # speech-like energy
    Say(wav_to_mulaw("recordings/leak.wav"), "leak")  # a real recording, any rate or width

Conversion uses the stdlib `wave` and `audioop` modules (audioop is deprecated in Python 3.11 and
gone in 3.13; its DeprecationWarning is silenced here only). `wave` in 3.11 reads plain PCM only, so
µ-law/A-law, IEEE float and WAVE_FORMAT_EXTENSIBLE files go through a small RIFF reader instead.
"""

from __future__ import annotations

import math
import os
import struct
import warnings
import wave
from array import array
from dataclasses import dataclass

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = [
    "MULAW_SILENCE",
    "MULAW_RATE",
    "MULAW_BYTES_PER_MS",
    "CallerAudioError",
    "frames",
    "mulaw_to_wav",
    "silence",
    "tone",
    "wav_to_mulaw",
]

MULAW_SILENCE = b"\xff"
MULAW_RATE = 8000
MULAW_BYTES_PER_MS = MULAW_RATE // 1000

_FORMAT_PCM = 1
_FORMAT_FLOAT = 3
_FORMAT_ALAW = 6
_FORMAT_MULAW = 7
_FORMAT_EXTENSIBLE = 0xFFFE


class CallerAudioError(ValueError):
    """An audio file or buffer the caller cannot use (not a WAV, unsupported encoding, truncated)."""


def silence(ms: int) -> bytes:
    """`ms` milliseconds of µ-law 8 kHz silence."""
    if ms < 0:
        raise ValueError(f"silence length must be >= 0 ms, got {ms}")
    return MULAW_SILENCE * (ms * MULAW_BYTES_PER_MS)


def tone(ms: int, hz: float = 440.0, level: float = 0.3) -> bytes:
    """`ms` milliseconds of a sine at `hz`, amplitude `level` (0..1 of full scale), as µ-law 8 kHz."""
    if ms < 0:
        raise ValueError(f"tone length must be >= 0 ms, got {ms}")
    if not 0 < hz < MULAW_RATE / 2:
        raise ValueError(f"tone frequency must be between 0 and {MULAW_RATE // 2} Hz (exclusive), got {hz}")
    if not 0 <= level <= 1:
        raise ValueError(f"tone level must be between 0 and 1, got {level}")
    amplitude = level * 32767
    step = 2 * math.pi * hz / MULAW_RATE
    samples = array("h", (round(amplitude * math.sin(step * n)) for n in range(ms * MULAW_BYTES_PER_MS)))
    return audioop.lin2ulaw(samples.tobytes(), 2)


def frames(mulaw: bytes, frame_bytes: int = 160) -> list[bytes]:
    """Split µ-law audio into frames of `frame_bytes` (160 = 20 ms); the last one is padded with silence."""
    if frame_bytes <= 0:
        raise ValueError(f"frame size must be > 0 bytes, got {frame_bytes}")
    chunks = [bytes(mulaw[start : start + frame_bytes]) for start in range(0, len(mulaw), frame_bytes)]
    if chunks and len(chunks[-1]) < frame_bytes:
        chunks[-1] = chunks[-1].ljust(frame_bytes, MULAW_SILENCE)
    return chunks


def mulaw_to_wav(mulaw: bytes, path: str | os.PathLike[str]) -> None:
    """Save µ-law 8 kHz mono audio (e.g. what the caller heard) as a 16-bit PCM 8 kHz WAV."""
    with wave.open(os.fspath(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(MULAW_RATE)
        out.writeframes(audioop.ulaw2lin(bytes(mulaw), 2))


def wav_to_mulaw(path: str | os.PathLike[str]) -> bytes:
    """Read a WAV file (PCM 8/16/24/32-bit, IEEE float, µ-law or A-law; any rate, any channel count)
    and return it as 8 kHz mono µ-law. Raises CallerAudioError for anything else."""
    name = os.fspath(path)
    source = _read_wav(name)
    if source.frame_bytes == 0 or source.channels == 0 or source.rate <= 0:
        raise CallerAudioError(f"{name}: WAV header declares no audio (channels, rate or width is 0)")
    data = source.data[: len(source.data) - len(source.data) % source.frame_bytes]  # drop a torn last frame
    if source.format_tag == _FORMAT_MULAW and source.channels == 1 and source.rate == MULAW_RATE:
        return data  # already what Twilio carries: pass it through untouched
    linear = _to_linear16(source, data, name)
    mono = _mix_to_mono(linear, source.channels)
    if source.rate != MULAW_RATE:
        mono, _ = audioop.ratecv(mono, 2, 1, source.rate, MULAW_RATE, None)
    return audioop.lin2ulaw(mono, 2)


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _WavSource:
    format_tag: int
    channels: int
    rate: int
    sample_width: int  # bytes per sample of one channel
    data: bytes

    @property
    def frame_bytes(self) -> int:
        return self.channels * self.sample_width


def _read_wav(path: str) -> _WavSource:
    with open(path, "rb") as file:
        head = file.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise CallerAudioError(f"{path}: not a WAV file (no RIFF/WAVE header)")
    try:
        with wave.open(path, "rb") as reader:
            return _WavSource(
                _FORMAT_PCM,
                reader.getnchannels(),
                reader.getframerate(),
                reader.getsampwidth(),
                reader.readframes(reader.getnframes()),
            )
    except (wave.Error, EOFError):
        pass  # not plain PCM (or a header `wave` rejects): read the chunks ourselves
    with open(path, "rb") as file:
        return _read_riff_chunks(path, file.read())


def _read_riff_chunks(path: str, raw: bytes) -> _WavSource:
    fmt: bytes | None = None
    data: bytes | None = None
    offset = 12
    while offset + 8 <= len(raw) and (fmt is None or data is None):
        chunk_id = raw[offset : offset + 4]
        (size,) = struct.unpack_from("<I", raw, offset + 4)
        body = raw[offset + 8 : offset + 8 + size]  # a truncated last chunk keeps what is there
        if chunk_id == b"fmt ":
            fmt = body
        elif chunk_id == b"data":
            data = body
        offset += 8 + size + (size & 1)  # chunks are word-aligned
    if fmt is None or len(fmt) < 16:
        raise CallerAudioError(f"{path}: WAV file has no usable 'fmt ' chunk")
    if data is None:
        raise CallerAudioError(f"{path}: WAV file has no 'data' chunk")
    format_tag, channels, rate, _byte_rate, _block_align, bits = struct.unpack_from("<HHIIHH", fmt)
    if format_tag == _FORMAT_EXTENSIBLE:
        if len(fmt) < 26:
            raise CallerAudioError(f"{path}: WAVE_FORMAT_EXTENSIBLE header is too short")
        (format_tag,) = struct.unpack_from("<H", fmt, 24)  # first two bytes of the sub-format GUID
    if format_tag not in (_FORMAT_PCM, _FORMAT_FLOAT, _FORMAT_ALAW, _FORMAT_MULAW):
        raise CallerAudioError(
            f"{path}: unsupported WAV encoding (format tag {format_tag}); use PCM, float, µ-law or A-law"
        )
    if bits % 8 or not 8 <= bits <= 64:
        raise CallerAudioError(f"{path}: unsupported sample size of {bits} bits")
    return _WavSource(format_tag, channels, rate, bits // 8, data)


# --------------------------------------------------------------------------- converting


def _to_linear16(source: _WavSource, data: bytes, path: str) -> bytes:
    """Interleaved samples as signed 16-bit little-endian, channels untouched."""
    width = source.sample_width
    if source.format_tag in (_FORMAT_MULAW, _FORMAT_ALAW):
        if width != 1:
            raise CallerAudioError(f"{path}: µ-law/A-law WAV must have 8-bit samples, has {width * 8}")
        decode = audioop.ulaw2lin if source.format_tag == _FORMAT_MULAW else audioop.alaw2lin
        return decode(data, 2)
    if source.format_tag == _FORMAT_FLOAT:
        if width not in (4, 8):
            raise CallerAudioError(f"{path}: float WAV must have 32- or 64-bit samples, has {width * 8}")
        floats = array("f" if width == 4 else "d", data)
        return array("h", (round(max(-1.0, min(1.0, value)) * 32767) for value in floats)).tobytes()
    if width not in (1, 2, 3, 4):
        raise CallerAudioError(f"{path}: unsupported PCM sample size of {width * 8} bits")
    if width == 1:
        data = audioop.bias(data, 1, -128)  # 8-bit WAV samples are unsigned
    return data if width == 2 else audioop.lin2lin(data, width, 2)


def _mix_to_mono(linear: bytes, channels: int) -> bytes:
    if channels == 1:
        return linear
    if channels == 2:
        return audioop.tomono(linear, 2, 0.5, 0.5)
    samples = array("h", linear)
    mixed = b""
    for channel in range(channels):
        part = audioop.mul(samples[channel::channels].tobytes(), 2, 1 / channels)
        mixed = part if not mixed else audioop.add(mixed, part, 2)
    return mixed

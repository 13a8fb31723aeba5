"""The tag the capacity benchmark's callers put inside each 20 ms µ-law frame, found again in the echo.

A frame's 160 audio bytes start with MAGIC, the call index, the frame number and flags; the rest is µ-law
silence. The bridge passes audio through untouched (or re-chunked), so the tag is searched for anywhere in
a payload. Any byte is valid µ-law, so the tag is just a short click to a listener.
"""
from __future__ import annotations

import struct

MAGIC = b"\xa5TAG"
DECIDE = 0x01  # the echo fake proposes a route when it sees this frame
FRAME_BYTES = 160
_TAG = struct.Struct("<4sIIB")
_SILENCE = b"\xff" * (FRAME_BYTES - _TAG.size)


def tagged_frame(call_index: int, frame_number: int, flags: int = 0) -> bytes:
    return _TAG.pack(MAGIC, call_index, frame_number, flags) + _SILENCE


def find_tags(audio: bytes) -> list[tuple[int, int, int]]:
    """(call index, frame number, flags) of every tag in `audio`."""
    found = []
    position = audio.find(MAGIC)
    while position >= 0 and position + _TAG.size <= len(audio):
        _, call_index, frame_number, flags = _TAG.unpack_from(audio, position)
        found.append((call_index, frame_number, flags))
        position = audio.find(MAGIC, position + _TAG.size)
    return found

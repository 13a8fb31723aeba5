"""The agent's audio to Twilio, with the marks that tell how much of it the caller heard (barge-in).

    audio_out.play(item_id, payload_b64)   a media frame, and a mark every MARK_EVERY_MS of audio
    audio_out.mark_end()                   a mark after the audio not yet marked (the end of a response)
    name = audio_out.mark("line-greeting") a named mark; its echo (on_echo) says the audio before it is over
    audio_out.on_echo(name)                Twilio's echo of a mark: played, or discarded by a clear
    cut = audio_out.clear()                barge-in: Twilio drops what it has not played; `cut` says how
                                           much of the item being played the caller heard

Frames go out through `send(frames)`, which must not wait (the socket's post). The bookkeeping is done
before the send, so an echo can never overtake it (MarkTracker's contract). Audio of an item that was
cleared is not sent again. Knows nothing of lines or routes: whoever places a named mark knows what it ends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bridge.twilio.media_stream import (
    MULAW_BYTES_PER_MS,
    MarkTracker,
    clear_frame,
    decoded_base64_length,
    mark_frame,
    media_frame,
)

__all__ = ["MARK_EVERY_MS", "AudioOut", "CutItem"]

# A mark at least every this much agent audio (and at each response's end): the precision of barge-in's
# audio_end_ms. A mark per 20 ms chunk measured 6 WebSocket messages per echoed frame instead of 4.4.
MARK_EVERY_MS = 100


@dataclass(frozen=True, slots=True)
class CutItem:
    """The item a clear cut short, and how much of it the caller heard."""

    item_id: str
    played_ms: int
    sent_ms: int

    @property
    def heard_in_part(self) -> bool:
        """Some of it was sent and not all of it was heard: the engine must forget the rest."""
        return 0 < self.sent_ms and self.played_ms < self.sent_ms


class AudioOut:
    def __init__(self, stream_sid: str, send: Callable[[Sequence[str]], None]) -> None:
        self._stream_sid = stream_sid
        self._send = send
        self._tracker = MarkTracker()
        self._current_item: str | None = None
        self._cleared_items: set[str] = set()
        self._unmarked_bytes = 0  # audio sent since the last mark
        self._named_marks = 0

    def play(self, item_id: str, payload_b64: str) -> None:
        if item_id in self._cleared_items:
            return  # a late chunk of what the caller interrupted
        n_bytes = decoded_base64_length(payload_b64)
        if n_bytes <= 0:
            return
        self._current_item = item_id
        self._tracker.on_audio_sent(item_id, n_bytes)
        media = media_frame(self._stream_sid, payload_b64)
        self._unmarked_bytes += n_bytes
        if self._unmarked_bytes >= MARK_EVERY_MS * MULAW_BYTES_PER_MS:
            self._send((media, self._audio_mark()))
        else:
            self._send((media,))

    def mark_end(self) -> None:
        """A mark after the audio sent since the last one, if any: barge-in then knows when it all played."""
        if self._unmarked_bytes:
            self._send((self._audio_mark(),))

    def mark(self, label: str) -> str:
        """A mark after the audio sent so far, named after `label`; returns its name (unique)."""
        self._named_marks += 1
        name = f"{label}-{self._named_marks}"
        self._tracker.on_mark_sent(name)
        self._send((mark_frame(self._stream_sid, name),))
        return name

    def on_echo(self, name: str) -> None:
        self._tracker.on_mark_echoed(name)

    @property
    def playing(self) -> bool:
        """Whether a mark sent has not come back: audio sent may not have been played yet."""
        return self._tracker.pending_marks > 0

    def clear(self) -> CutItem | None:
        """Make Twilio drop the audio it has not played; the item that was playing, if any."""
        self._tracker.on_clear_sent()
        self._unmarked_bytes = 0  # discarded with the rest of Twilio's buffer
        self._send((clear_frame(self._stream_sid),))
        item = self._current_item
        if item is None:
            return None
        self._cleared_items.add(item)
        return CutItem(item, self._tracker.played_ms(item), self._tracker.sent_ms(item))

    def _audio_mark(self) -> str:
        """A mark frame after the audio sent so far: its echo proves that much was played."""
        self._unmarked_bytes = 0
        name = self._tracker.next_mark_name()
        self._tracker.on_mark_sent(name)
        return mark_frame(self._stream_sid, name)

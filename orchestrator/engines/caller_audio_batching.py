"""Whether caller audio is batched now: two 20 ms Twilio frames in one `input_audio_buffer.append` while this
worker process is busy, each frame at once while it is not.

A batch halves the appends (each a WebSocket message and a send, the largest share of a call's CPU) but holds
every other frame back 20 ms: at low load that is latency for nothing (the round trip is ~1 ms without it).
So the worker's own CPU use decides: its CPU time over the last second, as a share of one core. At or above
`busy_share` frames are batched; below `busy_share × IDLE_FRACTION` (a margin, so the drop in CPU that
batching itself brings does not switch it off again) they go one by one.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

CALLER_FRAMES_PER_BATCH = 2  # 40 ms an append: the 20 ms of delay is small next to the 500 ms the VAD waits
DEFAULT_BUSY_SHARE = 0.4  # of one core: well before the round trip suffers (near a whole core)
IDLE_FRACTION = 0.6
LOOK_EVERY_S = 1.0


class CallerAudioBatching:
    """One per process (the Realtime connector's), asked once per caller frame: `on()` is a clock read."""

    def __init__(
        self,
        busy_share: float = DEFAULT_BUSY_SHARE,
        *,
        cpu_seconds: Callable[[], float] = time.process_time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.busy_share = busy_share
        self._cpu_seconds = cpu_seconds
        self._clock = clock
        self._on = busy_share <= 0  # 0: always batched, from the first frame
        self._looked_at = clock()
        self._cpu_at_look = cpu_seconds()
        self._next_look = self._looked_at + LOOK_EVERY_S

    def on(self) -> bool:
        now = self._clock()
        if now >= self._next_look:
            self._look(now)
        return self._on

    def _look(self, now: float) -> None:
        cpu = self._cpu_seconds()
        share = (cpu - self._cpu_at_look) / (now - self._looked_at)
        self._looked_at, self._cpu_at_look, self._next_look = now, cpu, now + LOOK_EVERY_S
        was_on = self._on
        self._on = share >= self.busy_share * (IDLE_FRACTION if was_on else 1.0)
        if self._on != was_on:
            log.info("caller audio %s: this worker used %.0f %% of a core",
                     "batched" if self._on else "sent frame by frame", share * 100)

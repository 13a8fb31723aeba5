"""When caller frames are batched: by the worker's own CPU use over the last second, with a margin."""
from __future__ import annotations

from orchestrator.engines.caller_audio_batching import IDLE_FRACTION, LOOK_EVERY_S, CallerAudioBatching


class Worker:
    """A clock and a CPU-time counter the test moves."""

    def __init__(self) -> None:
        self.now = 100.0
        self.cpu = 5.0

    def runs_for(self, seconds: float, *, busy_share: float) -> None:
        self.now += seconds
        self.cpu += seconds * busy_share


def batching(worker: Worker, busy_share: float = 0.4) -> CallerAudioBatching:
    return CallerAudioBatching(busy_share, cpu_seconds=lambda: worker.cpu, clock=lambda: worker.now)


def test_frames_go_one_by_one_until_the_worker_is_busy_then_are_batched():
    worker = Worker()
    gauge = batching(worker)
    assert not gauge.on()
    worker.runs_for(LOOK_EVERY_S, busy_share=0.39)
    assert not gauge.on()
    worker.runs_for(LOOK_EVERY_S, busy_share=0.45)
    assert gauge.on()


def test_batching_stays_on_within_the_margin_and_stops_below_it():
    worker = Worker()
    gauge = batching(worker)
    worker.runs_for(LOOK_EVERY_S, busy_share=0.5)
    assert gauge.on()
    worker.runs_for(LOOK_EVERY_S, busy_share=0.4 * IDLE_FRACTION + 0.02)  # batching itself lowered the CPU
    assert gauge.on()
    worker.runs_for(LOOK_EVERY_S, busy_share=0.4 * IDLE_FRACTION - 0.02)
    assert not gauge.on()


def test_the_share_is_looked_at_once_per_period_not_per_frame():
    worker = Worker()
    gauge = batching(worker)
    worker.runs_for(LOOK_EVERY_S / 2, busy_share=1.0)
    assert not gauge.on()  # half a period: not looked at yet
    worker.runs_for(LOOK_EVERY_S / 2, busy_share=1.0)
    assert gauge.on()


def test_a_busy_share_of_zero_batches_from_the_first_frame():
    assert batching(Worker(), busy_share=0).on()

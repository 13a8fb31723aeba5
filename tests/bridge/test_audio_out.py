"""The agent's audio to Twilio (`bridge.twilio.audio_out`): what goes on the wire, and what barge-in learns."""
from __future__ import annotations

import base64
import json

from bridge.twilio.audio_out import MARK_EVERY_MS, AudioOut

SID = "MZ" + "1" * 32


def chunk(ms: int) -> str:
    return base64.b64encode(b"\x7f" * (8 * ms)).decode()


def wire() -> tuple[AudioOut, list[list[dict]]]:
    writes: list[list[dict]] = []
    return AudioOut(SID, lambda frames: writes.append([json.loads(frame) for frame in frames])), writes


def test_media_goes_out_with_a_mark_every_100_ms_in_the_same_write_and_the_end_of_a_response_is_marked():
    out, writes = wire()
    assert MARK_EVERY_MS == 100
    for _ in range(5):
        out.play("item_1", chunk(40))
    out.mark_end()
    out.mark_end()  # nothing new since: no second mark
    assert [[frame["event"] for frame in write] for write in writes] == [
        ["media"], ["media"], ["media", "mark"], ["media"], ["media"], ["mark"],
    ]
    assert all(frame["streamSid"] == SID for write in writes for frame in write)
    assert [write[-1]["mark"]["name"] for write in writes if write[-1]["event"] == "mark"] == ["audio-1", "audio-2"]
    assert out.playing


def test_named_marks_are_unique_and_echoes_settle_them():
    out, writes = wire()
    out.play("item_1", chunk(100))
    first, second = out.mark("line-greeting"), out.mark("line-greeting")
    assert (first, second) == ("line-greeting-1", "line-greeting-2")
    assert writes[-1] == [{"event": "mark", "streamSid": SID, "mark": {"name": second}}]
    out.on_echo(second)  # an echo settles every mark before it too
    assert not out.playing


def test_clear_cuts_the_item_at_what_was_heard_and_its_late_audio_is_dropped():
    out, writes = wire()
    for _ in range(4):
        out.play("item_1", chunk(100))
    out.on_echo("audio-2")  # 200 ms played
    cut = out.clear()
    assert writes[-1] == [{"event": "clear", "streamSid": SID}]
    assert cut is not None and (cut.item_id, cut.played_ms, cut.sent_ms, cut.heard_in_part) == ("item_1", 200, 400, True)
    assert not out.playing  # the clear's echoes mean "discarded": nothing is pending any more
    sent = len(writes)
    out.play("item_1", chunk(100))
    assert len(writes) == sent
    out.play("item_2", chunk(100))  # the next item plays
    assert writes[-1][0]["event"] == "media"


def test_a_clear_with_nothing_played_yet_has_no_item():
    out, writes = wire()
    out.mark("line-handoff")
    assert out.playing and out.clear() is None
    assert writes[-1] == [{"event": "clear", "streamSid": SID}]

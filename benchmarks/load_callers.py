"""Simulated Twilio callers for the capacity benchmark: one process carries many calls (asyncio, lean).

Each call does what Twilio does: POSTs the signed voice webhook, reads `<Connect action><Stream url>` and
its `<Parameter>`s, opens the Media Stream with a signed upgrade, sends `connected` and `start`, then one
tagged 20 ms µ-law `media` frame every 20 ms on a fixed grid (one of 20 one-ms slots per call, so calls
do not all send in the same tick). It echoes each `mark` once the audio queued before it has "played" at
8000 bytes/s, and all pending marks at once on `clear`.

At its decision time a call sends a frame tagged DECIDE (the echo fake then proposes a route) and keeps
streaming until the server closes the stream; then it POSTs the `<Connect action>` URL as Twilio does and
records when the TwiML came back. Prints one JSON object: round-trip histogram (0.1 ms buckets, frames
sent inside the measuring window), frames expected and echoed, and per-call teardown facts.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit
from xml.etree import ElementTree

import orjson
from bench_tags import DECIDE, find_tags, tagged_frame
from twilio.request_validator import RequestValidator
from ws_lite import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    close_payload,
    encode_frame,
    new_client_key,
    run_event_loop,
    split_http_head,
)

FRAME_S = 0.020
SLOTS = 20
BYTES_PER_S = 8000
HANDOFF_MARK_PREFIX = "line-handoff"  # the server's mark after the handoff line (orchestrator/call/playback.py)
CLOSE_WAIT_S = 10.0  # after DECIDE, the server must close the stream within this
_MEDIA = ('{"event":"media","sequenceNumber":"%d","streamSid":"%s","media":{"track":"inbound",'
          '"chunk":"%d","timestamp":"%d","payload":"%s"}}')


async def http_post(host: str, port: int, path_query: str, form: dict[str, str], headers: dict[str, str],
                    timeout: float = 15.0) -> tuple[int, str]:  # noqa: ASYNC109 (asyncio load generator)
    """One POST on a new connection (as Twilio's webhooks come); (status, body)."""
    body = urlencode(form).encode()
    head = [f"POST {path_query} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
            "Content-Type: application/x-www-form-urlencoded", f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in headers.items())]

    async def exchange() -> tuple[int, str]:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            raw = await reader.read(-1)
        finally:
            writer.close()
        parsed = split_http_head(raw)
        if parsed is None:
            return 0, ""
        status_line, response_headers, rest = parsed
        if "chunked" in response_headers.get("transfer-encoding", ""):
            rest = _unchunk(rest)
        return int(status_line.split()[1]), rest.decode()

    return await asyncio.wait_for(exchange(), timeout)


def _unchunk(data: bytes) -> bytes:
    out, position = bytearray(), 0
    while True:
        line_end = data.find(b"\r\n", position)
        size = int(data[position:line_end].split(b";")[0] or b"0", 16)
        if size == 0:
            return bytes(out)
        out += data[line_end + 2 : line_end + 2 + size]
        position = line_end + 4 + size


class Latencies:
    """Round trips in 0.1 ms buckets (exact enough for p99 against a 50 ms target, constant memory)."""

    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()

    def add(self, seconds: float) -> None:
        self.buckets[int(seconds * 10000)] += 1


class Call(asyncio.Protocol):
    def __init__(self, run: Run, index: int, start_at: float, decide_at: float, slot: int) -> None:
        self.run, self.index, self.slot = run, index, slot
        self.start_at, self.decide_at = start_at, decide_at
        self.call_sid = "CA" + uuid.uuid4().hex
        self.stream_sid = "MZ" + uuid.uuid4().hex
        self.transport: asyncio.Transport | None = None
        self.parser = FrameParser()
        self.head = b""
        self.upgraded = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.sent_at: list[float] = []
        self.echoed: list[bool] = []
        self.counted_until = -1  # frames up to this number (the DECIDE frame) are expected back
        self.next_send = 0.0
        self.frame_number = 0
        self.playback_until = 0.0
        self.marks: dict[str, asyncio.TimerHandle] = {}  # pending echoes, by mark name
        self.decided = False
        self.server_closed = False
        self.problem: str | None = None
        self.media_closed_at: float | None = None
        self.action_answered_at: float | None = None
        self.action_twiml = ""
        self.decide_sent_at: float | None = None
        self.handoff_marked_at: float | None = None  # the handoff line's end mark received
        self.handoff_played_at: float | None = None  # the handoff line's end mark echoed

    # ---- set-up: webhook, upgrade, opening messages

    async def dial(self) -> None:
        run = self.run
        await asyncio.sleep(max(0.0, self.start_at - time.monotonic()))
        params = self._voice_params("ringing")
        url = run.base_url + "/voice/incoming"
        status, twiml = await http_post(run.host, run.port, "/voice/incoming", params,
                                        {"X-Twilio-Signature": run.validator.compute_signature(url, params)})
        if status != 200:
            raise RuntimeError(f"webhook answered {status}")
        root = ElementTree.fromstring(twiml)
        connect, stream = root.find("Connect"), root.find("Connect/Stream")
        if connect is None or stream is None:
            raise RuntimeError(f"no <Connect><Stream> in {twiml[:200]}")
        self.action_url = connect.get("action", "")
        stream_url = stream.get("url", "")
        parameters = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
        target = urlsplit(stream_url)
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: self, target.hostname, target.port)
        assert self.transport is not None
        self.transport.write(
            f"GET {target.path} HTTP/1.1\r\nHost: {target.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {new_client_key().decode()}\r\nSec-WebSocket-Version: 13\r\n"
            f"X-Twilio-Signature: {run.validator.compute_signature(stream_url, {})}\r\n\r\n".encode()
        )
        await asyncio.wait_for(self.upgraded, 10.0)
        self._send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        self._send_json({
            "event": "start", "sequenceNumber": "1", "streamSid": self.stream_sid,
            "start": {"accountSid": run.account_sid, "streamSid": self.stream_sid, "callSid": self.call_sid,
                      "tracks": ["inbound"], "customParameters": parameters,
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
        })
        now = time.monotonic()
        # The first frame on this call's slot of the grid.
        grid = run.grid_origin + self.slot * 0.001
        self.next_send = grid + FRAME_S * (int((now - grid) / FRAME_S) + 1)

    def _voice_params(self, call_status: str) -> dict[str, str]:
        return {"CallSid": self.call_sid, "AccountSid": self.run.account_sid, "From": f"+1415{self.index:07d}",
                "To": "+14155550100", "CallStatus": call_status, "Direction": "inbound", "ApiVersion": "2010-04-01"}

    # ---- the stream, driven by the process's ticker

    def tick(self, now: float) -> None:
        """Send the frames due on the grid (catching up after a late tick)."""
        if self.server_closed:
            return
        while self.next_send <= now:
            flags = 0
            if not self.decided and self.next_send >= self.decide_at:
                flags, self.decided = DECIDE, True
                self.counted_until = self.frame_number
                self.decide_sent_at = now
            self._send_frame(flags, now)
            self.next_send += FRAME_S
        if self.decided and now - (self.decide_sent_at or now) > CLOSE_WAIT_S and not self.server_closed:
            self.problem = "server did not close the stream after the decision"
            self._close()

    def _send_frame(self, flags: int, now: float) -> None:
        number = self.frame_number
        self.frame_number += 1
        payload = base64.b64encode(tagged_frame(self.index, number, flags)).decode()
        self.sent_at.append(now)
        self.echoed.append(False)
        if not self.decided or flags:
            self.run.expected += 1
        self._send_text(_MEDIA % (number + 2, self.stream_sid, number + 1, number * 20, payload))

    def _send_json(self, message: dict[str, Any]) -> None:
        self._send_text(orjson.dumps(message).decode())

    def _send_text(self, text: str) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(encode_frame(OP_TEXT, text.encode(), masked=True))

    # ---- receiving

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport (asyncio's or uvloop's)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("closed during the handshake"))
        if not self.closed.done():
            if self.media_closed_at is None:
                self.media_closed_at = time.monotonic()
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        if not self.upgraded.done():
            self.head += data
            parsed = split_http_head(self.head)
            if parsed is None:
                return
            status_line, _, data = parsed
            if b" 101 " not in status_line + b" ":
                self.upgraded.set_exception(ConnectionError(status_line.decode()))
                return
            self.upgraded.set_result(None)
        for opcode, payload in self.parser.feed(data):
            if opcode == OP_TEXT:
                self._on_message(payload)
            elif opcode == OP_CLOSE:
                self.server_closed = True
                self.media_closed_at = time.monotonic()
                self._close(payload[:2] or close_payload(1000))
                return
            elif opcode == OP_PING:
                self._write(OP_PONG, payload)

    def _on_message(self, payload: bytes) -> None:
        message = orjson.loads(payload)
        event = message.get("event")
        now = time.monotonic()
        if event == "media":
            audio = base64.b64decode(message["media"]["payload"])
            start = max(now, self.playback_until)
            self.playback_until = start + len(audio) / BYTES_PER_S
            run = self.run
            for call_index, number, _ in find_tags(audio):
                if call_index != self.index or number >= len(self.sent_at):
                    run.crosstalk += 1
                elif self.echoed[number]:
                    run.duplicates += 1
                else:
                    self.echoed[number] = True
                    if not self.decided or number <= self.counted_until:
                        run.echoed += 1
                        sent = self.sent_at[number]
                        if run.window_start <= sent <= run.window_end:
                            run.latencies.add(now - sent)
        elif event == "mark":
            # Echoed when playback reaches it, as Twilio does (asyncio's clock is time.monotonic()).
            name = message["mark"]["name"]
            if name.startswith(HANDOFF_MARK_PREFIX):
                self.handoff_marked_at = now
            self.marks[name] = asyncio.get_running_loop().call_at(self.playback_until, self._echo_mark, name)
        elif event == "clear":
            self.playback_until = now
            for name, handle in list(self.marks.items()):
                handle.cancel()
                self._echo_mark(name)

    def _echo_mark(self, name: str) -> None:
        self.marks.pop(name, None)
        if name.startswith(HANDOFF_MARK_PREFIX):
            self.handoff_played_at = time.monotonic()
        self._send_json({"event": "mark", "sequenceNumber": "0", "streamSid": self.stream_sid, "mark": {"name": name}})

    def _write(self, opcode: int, payload: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(encode_frame(opcode, payload, masked=True))

    def _close(self, payload: bytes = close_payload(1000)) -> None:
        self._write(OP_CLOSE, payload)
        if self.transport is not None:
            self.transport.close()

    # ---- after the stream

    async def follow_action(self) -> None:
        run = self.run
        await self.closed
        if not self.action_url:
            return
        target = urlsplit(self.action_url)
        params = self._voice_params("in-progress")
        path_query = target.path + (f"?{target.query}" if target.query else "")
        signature = run.validator.compute_signature(self.action_url, params)
        status, twiml = await http_post(run.host, run.port, path_query, params, {"X-Twilio-Signature": signature})
        self.action_answered_at = time.monotonic()
        self.action_twiml = twiml
        if status != 200:
            self.problem = f"action URL answered {status}"

    def report(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "server_closed": self.server_closed,
            "decide_sent_at": self.decide_sent_at,
            "media_closed_at": self.media_closed_at,
            "action_answered_at": self.action_answered_at,
            "handoff_marked_at": self.handoff_marked_at,
            "handoff_played_at": self.handoff_played_at,
            "enqueued": "<Enqueue" in self.action_twiml,
            "problem": self.problem,
        }


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.base_url = args.base_url
        parts = urlsplit(args.base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.validator = RequestValidator(args.auth_token)
        self.account_sid = "AC" + "0" * 32
        self.grid_origin = args.start_at
        self.window_start, self.window_end = args.window_start, args.window_end
        self.latencies = Latencies()
        self.expected = self.echoed = self.crosstalk = self.duplicates = 0
        self.tick_lag = Latencies()
        self.calls: list[Call] = []
        self.failed: list[tuple[int, str]] = []


async def run_calls(args: argparse.Namespace) -> dict[str, Any]:
    run = Run(args)
    total = args.total
    slots: list[list[Call]] = [[] for _ in range(SLOTS)]
    for index in args.indices:
        start_at = args.start_at + args.ramp * index / total
        decide_at = args.decide_at + args.stagger * index / total
        call = Call(run, index, start_at, decide_at, index % SLOTS)
        run.calls.append(call)

    async def one(call: Call) -> None:
        try:
            await call.dial()
        except Exception as error:  # counted as a failed call: all its frames are lost
            run.failed.append((call.index, f"{type(error).__name__}: {error}"[:200]))
            run.expected += int((call.decide_at - call.start_at) / FRAME_S)
            if call.transport is not None:
                call.transport.close()
            return
        slots[call.slot].append(call)
        await call.follow_action()
        slots[call.slot].remove(call)

    ticker = asyncio.create_task(_tick(run, slots))
    await asyncio.gather(*(one(call) for call in run.calls))
    ticker.cancel()
    return {
        "calls": len(run.calls),
        "failed": run.failed,
        "expected": run.expected,
        "echoed": run.echoed,
        "crosstalk": run.crosstalk,
        "duplicates": run.duplicates,
        "latency_buckets": run.latencies.buckets,
        "tick_lag_buckets": run.tick_lag.buckets,
        "per_call": [call.report() for call in run.calls],
    }


async def _tick(run: Run, slots: list[list[Call]]) -> None:
    """One wake-up per ms serves the calls of that slot (and any slot a late wake-up skipped)."""
    origin = run.grid_origin
    tick = 0
    while True:
        tick += 1
        due = origin + tick * 0.001
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.monotonic()
        run.tick_lag.add(max(0.0, now - due))
        behind = int((now - due) / 0.001)
        for skipped in range(behind + 1):
            for call in slots[(tick + skipped) % SLOTS]:
                call.tick(now)
        tick += behind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--auth-token", required=True)
    parser.add_argument("--indices", required=True, help="call indices this process carries, e.g. 0:400:2")
    parser.add_argument("--total", type=int, required=True, help="calls over all processes")
    parser.add_argument("--start-at", type=float, required=True, help="time.monotonic() of the first call")
    parser.add_argument("--ramp", type=float, required=True)
    parser.add_argument("--decide-at", type=float, required=True, help="monotonic time of the first decision")
    parser.add_argument("--stagger", type=float, default=2.0, help="decisions spread over this many seconds")
    parser.add_argument("--window-start", type=float, required=True)
    parser.add_argument("--window-end", type=float, required=True)
    parser.add_argument("--result-file", type=Path, required=True, help="where the JSON result is written")
    args = parser.parse_args()
    start, stop, step = (int(part) for part in args.indices.split(":"))
    args.indices = range(start, stop, step)
    result = run_event_loop(run_calls(args))
    # A file, not stdout: through the pipe a result over 64 KiB came out cut, even with the pipe set blocking.
    args.result_file.write_bytes(orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS))


if __name__ == "__main__":
    main()

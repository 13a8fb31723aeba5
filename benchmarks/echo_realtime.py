"""A lean echoing fake of the OpenAI Realtime GA server, run as its own process by `capacity.py`.

It speaks what our client expects and validates: `session.created` on connect, `session.updated` for each
`session.update`, and every `input_audio_buffer.append` is sent straight back as one
`response.output_audio.delta` inside a response (`response.created` first; `response.done` and a new
response every `--turn-frames` deltas, so the bridge also sees response ends). Each `response.create` is
answered with an empty response carrying the request's metadata (the greeting and the handoff line).

When an appended frame carries the benchmark's "decide" tag, the fake ends the echo response and proposes
a route with a completed `propose_route` call, and records when (CLOCK_MONOTONIC, shared by every process
on the machine, so the driver can time the teardown to the caller's action URL answer).

`GET /__stats` (no upgrade) answers the counters as JSON: connections open now, closed by the client's
close frame, dropped without one, events by type, decision times by call index.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import signal
import ssl
import time
from collections import Counter
from typing import Any

import orjson
from bench_tags import DECIDE, find_tags
from ws_lite import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    accept_key,
    close_payload,
    encode_frame,
    run_event_loop,
    split_http_head,
)

PROPOSE_ROUTE = "propose_route"


class Stats:
    def __init__(self) -> None:
        self.connections = 0
        self.open = 0
        self.closed_by_client = 0
        self.dropped = 0
        self.events: Counter[str] = Counter()
        self.deltas_sent = 0
        self.decisions: dict[int, float] = {}

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "connections": self.connections,
                "open": self.open,
                "closed_by_client": self.closed_by_client,
                "dropped": self.dropped,
                "events": self.events,
                "deltas_sent": self.deltas_sent,
                "decisions": {str(k): v for k, v in self.decisions.items()},
            }
        )


_ids = itertools.count(1)


def _response(response_id: str, status: str, output: list[dict[str, Any]], metadata: Any) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "realtime.response",
        "status": status,
        "status_details": None,
        "output": output,
        "conversation_id": "conv_bench",
        "output_modalities": ["audio"],
        "audio": {"output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}},
        "metadata": metadata,
    }


class RealtimeEcho(asyncio.Protocol):
    def __init__(self, stats: Stats, turn_frames: int) -> None:
        self.stats = stats
        self.turn_frames = turn_frames
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.parser: FrameParser | None = None
        self.closing = False
        self.echo_response: str | None = None
        self.echo_item = ""
        self.echo_count = 0
        self.counted = False

    # ---- connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport (asyncio's or uvloop's)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.counted:
            self.stats.open -= 1
            if not self.closing:
                self.stats.dropped += 1

    def data_received(self, data: bytes) -> None:
        if self.parser is None:
            self._handshake(data)
            return
        for opcode, payload in self.parser.feed(data):
            if opcode == OP_TEXT:
                self._on_event(payload)
            elif opcode == OP_CLOSE:
                self._on_close(payload)
                return
            elif opcode == OP_PING:
                self._write(OP_PONG, payload)

    def _handshake(self, data: bytes) -> None:
        assert self.transport is not None
        self.head += data
        parsed = split_http_head(self.head)
        if parsed is None:
            return
        request_line, headers, rest = parsed
        if headers.get("upgrade", "").lower() != "websocket":
            body = self.stats.to_json() if request_line.split()[1].startswith(b"/__stats") else b"{}"
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            self.transport.close()
            return
        key = headers.get("sec-websocket-key", "").encode()
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n"
        )
        self.parser = FrameParser()
        self.counted = True
        self.stats.connections += 1
        self.stats.open += 1
        self._emit({"type": "session.created", "event_id": self._id("event"), "session": _session({})})
        if rest:
            self.data_received(rest)

    def _on_close(self, payload: bytes) -> None:
        assert self.transport is not None
        if not self.closing:
            self.closing = True
            self.stats.closed_by_client += 1
            self._write(OP_CLOSE, payload[:2] or close_payload(1000))
        self.transport.close()

    # ---- events

    def _on_event(self, payload: bytes) -> None:
        event = orjson.loads(payload)
        kind = event.get("type")
        self.stats.events[kind] += 1
        if kind == "input_audio_buffer.append":
            self._echo(event["audio"])
        elif kind == "session.update":
            self._emit({"type": "session.updated", "event_id": self._id("event"), "session": _session(event["session"])})
        elif kind == "response.create":
            metadata = (event.get("response") or {}).get("metadata")
            response_id = self._id("resp")
            self._emit({"type": "response.created", "event_id": self._id("event"),
                        "response": _response(response_id, "in_progress", [], metadata)})
            self._emit({"type": "response.done", "event_id": self._id("event"),
                        "response": _response(response_id, "completed", [], metadata)})

    def _echo(self, audio: str) -> None:
        if self.echo_response is None:
            self.echo_response, self.echo_item = self._id("resp"), self._id("item")
            self.echo_count = 0
            self._emit({"type": "response.created", "event_id": self._id("event"),
                        "response": _response(self.echo_response, "in_progress", [], None)})
        self.stats.deltas_sent += 1
        self._emit({
            "type": "response.output_audio.delta", "event_id": self._id("event"),
            "response_id": self.echo_response, "item_id": self.echo_item, "output_index": 0, "content_index": 0,
            "delta": audio,
        })
        self.echo_count += 1
        decided = [index for index, _, flags in find_tags(base64.b64decode(audio)) if flags & DECIDE]
        if decided:
            self._end_echo_response()
            self._propose_route(decided[0])
        elif self.echo_count >= self.turn_frames:
            self._end_echo_response()

    def _end_echo_response(self) -> None:
        if self.echo_response is not None:
            self._emit({"type": "response.done", "event_id": self._id("event"),
                        "response": _response(self.echo_response, "completed", [], None)})
            self.echo_response = None

    def _propose_route(self, call_index: int) -> None:
        response_id, item_id, call_id = self._id("resp"), self._id("item"), self._id("call")
        arguments = orjson.dumps({"intent": "billing", "confidence": 0.9, "summary": "benchmark call"}).decode()
        item = {"id": item_id, "object": "realtime.item", "type": "function_call", "status": "completed",
                "call_id": call_id, "name": PROPOSE_ROUTE, "arguments": arguments}
        self._emit({"type": "response.created", "event_id": self._id("event"),
                    "response": _response(response_id, "in_progress", [], None)})
        self._emit({"type": "response.output_item.done", "event_id": self._id("event"),
                    "response_id": response_id, "output_index": 0, "item": item})
        self.stats.decisions[call_index] = time.monotonic()
        self._emit({"type": "response.done", "event_id": self._id("event"),
                    "response": _response(response_id, "completed", [item], None)})

    # ---- sending

    @staticmethod
    def _id(prefix: str) -> str:
        return f"{prefix}_{next(_ids)}"

    def _emit(self, event: dict[str, Any]) -> None:
        self._write(OP_TEXT, orjson.dumps(event))

    def _write(self, opcode: int, payload: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(encode_frame(opcode, payload, masked=False))


def _session(update: dict[str, Any]) -> dict[str, Any]:
    session = {"type": "realtime", "model": "gpt-realtime", "output_modalities": ["audio"], "instructions": "",
               "tools": [], "tool_choice": "auto"}
    session.update({key: value for key, value in update.items() if value is not None})
    return session


async def serve(host: str, port: int, turn_frames: int, tls_cert: str | None) -> None:
    stats = Stats()
    loop = asyncio.get_running_loop()
    context = None
    if tls_cert is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls_cert)
    server = await loop.create_server(
        lambda: RealtimeEcho(stats, turn_frames), host, port, backlog=4096, ssl=context
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"echo realtime listening on {'wss' if context else 'ws'}://{host}:{bound}/v1/realtime", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--turn-frames", type=int, default=250, help="deltas per echo response (250 = 5 s)")
    parser.add_argument("--tls-cert", default=None, help="a PEM key and certificate chain: serve wss:// (and https)")
    args = parser.parse_args()
    run_event_loop(serve(args.host, args.port, args.turn_frames, args.tls_cert))


if __name__ == "__main__":
    main()

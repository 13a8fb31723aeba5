"""The soak run's Realtime server: the project's fake (`orchestrator.testing.fake_realtime`), with a scenario
drawn for each connection (seeded). Most calls get a conversation that ends in a route of Acme's config;
`--failure-share` of them fail as a real endpoint can: the handshake refused (503), the socket dropped
mid-call, or a fatal error event followed by a close.

    python benchmarks/soak/soak_realtime.py --port 8765 --seed 1 --failure-share 0.15
"""
from __future__ import annotations

import argparse
import random
from collections import Counter

import trio
from trio_websocket import WebSocketRequest, serve_websocket

from orchestrator.testing.fake_realtime import (
    Close,
    Drop,
    FakeRealtime,
    Scenario,
    SendError,
    UserSpeech,
    after_audio_frames,
    after_response_create,
    call_function,
    on,
    speak,
)

DETAILS = {"caller_name": "Ann Lee", "callback_number": "+14155552671", "address": "1 Main St, Springfield"}
INTENTS = ("emergency", "billing", "schedule", "opening_hours")


def conversation(intent: str) -> Scenario:
    """Greeting; the caller speaks; details recorded; the intent proposed; the handoff line."""
    return Scenario(steps=[
        on(after_response_create(), speak(ms=300, transcript="Thanks for calling, how can I help?")),
        on(after_audio_frames(10), UserSpeech(transcript=f"I need help ({intent})"),
           call_function("record_details", DETAILS)),
        on(after_response_create(), call_function(
            "propose_route", {"intent": intent, "confidence": 0.9, "summary": "soak call"})),
        on(after_response_create(), speak(ms=300, transcript="Putting you through now.")),
    ], record_audio=False)


def failure(kind: str) -> Scenario:
    greeting = on(after_response_create(), speak(ms=300, transcript="Thanks for calling, how can I help?"))
    if kind == "refused":
        return Scenario(refuse_status=503)
    if kind == "dropped":
        return Scenario(steps=[greeting, on(after_audio_frames(8), Drop())], record_audio=False)
    return Scenario(steps=[greeting, on(after_audio_frames(8), SendError("server_error", "The server had an error.",
                                                                          error_type="server_error"), Close(1011))],
                    record_audio=False)


async def serve(host: str, port: int, seed: int, failure_share: float) -> None:
    draw = random.Random(seed)
    drawn: Counter[str] = Counter()
    fake = FakeRealtime(Scenario())
    fake.keep_sessions = False  # a long run must not grow with every call

    async def handle(request: WebSocketRequest) -> None:
        if draw.random() < failure_share:
            kind = draw.choice(("refused", "dropped", "fatal_error"))
            fake.scenario = failure(kind)
        else:
            kind = draw.choice(INTENTS)
            fake.scenario = conversation(kind)
        drawn[kind] += 1
        await fake.handle_request(request)  # it reads `fake.scenario` before its first checkpoint

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handle, host, port, None)
        print(f"soak realtime listening on ws://{host}:{server.port}/v1/realtime", flush=True)
        try:
            await trio.sleep_forever()
        finally:
            print(f"connections by scenario: {dict(drawn)}; fake crashes: {fake.crashes!r}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--failure-share", type=float, default=0.15)
    args = parser.parse_args()
    try:
        trio.run(serve, args.host, args.port, args.seed, args.failure_share)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

"""`orchestrator eval --audio`: past calls with a recording are replayed as live phone calls.

The server is the one `orchestrator serve` runs (same composition root), in-process on loopback, with
the chosen engine; each recording is streamed by the simulated Twilio caller as the caller's audio
(µ-law 8 kHz, faster than real time), and the decision is read back from the server's store. This is
the whole live path: Media Stream, VAD, speech-to-text, the machine, the action URL's TwiML.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from bridge.twilio import CallerAudioError, silence, wav_to_mulaw
from orchestrator.config import RoutingConfig, load_server_settings
from orchestrator.engines import EngineConnector
from orchestrator.replay.corpus import CorpusCall
from orchestrator.replay.text_replay import ReplayOutcome
from orchestrator.testing import CallerOptions, Say, SimulatedCaller, WaitForAgent

AUDIO_SPEED = 4.0  # recordings stream this much faster than real time (the engine keeps up on 2 cores)
AFTER_RECORDING_MS = 3000  # silence after the recording, so its last words are heard and answered


async def replay_recordings(connector: EngineConnector, config: RoutingConfig, calls: Sequence[CorpusCall],
                            data_dir: Path, *, concurrency: int = 2, speed: float = AUDIO_SPEED,
                            on_done: Callable[[ReplayOutcome], None] | None = None) -> list[ReplayOutcome]:
    """One live call per recording; outcomes in the calls' order."""
    from orchestrator.composition import (
        run_server,  # the server's parts load only when a call is replayed
    )

    settings = load_server_settings(data_dir=data_dir, graceful_shutdown_seconds=2)
    outcomes: list[ReplayOutcome | None] = [None] * len(calls)
    limit = trio.CapacityLimiter(max(1, concurrency))
    async with run_server(settings, port=0, config=config, connector=connector) as server:

        async def one(index: int, call: CorpusCall) -> None:
            async with limit:
                outcomes[index] = await _live_call(server, call, speed)
            if on_done is not None:
                on_done(outcomes[index])

        async with trio.open_nursery() as nursery:
            for index, call in enumerate(calls):
                nursery.start_soon(one, index, call)
    return [outcome for outcome in outcomes if outcome is not None]


async def _live_call(server, call: CorpusCall, speed: float) -> ReplayOutcome:
    words = " ".join(t.text for t in call.turns if t.role == "caller")
    try:
        audio = wav_to_mulaw(call.audio) if call.audio is not None else None
    except (CallerAudioError, OSError) as error:
        return ReplayOutcome(call.call_id, words, None, None, None, None, f"recording unusable: {error}")
    if audio is None:
        return ReplayOutcome(call.call_id, words, None, None, None, None, "no recording")
    options = CallerOptions(base_url=server.base_url, auth_token=server.auth_token, speed=speed,
                            max_call_s=len(audio) / 8000 + 60)
    steps = [Say(audio + silence(AFTER_RECORDING_MS), call.call_id), WaitForAgent(quiet_ms=600)]
    result = await SimulatedCaller(options, steps).run()
    decision = await server.state.store.get_decision(result.call_sid, 1)
    # The machine's own clock: from the start of the stream, as the caller lived it (at `speed`).
    decide_ms = decision.decided_after_s * 1000 if decision is not None else None
    problem = None if result.final_twiml else "the call got no TwiML"
    return ReplayOutcome(call.call_id, words, decision, decision.intent if decision else None,
                         decision.confidence if decision else None, decide_ms, problem, 1)

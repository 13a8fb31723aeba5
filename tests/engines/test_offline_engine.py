"""The offline engine seen through the engine interface: the events a session gets, in order, for caller
text, caller audio, line requests, refused requests, and the model file a config points to."""
from __future__ import annotations

import base64
import json
import threading

import pytest
import trio

from bridge.twilio.mulaw import frames, silence
from orchestrator.config.routing import ConfigError, load_routing_config
from orchestrator.engines.interface import (
    AgentAudio,
    AgentTranscript,
    CallerSpeechStarted,
    CallerTranscript,
    EngineCall,
    EngineProblem,
    EngineUnavailable,
    ResponseFinished,
    ResponseStarted,
    SpokenLine,
    ToolCallReady,
)
from orchestrator.engines.offline.engine import (
    ACTIVE_RESPONSE,
    AUDIO_CHUNK_BYTES,
    OfflineConnector,
    OfflineSpeech,
    load_intent_model,
    load_offline_speech,
)
from orchestrator.engines.offline.intent_model import IntentModel
from orchestrator.engines.offline.speech import ListeningFor
from orchestrator.engines.tools import PROPOSE_ROUTE, RECORD_DETAILS
from tests.live_call_support import ACME

SPEECH = load_offline_speech()
needs_speech = pytest.mark.skipif(SPEECH.speech is None, reason=f"offline speech: {SPEECH.problem}")
CALL = EngineCall("CA" + "1" * 32)


@pytest.fixture(scope="module")
def acme():
    config = load_routing_config(ACME)
    return config, IntentModel.fit(config)


async def events_until_response_finished(engine, count: int = 1) -> list[object]:
    """Events until `count` responses have finished (bounded in time)."""
    seen = []
    with trio.fail_after(20):
        async for event in engine.events():
            seen.append(event)
            if isinstance(event, ResponseFinished):
                count -= 1
                if count == 0:
                    return seen
    return seen


async def test_a_caller_turn_in_text_becomes_a_transcript_and_a_proposal_in_one_response(acme):
    config, model = acme
    connector = OfflineConnector(config, model, None)
    async with connector.connect_text(CALL) as engine:
        await engine.send_caller_text("Hi, I think I was charged twice on my invoice")
        seen = await events_until_response_finished(engine)
    kinds = [type(event) for event in seen]
    assert kinds == [CallerTranscript, ResponseStarted, ToolCallReady, ResponseFinished]
    started, call, finished = seen[1], seen[2], seen[3]
    assert started.tag is None and finished.status == "completed" and call.response_id == started.response_id
    arguments = json.loads(call.arguments_json)
    assert call.name == PROPOSE_ROUTE and arguments["intent"] == "billing"
    assert arguments["confidence"] >= config.triage.min_confidence


async def test_a_line_is_said_word_for_word_and_a_second_request_meanwhile_is_refused(acme):
    config, model = acme
    connector = OfflineConnector(config, model, SPEECH.speech)
    async with connector.connect_text(CALL) as engine:
        await engine.speak("ignored", tag="greeting", request_id="request_1", line=SpokenLine(config.lines.greeting))
        await engine.speak(None, tag=None, request_id="request_2")  # while the greeting is in progress
        seen = await events_until_response_finished(engine)
    refused = [event for event in seen if isinstance(event, EngineProblem)]
    assert refused == [EngineProblem(ACTIVE_RESPONSE, "a response is in progress", fatal=False, request_id="request_2")]
    assert isinstance(seen[0], ResponseStarted) and seen[0].tag == "greeting"
    assert [e.text for e in seen if isinstance(e, AgentTranscript)] == [config.lines.greeting]
    assert isinstance(seen[-1], ResponseFinished) and seen[-1].tag == "greeting"
    audio = [base64.b64decode(e.payload_b64) for e in seen if isinstance(e, AgentAudio)]
    if SPEECH.speech is None:
        assert audio == []  # text mode: words, no voice
    else:
        assert all(0 < len(chunk) <= AUDIO_CHUNK_BYTES for chunk in audio)
        assert 1500 < sum(map(len, audio)) / 8 < 15000  # the greeting lasts a few seconds at 8 bytes/ms


async def test_asked_for_details_the_engine_asks_the_first_missing_field_after_the_line(acme):
    config, model = acme
    async with OfflineConnector(config, model, None).connect_text(CALL) as engine:
        line = SpokenLine(config.lines.ask_details, ("address", "caller_name"))
        await engine.speak("ignored", tag="ask_details", line=line)
        seen = await events_until_response_finished(engine)
    said = [e.text for e in seen if isinstance(e, AgentTranscript)]
    assert said == [f"{config.lines.ask_details} Could I have your full name and your address, please?"]


async def test_in_text_mode_a_live_call_is_refused_with_the_reason(acme):
    config, model = acme
    connector = OfflineConnector(config, model, None, text_mode_reason="speech extra not installed")
    with pytest.raises(EngineUnavailable, match="text mode: speech extra not installed"):
        async with connector.connect(CALL):
            pass
    assert "TEXT MODE" in connector.describe()


async def test_events_end_when_the_engine_is_closed(acme):
    config, model = acme
    async with OfflineConnector(config, model, None).connect_text(CALL) as engine:
        pass
    with trio.fail_after(2):
        assert [event async for event in engine.events()] == []
    await engine.send_caller_text("too late")  # dropped, no error
    await engine.speak(None, tag=None)


@needs_speech
async def test_caller_audio_is_heard_transcribed_early_and_answered(acme):
    config, model = acme
    assert SPEECH.speech is not None
    speech = silence(300) + SPEECH.speech.synthesizer.synthesize("I think I was charged twice on my bill.") + silence(1200)
    async with OfflineConnector(config, model, SPEECH.speech).connect(CALL) as engine:
        for frame in frames(speech):
            engine.send_caller_audio(base64.b64encode(frame).decode())
        seen = await events_until_response_finished(engine)
        assert engine.early_transcripts_used == 1  # transcribed during the end-of-turn silence
    assert isinstance(seen[0], CallerSpeechStarted)
    transcript = next(e.text for e in seen if isinstance(e, CallerTranscript))
    assert "charged twice" in transcript.lower()
    proposal = next(e for e in seen if isinstance(e, ToolCallReady) and e.name == PROPOSE_ROUTE)
    assert json.loads(proposal.arguments_json)["intent"] == "billing"
    assert len(engine.turn_latencies_ms) == 1


async def test_junk_audio_is_ignored_and_the_engine_goes_on(acme):
    config, model = acme
    async with OfflineConnector(config, model, SPEECH.speech).connect_text(CALL) as engine:
        engine.send_caller_audio("***not base64***")
        engine.send_caller_audio(base64.b64encode(b"\xff" * 16000).decode())  # 2 s of µ-law silence
        await engine.send_caller_text("what are your hours on saturday")
        seen = await events_until_response_finished(engine)
    assert not any(isinstance(e, (CallerSpeechStarted, EngineProblem)) for e in seen)
    proposal = next(e for e in seen if isinstance(e, ToolCallReady) and e.name == PROPOSE_ROUTE)
    assert json.loads(proposal.arguments_json)["intent"] == "opening_hours"


def test_a_config_names_its_model_file_which_must_fit_its_intents(tmp_path, acme):
    config, model = acme
    model.save(tmp_path / "acme.model.json")
    text = ACME.read_text(encoding="utf-8").replace(
        '# intent_model = "acme_plumbing.model.json"', 'intent_model = "acme.model.json"')
    assert 'intent_model = "acme.model.json"' in text
    (tmp_path / "acme.toml").write_text(text, encoding="utf-8")
    loaded = load_intent_model(load_routing_config(tmp_path / "acme.toml"))
    assert loaded.predict("my basement is flooding") == model.predict("my basement is flooding")

    (tmp_path / "acme.model.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="engine.intent_model"):
        load_intent_model(load_routing_config(tmp_path / "acme.toml"))

    other = text.replace('name = "billing"', 'name = "invoices"')
    (tmp_path / "other.toml").write_text(other, encoding="utf-8")
    model.save(tmp_path / "acme.model.json")
    with pytest.raises(ConfigError, match="other intents"):
        load_intent_model(load_routing_config(tmp_path / "other.toml"))


@needs_speech
async def test_beyond_its_call_limit_the_engine_refuses_and_frees_the_place_when_a_call_ends(tmp_path):
    text = ACME.read_text(encoding="utf-8").replace("offline_max_calls = 6", "offline_max_calls = 1")
    (tmp_path / "one.toml").write_text(text, encoding="utf-8")
    config = load_routing_config(tmp_path / "one.toml")
    connector = OfflineConnector(config, IntentModel.fit(config), SPEECH.speech)
    async with connector.connect(CALL):
        with pytest.raises(EngineUnavailable, match="at capacity"):
            async with connector.connect(CALL):
                pass
    async with connector.connect(CALL):
        assert connector.active_calls == 1
    assert connector.active_calls == 0


class HeardAsANumber:
    """A recogniser that hears every utterance as a phone number and notes how it was steered."""

    def __init__(self) -> None:
        self.steering: list[ListeningFor | None] = []

    def transcribe(self, mulaw: bytes, *, listening_for: ListeningFor | None = None) -> str:
        self.steering.append(listening_for)
        return "four one five five five five two six seven one"


@needs_speech
async def test_a_turn_after_a_question_is_transcribed_steered_toward_its_answer(acme):
    config, model = acme
    assert SPEECH.speech is not None
    recognizer = HeardAsANumber()
    speech = OfflineSpeech(recognizer, SPEECH.speech.synthesizer, SPEECH.speech.detector_factory)
    turn = silence(300) + SPEECH.speech.synthesizer.synthesize("Four one five, five five five.") + silence(1200)
    async with OfflineConnector(config, model, speech).connect(CALL) as engine:
        for frame in frames(turn):
            engine.send_caller_audio(base64.b64encode(frame).decode())
        await events_until_response_finished(engine)
        assert set(recognizer.steering) == {None}  # nothing asked yet: an open turn
        await engine.speak(None, tag="ask_details", line=SpokenLine(config.lines.ask_details, ("address",)))
        await events_until_response_finished(engine)
        for frame in frames(turn):
            engine.send_caller_audio(base64.b64encode(frame).decode())
        await events_until_response_finished(engine)
    # The line asked for the address but first read back the number heard: its answer comes next ("yes", or
    # "no, it's ..."), steered for digits.
    assert recognizer.steering[-1] == ListeningFor("phone")


async def proposed_with_two_breaths_begun(engine) -> None:
    """Events until the caller's need is proposed and their second breath has begun (the test sends frames
    faster than real time, so the engine hears them a little after they are sent)."""
    started = finished = 0
    with trio.fail_after(20):
        async for event in engine.events():
            started += isinstance(event, CallerSpeechStarted)
            finished += isinstance(event, ResponseFinished)
            if started == 2 and finished == 1:
                return


class HeardByLength:
    """A recogniser that hears a short utterance as `short` and a long one as `long`, the long one only once
    `release` is set (so the test decides when the engine gets to it)."""

    def __init__(self, short: str, long: str, split_bytes: int) -> None:
        self.short, self.long, self.split_bytes = short, long, split_bytes
        self.release = threading.Event()

    def transcribe(self, mulaw: bytes, *, listening_for: ListeningFor | None = None) -> str:
        if len(mulaw) < self.split_bytes:
            return self.short
        self.release.wait(10)
        return self.long


@needs_speech
async def test_words_begun_before_the_question_are_not_taken_as_its_answer(acme):
    config, model = acme
    assert SPEECH.speech is not None
    synthesize = SPEECH.speech.synthesizer.synthesize
    first, rest = synthesize("My basement is flooding."), synthesize(
        "It started an hour ago, it keeps getting worse, and the water is halfway up the stairs now."
    )
    ears = HeardByLength("my basement is flooding", "it keeps getting worse", split_bytes=len(first) + 4000)
    speech = OfflineSpeech(ears, SPEECH.speech.synthesizer, SPEECH.speech.detector_factory)
    try:
        async with OfflineConnector(config, model, speech).connect(CALL) as engine:
            for frame in frames(silence(300) + first + silence(900) + rest + silence(1200)):
                engine.send_caller_audio(base64.b64encode(frame).decode())  # both breaths before any answer
            await proposed_with_two_breaths_begun(engine)
            await engine.speak(None, tag="ask_details", line=SpokenLine(config.lines.ask_details, ("caller_name",)))
            asked = await events_until_response_finished(engine)
            assert any(isinstance(e, AgentTranscript) and "name" in e.text for e in asked)
            ears.release.set()  # the second breath is heard only now, after the question was asked
            await engine.send_caller_text("Ann Lee")
            seen = await events_until_response_finished(engine)
    finally:
        ears.release.set()
    heard = [e.text for e in seen if isinstance(e, CallerTranscript)]
    assert heard == ["it keeps getting worse", "Ann Lee"]
    assert not [e for e in seen if isinstance(e, AgentTranscript)]  # no "sorry, I didn't get that"
    recorded = [json.loads(e.arguments_json) for e in seen if isinstance(e, ToolCallReady) and e.name == RECORD_DETAILS]
    assert recorded == [{"caller_name": "Ann Lee"}]


class HeardByNearestLength:
    """A recogniser that hears each utterance as the text whose audio is nearest in length; `held` texts
    only once `release` is set."""

    def __init__(self, texts: dict[str, bytes], held: set[str]) -> None:
        self.lengths = {text: len(audio) for text, audio in texts.items()}
        self.held = held
        self.release = threading.Event()

    def transcribe(self, mulaw: bytes, *, listening_for: ListeningFor | None = None) -> str:
        text = min(self.lengths, key=lambda known: abs(self.lengths[known] - len(mulaw)))
        if text in self.held:
            self.release.wait(10)
        return text


@needs_speech
async def test_a_question_the_caller_talked_through_is_put_again_once_they_stop(acme, monkeypatch):
    import orchestrator.engines.offline.engine as offline_engine

    monkeypatch.setattr(offline_engine, "CONTINUATION_PAUSE_S", 30.0)  # this test's breaths are not timed
    config, model = acme
    assert SPEECH.speech is not None
    synthesize = SPEECH.speech.synthesizer.synthesize
    breaths = {text: synthesize(text) for text in (
        "My basement is flooding.",
        "It started about an hour ago and it has been getting worse and worse all morning long, honestly.",
        "And now the water is up to the third stair.",
    )}
    need, second, third = breaths
    ears = HeardByNearestLength(breaths, held={second})
    speech = OfflineSpeech(ears, SPEECH.speech.synthesizer, SPEECH.speech.detector_factory)
    try:
        async with OfflineConnector(config, model, speech).connect(CALL) as engine:
            for frame in frames(silence(300) + breaths[need] + silence(900) + breaths[second] + silence(900)):
                engine.send_caller_audio(base64.b64encode(frame).decode())
            await proposed_with_two_breaths_begun(engine)
            await engine.speak(None, tag="ask_details", line=SpokenLine(config.lines.ask_details, ("caller_name",)))
            asked = [e.text for e in await events_until_response_finished(engine) if isinstance(e, AgentTranscript)]
            for frame in frames(breaths[third] + silence(900)):  # a short breath later: still the same story
                engine.send_caller_audio(base64.b64encode(frame).decode())
            ears.release.set()
            seen = await events_until_response_finished(engine)  # their silence: the question again
    finally:
        ears.release.set()
    assert [e.text for e in seen if isinstance(e, CallerTranscript)] == [second, third]
    again = [e.text for e in seen if isinstance(e, AgentTranscript)]
    assert again == ["Could I have your full name, please?"] and asked[0].endswith(again[0])  # no "sorry"
    assert not [e for e in seen if isinstance(e, ToolCallReady)]


@needs_speech
async def test_a_caller_typing_on_the_keypad_is_not_prompted_for_their_silence(acme, monkeypatch):
    import orchestrator.engines.offline.engine as offline_engine

    # The agent's words count as played at once, and a silence is one after 0.3 s: the test takes seconds.
    monkeypatch.setattr(offline_engine, "MULAW_RATE", 8_000_000)
    monkeypatch.setattr(offline_engine, "SILENT_ANSWER_S", 0.3)
    config, model = acme
    ask_number = SpokenLine(config.lines.ask_details, ("callback_number",))
    async with OfflineConnector(config, model, SPEECH.speech).connect(CALL) as engine:
        await engine.speak(None, tag="ask_details", line=ask_number)
        await events_until_response_finished(engine)
        engine.caller_pressed_key()
        with trio.move_on_after(1.2):
            async for event in engine.events():
                pytest.fail(f"the agent spoke while the caller typed: {event}")
        # The agent's next words are watched again: a silence after them is prompted.
        await engine.speak(None, tag="ask_details", line=SpokenLine("", ("caller_name",)))
        await events_until_response_finished(engine)
        with trio.fail_after(3):
            prompted = await events_until_response_finished(engine)
    assert any(isinstance(event, ResponseStarted) for event in prompted)

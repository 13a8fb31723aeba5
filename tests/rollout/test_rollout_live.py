"""End to end, the rollout on a running server: arms at 5 %, sticky per caller, the legacy arm never
opens a Realtime connection; the brake trips when Realtime fails every call; `orchestrator rollout`
changes the next call's arm on a server that keeps running."""
from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import trio

from machines.rollout import bucket_of
from orchestrator.call.dispatch_twiml import CallFacts, legacy_twiml
from orchestrator.config.routing import DEFAULT_ROLLOUT_SALT
from orchestrator.rollout.live import ROLLOUT_SETTING, RolloutControl
from orchestrator.store.sqlite_store import SqliteCallStore
from orchestrator.testing.fake_realtime import Scenario
from orchestrator.testing.twilio_caller import CallResult
from tests.cli_support import BIN, clean_environment
from tests.live_call_support import ACME, CALL_TIMEOUT_S, FrontDesk, front_desk, metric, triage_scenario

ACME_FLOW = "FW5670575a869e4a142814c71a1217f9f0"
ACME_ACCOUNT = "AC6918b3f30d86a2b7b27af58bbe029f87"
VOICEMAIL = ["Say", "Record", "Hangup"]  # Acme's fallback route, the default legacy route
CALLERS = 400  # each calls twice: enough for the 5 % arm to be counted, few enough to keep the suite short


def acme_with(tmp_path: Path, rollout: str) -> Path:
    path = tmp_path / "rollout.toml"
    path.write_text(ACME.read_text(encoding="utf-8") + "\n" + rollout, encoding="utf-8")
    return path


def tags(twiml: str | None) -> list[str]:
    assert twiml is not None
    return [child.tag for child in ElementTree.fromstring(twiml)]


def went_to_ai(result: CallResult) -> bool:
    return result.stream_url is not None


async def one_call(desk: FrontDesk, caller: str, http: httpx.AsyncClient | None = None, **options) -> CallResult:
    with trio.fail_after(CALL_TIMEOUT_S):
        return await desk.caller(caller=caller, http=http, **options).run()


def store_path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "calls.sqlite3"  # where front_desk's server keeps its store


async def test_five_percent_of_400_callers_reach_the_ai_each_twice_in_the_same_arm(tmp_path):
    config = acme_with(tmp_path, "[rollout]\npercent = 5\n")
    callers = [f"+1415{index:07d}" for index in range(CALLERS)]
    arms: dict[str, list[bool]] = {number: [] for number in callers}
    legacy: list[CallResult] = []
    async with front_desk(tmp_path, triage_scenario("billing"), config_path=config) as desk:
        limiter = trio.CapacityLimiter(25)
        async with httpx.AsyncClient(timeout=15) as http:

            async def call(number: str) -> None:
                async with limiter:
                    result = await one_call(desk, number, http)
                arms[number].append(went_to_ai(result))
                if not went_to_ai(result):
                    legacy.append(result)

            for _ in range(2):  # every caller calls twice
                async with trio.open_nursery() as nursery:
                    for number in callers:
                        nursery.start_soon(call, number)

        in_ai = [number for number, seen in arms.items() if seen[0]]
        assert 10 <= len(in_ai) <= 30, len(in_ai)  # 20 ± 10
        assert all(seen[0] == seen[1] for seen in arms.values())  # sticky
        # Exactly the AI calls opened a Realtime connection; the legacy arm none.
        assert len(desk.fake.sessions) == 2 * len(in_ai)
        assert metric(desk, "rollout_calls_total", arm="legacy") == 2 * (CALLERS - len(in_ai))
        assert metric(desk, "calls_by_arm_total", arm="legacy", route="none", outcome="legacy") == 2 * (CALLERS - len(in_ai))
        assert metric(desk, "calls_by_arm_total", arm="ai", route="billing_desk", outcome="flex") == 2 * len(in_ai)

        # The legacy TwiML is the original path: the config's legacy route (the fallback: voicemail).
        sample = legacy[0]
        facts = CallFacts(sample.call_sid, "", "", "", arm="legacy")
        assert tags(sample.final_twiml) == VOICEMAIL
        assert sample.final_twiml == legacy_twiml(desk.config, facts, public_url=desk.server.public_url)
        assert all(tags(result.final_twiml) == VOICEMAIL for result in legacy)

        record = await desk.server.state.store.call_record(sample.call_sid)
        (legacy_pass,) = record.passes
        assert legacy_pass.triage_pass.arm == "legacy" and legacy_pass.decision is None
        assert (legacy_pass.outcome.outcome, legacy_pass.outcome.state_path) == ("legacy", ("legacy",))


async def test_a_legacy_caller_sent_by_studio_goes_back_to_the_flow_at_once(tmp_path):
    config = acme_with(tmp_path, "[rollout]\npercent = 0\n")
    async with front_desk(tmp_path, triage_scenario("billing"), config_path=config) as desk:
        result = await one_call(desk, "+14155550100", incoming_query=f"flow_sid={ACME_FLOW}&node=ai_triage")
        assert tags(result.final_twiml) == ["Redirect"] and result.stream_url is None
        url = urlsplit(ElementTree.fromstring(result.final_twiml).find("Redirect").text)
        assert url.path == f"/v1/Accounts/{ACME_ACCOUNT}/Flows/{ACME_FLOW}"
        assert parse_qs(url.query) == {"FlowEvent": ["return"], "arm": ["legacy"]}
        assert desk.fake.sessions == []
        record = await desk.server.state.store.call_record(result.call_sid)
        assert record.passes[0].triage_pass.entry_node == f"{ACME_FLOW}/ai_triage"


async def test_the_brake_trips_when_realtime_fails_every_call_and_the_next_calls_go_legacy(tmp_path):
    config = acme_with(tmp_path, "[rollout.brake]\nwindow_calls = 4\nmin_calls = 4\nmax_failure_rate = 0.5\n")
    async with front_desk(tmp_path, Scenario(refuse_status=503), config_path=config) as desk:
        store = desk.server.state.store
        for index in range(4):
            result = await one_call(desk, f"+1415555{index:04d}")
            assert went_to_ai(result) and tags(result.final_twiml) == VOICEMAIL  # engine_failed: the fallback
        with trio.fail_after(5):  # the brake runs once the action URL has answered
            while (setting := await store.get_setting(ROLLOUT_SETTING)) is None:
                await trio.sleep(0.02)
        assert setting["percent"] == 0 and setting["updated_by"] == "brake"
        brake = setting["brake"]
        assert (brake["failure_rate"], brake["window_calls"], brake["previous_percent"]) == (1.0, 4, 100.0)
        assert metric(desk, "rollout_brake_trips_total") == 1

        connections = len(desk.fake.sessions)
        assert connections == 4
        for index in range(3):
            result = await one_call(desk, f"+1415555{index:04d}")  # earlier AI callers too
            assert not went_to_ai(result) and tags(result.final_twiml) == VOICEMAIL
        assert len(desk.fake.sessions) == connections  # no Realtime connection for the legacy arm


def caller_out_of_the_first_five_percent() -> str:
    return next(
        number
        for index in range(1000)
        if bucket_of(DEFAULT_ROLLOUT_SALT, number := f"+1415555{index:04d}") >= 500
    )


async def test_the_cli_changes_the_next_calls_arm_on_a_running_server_and_testers_are_listed(tmp_path):
    caller = caller_out_of_the_first_five_percent()
    async with front_desk(tmp_path, triage_scenario("billing"), handoff_token=None) as desk:
        assert went_to_ai(await one_call(desk, caller))  # 100 %: the config's default
        ran = await trio.run_process(
            [str(BIN / "orchestrator"), "rollout", "--data-dir", str(tmp_path / "var"), "set", "5"],
            env=clean_environment(), capture_stdout=True, capture_stderr=True, check=False,
        )
        assert ran.returncode == 0, ran.stderr
        sessions = len(desk.fake.sessions)
        assert not went_to_ai(await one_call(desk, caller))  # the very next call, no restart
        assert len(desk.fake.sessions) == sessions

        # Another instance's view of the same store (as `orchestrator rollout allow/deny` opens it).
        async with await SqliteCallStore.open(store_path(tmp_path)) as other:
            control = RolloutControl(other, desk.config.rollout, region="US")
            await control.allow(caller)
            assert went_to_ai(await one_call(desk, caller))
            await control.deny(caller)
            assert not went_to_ai(await one_call(desk, caller))
            await control.unlist(caller)
            await control.set_percent(100)
            assert went_to_ai(await one_call(desk, caller))

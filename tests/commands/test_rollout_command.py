"""`orchestrator rollout` and RolloutControl: the live setting in the store, its JSON shape, bad input as
one line and exit 2, a store that fails, and the brake pulled from recorded passes."""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
import trio

from machines.decision import DecisionReason, DispatchDecision
from orchestrator.commands.cli import main
from orchestrator.config.routing import BrakeSettings, RolloutSettings
from orchestrator.rollout.live import ROLLOUT_SETTING, RolloutControl, RolloutError
from orchestrator.store.interface import CallStore, CallStoreError
from orchestrator.store.records import PassOutcome
from orchestrator.store.sqlite_store import SqliteCallStore
from tests.cli_support import orchestrator

TESTER = "+14155552671"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("ORCHESTRATOR_"):
            monkeypatch.delenv(name)


def rollout(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`orchestrator rollout --data-dir TMP/var ARGS` in this process: (exit status, stdout, stderr)."""
    code = main(["rollout", "--data-dir", str(tmp_path / "var"), *args])
    out, err = capsys.readouterr()
    return code, out, err


def stored_setting(tmp_path: Path) -> dict | None:
    with sqlite3.connect(tmp_path / "var" / "calls.sqlite3") as connection:
        row = connection.execute("SELECT value_json FROM settings WHERE name = ?", (ROLLOUT_SETTING,)).fetchone()
    return None if row is None else json.loads(row[0])


# --------------------------------------------------------------------------- the command


def test_set_allow_deny_and_show_through_the_store(tmp_path: Path, capsys) -> None:
    code, out, _ = rollout(tmp_path, capsys, "show")
    assert code == 0 and "rollout: 100 % of callers to the AI" in out and "from the routing config" in out

    # As a user runs it: a process of its own, `var` in the working folder.
    assert orchestrator(tmp_path, "rollout", "set", "5").returncode == 0
    assert rollout(tmp_path, capsys, "allow", "(415) 555-2671")[0] == 0  # read in the config's country
    setting = stored_setting(tmp_path)
    assert set(setting) == {"percent", "allow", "deny", "salt", "brake", "updated_at", "updated_by"}
    assert (setting["percent"], setting["allow"], setting["deny"], setting["brake"]) == (5.0, [TESTER], [], None)
    assert setting["updated_by"].startswith("cli")

    assert rollout(tmp_path, capsys, "deny", TESTER)[0] == 0
    assert (stored_setting(tmp_path)["allow"], stored_setting(tmp_path)["deny"]) == ([], [TESTER])  # exclusive
    shown = orchestrator(tmp_path, "rollout", "show")
    assert shown.returncode == 0, shown.stderr
    assert "rollout: 5 % of callers to the AI" in shown.stdout
    assert "from the live setting in the call store" in shown.stdout
    assert f"always legacy: {TESTER}" in shown.stdout and "brake: not tripped" in shown.stdout
    assert "calls in the last 7 days by arm: none" in shown.stdout

    assert rollout(tmp_path, capsys, "unlist", TESTER)[0] == 0
    assert stored_setting(tmp_path)["deny"] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("set", "150"), "error: percent must be a number from 0 to 100, got '150'"),
        (("set", "abc"), "error: percent must be a number from 0 to 100, got 'abc'"),
        (("set", "nan"), "error: percent must be a number from 0 to 100, got 'nan'"),
        (("allow", "12ab"), "error: '12ab': not a phone number"),
        (("deny", ""), "error: '': must be a phone number, got nothing"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys, args: tuple[str, ...], message: str) -> None:
    code, _, err = rollout(tmp_path, capsys, *args)
    assert (code, err.strip()) == (2, message)
    assert not (tmp_path / "var" / "calls.sqlite3").exists() or stored_setting(tmp_path) is None


def test_a_store_that_cannot_be_opened_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "not-a-folder").write_text("x")
    code = main(["rollout", "--data-dir", str(tmp_path / "not-a-folder" / "var"), "show"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: call store ")


def test_a_store_location_of_another_kind_is_one_line_and_exit_2(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_STORE", "ftp://example.com/calls")
    code, _, err = rollout(tmp_path, capsys, "show")
    assert code == 2 and err.startswith("error: $ORCHESTRATOR_STORE: ftp:// is not a store")


def test_release_when_nothing_is_tripped_changes_nothing(tmp_path: Path, capsys) -> None:
    code, out, _ = rollout(tmp_path, capsys, "release")
    assert code == 0 and "nothing to release" in out
    assert stored_setting(tmp_path) is None


def test_show_displays_a_tripped_brake_and_release_gives_the_percentage_back(tmp_path: Path, capsys) -> None:
    async def trip() -> None:
        async with await SqliteCallStore.open(tmp_path / "var" / "calls.sqlite3") as store:
            await store.put_setting(ROLLOUT_SETTING, {
                "percent": 0.0, "allow": [], "deny": [], "salt": "s", "updated_at": 1.0, "updated_by": "brake",
                "brake": {"tripped_at": 1.0, "failure_rate": 0.4, "window_calls": 20, "previous_percent": 25.0,
                          "reason": "8 of the AI arm's last 20 calls failed (40%, above the 25% limit)"},
            })
            await ai_pass(store, 1, DecisionReason.ENGINE_FAILED)

    trio.run(trip)
    code, out, _ = rollout(tmp_path, capsys, "show")
    assert code == 0 and "rollout: 0 % of callers to the AI" in out
    assert "brake: TRIPPED 1970-01-01 00:00:01 UTC: 8 of the AI arm's last 20 calls failed" in out
    assert "failure rate 40% over 20 AI calls; the AI had 25 %" in out
    assert "calls in the last 7 days by arm: ai 1" in out
    code, out, _ = rollout(tmp_path, capsys, "release")
    assert code == 0 and "rollout: 25 % of callers to the AI" in out
    assert stored_setting(tmp_path)["brake"] is None and stored_setting(tmp_path)["salt"] == "s"


# --------------------------------------------------------------------------- RolloutControl


class FailingReads(SqliteCallStore):
    """A store whose reads of settings fail on demand, as a lost Redis would."""

    failing = False

    async def get_setting(self, name: str) -> dict | None:
        if self.failing:
            raise CallStoreError("call store test: cannot read a setting: gone")
        return await super().get_setting(name)


async def test_current_falls_back_to_the_config_then_keeps_the_last_known_on_store_errors() -> None:
    async with await FailingReads.open(":memory:") as store:
        control = RolloutControl(store, RolloutSettings(percent=40), clock=lambda: 1000.0)
        assert (await control.current()).percent == 40 and (await control.current()).source == "config"
        await control.set_percent(7, "test")
        assert (await control.current()).percent == 7
        store.failing = True
        kept = await control.current()
        assert (kept.percent, kept.source) == (7, "store")
        with pytest.raises(CallStoreError):  # a change over a setting we cannot see is refused
            await control.set_percent(9, "test")
        store.failing = False
        await store.put_setting(ROLLOUT_SETTING, {"percent": "lots"})
        assert (await control.current()).source == "config"  # unreadable: the config's


async def test_allow_and_deny_are_exclusive_and_bad_values_are_refused() -> None:
    async with await SqliteCallStore.open(":memory:") as store:
        control = RolloutControl(store, RolloutSettings(), region="US")
        await control.allow("415-555-2671")
        assert (await control.current()).allow == (TESTER,)
        await control.deny(TESTER)
        setting = await control.current()
        assert (setting.allow, setting.deny) == ((), (TESTER,))
        for bad in ("-1", "101", "inf", "x"):
            with pytest.raises(RolloutError):
                await control.set_percent(bad)  # type: ignore[arg-type]
        with pytest.raises(RolloutError):
            await control.allow("not a number")


async def ai_pass(store: CallStore, index: int, reason: DecisionReason | None, outcome: str = "voicemail") -> None:
    call_sid = f"CA{index:032x}"
    triage_pass = await store.open_pass(
        call_sid, caller="+15551230000", called="+15557650000", account_sid="AC" + "0" * 32, entry_node=None, arm="ai"
    )
    if reason is not None:
        decision = DispatchDecision(route="voicemail", route_kind="voicemail", reason=reason)
        await store.save_decision(call_sid, triage_pass.number, decision)
    await store.finish_pass(call_sid, triage_pass.number, PassOutcome(outcome if reason else "abandoned", ("x",)))


async def test_the_brake_trips_once_writes_the_figures_and_a_release_judges_afresh() -> None:
    clock = [1000.0]
    async with await SqliteCallStore.open(":memory:", clock=lambda: clock[0]) as store:
        rollout = RolloutSettings(percent=20, brake=BrakeSettings(window_calls=10, min_calls=5, max_failure_rate=0.25))
        control = RolloutControl(store, rollout, clock=lambda: clock[0])
        for index in range(4):
            await ai_pass(store, index, DecisionReason.ENGINE_FAILED)
        assert await control.check_brake() is None  # 4 calls: below min_calls
        await ai_pass(store, 4, None)  # a caller who hung up: not a failure
        trip = await control.check_brake()
        assert trip is not None and (trip.window_calls, trip.failure_rate, trip.previous_percent) == (5, 0.8, 20)
        stored = await store.get_setting(ROLLOUT_SETTING)
        assert stored["percent"] == 0 and stored["updated_by"] == "brake"
        assert stored["brake"] == {
            "tripped_at": 1000.0, "failure_rate": 0.8, "window_calls": 5, "previous_percent": 20, "reason": trip.reason,
        }
        assert "4 of the AI arm's last 5 calls failed" in trip.reason
        assert await control.check_brake() is None  # already tripped

        clock[0] = 2000.0
        released = await control.release_brake("test")
        assert (released.percent, released.brake) == (20, None)
        assert await control.check_brake() is None  # the failures before the release are not judged again
        clock[0] = 2001.0
        for index in range(10, 15):
            await ai_pass(store, index, DecisionReason.ACCEPTED, "flex")
        assert await control.check_brake() is None


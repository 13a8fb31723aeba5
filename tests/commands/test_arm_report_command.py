"""`orchestrator report`: the per-arm table from records written through the store API, the rollout and
its brake, --json, and bad input as one line with exit status 2."""
from __future__ import annotations

import io
import json
import time

import pytest
import trio

from machines.decision import DecisionReason, DispatchDecision
from orchestrator.commands.cli import build_parser, main
from orchestrator.rollout.report_window import ReportInputError, parse_since
from orchestrator.store.records import PassOutcome
from orchestrator.store.sqlite_store import SqliteCallStore

DAY = 86400.0


async def write_calls(data_dir, now: float) -> None:
    clock = [now]
    async with await SqliteCallStore.open(data_dir / "calls.sqlite3", clock=lambda: clock[0]) as store:
        async def call(index: int, arm: str, kind: str | None, *, ago_s: float = 3600, engine_s: float = 0.0,
                       reason: DecisionReason = DecisionReason.ACCEPTED, **facts) -> None:
            clock[0] = now - ago_s
            call_sid = f"CA{index:032x}"
            triage_pass = await store.open_pass(call_sid, caller="+15551230000", called="+15557650000",
                                                account_sid="AC" + "0" * 32, entry_node=None, arm=arm)
            if kind is not None:
                await store.save_decision(call_sid, triage_pass.number, DispatchDecision(
                    route=f"{kind}_route", route_kind=kind, reason=reason, decided_after_s=3.0))
            outcome = kind or ("legacy" if arm == "legacy" else "abandoned")
            await store.finish_pass(call_sid, triage_pass.number,
                                    PassOutcome(outcome, ("greeting", "ended"), engine_seconds=engine_s))
            if facts:
                await store.record_call_facts(call_sid, facts)

        await call(1, "ai", "resolve", engine_s=120, csat=5)
        await call(2, "ai", "resolve", engine_s=60, csat=4)
        await call(3, "ai", "flex", engine_s=60, handle_time_s=45.0, csat=3)
        await call(4, "ai", "voicemail", engine_s=60, reason=DecisionReason.BUDGET_EXPIRED)
        await call(5, "ai", "resolve", ago_s=20 * DAY, engine_s=6000)  # outside --since 7d
        await call(6, "legacy", None, handle_time_s=200.0, csat=2)
        await call(7, "legacy", None, handle_time_s=400.0)
        clock[0] = now - 600
        await store.put_setting("rollout", {
            "percent": 0.0, "allow": [], "deny": ["+15550000000"], "salt": "s",
            "brake": {"tripped_at": 1_800_000_000.0, "failure_rate": 0.25, "window_calls": 40,
                      "previous_percent": 20.0, "reason": "fallbacks above 20%"},
            "updated_at": 1_800_000_000.0, "updated_by": "brake",
        })


@pytest.fixture
def data_dir(tmp_path):
    folder = tmp_path / "var"
    trio.run(write_calls, folder, time.time())
    return folder


def test_the_report_prints_the_per_arm_table_as_plain_text(data_dir, capsys):
    assert main(["report", "--since", "7d", "--data-dir", str(data_dir), "--price-per-minute", "0.06"]) == 0
    out = capsys.readouterr().out
    header = [line for line in out.splitlines() if line.strip().split() == ["ai", "legacy"]]
    assert len(header) == 1  # one column per arm, ai first
    assert _row(out, "calls").split()[-2:] == ["4", "2"]
    assert "50.0 %" in _row(out, "containment") and "25.0 %" in _row(out, "transfer rate")
    assert "45.0 s (n=1)" in _row(out, "AHT")  # ai: one call Flex handled
    assert "5 min 00 s (n=2)" in _row(out, "AHT")  # legacy: (200 + 400) / 2
    assert "4.00 (n=3)" in _row(out, "CSAT") and "2.00 (n=1)" in _row(out, "CSAT")
    assert "$0.30" in _row(out, "engine cost")  # 300 engine seconds = 5 minutes at $0.06
    assert _row(out, "fallback").split()[-2:] == ["1", "0"]
    assert _row(out, "legacy path").split()[-2:] == ["0", "2"]
    assert "rollout: 0% of callers to the AI (allow list 0, deny list 1)" in out
    assert "brake: TRIPPED at 2027-01-15 08:00:00 UTC (failure rate 25.0 % over 40 calls; the AI share was 20%)" \
        ": fallbacks above 20%" in out
    assert "\x1b[" not in out  # no colour codes when not a terminal


def _row(out: str, name: str) -> str:
    (row,) = [line for line in out.splitlines() if line.startswith(name + "  ")]
    return row


def test_the_report_as_json(data_dir, capsys):
    assert main(["report", "--since", "30d", "--data-dir", str(data_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    ai, legacy = report["arms"]
    assert ai["arm"] == "ai" and ai["calls"] == 5  # 30 days: the old call is in
    assert ai["categories"]["resolved_by_ai"] == 3 and ai["fallbacks"] == 1
    assert ai["engine_minutes"] == pytest.approx(6300 / 60)
    assert legacy["aht_s"] == 300.0 and legacy["containment"] is None
    assert report["rollout"]["brake"]["window_calls"] == 40


def test_the_report_on_a_terminal_is_a_table(data_dir):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    args = build_parser().parse_args(["report", "--data-dir", str(data_dir)])
    assert args.run(args, out) == 0
    text = out.getvalue()
    assert "containment" in text and "legacy" in text and "brake: TRIPPED" in text
    assert "┃" in text or "│" in text  # drawn by rich


def test_a_store_with_no_call_and_no_rollout(tmp_path, capsys):
    async def create() -> None:
        async with await SqliteCallStore.open(tmp_path / "calls.sqlite3"):
            pass

    trio.run(create)
    assert main(["report", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "no call in that time" in out and "rollout: never set" in out and "brake: not tripped" in out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--since", "7 days"], "--since '7 days': expected a duration like 7d"),
        (["--since", "0d"], "the duration must be more than 0"),
        (["--since", "2999-01-01"], "is in the future"),
        (["--price-per-minute", "cheap"], "--price-per-minute 'cheap': expected a number"),
        (["--price-per-minute", "-1"], "expected a number of at least 0"),
        (["--price-per-minute", "inf"], "expected a number of at least 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(data_dir, capsys, flags, message):
    assert main(["report", "--data-dir", str(data_dir), *flags]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and message in captured.err


def test_a_missing_store_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["report", "--data-dir", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file" in err
    assert not (tmp_path / "nowhere").exists()  # a report never creates a store


def test_a_file_that_is_not_a_store_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "calls.sqlite3").write_text("not a database")
    assert main(["report", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a usable SQLite database" in err


def test_since_accepts_durations_and_iso_dates():
    now = 1_800_000_000.0
    assert parse_since("7d", now=now) == now - 7 * DAY
    assert parse_since("24h", now=now) == now - DAY
    assert parse_since("90m", now=now) == now - 5400
    assert parse_since("1.5h", now=now) == now - 5400
    assert parse_since("2027-01-15", now=now) == 1_799_971_200.0  # midnight UTC
    assert parse_since("2027-01-15T09:00:00+01:00", now=now) == now
    with pytest.raises(ReportInputError):
        parse_since("last week", now=now)


def test_the_store_is_the_one_the_server_is_told_to_use(data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_STORE", str(data_dir / "calls.sqlite3"))
    assert main(["report", "--data-dir", str(tmp_path / "elsewhere"), "--json"]) == 0
    assert [arm["calls"] for arm in json.loads(capsys.readouterr().out)["arms"]] == [4, 2]
    monkeypatch.setenv("ORCHESTRATOR_STORE", "ftp://calls.example.com/db")
    assert main(["report", "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ORCHESTRATOR_STORE" in err

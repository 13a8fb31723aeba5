"""`orchestrator report`: figures per rollout arm from the call store, the rollout setting and its brake.

    orchestrator report --since 7d [--price-per-minute 0.024] [--data-dir var] [--json]

A table on a terminal, aligned plain text otherwise (or JSON with --json). Bad input is one line on
stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import TextIO

import orjson
import trio

from orchestrator.config import ConfigError, load_server_settings
from orchestrator.rollout import (
    CATEGORIES,
    CATEGORY_LABELS,
    DEFAULT_PRICE_PER_MINUTE,
    ROLLOUT_SETTING,
    ArmFigures,
    ReportInputError,
    RolloutView,
    arm_figures,
    money,
    parse_since,
    percent,
    rollout_view,
    seconds,
    when,
)
from orchestrator.store import CallStoreError


def parse_price(text: str) -> float:
    try:
        price = float(text)
    except ValueError:
        price = math.nan
    if not (math.isfinite(price) and price >= 0):
        raise ReportInputError(f"--price-per-minute {text!r}: expected a number of at least 0, e.g. 0.024")
    return price


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", default="7d", help="7d, 24h, 90m or an ISO date (default: %(default)s)")
    parser.add_argument("--price-per-minute", default=str(DEFAULT_PRICE_PER_MINUTE),
                        help="engine price per connected minute, for the cost (default: %(default)s)")
    parser.add_argument("--data-dir", type=Path,
                        help="where the server's SQLite store lives (default: $ORCHESTRATOR_DATA_DIR, else var);"
                             " $ORCHESTRATOR_STORE names another store, as for the server")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run_report(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    now = time.time()
    try:
        since = parse_since(args.since, now=now)
        price = parse_price(args.price_per_minute)
        records, setting = trio.run(_read_store, args.data_dir, since)
    except (ReportInputError, CallStoreError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    figures = arm_figures(records, now=now, price_per_minute=price)
    rollout = rollout_view(setting)
    if args.json:
        out.write(orjson.dumps(report_json(figures, rollout, since=since, until=now),
                               option=orjson.OPT_INDENT_2).decode() + "\n")
    elif out.isatty():
        _print_rich(figures, rollout, since, out)
    else:
        out.write(report_text(figures, rollout, since=since))
    return 0


async def _read_store(data_dir: Path | None, since: float) -> tuple[list, dict | None]:
    from orchestrator.composition import open_store

    async with await open_store(load_server_settings(data_dir=data_dir), existing_only=True) as store:
        return await store.calls_since(since), await store.get_setting(ROLLOUT_SETTING)


def report_json(figures: list[ArmFigures], rollout: RolloutView | None, *, since: float, until: float) -> dict:
    return {
        "since": since,
        "until": until,
        "arms": [arm.to_json() for arm in figures],
        "rollout": None if rollout is None else rollout.to_json(),
    }


def report_rows(figures: list[ArmFigures]) -> list[tuple[str, list[str]]]:
    """(figure name, one cell per arm), in the order the table shows them."""
    rows: list[tuple[str, list[str]]] = [
        ("calls", [str(arm.calls) for arm in figures]),
        ("containment", [percent(arm.containment) for arm in figures]),
        ("transfer rate", [percent(arm.transfer_rate) for arm in figures]),
        ("AHT", [_with_count(seconds(arm.aht_s), arm.handled) for arm in figures]),
        ("CSAT", [_with_count("–" if arm.csat_mean is None else f"{arm.csat_mean:.2f}", arm.csat_count)
                  for arm in figures]),
        ("time to decision", [seconds(arm.decision_s_mean) for arm in figures]),
        ("engine minutes", [f"{arm.engine_seconds / 60:.1f}" for arm in figures]),
        ("engine cost", [money(arm.engine_cost) for arm in figures]),
        ("abandoned in queue", [str(arm.queue_abandoned) for arm in figures]),
    ]
    rows += [(CATEGORY_LABELS[category], [str(arm.categories[category]) for arm in figures])
             for category in CATEGORIES]
    return rows


def _with_count(text: str, count: int) -> str:
    return f"{text} (n={count})" if count else text


def rollout_lines(rollout: RolloutView | None) -> list[str]:
    if rollout is None:
        return ["rollout: never set (every call takes the server's default arm)", "brake: not tripped"]
    share = "?" if rollout.percent is None else f"{rollout.percent:g}%"
    by = f" by {rollout.updated_by}" if rollout.updated_by else ""
    lines = [f"rollout: {share} of callers to the AI (allow list {rollout.allow}, deny list {rollout.deny}),"
             f" updated {when(rollout.updated_at)}{by}"]
    brake = rollout.brake
    if brake is None:
        lines.append("brake: not tripped")
    else:
        previous = "?" if brake.previous_percent is None else f"{brake.previous_percent:g}%"
        over = "?" if brake.window_calls is None else str(brake.window_calls)
        reason = f": {brake.reason}" if brake.reason else ""
        lines.append(f"brake: TRIPPED at {when(brake.tripped_at)} (failure rate {percent(brake.failure_rate)}"
                     f" over {over} calls; the AI share was {previous}){reason}")
    return lines


def report_text(figures: list[ArmFigures], rollout: RolloutView | None, *, since: float) -> str:
    lines = [f"calls since {when(since)}"]
    if figures:
        table = [("", [arm.arm for arm in figures]), *report_rows(figures)]
        name_width = max(len(name) for name, _ in table)
        widths = [max(len(cells[index]) for _, cells in table) for index in range(len(figures))]
        for name, cells in table:
            lines.append("  ".join([name.ljust(name_width), *(cell.rjust(width) for cell, width in zip(cells, widths))])
                         .rstrip())
    else:
        lines.append("no call in that time")
    lines += rollout_lines(rollout)
    return "\n".join(lines) + "\n"


def _print_rich(figures: list[ArmFigures], rollout: RolloutView | None, since: float, out: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out, highlight=False)
    if figures:
        table = Table(title=f"calls since {when(since)}", title_justify="left")
        table.add_column("")
        for arm in figures:
            table.add_column(arm.arm, justify="right")
        for name, cells in report_rows(figures):
            table.add_row(name, *cells)
        console.print(table)
    else:
        console.print(f"calls since {when(since)}: none")
    for line in rollout_lines(rollout):
        console.print(line, style="bold red" if line.startswith("brake: TRIPPED") else None, markup=False)

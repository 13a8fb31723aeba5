"""Figures as people read them, the same in `orchestrator report` and on the /ops page."""
from __future__ import annotations

import datetime as dt


def percent(share: float | None) -> str:
    return "–" if share is None else f"{share * 100:.1f} %"


def seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 60:
        return f"{value:.1f} s"
    minutes, rest = divmod(round(value), 60)
    return f"{minutes} min {rest:02d} s"


def money(value: float) -> str:
    return f"${value:,.2f}"


def when(unix_s: float | None) -> str:
    if unix_s is None:
        return "–"
    return dt.datetime.fromtimestamp(unix_s, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

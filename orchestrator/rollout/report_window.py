"""Where the window of a report starts (`orchestrator report --since`, the /ops page's `?window=`)."""
from __future__ import annotations

import datetime as dt
import re

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([dhm])")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60}


class ReportInputError(ValueError):
    """A flag the report cannot use; the message is one line."""


def parse_since(text: str, *, now: float) -> float:
    """`7d`, `24h`, `90m` (that long before `now`) or an ISO date or date-time (UTC unless it says
    otherwise) as unix seconds; ReportInputError otherwise."""
    given = text.strip()
    duration = _DURATION.fullmatch(given)
    if duration:
        length = float(duration.group(1)) * _UNIT_SECONDS[duration.group(2)]
        if not length > 0:
            raise ReportInputError(f"--since {text!r}: the duration must be more than 0")
        return now - length
    try:
        moment = dt.datetime.fromisoformat(given)
    except ValueError:
        raise ReportInputError(
            f"--since {text!r}: expected a duration like 7d, 24h or 90m, or an ISO date like 2026-01-31"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    since = moment.timestamp()
    if since > now:
        raise ReportInputError(f"--since {text!r} is in the future")
    return since

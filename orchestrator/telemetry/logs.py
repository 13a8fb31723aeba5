"""Structured logs, bound to the call (CallSid, StreamSid, state), with phone numbers masked."""
from __future__ import annotations

import logging
import re
import sys

import structlog

_PHONE = re.compile(r"\+?\d[\d\s().-]{6,}\d")


def mask_phone(number: str | None) -> str:
    """'+15551234567' -> '+1555***4567': enough to tell calls apart in a log, not to dial."""
    if not number:
        return ""
    digits = re.sub(r"\D", "", number)
    if len(digits) < 7:
        return "***"
    prefix = "+" if number.strip().startswith("+") else ""
    return f"{prefix}{digits[:4]}***{digits[-4:]}"


def mask_phones_in(text: str) -> str:
    return _PHONE.sub(lambda match: mask_phone(match.group(0)), text)


def configure_logging(level: int = logging.INFO) -> None:
    """Console logs for `orchestrator serve`; structlog renders through the standard logging module."""
    logging.basicConfig(level=level, stream=sys.stderr, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def quiet_state_machine_library() -> None:
    """The call machine absorbs late or illegal events and writes them to the call's trail; the transitions
    library's own warning for each would only repeat them in the log, once per call."""
    logging.getLogger("transitions.core").setLevel(logging.ERROR)


def call_logger(call_sid: str, stream_sid: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger("orchestrator.call").bind(call_sid=call_sid, stream_sid=stream_sid)

"""Structured logs, bound to the call (CallSid, StreamSid, state), with phone numbers masked.

No log line carries a secret: tracebacks are plain text (never the values of local variables, which hold
tokens and callers' numbers), and every line, structlog's and the standard logging module's alike (hypercorn,
our `logging` loggers), goes through `LogRedaction`: the secrets the server registered
(`secrets_masked_in_logs`), credentials (bearer and basic values, `Authorization`/`api-key`/`*token`/
`*password`/`*secret` values, URL passwords) and phone numbers (`+1415***0001`).
"""
from __future__ import annotations

import logging
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import structlog
import structlog.testing

MASK = "[redacted]"
# A registered value shorter than this is no credential, and masking it would garble every line.
MIN_SECRET_LENGTH = 6

# An E.164 number (also URL-encoded, %2B…): 8 to 15 digits, spaces, dots, dashes or brackets between them.
_PHONE = re.compile(r"(\+|%2[Bb])(\d(?:[ ().-]{0,2}\d){7,14})(?!\d)")
_NOT_MASKED = rf"(?!{re.escape(MASK)})"
_CREDENTIAL_SCHEME = re.compile(rf"(?i)\b(Bearer|Basic)(\s+){_NOT_MASKED}[A-Za-z0-9._~+/=-]+")
# A key naming a credential, what separates it from its value (`=`, `: `, `", "` in a header tuple,
# `" value="` in TwiML's <Parameter>), then the value (with its scheme, for `Authorization: Bearer …`).
_CREDENTIAL_KEY = r"[\w-]*(?:token|secret|password|passwd|api[-_]?key|authorization)"
_CREDENTIAL_VALUE = re.compile(
    rf"""(?ix)\b({_CREDENTIAL_KEY})\b
    (["']?\s*[=:]\s*|["']?,\s*|["']\s+value=)
    (?!(?:b?["'])?{re.escape(MASK)})((?:b?["'])?)((?:(?:bearer|basic)\s+{_NOT_MASKED})?[^"'\s&,;)}}\]>]+)"""
)
_SENSITIVE_KEY = re.compile(rf"(?i){_CREDENTIAL_KEY}")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@")


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
    """Every phone number in `text` (E.164, possibly URL-encoded) masked as `mask_phone` masks it."""
    return _PHONE.sub(lambda match: match.group(1) + mask_phone("+" + match.group(2))[1:], text)


class LogRedaction:
    """Masks secrets, credentials and phone numbers in log text. One per process (`log_redaction`): it is
    structlog's processor and, through the log record factory, masks every standard logging record."""

    def __init__(self) -> None:
        self._secrets: Counter[str] = Counter()
        self._longest_first: tuple[str, ...] = ()

    def add(self, secrets: Iterable[str]) -> None:
        self._secrets.update(secrets)
        self._reorder()

    def discard(self, secrets: Iterable[str]) -> None:
        self._secrets.subtract(secrets)
        self._reorder()

    def _reorder(self) -> None:
        self._secrets = +self._secrets  # drops the ones no longer registered
        self._longest_first = tuple(sorted(self._secrets, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for secret in self._longest_first:
            if secret in text:
                text = text.replace(secret, MASK)
        text = _CREDENTIAL_VALUE.sub(rf"\1\2\3{MASK}", text)  # first: it masks `Authorization: Bearer …` whole
        text = _CREDENTIAL_SCHEME.sub(rf"\1\2{MASK}", text)
        text = _URL_PASSWORD.sub(rf"\1{MASK}@", text)
        return mask_phones_in(text)

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
        """The structlog processor: every value of the event, before it is rendered."""
        for key, value in event_dict.items():
            if key == "exc_info" or value is None or isinstance(value, (bool, int, float)):
                continue
            if _SENSITIVE_KEY.fullmatch(key):
                event_dict[key] = MASK
            elif isinstance(value, str):
                event_dict[key] = self.redact(value)
            else:  # shown by its repr: masked as that when it holds something to mask
                shown = repr(value)
                if (masked := self.redact(shown)) != shown:
                    event_dict[key] = masked
        return event_dict

    def redact_record(self, record: logging.LogRecord) -> None:
        """Mask a standard logging record in place: its message (arguments merged in), its traceback and stack."""
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the format: the handler would fail on them too
            message = f"{record.msg} (arguments that do not fit the message dropped)"
        record.msg, record.args = self.redact(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)


class RedactingRecordFactory:
    """The standard logging module's record factory, masking each record as it is made: a filter or
    formatter would guard only the handlers it is attached to, and any handler may be added later."""

    def __init__(self, make_record: Any, redaction: LogRedaction) -> None:
        self.make_record = make_record
        self.redaction = redaction

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.make_record(*args, **kwargs)
        self.redaction.redact_record(record)
        return record


def log_redaction() -> LogRedaction:
    """The process's redaction; installed as the log record factory the first time it is asked for."""
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, RedactingRecordFactory):
        factory = RedactingRecordFactory(factory, LogRedaction())
        logging.setLogRecordFactory(factory)
    return factory.redaction


@contextmanager
def secrets_masked_in_logs(*secrets: str | None) -> Iterator[None]:
    """Within the block, log lines show these values (and their URL-encoded forms) as [redacted]."""
    values = [value for value in secrets if value and len(value) >= MIN_SECRET_LENGTH]
    values += [encoded for value in values if (encoded := quote(value, safe="")) != value]
    redaction = log_redaction()
    redaction.add(values)
    try:
        yield
    finally:
        redaction.discard(values)


def _traceback_once(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
    """`log.exception` ends in logging's `Logger.exception`, which appends the traceback itself."""
    if method_name == "exception":
        event_dict.pop("exc_info", None)
    return event_dict


def configure_logging(level: int = logging.INFO, *, cache_loggers: bool = True) -> None:
    """Console logs for `orchestrator serve`; structlog renders through the standard logging module.
    Exceptions are rendered as plain tracebacks (`format_exc_info`) before the redaction sees the event.
    `cache_loggers=False` leaves each logger following later changes of the configuration."""
    redaction = log_redaction()
    logging.basicConfig(level=level, stream=sys.stderr, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _traceback_once,
            structlog.processors.format_exc_info,
            redaction,
            structlog.dev.ConsoleRenderer(
                colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
            ),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=cache_loggers,
    )


def configure_server_logging() -> None:
    """What every server entry calls (`run_server`, `build_app`): `serve` has configured the pipeline above
    already; a server started in-process (tests, an application embedding it) would otherwise log through
    structlog's default, whose tracebacks show every frame's local variables (tokens, callers' numbers).
    A capture in progress (`structlog.testing.capture_logs`) is left alone, and loggers are not cached, so
    whoever configures structlog after this still reaches every logger."""
    log_redaction()  # the logging module's records are masked even while a capture holds structlog
    processors = structlog.get_config()["processors"]
    if not any(isinstance(processor, (LogRedaction, structlog.testing.LogCapture)) for processor in processors):
        configure_logging(cache_loggers=False)


def quiet_state_machine_library() -> None:
    """The call machine absorbs late or illegal events and writes them to the call's trail; the transitions
    library's own warning for each would only repeat them in the log, once per call."""
    logging.getLogger("transitions.core").setLevel(logging.ERROR)


def call_logger(call_sid: str, stream_sid: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger("orchestrator.call").bind(call_sid=call_sid, stream_sid=stream_sid)

"""A simulated Twilio caller: plays Twilio's side of one phone call against our server.

    caller = SimulatedCaller(
        CallerOptions(base_url="http://127.0.0.1:8080", auth_token="secret", speed=10),
        [WaitForAgent(), Say(tone(1200), "my boiler is leaking"), WaitForAgent(), HangUp()],
    )
    result = await caller.run()
    assert result.violations == [] and "<Enqueue" in result.final_twiml

What it does like Twilio (protocols/twilio.md sections 1, 2 and 5):
- POSTs the signed voice webhook (`X-Twilio-Signature` over the full URL and the form params) and reads
  the TwiML; a `<Connect><Stream>` opens the Media Stream, anything else is the call's final TwiML.
- Opens the WebSocket with the upgrade signed over the Stream URL as written in the TwiML, sends
  `connected`, `start` (with the `<Parameter>`s), then a 20 ms µ-law `media` frame on a fixed grid,
  all JSON text frames with numbers as strings.
- Plays what the server sends through a playback buffer drained at 8 bytes/ms (times `speed`): a
  `mark` is echoed when playback reaches it, `clear` drops the unplayed audio and echoes every pending
  mark at once. This is what makes barge-in testable.
- When the server closes the socket, POSTs the `<Connect action>` URL (CallStatus in-progress) and
  records the TwiML; when the caller hangs up it sends `stop`, closes with 1000 and still requests the
  action URL (CallStatus completed), as Twilio does on every stream end.

Server misbehaviour never raises: binary or non-JSON frames, unknown events, a wrong streamSid, bad
base64, WAV/AU headers in audio, messages before `start`, malformed TwiML, a hung server (the call
ends at `max_call_s`) are recorded in `violations` and the call carries on, as Twilio would. Only
programming errors raise. Every time recorded is `trio.current_time()`, so tests can compare them
with times recorded by the server and the fake Realtime server in the same process.

Besides `run()`'s CallResult, a running caller shows `state`, `result` (so far), `sent` and `received`
(every stream message, timed), `heard_audio` (what the phone played; `played_bytes` and
`heard_audio_since` follow it as it plays) and takes `hang_up()`. A `Decide` step lets the caller choose
what to do next from what it heard (a conversing caller), while silence keeps flowing.

Where this double is more lenient than Twilio: `ws://` Stream URLs are accepted (Twilio takes
`wss://` only) so tests can run without TLS.
"""

from __future__ import annotations

import base64
import binascii
import math
import ssl
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode, urljoin, urlsplit, urlunsplit
from xml.etree import ElementTree

import httpx
import orjson
import trio
from pydantic import Field, TypeAdapter, ValidationError
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)
from twilio.request_validator import RequestValidator

from bridge.openai_realtime import reraise_lone
from bridge.twilio import (
    MULAW_BYTES_PER_MS,
    MULAW_SILENCE,
    OutboundClearMessage,
    OutboundMarkMessage,
    OutboundMediaMessage,
    frames,
)

__all__ = [
    "CallEnded",
    "CallRecordUnavailable",
    "CallResult",
    "CallerFrame",
    "CallerOptions",
    "CallerStep",
    "CallerViolation",
    "Decide",
    "GoSilent",
    "HangUp",
    "MarkEcho",
    "PressDigit",
    "Say",
    "SendFrame",
    "SimulatedCaller",
    "Wait",
    "WaitForAgent",
    "fetch_call_record",
    "parse_connect_twiml",
]

CHUNK_MS = 20
FRAME_BYTES = CHUNK_MS * MULAW_BYTES_PER_MS
SILENCE_FRAME = MULAW_SILENCE * FRAME_BYTES
HTTP_TIMEOUT_S = 15.0  # Twilio gives a webhook 15 s before it gives up on it (error 11200)
CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0
POLL_INTERVAL_S = 0.01  # wait_until re-checks at least this often (played audio changes with time)
MAX_TWIML_BYTES = 64 * 1024  # larger TwiML is error 11750
MAX_PARAMETER_CHARS = 500  # a <Parameter>'s name and value together
MAX_VIOLATIONS = 1000  # a noisy server must not grow the record without bound
EXCERPT_CHARS = 120
DTMF_DIGITS = frozenset("0123456789*#")
AUDIO_HEADERS = (b"RIFF", b".snd")  # WAV and AU: Twilio would play the header as noise
USER_AGENT = "TwilioProxy/1.1"
API_VERSION = "2010-04-01"

_SERVER_MESSAGE: TypeAdapter[OutboundMediaMessage | OutboundMarkMessage | OutboundClearMessage] = TypeAdapter(
    Annotated[
        OutboundMediaMessage | OutboundMarkMessage | OutboundClearMessage, Field(discriminator="event")
    ]
)


class CallEnded(RuntimeError):
    """`wait_until` gave up: the call ended before the condition held."""


class CallRecordUnavailable(RuntimeError):
    """GET /calls/{sid} answered something other than the record or a 404."""


# --------------------------------------------------------------------------- the script


@dataclass(frozen=True)
class Say:
    """The caller talks: `audio` is µ-law 8 kHz bytes (e.g. tone(1200)); `text` labels the transcript."""

    audio: bytes
    text: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.audio, (bytes, bytearray)):
            raise TypeError(f"Say.audio must be µ-law bytes, got {type(self.audio).__name__}")


@dataclass(frozen=True)
class Wait:
    """The caller stays silent for `ms` (caller clock); silence frames keep flowing, as on a real line."""

    ms: int

    def __post_init__(self) -> None:
        if self.ms < 0:
            raise ValueError(f"Wait.ms must be >= 0, got {self.ms}")


@dataclass(frozen=True)
class WaitForAgent:
    """Silence until the agent has talked and stopped: audio arrived since the caller last spoke (or
    was still playing when the step began), nothing is left to play (marks echoed), and no media came
    for `quiet_ms`. Gives up after `timeout_ms`. Both in caller clock."""

    quiet_ms: int = 600
    timeout_ms: int = 15000

    def __post_init__(self) -> None:
        if self.quiet_ms < 0 or self.timeout_ms < 0:
            raise ValueError(f"WaitForAgent times must be >= 0, got {self.quiet_ms} and {self.timeout_ms}")


@dataclass(frozen=True)
class HangUp:
    """The caller hangs up: `stop`, then the socket is closed with 1000."""


@dataclass(frozen=True)
class GoSilent:
    """The line goes dead without a close (a TLS proxy that died, a half-open connection): from now on the
    caller sends nothing, not even mark echoes or `stop`, and keeps the socket open. A close by the server
    does not reach Twilio on such a path, so the action URL is not requested either: only a REST update of
    the call (see `fake_twilio_rest`) moves it on."""


@dataclass(frozen=True)
class PressDigit:
    """The caller presses a key: a `dtmf` message (0-9, * or #)."""

    digit: str

    def __post_init__(self) -> None:
        if self.digit not in DTMF_DIGITS:
            raise ValueError(f"PressDigit.digit must be one of 0-9, * or #, got {self.digit!r}")


@dataclass(frozen=True)
class Decide:
    """The caller makes up their mind: `choose()` runs while silence frames keep flowing, and the steps
    it returns are played next (before the rest of the script). A conversing caller is a script of one
    `Decide` whose choices end with another `Decide`."""

    choose: Callable[[], Awaitable[Sequence[CallerStep]]]


@dataclass(frozen=True)
class SendFrame:
    """The caller sends one frame as given: a dict goes as JSON text with the stream's `streamSid` unless it
    has one; a str as a text frame, bytes as a binary frame (hostile or broken peers)."""

    frame: dict[str, Any] | str | bytes


CallerStep = Say | Wait | WaitForAgent | HangUp | PressDigit | Decide | SendFrame | GoSilent
_STEP_TYPES = (Say, Wait, WaitForAgent, HangUp, PressDigit, Decide, SendFrame, GoSilent)


@dataclass
class CallerOptions:
    base_url: str  # e.g. "http://127.0.0.1:8080"; webhook = base_url + incoming_path
    auth_token: str
    incoming_path: str = "/voice/incoming"
    incoming_query: str = ""  # e.g. "flow_sid=FW…&node=ai_triage" (signed as part of the URL)
    call_sid: str | None = None  # generated when None
    account_sid: str = "AC" + "0" * 32
    caller: str = "+15551230000"
    called: str = "+15557650000"
    speed: float = 1.0  # 1 = real time; 10 = frames and playback 10× faster
    max_call_s: float = 120.0  # caller clock; then hang up (a hung server must not hang the test)
    ws_origin: str | None = None  # replace scheme://host:port of the Stream URL (keep path) before connecting
    follow_action: bool = True
    sign: bool = True  # False sends no signature; `bad_signature=True` sends a wrong one
    bad_signature: bool = False
    after_script: Literal["silence", "hang_up"] = "silence"  # what the caller does once the steps run out
    tls: ssl.SSLContext | None = None  # trusts https:// and wss:// servers (None: the system's trust store)

    def __post_init__(self) -> None:
        base = urlsplit(self.base_url)
        if base.scheme not in ("http", "https") or not base.netloc:
            raise ValueError(f"base_url must be an http:// or https:// URL, got {self.base_url!r}")
        if not self.incoming_path.startswith("/"):
            raise ValueError(f"incoming_path must start with '/', got {self.incoming_path!r}")
        self.incoming_query = self.incoming_query.removeprefix("?")
        if not (math.isfinite(self.speed) and self.speed > 0):
            raise ValueError(f"speed must be a positive number, got {self.speed}")
        if not (self.max_call_s > 0):
            raise ValueError(f"max_call_s must be > 0, got {self.max_call_s}")
        if self.after_script not in ("silence", "hang_up"):
            raise ValueError(f"after_script must be 'silence' or 'hang_up', got {self.after_script!r}")
        if self.ws_origin is not None:
            origin = urlsplit(self.ws_origin)
            if origin.scheme not in ("ws", "wss") or not origin.netloc:
                raise ValueError(f"ws_origin must look like ws://host:port, got {self.ws_origin!r}")

    @property
    def webhook_url(self) -> str:
        url = self.base_url.rstrip("/") + self.incoming_path
        return f"{url}?{self.incoming_query}" if self.incoming_query else url


# --------------------------------------------------------------------------- what is recorded


@dataclass
class MarkEcho:
    name: str
    at: float
    cleared: bool  # echoed because of `clear`, i.e. the audio before it was discarded, not played


@dataclass
class CallerViolation:
    at: float
    kind: str
    excerpt: str


@dataclass
class CallerFrame:
    """One message on the Media Stream, as JSON (`data`), with the time it was sent or received."""

    at: float
    event: str | None
    data: Any


@dataclass
class CallResult:
    call_sid: str
    webhook_status: int  # 0 when no HTTP answer came (unreachable, timed out)
    incoming_twiml: str
    stream_url: str | None
    action_url: str | None
    custom_parameters: dict[str, str]
    stream_sid: str | None
    stream_rejected_status: int | None  # HTTP status if the WS upgrade was refused
    media_opened_at: float | None
    media_closed_at: float | None
    media_closed_by: Literal["server", "caller"] | None
    close_code: int | None
    action_status: int | None
    final_twiml: str | None  # the action URL's TwiML (or the incoming TwiML when it had no stream)
    action_answered_at: float | None
    marks: list[MarkEcho]
    audio_received_ms: float
    audio_played_ms: float
    audio_cleared_ms: float
    clears: int
    violations: list[CallerViolation]
    transcript: list[tuple[float, str]]  # (time, "caller: <text>") for each Say with a text, in order


# --------------------------------------------------------------------------- TwiML


def parse_connect_twiml(twiml: str) -> tuple[str | None, str | None, dict[str, str]]:
    """(action URL, stream URL, parameters) of a `<Response><Connect><Stream>`, as written in the TwiML;
    (None, None, {}) when there is no stream or the XML is malformed."""
    root = _parse_twiml(twiml)
    if isinstance(root, str):
        return None, None, {}
    connect, stream = _find_stream(root)
    if connect is None or stream is None:
        return None, None, {}
    return connect.get("action"), stream.get("url"), _stream_parameters(stream)


def _parse_twiml(twiml: str) -> ElementTree.Element | str:
    """The `<Response>` element, or why there is none."""
    try:
        root = ElementTree.fromstring(twiml)
    except ElementTree.ParseError as exc:
        return f"not XML: {exc}"
    if root.tag != "Response":
        return f"root element is <{root.tag}>, not <Response>"
    return root


def _find_stream(root: ElementTree.Element) -> tuple[ElementTree.Element | None, ElementTree.Element | None]:
    for connect in root.findall("Connect"):
        stream = connect.find("Stream")
        if stream is not None:
            return connect, stream
    return None, None


def _stream_parameters(stream: ElementTree.Element) -> dict[str, str]:
    return {
        parameter.get("name", ""): parameter.get("value", "")
        for parameter in stream.findall("Parameter")
        if parameter.get("name")
    }


# --------------------------------------------------------------------------- the playback buffer


class _Playback:
    """What the caller's phone plays. Pure: time is passed in.

    Received audio is laid end to end on one timeline (`_audio`: played, then pending); playback moves
    along it at `bytes_per_s` from an anchor and waits at the end when it runs dry. A mark is a point
    on the timeline. `clear` cuts the timeline at the playback position.
    """

    def __init__(self, bytes_per_s: float) -> None:
        self._rate = bytes_per_s
        self._audio = bytearray()
        self._anchor_position = 0.0
        self._anchor_time = 0.0
        self._frozen_at: float | None = None
        self._pending_marks: deque[tuple[str, int]] = deque()
        self.received_bytes = 0
        self.cleared_bytes = 0

    def position(self, now: float) -> float:
        if self._frozen_at is not None:
            now = min(now, self._frozen_at)
        moved = max(0.0, now - self._anchor_time) * self._rate
        return min(float(len(self._audio)), self._anchor_position + moved)

    def is_idle(self, now: float) -> bool:
        return self.position(now) >= len(self._audio) - 1e-6

    def append_audio(self, audio: bytes, now: float) -> None:
        if self.is_idle(now):  # ran dry: playback restarts now, where the audio ends
            self._anchor_position, self._anchor_time = float(len(self._audio)), now
        self._audio += audio
        self.received_bytes += len(audio)

    def add_mark(self, name: str) -> None:
        self._pending_marks.append((name, len(self._audio)))

    def pop_due_marks(self, now: float) -> list[str]:
        reached = self.position(now) + 1e-6
        due: list[str] = []
        while self._pending_marks and self._pending_marks[0][1] <= reached:
            due.append(self._pending_marks.popleft()[0])
        return due

    @property
    def pending_marks(self) -> int:
        return len(self._pending_marks)

    def next_mark_due_at(self) -> float | None:
        if not self._pending_marks or self._frozen_at is not None:
            return None
        return self._anchor_time + (self._pending_marks[0][1] - self._anchor_position) / self._rate

    def clear(self, now: float) -> list[str]:
        """Drop the unplayed audio; return every pending mark name, in order (all echoed at once)."""
        played = int(self.position(now))
        self.cleared_bytes += len(self._audio) - played
        del self._audio[played:]
        self._anchor_position, self._anchor_time = float(played), now
        names = [name for name, _ in self._pending_marks]
        self._pending_marks.clear()
        return names

    def freeze(self, now: float) -> None:
        if self._frozen_at is None:
            self._frozen_at = now

    def played_bytes(self, now: float) -> int:
        return int(self.position(now))

    def heard(self, now: float) -> bytes:
        return bytes(self._audio[: self.played_bytes(now)])

    def heard_since(self, start: int, now: float) -> bytes:
        return bytes(self._audio[max(0, start) : self.played_bytes(now)])


# --------------------------------------------------------------------------- the caller


class SimulatedCaller:
    """One simulated call. Build it, `await run()`; from another task watch `state`, `result`,
    `wait_until(...)`, or `hang_up()`."""

    def __init__(
        self,
        options: CallerOptions,
        steps: Sequence[CallerStep] = (),
        *,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        for step in steps:
            if not isinstance(step, _STEP_TYPES):
                raise TypeError(f"not a caller step: {step!r}")
        self._options = options
        self._steps = tuple(steps)
        self._http_given = http
        self._call_sid = options.call_sid or "CA" + uuid.uuid4().hex
        self._stream_sid: str | None = None
        self._state: Literal["dialing", "streaming", "after", "done"] = "dialing"
        self._ran = False
        self._changed = trio.Event()
        self._playback_changed = trio.Event()
        self._stream_should_end = trio.Event()
        self._hang_up_requested = False
        self._deadline = math.inf
        self._playback = _Playback(options.speed * MULAW_BYTES_PER_MS * 1000)
        self._send_lock = trio.Lock()
        self._sequence = 0
        self._chunk = 0
        self._grid_start = 0.0
        self._start_sent = False
        self._stop_sent = False
        self._gone_silent = False
        self._last_media_at: float | None = None
        self._turn_started_at = 0.0
        # recorded
        self._webhook_status = 0
        self._incoming_twiml = ""
        self._stream_url: str | None = None
        self._action_url: str | None = None
        self._action_method = "POST"
        self._custom_parameters: dict[str, str] = {}
        self._stream_rejected_status: int | None = None
        self._media_opened_at: float | None = None
        self._media_closed_at: float | None = None
        self._media_closed_by: Literal["server", "caller"] | None = None
        self._close_code: int | None = None
        self._action_status: int | None = None
        self._final_twiml: str | None = None
        self._action_answered_at: float | None = None
        self._marks: list[MarkEcho] = []
        self._clears = 0
        self._violations: list[CallerViolation] = []
        self._transcript: list[tuple[float, str]] = []
        self.received: list[CallerFrame] = []  # every well-formed JSON object the server sent
        self.sent: list[CallerFrame] = []  # every message the caller sent on the stream

    # ---- live view

    @property
    def state(self) -> str:
        """"dialing" | "streaming" | "after" | "done"."""
        return self._state

    @property
    def call_sid(self) -> str:
        return self._call_sid

    @property
    def stream_sid(self) -> str | None:
        return self._stream_sid

    @property
    def result(self) -> CallResult:
        """What is known so far (the final result once `state == "done"`)."""
        now = trio.current_time()
        playback = self._playback
        return CallResult(
            call_sid=self._call_sid,
            webhook_status=self._webhook_status,
            incoming_twiml=self._incoming_twiml,
            stream_url=self._stream_url,
            action_url=self._action_url,
            custom_parameters=dict(self._custom_parameters),
            stream_sid=self._stream_sid,
            stream_rejected_status=self._stream_rejected_status,
            media_opened_at=self._media_opened_at,
            media_closed_at=self._media_closed_at,
            media_closed_by=self._media_closed_by,
            close_code=self._close_code,
            action_status=self._action_status,
            final_twiml=self._final_twiml,
            action_answered_at=self._action_answered_at,
            marks=list(self._marks),
            audio_received_ms=playback.received_bytes / MULAW_BYTES_PER_MS,
            audio_played_ms=playback.played_bytes(now) / MULAW_BYTES_PER_MS,
            audio_cleared_ms=playback.cleared_bytes / MULAW_BYTES_PER_MS,
            clears=self._clears,
            violations=list(self._violations),
            transcript=list(self._transcript),
        )

    @property
    def heard_audio(self) -> bytes:
        """The µ-law audio the caller's phone has played so far (for `mulaw_to_wav`)."""
        return self._playback.heard(trio.current_time())

    @property
    def played_bytes(self) -> int:
        """How much agent audio (µ-law bytes) the phone has played so far; it only grows."""
        return self._playback.played_bytes(trio.current_time())

    def heard_audio_since(self, played_bytes: int) -> bytes:
        """What the phone played after its first `played_bytes` (the end of `heard_audio`, without a copy
        of the whole call)."""
        return self._playback.heard_since(played_bytes, trio.current_time())

    async def wait_until(self, predicate: Callable[[SimulatedCaller], bool]) -> None:
        """Return once `predicate(self)` holds; raise CallEnded if the call ends first."""
        while not predicate(self):
            if self._state == "done":
                raise CallEnded(f"call {self._call_sid} ended before the condition held")
            with trio.move_on_after(POLL_INTERVAL_S):
                await self._changed.wait()

    async def hang_up(self) -> None:
        """The caller hangs up now (from another task). Before the stream opens, there will be none."""
        self._request_hang_up()
        await trio.lowlevel.checkpoint()

    # ---- the call

    async def run(self) -> CallResult:
        """Play the whole call and return what happened. Raises only for programming errors; the
        stream is bounded by `max_call_s` (caller clock)."""
        if self._ran:
            raise RuntimeError("SimulatedCaller.run() plays one call; build a new caller for another")
        self._ran = True
        self._deadline = trio.current_time() + self._options.max_call_s / self._options.speed
        try:
            async with AsyncExitStack() as stack:
                http = self._http_given
                if http is None:
                    http = await stack.enter_async_context(
                        httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, verify=self._options.tls or True)
                    )
                await self._call(http)
        except BaseExceptionGroup as group:
            reraise_lone(group)
        finally:
            self._playback.freeze(trio.current_time())
            self._set_state("done")
        return self.result

    async def _call(self, http: httpx.AsyncClient) -> None:
        stream_url = await self._dial(http)
        if stream_url is None:
            return
        if self._hang_up_requested:
            return  # hung up while the webhook was answering: no stream, no action
        connect_url = self._checked_stream_url(stream_url)
        if connect_url is not None:
            await self._stream(connect_url)
        if self._action_url is None or not self._options.follow_action or self._gone_silent:
            return
        self._set_state("after")
        status = "completed" if self._media_closed_by == "caller" else "in-progress"
        await self._follow_action(http, status)

    def _voice_params(self, call_status: str) -> dict[str, str]:
        options = self._options
        return {
            "AccountSid": options.account_sid,
            "ApiVersion": API_VERSION,
            "CallSid": self._call_sid,
            "CallStatus": call_status,
            "Direction": "inbound",
            "From": options.caller,
            "To": options.called,
            "Called": options.called,
            "Caller": options.caller,
        }

    def _signature_headers(self, url: str, params: dict[str, str]) -> dict[str, str]:
        options = self._options
        if not options.sign:
            return {}
        token = options.auth_token + "-wrong" if options.bad_signature else options.auth_token
        return {"X-Twilio-Signature": RequestValidator(token).compute_signature(url, params)}

    async def _request(
        self,
        http: httpx.AsyncClient,
        method: str,
        url: str,
        params: dict[str, str],
        deadline: float,
        what: str,
    ) -> httpx.Response | None:
        """A signed Twilio request; None (and a violation) when no answer came."""
        if method == "GET":
            url = url + ("&" if urlsplit(url).query else "?") + urlencode(params)
            headers, data = self._signature_headers(url, {}), None
        else:
            headers, data = self._signature_headers(url, params), params
        headers["User-Agent"] = USER_AGENT
        with trio.move_on_at(deadline) as scope:
            try:
                return await http.request(method, url, data=data, headers=headers)
            except httpx.HTTPError as exc:
                self._violation(f"{what}_unreachable", f"{method} {url}: {type(exc).__name__} {exc}")
                return None
        if scope.cancelled_caught:
            self._violation(f"{what}_timeout", f"{method} {url}: no answer in time")
        return None

    async def _dial(self, http: httpx.AsyncClient) -> str | None:
        """POST the voice webhook; return the Stream URL when the TwiML opens a stream."""
        url = self._options.webhook_url
        deadline = min(self._deadline, trio.current_time() + HTTP_TIMEOUT_S)
        response = await self._request(http, "POST", url, self._voice_params("ringing"), deadline, "webhook")
        if response is None:
            return None
        self._webhook_status = response.status_code
        self._incoming_twiml = response.text
        self._notify()
        if not response.is_success:
            return None
        twiml = response.text
        if len(response.content) > MAX_TWIML_BYTES:
            self._violation("twiml_too_large", f"{len(response.content)} bytes (Twilio's limit is 64 kB)")
        root = _parse_twiml(twiml)
        if isinstance(root, str):
            self._violation("malformed_twiml", f"{root}: {twiml}")
            self._final_twiml = twiml
            return None
        connect, stream = _find_stream(root)
        stream_url = None if stream is None else stream.get("url")
        if connect is None or stream is None or not stream_url:
            if stream is not None:
                self._violation("stream_without_url", twiml)
            self._final_twiml = twiml
            return None
        action = connect.get("action")
        self._action_url = urljoin(url, action) if action else None
        self._action_method = (connect.get("method") or "POST").upper()
        if self._action_method not in ("GET", "POST"):
            self._violation("bad_action_method", f"method={self._action_method!r}; using POST")
            self._action_method = "POST"
        self._custom_parameters = _stream_parameters(stream)
        for name, value in self._custom_parameters.items():
            if len(name) + len(value) >= MAX_PARAMETER_CHARS:
                self._violation("parameter_too_long", f"{name}: {len(name) + len(value)} characters")
        self._stream_url = _absolute_stream_url(url, stream_url)
        self._notify()
        return self._stream_url

    def _checked_stream_url(self, stream_url: str) -> str | None:
        """The URL to connect to, or None (and a violation) when Twilio would fail the handshake."""
        parts = urlsplit(stream_url)
        if parts.scheme not in ("ws", "wss") or not parts.netloc:
            self._violation("bad_stream_url", f"{stream_url}: a Stream URL must be wss:// (ws:// in tests)")
            return None
        if parts.query:
            self._violation("stream_url_query", f"{stream_url}: Twilio fails the handshake (31920)")
            return None
        origin = self._options.ws_origin
        if origin is None:
            return stream_url
        replacement = urlsplit(origin)
        return urlunsplit((replacement.scheme, replacement.netloc, parts.path, "", ""))

    async def _follow_action(self, http: httpx.AsyncClient, call_status: str) -> None:
        assert self._action_url is not None
        deadline = trio.current_time() + HTTP_TIMEOUT_S
        response = await self._request(
            http, self._action_method, self._action_url, self._voice_params(call_status), deadline, "action"
        )
        if response is None:
            return
        self._action_answered_at = trio.current_time()
        self._action_status = response.status_code
        self._final_twiml = response.text
        if response.is_success and isinstance(problem := _parse_twiml(response.text), str):
            self._violation("malformed_twiml", f"action: {problem}: {response.text}")
        self._notify()

    # ---- the Media Stream

    async def _stream(self, connect_url: str) -> None:
        target = urlsplit(connect_url)
        secure = target.scheme == "wss"
        host = target.hostname or ""
        port = target.port or (443 if secure else 80)
        host_header = host if port in (80, 443) else f"{host}:{port}"
        headers = self._signature_headers(self._stream_url or connect_url, {})
        extra_headers = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
        connect_deadline = min(self._deadline, trio.current_time() + CONNECT_TIMEOUT_S)
        tcp: trio.SocketStream | trio.SSLStream[trio.SocketStream] | None = None
        try:
            with trio.move_on_at(connect_deadline):
                try:
                    if secure:
                        tcp = await trio.open_ssl_over_tcp_stream(
                            host, port, ssl_context=self._options.tls or ssl.create_default_context(),
                            https_compatible=True,
                        )
                    else:
                        tcp = await trio.open_tcp_stream(host, port)
                except OSError as exc:
                    self._violation("stream_unreachable", f"{connect_url}: {exc}")
                    return
            if tcp is None:
                self._violation("stream_timeout", f"{connect_url}: no TCP connection in time")
                return
            await self._open_and_talk(tcp, host_header, target.path or "/", extra_headers, connect_deadline)
        finally:
            if tcp is not None:
                await trio.aclose_forcefully(tcp)
            self._playback.freeze(trio.current_time())

    async def _open_and_talk(
        self,
        tcp: trio.SocketStream | trio.SSLStream[trio.SocketStream],
        host_header: str,
        resource: str,
        extra_headers: list[tuple[bytes, bytes]],
        connect_deadline: float,
    ) -> None:
        try:
            # trio-websocket's reader lives in this nursery; it is cancelled once the call is over.
            async with trio.open_nursery() as reader_nursery:
                websocket: WebSocketConnection | None = None
                with trio.move_on_at(connect_deadline):
                    websocket = await wrap_client_stream(
                        reader_nursery,
                        tcp,
                        host_header,
                        resource,
                        extra_headers=extra_headers,
                        message_queue_size=64,
                    )
                if websocket is None:
                    self._violation("stream_timeout", f"{resource}: no WebSocket handshake answer in time")
                else:
                    await self._talk(websocket)
                reader_nursery.cancel_scope.cancel()
        except* ConnectionRejected as group:
            rejected = group.exceptions[0]
            assert isinstance(rejected, ConnectionRejected)
            self._stream_rejected_status = rejected.status_code
            self._notify()
        except* (HandshakeError, trio.BrokenResourceError) as group:
            self._violation("stream_handshake_failed", repr(group.exceptions[0])[:EXCERPT_CHARS])

    async def _talk(self, websocket: WebSocketConnection) -> None:
        self._media_opened_at = trio.current_time()
        self._stream_sid = "MZ" + uuid.uuid4().hex
        self._set_state("streaming")
        async with trio.open_nursery() as call_nursery:
            call_nursery.start_soon(self._receive_loop, websocket)
            await self._send_opening(websocket)
            call_nursery.start_soon(self._playback_loop, websocket)
            call_nursery.start_soon(self._run_script, websocket)
            with trio.move_on_at(self._deadline) as call_timer:
                await self._stream_should_end.wait()
            if call_timer.cancelled_caught and self._media_closed_by is None:
                self._violation(
                    "max_call_duration",
                    f"the stream was still open at max_call_s={self._options.max_call_s}: the caller hung up",
                )
            if self._media_closed_by is None and self._gone_silent:  # the dead line is dropped, no stop
                self._media_closed_by, self._close_code = "caller", 1006
                self._media_closed_at = trio.current_time()
            elif self._media_closed_by is None:
                await self._caller_hangs_up(websocket)
            call_nursery.cancel_scope.cancel()

    async def _caller_hangs_up(self, websocket: WebSocketConnection) -> None:
        # Bounded: a server that stopped reading can leave a send (and so the lock) stuck.
        with trio.move_on_after(CLOSE_TIMEOUT_S):
            async with self._send_lock:
                if websocket.closed is None:
                    self._stop_sent = True
                    self._sequence += 1
                    stop = {
                        "event": "stop",
                        "sequenceNumber": str(self._sequence),
                        "stop": {"accountSid": self._options.account_sid, "callSid": self._call_sid},
                        "streamSid": self._stream_sid,
                    }
                    if await self._transmit(websocket, stop):
                        self._media_closed_by = "caller"  # before any checkpoint: the receiver sees it
        if self._media_closed_by is None and websocket.closed is not None:
            self._on_closed_by_server(websocket.closed.code)  # the server was first; its close stands
            return
        self._media_closed_by = "caller"
        with trio.move_on_after(CLOSE_TIMEOUT_S) as close_timer:
            await websocket.aclose(1000)
        self._close_code = 1000
        if close_timer.cancelled_caught or not self._stop_sent:
            self._violation("close_timeout", "the server did not take the caller's stop and close in time")
            self._close_code = 1006  # the TCP connection is dropped without a close handshake
        self._media_closed_at = trio.current_time()
        self._playback.freeze(self._media_closed_at)
        self._notify()

    def _request_hang_up(self) -> None:
        self._hang_up_requested = True
        self._stream_should_end.set()

    # ---- sending

    async def _transmit(self, websocket: WebSocketConnection, message: dict[str, Any]) -> bool:
        """Send one JSON text frame (hold the send lock). False when the socket is gone."""
        try:
            await websocket.send_message(orjson.dumps(message).decode())
        except ConnectionClosed:
            return False
        self.sent.append(CallerFrame(trio.current_time(), message.get("event"), message))
        return True

    def _can_send(self, websocket: WebSocketConnection) -> bool:
        return self._start_sent and not self._stop_sent and not self._gone_silent and websocket.closed is None

    async def _send_opening(self, websocket: WebSocketConnection) -> None:
        options = self._options
        async with self._send_lock:
            await self._transmit(websocket, {"event": "connected", "protocol": "Call", "version": "1.0.0"})
            # Before the send: the server may answer `start` before this task runs again.
            self._start_sent = True
            self._sequence = 1
            start = {
                "event": "start",
                "sequenceNumber": "1",
                "start": {
                    "accountSid": options.account_sid,
                    "streamSid": self._stream_sid,
                    "callSid": self._call_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": dict(self._custom_parameters),
                },
                "streamSid": self._stream_sid,
            }
            await self._transmit(websocket, start)
            self._grid_start = self._turn_started_at = trio.current_time()

    async def _send_frame(self, websocket: WebSocketConnection, audio: bytes) -> None:
        """One 20 ms media frame at its slot on the fixed grid (late slots are sent at once: no drift)."""
        await trio.sleep_until(self._grid_start + self._chunk * CHUNK_MS / 1000 / self._options.speed)
        async with self._send_lock:
            sent = self._can_send(websocket) and await self._transmit(websocket, self._media_message(audio))
        if not sent:
            await trio.sleep_forever()  # the stream is over and the call cancels this task: do not spin

    def _media_message(self, audio: bytes) -> dict[str, Any]:
        self._sequence += 1
        self._chunk += 1
        return {
            "event": "media",
            "sequenceNumber": str(self._sequence),
            "media": {
                "track": "inbound",
                "chunk": str(self._chunk),
                "timestamp": str((self._chunk - 1) * CHUNK_MS),  # presentation time since the stream start
                "payload": base64.b64encode(audio).decode(),
            },
            "streamSid": self._stream_sid,
        }

    async def _send_dtmf(self, websocket: WebSocketConnection, digit: str) -> None:
        async with self._send_lock:
            if not self._can_send(websocket):
                return
            self._sequence += 1
            await self._transmit(
                websocket,
                {
                    "event": "dtmf",
                    "streamSid": self._stream_sid,
                    "sequenceNumber": str(self._sequence),
                    "dtmf": {"track": "inbound_track", "digit": digit},
                },
            )

    async def _send_as_given(self, websocket: WebSocketConnection, frame: dict[str, Any] | str | bytes) -> None:
        async with self._send_lock:
            if not self._can_send(websocket):
                return
            if isinstance(frame, dict):
                await self._transmit(websocket, {"streamSid": self._stream_sid, **frame})
                return
            try:
                await websocket.send_message(frame)
            except ConnectionClosed:
                return
            self.sent.append(CallerFrame(trio.current_time(), None, frame))

    async def _echo_marks(self, websocket: WebSocketConnection, names: list[str], cleared: bool) -> None:
        """Echo marks (hold the send lock, so echoes leave in timeline order). Once the stream is
        over nothing is echoed, and nothing is recorded as echoed."""
        for name in names:
            if not self._can_send(websocket):
                break
            self._marks.append(MarkEcho(name, trio.current_time(), cleared))
            self._sequence += 1
            await self._transmit(
                websocket,
                {
                    "event": "mark",
                    "sequenceNumber": str(self._sequence),
                    "streamSid": self._stream_sid,
                    "mark": {"name": name},
                },
            )
        if names:
            self._notify()

    # ---- the script

    async def _run_script(self, websocket: WebSocketConnection) -> None:
        steps = deque(self._steps)
        while steps:
            step = steps.popleft()
            if isinstance(step, Decide):
                steps.extendleft(reversed(await self._decide(websocket, step)))
            elif isinstance(step, Say):
                await self._say(websocket, step)
            elif isinstance(step, Wait):
                for _ in range(math.ceil(step.ms / CHUNK_MS)):
                    await self._send_frame(websocket, SILENCE_FRAME)
            elif isinstance(step, WaitForAgent):
                await self._wait_for_agent(websocket, step)
            elif isinstance(step, PressDigit):
                await self._send_dtmf(websocket, step.digit)
            elif isinstance(step, SendFrame):
                await self._send_as_given(websocket, step.frame)
            elif isinstance(step, GoSilent):
                self._gone_silent = True
                self._notify()
                await trio.sleep_forever()  # until the server closes the stream, or max_call_s
            else:
                self._request_hang_up()
                return
        if self._options.after_script == "hang_up":
            self._request_hang_up()
            return
        while True:
            await self._send_frame(websocket, SILENCE_FRAME)

    async def _decide(self, websocket: WebSocketConnection, step: Decide) -> list[CallerStep]:
        chosen: list[CallerStep] = []
        decided = trio.Event()

        async def choose() -> None:
            chosen.extend(await step.choose())
            decided.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(choose)
            # The line stays live while the caller thinks; a frame is never cut half-sent.
            while not decided.is_set():
                await self._send_frame(websocket, SILENCE_FRAME)
        for chosen_step in chosen:
            if not isinstance(chosen_step, _STEP_TYPES):
                raise TypeError(f"Decide chose something that is not a caller step: {chosen_step!r}")
        return chosen

    async def _say(self, websocket: WebSocketConnection, step: Say) -> None:
        chunks = frames(step.audio, FRAME_BYTES)
        for index, chunk in enumerate(chunks):
            if index == 0:
                # The turn starts with its first frame: the time on the grid it goes out.
                await trio.sleep_until(self._grid_start + self._chunk * CHUNK_MS / 1000 / self._options.speed)
                self._start_turn(step)
            await self._send_frame(websocket, chunk)
        if not chunks:
            self._start_turn(step)

    def _start_turn(self, step: Say) -> None:
        self._turn_started_at = trio.current_time()
        if step.text:
            self._transcript.append((self._turn_started_at, f"caller: {step.text}"))
            self._notify()

    async def _wait_for_agent(self, websocket: WebSocketConnection, step: WaitForAgent) -> None:
        # The timeout counts frames on the grid, so it is exact in caller clock even when the task lags.
        quiet_s = step.quiet_ms / 1000 / self._options.speed
        talking_at_start = not self._playback.is_idle(trio.current_time())
        for _ in range(math.ceil(step.timeout_ms / CHUNK_MS)):
            now = trio.current_time()
            last_media = self._last_media_at
            agent_spoke = talking_at_start or (last_media is not None and last_media >= self._turn_started_at)
            played_out = self._playback.is_idle(now) and not self._playback.pending_marks  # echoes sent too
            if agent_spoke and last_media is not None and played_out and now - last_media >= quiet_s:
                return
            await self._send_frame(websocket, SILENCE_FRAME)

    # ---- receiving and playing

    async def _receive_loop(self, websocket: WebSocketConnection) -> None:
        while True:
            try:
                frame = await websocket.get_message()
            except ConnectionClosed as closed:
                self._on_closed_by_server(closed.reason.code if closed.reason else 1006)
                return
            await self._handle_frame(websocket, frame)

    def _on_closed_by_server(self, code: int) -> None:
        if self._media_closed_by is not None:
            return
        self._media_closed_at = trio.current_time()
        self._media_closed_by = "server"
        self._close_code = code
        self._playback.freeze(self._media_closed_at)
        self._stream_should_end.set()
        self._notify()

    async def _handle_frame(self, websocket: WebSocketConnection, frame: str | bytes) -> None:
        if isinstance(frame, (bytes, bytearray)):
            self._violation("binary_frame", f"{len(frame)} bytes: {bytes(frame[:32])!r}")
            return
        try:
            data = orjson.loads(frame)
        except orjson.JSONDecodeError:
            self._violation("malformed_json", frame)
            return
        if not isinstance(data, dict):
            self._violation("invalid_shape", frame)
            return
        event = data.get("event")
        now = trio.current_time()
        self.received.append(CallerFrame(now, event if isinstance(event, str) else None, data))
        if not self._start_sent:
            self._violation("before_start", frame)
            return
        if not isinstance(event, str):
            self._violation("invalid_shape", frame)
            return
        if event not in ("media", "mark", "clear"):
            self._violation("unknown_event", frame)
            return
        try:
            message = _SERVER_MESSAGE.validate_python(data)
        except ValidationError as exc:
            error = exc.errors(include_url=False, include_input=False)[0]
            location = ".".join(str(part) for part in error["loc"][1:])
            self._violation("invalid_shape", f"{location}: {error['msg']}: {frame}")
            return
        if message.stream_sid != self._stream_sid:
            self._violation("wrong_stream_sid", frame)
            return
        if isinstance(message, OutboundMediaMessage):
            try:
                audio = base64.b64decode(message.media.payload, validate=True)
            except binascii.Error:
                self._violation("bad_payload", frame)
                return
            if audio.startswith(AUDIO_HEADERS):
                self._violation("audio_header", frame)  # played anyway, as noise, like on a real phone
            self._last_media_at = now
            self._playback.append_audio(audio, now)
        elif isinstance(message, OutboundMarkMessage):
            self._playback.add_mark(message.mark.name)
        else:
            async with self._send_lock:
                names = self._playback.clear(trio.current_time())
                self._clears += 1
                await self._echo_marks(websocket, names, cleared=True)
        self._playback_changed.set()
        self._notify()

    async def _playback_loop(self, websocket: WebSocketConnection) -> None:
        while True:
            async with self._send_lock:
                due = self._playback.pop_due_marks(trio.current_time())
                await self._echo_marks(websocket, due, cleared=False)
            next_due = self._playback.next_mark_due_at()
            with trio.move_on_at(math.inf if next_due is None else next_due):
                await self._playback_changed.wait()
            if self._playback_changed.is_set():
                self._playback_changed = trio.Event()

    # ---- bookkeeping

    def _violation(self, kind: str, excerpt: str) -> None:
        if len(self._violations) >= MAX_VIOLATIONS:
            return
        if len(self._violations) == MAX_VIOLATIONS - 1:
            kind, excerpt = "too_many_violations", f"stopped recording after {MAX_VIOLATIONS}"
        self._violations.append(CallerViolation(trio.current_time(), kind, excerpt[:EXCERPT_CHARS]))
        self._notify()

    def _set_state(self, state: Literal["dialing", "streaming", "after", "done"]) -> None:
        self._state = state
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


def _absolute_stream_url(webhook_url: str, stream_url: str) -> str:
    """A relative Stream URL resolves against the webhook URL, on the matching WebSocket scheme."""
    if urlsplit(stream_url).scheme:
        return stream_url
    resolved = urlsplit(urljoin(webhook_url, stream_url))
    scheme = {"http": "ws", "https": "wss"}.get(resolved.scheme, resolved.scheme)
    return urlunsplit((scheme, resolved.netloc, resolved.path, resolved.query, ""))


# --------------------------------------------------------------------------- the call record


async def fetch_call_record(
    base_url: str, call_sid: str, auth_token: str, *, http: httpx.AsyncClient | None = None
) -> dict | None:
    """GET {base_url}/calls/{call_sid}, signed like a webhook; the JSON record, or None on 404.
    Raises CallRecordUnavailable for any other answer (or none)."""
    url = f"{base_url.rstrip('/')}/calls/{quote(call_sid, safe='')}"
    headers = {
        "X-Twilio-Signature": RequestValidator(auth_token).compute_signature(url, {}),
        "User-Agent": USER_AGENT,
    }
    async with AsyncExitStack() as stack:
        client = http
        if client is None:
            client = await stack.enter_async_context(httpx.AsyncClient(timeout=HTTP_TIMEOUT_S))
        try:
            response = await client.get(url, headers=headers)
        except httpx.HTTPError as exc:
            raise CallRecordUnavailable(f"GET {url}: {type(exc).__name__} {exc}") from exc
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise CallRecordUnavailable(f"GET {url}: HTTP {response.status_code}: {response.text[:200]}")
    try:
        record = response.json()
    except ValueError as exc:
        raise CallRecordUnavailable(f"GET {url}: the body is not JSON: {response.text[:200]}") from exc
    if not isinstance(record, dict):
        raise CallRecordUnavailable(f"GET {url}: expected a JSON object, got {type(record).__name__}")
    return record

"""`WS /media`: the Media Stream, one CallSession per stream.

The connection router hands a `GET /media` upgrade here before hypercorn sees it (a message costs a fifth
as much on `bridge.websocket.connection` as through hypercorn: `benchmarks/websocket_stacks/README.md`).
The stream's upgrade is checked against `X-Twilio-Signature`, and its `start` must carry the token of
the pass `/voice/incoming` opened.
"""
from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
import trio

from bridge.twilio import (
    SIGNATURE_HEADER,
    MediaStreamProtocolError,
    StartMessage,
    TwilioMediaSocket,
    parse_twilio_message,
)
from bridge.websocket import accept_websocket
from machines import CallHistory
from orchestrator.call import CallSession
from orchestrator.server.call_parameters import (
    CALL_SID,
    ENGINE_PARAMETER,
    LANGUAGE_PARAMETER,
    PASS_PARAMETER,
    TOKEN_PARAMETER,
    known_language,
    pass_number,
)
from orchestrator.server.forwarded_origin import origin_forwarded_elsewhere
from orchestrator.server.state import ServerState
from orchestrator.store import TriagePass, store_error_kind

log = structlog.get_logger("orchestrator.server.media_endpoint")

MEDIA_PATH = "/media"
# Twilio frames are ~300 bytes. Frames up to this size reach our parser, which counts and skips those over
# its own limit (64 KiB) so the call goes on; the stream is closed (1009) on bigger ones.
MAX_WEBSOCKET_MESSAGE_BYTES = 1024 * 1024

# The handler of `GET /media` upgrades, given the connection and its request head.
MediaStreamHandler = Callable[[trio.SocketStream, bytes], Awaitable[None]]


class MediaEndpoint:
    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def media_stream(self, stream: trio.SocketStream, head: bytes) -> None:
        """A `GET /media` upgrade whose request head (`head`) was read by the server's router."""
        state = self.state

        def signed(request: Any) -> bool:
            path, _, query = request.path.partition("?")
            if state.signature.check_websocket(path, query, request.headers.get(SIGNATURE_HEADER)):
                return True
            state.metrics.signature_failures.labels("media").inc()
            elsewhere = origin_forwarded_elsewhere(state.public_url, request.headers)
            log.warning("refused: bad signature on the stream upgrade",
                        **({"forwarded_origin": elsewhere, "public_url": state.public_url} if elsewhere else {}))
            return False

        websocket = await accept_websocket(
            stream, head, authorize=signed, max_message_bytes=MAX_WEBSOCKET_MESSAGE_BYTES
        )
        if websocket is None:  # refused (403) or not a valid upgrade (400)
            return
        socket = TwilioMediaSocket(websocket)
        try:
            await self._run_stream(socket)
        except Exception:  # a bug: logged here; the caller gets the fallback route at /voice/after
            log.exception("media stream failed")
        finally:
            await socket.close(1000)

    async def _run_stream(self, socket: TwilioMediaSocket) -> None:
        state = self.state
        opened = await self._open_stream(socket)
        if opened is None:
            return
        start, triage_pass = opened
        try:
            visited_nodes = await state.store.visited_nodes(triage_pass.call_sid)
        except Exception as error:
            await self._store_failed(socket, triage_pass.call_sid, error)
            return
        history = CallHistory(entry_node=triage_pass.entry_node, visited_nodes=visited_nodes)
        parameters = start.start.custom_parameters
        deps = state.session_deps(parameters.get(ENGINE_PARAMETER))
        language = known_language(state.config, parameters.get(LANGUAGE_PARAMETER), None)
        session = CallSession(deps, socket, start, triage_pass, history, known_language=language)
        key = (triage_pass.call_sid, triage_pass.number)
        state.sessions[key] = session
        try:
            await session.run()
        finally:
            if state.sessions.get(key) is session:
                del state.sessions[key]

    async def _store_failed(self, socket: TwilioMediaSocket, call_sid: str, error: Exception) -> None:
        """No triage without the pass and the call's history: the caller gets the fallback at /voice/after."""
        self.state.metrics.store_errors.labels(store_error_kind(error)).inc()
        log.error("call store failed as the stream started: closing it", call_sid=call_sid, error=repr(error))
        await socket.close(1011)

    async def _open_stream(self, socket: TwilioMediaSocket) -> tuple[StartMessage, TriagePass] | None:
        """Wait for `start` and match it to an open pass by its token; None (socket closed) otherwise."""
        state = self.state
        start: StartMessage | None = None
        with trio.move_on_after(state.stream_start_timeout_s):
            while start is None:
                frame = await socket.receive()
                if frame is None:
                    return None
                try:
                    message = parse_twilio_message(frame)
                except MediaStreamProtocolError as error:
                    state.metrics.media_errors.labels(error.kind).inc()
                    continue
                if isinstance(message, StartMessage):
                    start = message
        if start is None:
            log.warning("no start message on the stream; closing it")
            await socket.close(1008)
            return None
        call_sid = start.start.call_sid
        parameters = start.start.custom_parameters
        number = pass_number(parameters.get(PASS_PARAMETER))
        token = parameters.get(TOKEN_PARAMETER, "")
        triage_pass = None
        if number is not None and CALL_SID.fullmatch(call_sid):
            try:
                triage_pass = await state.store.get_pass(call_sid, number)
            except Exception as error:
                await self._store_failed(socket, call_sid, error)
                return None
        if triage_pass is None or not secrets.compare_digest(token.encode(), triage_pass.token.encode()):
            state.metrics.signature_failures.labels("media_token").inc()
            log.warning("stream does not match an open triage pass; closing it", call_sid=call_sid)
            await socket.close(1008)
            return None
        return start, triage_pass

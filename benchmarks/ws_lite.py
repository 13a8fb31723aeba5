"""A minimal RFC 6455 codec for the capacity benchmark's own processes (fake callers, echo Realtime).

The load generator must cost far less than the server it measures, and the project's own WebSocket stack
(trio-websocket over wsproto) costs tens of µs per message. This does only what the benchmark needs:
unfragmented text frames out, any frames in (fragments joined), close and ping handled by the caller of
`FrameParser`. Client frames carry the all-zero masking key, which RFC 6455 allows: the bytes go out
unchanged, so masking costs nothing.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from typing import Any

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_ZERO_MASK = b"\x00\x00\x00\x00"


def accept_key(client_key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(client_key.strip() + _GUID).digest())


def new_client_key() -> bytes:
    return base64.b64encode(os.urandom(16))


def encode_frame(opcode: int, payload: bytes, *, masked: bool) -> bytes:
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = bytes((0x80 | opcode, mask_bit | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, mask_bit | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, mask_bit | 127)) + n.to_bytes(8, "big")
    return head + _ZERO_MASK + payload if masked else head + payload


def close_payload(code: int = 1000) -> bytes:
    return code.to_bytes(2, "big")


def _unmask(data: bytes, key: bytes) -> bytes:
    n = len(data)
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


class FrameParser:
    """Bytes in, complete (opcode, payload) messages out; keeps partial frames between feeds."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._fragments: bytearray | None = None
        self._fragment_opcode = OP_TEXT

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buffer = self._buffer
        buffer += data
        messages: list[tuple[int, bytes]] = []
        position, size = 0, len(buffer)
        while size - position >= 2:
            first, second = buffer[position], buffer[position + 1]
            length, index = second & 0x7F, position + 2
            if length == 126:
                if size - index < 2:
                    break
                length, index = int.from_bytes(buffer[index : index + 2], "big"), index + 2
            elif length == 127:
                if size - index < 8:
                    break
                length, index = int.from_bytes(buffer[index : index + 8], "big"), index + 8
            key = None
            if second & 0x80:
                if size - index < 4:
                    break
                key, index = bytes(buffer[index : index + 4]), index + 4
            if size - index < length:
                break
            payload = bytes(buffer[index : index + length])
            position = index + length
            if key is not None and key != _ZERO_MASK:
                payload = _unmask(payload, key)
            opcode, final = first & 0x0F, first & 0x80
            if opcode >= OP_CLOSE:  # control frames may arrive between fragments
                messages.append((opcode, payload))
            elif opcode == OP_CONTINUATION:
                if self._fragments is not None:
                    self._fragments += payload
                    if final:
                        messages.append((self._fragment_opcode, bytes(self._fragments)))
                        self._fragments = None
            elif final:
                messages.append((opcode, payload))
            else:
                self._fragment_opcode, self._fragments = opcode, bytearray(payload)
        del buffer[:position]
        return messages


def split_http_head(buffer: bytes) -> tuple[bytes, dict[str, str], bytes] | None:
    """(status or request line, lower-cased headers, rest) once the head is complete, else None."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = buffer[:end].decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0].encode("latin-1"), headers, buffer[end + 4 :]


def run_event_loop(main: Any) -> Any:
    """Run a coroutine on uvloop when it is installed (the `bench` extra), else on asyncio's own loop: the
    harness shares the machine with the server it measures, so every cycle it saves is the server's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)

"""The HTTP head helpers (`bridge.websocket.http_head`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

import pytest
import trio
import trio.testing

from bridge.websocket.http_head import HTTP_HEAD_LIMIT, is_websocket_upgrade, read_http_head, read_request_line
from tests.bridge.websocket_peers import LOOPBACK, PATH, TIMEOUT_S, port_of


def head_of(request_line: str, *headers: str) -> bytes:
    return "\r\n".join([request_line, *headers]).encode() + b"\r\n\r\n"


UPGRADE_HEADERS = ("Host: x", "Connection: Upgrade", "Upgrade: websocket")


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (head_of("GET /media HTTP/1.1", *UPGRADE_HEADERS), True),
        (head_of("GET /media?call=CA1&x=y HTTP/1.1", *UPGRADE_HEADERS), True),  # the query is not the path
        (head_of("GET /media HTTP/1.1", "host: x", "UPGRADE: WebSocket"), True),  # names and values any case
        (head_of("GET /media HTTP/1.1", "Upgrade:websocket"), True),
        (head_of("GET /media HTTP/1.0", "Upgrade: websocket"), True),
        (head_of("GET /other HTTP/1.1", *UPGRADE_HEADERS), False),  # wrong path
        (head_of("GET /media/x HTTP/1.1", *UPGRADE_HEADERS), False),
        (head_of("GET /medi HTTP/1.1", *UPGRADE_HEADERS), False),
        (head_of("POST /media HTTP/1.1", *UPGRADE_HEADERS), False),  # not GET
        (head_of("get /media HTTP/1.1", *UPGRADE_HEADERS), False),  # methods are case-sensitive
        (head_of("GET /media HTTP/1.1", "Host: x", "Connection: Upgrade"), False),  # no Upgrade header
        (head_of("GET /media HTTP/1.1", "Upgrade: h2c"), False),
        (head_of("GET /media HTTP/1.1", "X-Upgrade: websocket"), False),
        (b"GET /media\r\nUpgrade: websocket\r\n\r\n", False),  # not an HTTP request line
        (b"", False),
    ],
)
def test_is_websocket_upgrade(head: bytes, expected: bool):
    assert is_websocket_upgrade(head, PATH) is expected


def test_read_request_line():
    assert read_request_line(head_of("GET /media?x=1 HTTP/1.1", "Host: x")) == (b"GET", b"/media?x=1")
    assert read_request_line(b"POST /calls HTTP/1.1\r\n") == (b"POST", b"/calls")
    assert read_request_line(b"GET /media\r\n\r\n") == (b"", b"")
    assert read_request_line(b"GET /a b HTTP/1.1\r\n") == (b"", b"")
    assert read_request_line(b"GET /media FTP/1.1\r\n") == (b"", b"")
    assert read_request_line(b"") == (b"", b"")


async def _read_head_of(send: Callable[[trio.SocketStream], Awaitable[None]], timeout_s: float) -> bytes:
    result: list[bytes] = []
    done = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        result.append(await read_http_head(stream, timeout_s=timeout_s))
        done.set()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host=LOOPBACK))
        client = await trio.open_tcp_stream(LOOPBACK, port_of(listeners))
        async with client:
            nursery.start_soon(send, client)
            await done.wait()
            nursery.cancel_scope.cancel()
    return result[0]


async def test_read_http_head_returns_the_head_and_what_followed_it():
    async def send(client: trio.SocketStream) -> None:
        for piece in [b"GET /media HTTP/1.1\r\nHo", b"st: x\r\n", b"\r\n" + b"\x81\x00"]:
            await client.send_all(piece)
            await trio.sleep(0.01)  # separate segments
        await trio.sleep_forever()

    with trio.fail_after(TIMEOUT_S):
        started = trio.current_time()
        head = await _read_head_of(send, timeout_s=5)
        assert trio.current_time() - started < 2  # it returned at the blank line, not at the timeout
    assert head == b"GET /media HTTP/1.1\r\nHost: x\r\n\r\n\x81\x00"


async def test_read_http_head_returns_what_arrived_before_the_timeout():
    async def send(client: trio.SocketStream) -> None:
        await client.send_all(b"GET /media HTTP/1.1\r\nHost")
        await trio.sleep_forever()

    with trio.fail_after(TIMEOUT_S):
        started = trio.current_time()
        head = await _read_head_of(send, timeout_s=0.3)
        assert 0.25 <= trio.current_time() - started < 2
    assert head == b"GET /media HTTP/1.1\r\nHost"


async def test_read_http_head_returns_what_arrived_before_the_peer_closed():
    async def send(client: trio.SocketStream) -> None:
        await client.send_all(b"GET /med")
        await client.send_eof()
        await trio.sleep_forever()

    with trio.fail_after(TIMEOUT_S):
        started = trio.current_time()
        head = await _read_head_of(send, timeout_s=5)
        assert trio.current_time() - started < 2
    assert head == b"GET /med"


async def test_read_http_head_stops_at_the_limit():
    async def send(client: trio.SocketStream) -> None:
        await client.send_all(b"GET /media HTTP/1.1\r\n")
        for _ in range(HTTP_HEAD_LIMIT // 1000 + 1):
            await client.send_all(b"X-Filler: " + b"a" * 988 + b"\r\n")
        await trio.sleep_forever()  # never ends the head

    with trio.fail_after(TIMEOUT_S):
        started = trio.current_time()
        head = await _read_head_of(send, timeout_s=30)
        assert trio.current_time() - started < 5  # stopped at the limit, long before the timeout
    assert len(head) >= HTTP_HEAD_LIMIT
    assert b"\r\n\r\n" not in head
    assert head.startswith(b"GET /media HTTP/1.1\r\nX-Filler: aaa")

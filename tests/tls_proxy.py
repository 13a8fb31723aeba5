"""A TLS-terminating reverse proxy for tests, doing what `examples/tls/nginx.conf` has nginx do: TLS from the
caller ends here, each request goes on to the server over plain HTTP with `Host` kept and `X-Forwarded-For`,
`X-Forwarded-Proto: https` and `X-Forwarded-Host` added, and a WebSocket upgrade is passed on (`Upgrade`,
`Connection: upgrade`) and then carried both ways byte for byte.

One request per connection to the server (`Connection: close` unless upgrading), as nginx does without an
upstream keepalive pool; the caller's connection is closed with it.
"""
from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

HEAD_END = b"\r\n\r\n"
HEAD_LIMIT = 64 * 1024
# Hop-by-hop headers (RFC 9110 section 7.6.1) and the ones the proxy sets itself.
_NOT_PASSED_ON = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade",
    b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-real-ip",
})


@dataclass
class TlsProxy:
    port: int
    _listener: trio.SSLListener[trio.SocketStream]
    _nursery: trio.Nursery
    upstream_port: int = 0
    # What reached the server: each request's line and headers (names lower-cased) as passed on.
    passed_on: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def forward_to(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._nursery.start_soon(trio.serve_listeners, self._serve, [self._listener])

    async def _serve(self, client: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            head, rest = await _read_head(client)
            if head is None:
                return
            request_line, headers = _parse(head)
            upgrading = headers.get(b"upgrade", b"").lower() == b"websocket"
            peer = client.transport_stream.socket.getpeername()[0]
            forwarded = [(name, value) for name, value in headers.items() if name not in _NOT_PASSED_ON]
            forwarded += [
                (b"x-real-ip", peer.encode()),
                (b"x-forwarded-for", peer.encode()),
                (b"x-forwarded-proto", b"https"),
                (b"x-forwarded-host", headers.get(b"host", b"")),
            ]
            forwarded += [(b"upgrade", b"websocket"), (b"connection", b"upgrade")] if upgrading else [
                (b"connection", b"close")]
            self.passed_on.append(
                (request_line.decode(), {name.decode(): value.decode() for name, value in forwarded})
            )
            upstream = await trio.open_tcp_stream("127.0.0.1", self.upstream_port)
            async with upstream:
                lines = [request_line, *(name + b": " + value for name, value in forwarded)]
                await upstream.send_all(b"\r\n".join(lines) + HEAD_END + rest)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_pipe, client, upstream, nursery.cancel_scope)
                    nursery.start_soon(_pipe, upstream, client, nursery.cancel_scope)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # either side went away: so does the other
        finally:
            await trio.aclose_forcefully(client)


async def _read_head(stream: trio.abc.ReceiveStream) -> tuple[bytes | None, bytes]:
    data = b""
    while HEAD_END not in data:
        if len(data) > HEAD_LIMIT:
            return None, b""
        chunk = await stream.receive_some()
        if not chunk:
            return None, b""
        data += chunk
    head, _, rest = data.partition(HEAD_END)
    return head, rest


def _parse(head: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    request_line, *lines = head.split(b"\r\n")
    headers: dict[bytes, bytes] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return request_line, headers


async def _pipe(source: trio.abc.ReceiveStream, sink: trio.abc.SendStream, both: trio.CancelScope) -> None:
    try:
        while chunk := await source.receive_some():
            await sink.send_all(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError):
        pass
    finally:
        both.cancel()  # one side is done: the exchange is over


@asynccontextmanager
async def tls_proxy(ssl_context: ssl.SSLContext) -> AsyncIterator[TlsProxy]:
    """The proxy, listening on a free loopback port at once (the server behind it needs the proxy's public URL
    at start); it serves once `forward_to(port)` names the server's plain port."""
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener, trio.open_nursery() as nursery:
        proxy = TlsProxy(listener.socket.getsockname()[1], trio.SSLListener(listener, ssl_context, https_compatible=True),
                         nursery)
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()

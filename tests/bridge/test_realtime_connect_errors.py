"""The Realtime socket over TLS with a test CA (trustme), and every way a connection fails named by its real
cause: a good certificate works, an untrusted one says CERTIFICATE_VERIFY_FAILED, a wrong host name says so;
DNS, refused and HTTP-status failures are told apart."""
from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from urllib.parse import urlsplit

import pytest
import trio
import trustme

from bridge.openai_realtime import RealtimeSettings, RealtimeUnavailable, open_realtime
from orchestrator.testing.fake_realtime import Scenario, run_fake_realtime

TIMEOUT_S = 10


@pytest.fixture(scope="module")
def test_ca() -> trustme.CA:
    return trustme.CA()


def serving_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


def settings_for(url: str, **options: object) -> RealtimeSettings:
    # The fake listens on 127.0.0.1; the client reaches it by the name on the certificate.
    return RealtimeSettings(url=url.replace("127.0.0.1", "localhost"), api_key="sk-test", **options)


async def test_a_whole_realtime_session_works_over_tls_with_a_trusted_ca(test_ca, tmp_path):
    ca_file = tmp_path / "ca.pem"
    test_ca.cert_pem.write_to_path(str(ca_file))
    with trio.fail_after(TIMEOUT_S):
        async with run_fake_realtime(ssl_context=serving_context(test_ca, "localhost")) as fake:
            settings = settings_for(fake.url, ca_file=str(ca_file), organization="org-1", project="proj-1")
            assert settings.url.startswith("wss://localhost:")
            async with open_realtime(settings, ssl_context=settings.tls_context()) as realtime:
                await realtime.configure("You are a front desk.")
            session = fake.last_session
            await session.wait_closed()
            assert (session.closed_by, session.close_code) == ("client", 1000)
            # The organisation and project go as the `openai` package sends them.
            assert session.headers["openai-organization"] == "org-1"
            assert session.headers["openai-project"] == "proj-1"


async def test_an_untrusted_certificate_is_refused_naming_the_cause():
    with trio.fail_after(TIMEOUT_S):
        async with run_fake_realtime(ssl_context=serving_context(trustme.CA(), "localhost")) as fake:
            settings = settings_for(fake.url)
            with pytest.raises(RealtimeUnavailable) as refused:
                async with open_realtime(settings, ssl_context=settings.tls_context()):
                    pass
    assert refused.value.kind == "certificate"
    assert "CERTIFICATE_VERIFY_FAILED" in refused.value.reason
    assert "closed the connection during the handshake" not in refused.value.reason


async def test_a_certificate_for_another_host_is_refused_naming_the_mismatch(test_ca, tmp_path):
    ca_file = tmp_path / "ca.pem"
    test_ca.cert_pem.write_to_path(str(ca_file))
    with trio.fail_after(TIMEOUT_S):
        async with run_fake_realtime(ssl_context=serving_context(test_ca, "elsewhere.example")) as fake:
            settings = settings_for(fake.url, ca_file=str(ca_file))
            with pytest.raises(RealtimeUnavailable) as refused:
                async with open_realtime(settings, ssl_context=settings.tls_context()):
                    pass
    assert refused.value.kind == "hostname"
    assert "Hostname mismatch" in refused.value.reason


async def test_a_refused_port_and_an_http_status_are_told_apart():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(RealtimeUnavailable) as refused:
        async with open_realtime(RealtimeSettings(url=f"ws://127.0.0.1:{port}/v1/realtime", api_key="sk-test")):
            pass
    assert refused.value.kind == "refused"

    async with run_fake_realtime(Scenario(refuse_status=503)) as fake:
        with pytest.raises(RealtimeUnavailable) as rejected:
            async with open_realtime(RealtimeSettings(url=fake.url, api_key="sk-test")):
                pass
    assert rejected.value.kind == "http_status" and rejected.value.status_code == 503


async def test_a_name_that_does_not_resolve_is_a_dns_failure():
    settings = RealtimeSettings(url="ws://realtime.invalid/v1/realtime", api_key="sk-test", connect_timeout_s=5)
    with pytest.raises(RealtimeUnavailable) as unresolved:
        async with open_realtime(settings):
            pass
    assert unresolved.value.kind == "dns", unresolved.value.reason


async def test_the_realtime_connector_builds_one_tls_context_for_every_call(test_ca, tmp_path, monkeypatch):
    from orchestrator.engines import EngineCall, RealtimeConnector

    ca_file = tmp_path / "ca.pem"
    test_ca.cert_pem.write_to_path(str(ca_file))
    serving = serving_context(test_ca, "localhost")
    built = []
    create_default_context = ssl.create_default_context
    monkeypatch.setattr(
        ssl, "create_default_context", lambda *a, **k: built.append(1) or create_default_context(*a, **k)
    )
    with trio.fail_after(TIMEOUT_S):
        async with run_fake_realtime(ssl_context=serving) as fake:
            connector = RealtimeConnector(settings_for(fake.url, ca_file=str(ca_file)), instructions="x", tools=[])
            assert len(built) == 1  # at start, not per call
            for _ in range(2):
                async with connector.connect(EngineCall(call_sid="CA1")):
                    pass
            assert len(built) == 1 and len(fake.sessions) == 2


@asynccontextmanager
async def connect_proxy(*, refuse: bool = False) -> AsyncIterator[tuple[str, list[str]]]:
    """A minimal HTTP CONNECT proxy on loopback: its URL, and the CONNECT targets it was asked for."""
    targets: list[str] = []

    async def relay(source: trio.abc.Stream, sink: trio.abc.Stream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await source.receive_some(65536):
                await sink.send_all(data)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await sink.aclose()

    async def handle(client: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += await client.receive_some(4096)
        target = head.split(b" ")[1].decode()
        targets.append(target)
        if refuse:
            await client.send_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            await client.aclose()
            return
        host, port = target.rsplit(":", 1)
        upstream = await trio.open_tcp_stream(host, int(port))
        await client.send_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay, client, upstream)
            nursery.start_soon(relay, upstream, client)

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        yield f"http://127.0.0.1:{listener.socket.getsockname()[1]}", targets
        nursery.cancel_scope.cancel()


async def test_the_socket_goes_through_an_https_proxy_as_named_by_the_environment(test_ca, tmp_path, monkeypatch):
    ca_file = tmp_path / "ca.pem"
    test_ca.cert_pem.write_to_path(str(ca_file))
    with trio.fail_after(TIMEOUT_S):
        async with connect_proxy() as (proxy_url, targets), run_fake_realtime(
            ssl_context=serving_context(test_ca, "localhost")
        ) as fake:
            settings = settings_for(fake.url, ca_file=str(ca_file))
            monkeypatch.setenv("HTTPS_PROXY", proxy_url)
            monkeypatch.delenv("NO_PROXY", raising=False)
            monkeypatch.delenv("no_proxy", raising=False)
            assert settings.proxy_from_environment() == proxy_url
            monkeypatch.setenv("NO_PROXY", "localhost")
            assert settings.proxy_from_environment() is None

            settings = settings.model_copy(update={"proxy": proxy_url})
            async with open_realtime(settings, ssl_context=settings.tls_context()) as realtime:
                await realtime.configure("x")
            assert targets == [f"localhost:{urlsplit(fake.url).port}"]


async def test_a_proxy_that_refuses_the_tunnel_is_a_proxy_failure():
    with trio.fail_after(TIMEOUT_S):
        async with connect_proxy(refuse=True) as (proxy_url, _targets):
            settings = RealtimeSettings(url="wss://api.openai.com/v1/realtime", api_key="sk-test", proxy=proxy_url)
            with pytest.raises(RealtimeUnavailable) as refused:
                async with open_realtime(settings):
                    pass
    assert refused.value.kind == "proxy"
    assert "403 Forbidden" in refused.value.reason

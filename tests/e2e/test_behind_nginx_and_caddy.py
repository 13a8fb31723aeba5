"""The server behind real nginx and Caddy running `examples/tls/` (their names, certificate paths and ports
swapped for loopback ones and a test CA): a signed webhook at the public https URL is accepted, the Stream URL
is wss:// on the public host, and a whole call over the proxied wss:// Media Stream routes. Each proxy is
installed by the suite when missing (`tests/system_packages.py`), as redis-server is."""
from __future__ import annotations

import socket
import ssl
import subprocess
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import httpx
import trio
import trustme

from orchestrator.testing.twilio_caller import parse_connect_twiml
from tests.live_call_support import (
    CALL_TIMEOUT_S,
    CALLER_SPEAKS,
    DETAILS,
    assert_closed_in_order,
    front_desk,
    signed_headers,
    triage_scenario,
)
from tests.system_packages import ensure_program

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tls"
INCOMING = {"CallSid": "CA" + "3" * 32, "AccountSid": "AC" + "0" * 32, "From": "+15551230000", "To": "+15557650000",
            "CallStatus": "ringing"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nginx_configuration(folder: Path, *, port: int, upstream_port: int, certificate: Path, key: Path) -> Path:
    """The shipped server blocks with loopback values, inside a minimal main configuration of their own."""
    site = (EXAMPLES / "nginx.conf").read_text(encoding="utf-8")
    swaps = {
        "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
        "listen 80;": f"listen 127.0.0.1:{free_port()};",
        "server_name desk.example.com;": "server_name localhost;",
        "/etc/letsencrypt/live/desk.example.com/fullchain.pem": str(certificate),
        "/etc/letsencrypt/live/desk.example.com/privkey.pem": str(key),
        "proxy_pass http://127.0.0.1:8080;": f"proxy_pass http://127.0.0.1:{upstream_port};",
    }
    site = swapped(site, swaps, "nginx.conf")
    (folder / "site.conf").write_text(site, encoding="utf-8")
    main = folder / "nginx.conf"
    temp = {name: folder / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir()
    main.write_text(
        "daemon off;\nmaster_process off;\n"
        f"pid {folder / 'nginx.pid'};\nerror_log stderr notice;\n"
        "events {}\nhttp {\n    access_log off;\n"
        f"    client_body_temp_path {temp['body']};\n    proxy_temp_path {temp['proxy']};\n"
        f"    fastcgi_temp_path {temp['fastcgi']};\n    uwsgi_temp_path {temp['uwsgi']};\n"
        f"    scgi_temp_path {temp['scgi']};\n    include {folder / 'site.conf'};\n}}\n",
        encoding="utf-8",
    )
    return main


async def wait_until_listening(port: int, process: trio.Process, log: Path) -> None:
    with trio.fail_after(10):
        while True:
            assert process.poll() is None, await trio.Path(log).read_text(encoding="utf-8", errors="replace")
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            return


def swapped(text: str, swaps: dict[str, str], example: str) -> str:
    for shipped, local in swaps.items():
        assert shipped in text, f"examples/tls/{example} no longer says {shipped!r}: update this test"
        text = text.replace(shipped, local)
    return text


def caddy_configuration(folder: Path, *, port: int, upstream_port: int, certificate: Path, key: Path) -> Path:
    """The shipped site with loopback values and the test certificate; no admin endpoint, no port-80 redirect."""
    site = swapped((EXAMPLES / "Caddyfile").read_text(encoding="utf-8"), {
        "desk.example.com {": f"localhost:{port} {{\n\ttls {certificate} {key}",
        "reverse_proxy 127.0.0.1:8080": f"reverse_proxy 127.0.0.1:{upstream_port}",
    }, "Caddyfile")
    path = folder / "Caddyfile"
    path.write_text("{\n\tadmin off\n\tauto_https disable_redirects\n}\n\n" + site,
                    encoding="utf-8")
    return path


def proxy_log(folder: Path) -> BinaryIO:
    return (folder / "proxy.log").open("wb")


ProxyCommand = Callable[[Path, int, int, Path, Path], list[str]]


def nginx_command(folder: Path, port: int, upstream_port: int, certificate: Path, key: Path) -> list[str]:
    nginx = ensure_program("nginx", "nginx")
    configuration = nginx_configuration(folder, port=port, upstream_port=upstream_port, certificate=certificate,
                                        key=key)
    return [nginx, "-e", "stderr", "-c", str(configuration)]


def caddy_command(folder: Path, port: int, upstream_port: int, certificate: Path, key: Path) -> list[str]:
    caddy = ensure_program("caddy", "caddy")
    configuration = caddy_configuration(folder, port=port, upstream_port=upstream_port, certificate=certificate,
                                        key=key)
    return [caddy, "run", "--adapter", "caddyfile", "--config", str(configuration)]


async def call_through(tmp_path: Path, proxy_command: ProxyCommand) -> None:
    ca = trustme.CA()
    issued = ca.issue_cert("localhost")
    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(certificate))
    for pem in issued.cert_chain_pems[1:]:
        pem.write_to_path(str(certificate), append=True)
    issued.private_key_pem.write_to_path(str(key))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    folder = tmp_path / "proxy"
    folder.mkdir()
    port = free_port()
    public_url = f"https://localhost:{port}"

    async with front_desk(tmp_path, triage_scenario("emergency", details=DETAILS), public_url=public_url) as desk:
        upstream_port = int(desk.server.base_url.rsplit(":", 1)[1])
        command = proxy_command(folder, port, upstream_port, certificate, key)
        log = proxy_log(folder)
        # Caddy keeps its state under $HOME (XDG): in the test's folder, not the machine's.
        process = await trio.lowlevel.open_process(
            command, stdout=subprocess.DEVNULL, stderr=log,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(folder), "XDG_DATA_HOME": str(folder),
                 "XDG_CONFIG_HOME": str(folder)},
        )
        try:
            await wait_until_listening(port, process, Path(log.name))
            async with httpx.AsyncClient(verify=client, timeout=CALL_TIMEOUT_S) as http:
                url = public_url + "/voice/incoming"
                webhook = await http.post(url, data=INCOMING, headers=signed_headers(url, desk.server.auth_token,
                                                                                       INCOMING))
            with trio.fail_after(CALL_TIMEOUT_S):
                result = await desk.caller(CALLER_SPEAKS, base_url=public_url, tls=client).run()
            assert_closed_in_order(desk, result)
        finally:
            process.terminate()
            with trio.move_on_after(10):
                await process.wait()
            process.kill()
            log.close()

    assert webhook.status_code == 200, webhook.text
    _, stream_url, _ = parse_connect_twiml(webhook.text)
    assert stream_url == f"wss://localhost:{port}/media"
    assert result.violations == [] and result.stream_url == f"wss://localhost:{port}/media"
    assert result.media_opened_at is not None and result.action_status == 200
    enqueue = ElementTree.fromstring(result.final_twiml).find("Enqueue")
    assert enqueue is not None and enqueue.get("workflowSid") == "WW37efa99795cd582f2f4c31893159fe53"


async def test_a_whole_call_through_nginx_with_the_shipped_configuration(tmp_path):
    await call_through(tmp_path, nginx_command)


async def test_a_whole_call_through_caddy_with_the_shipped_configuration(tmp_path):
    await call_through(tmp_path, caddy_command)

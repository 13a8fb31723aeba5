"""The origin a proxy forwards, named only when it is not the public URL's."""
from __future__ import annotations

from orchestrator.server.forwarded_origin import origin_forwarded_elsewhere


def test_the_public_origin_forwarded_is_not_named_default_ports_aside():
    assert origin_forwarded_elsewhere("https://desk.example.com", {"x-forwarded-proto": "https",
                                                                   "x-forwarded-host": "desk.example.com"}) is None
    assert origin_forwarded_elsewhere("https://desk.example.com", {"x-forwarded-proto": "https",
                                                                   "host": "Desk.Example.com:443"}) is None


def test_another_scheme_host_or_port_is_named():
    assert origin_forwarded_elsewhere("http://127.0.0.1:8080", {"x-forwarded-proto": "https",
                                                                "x-forwarded-host": "desk.example.com"}) == (
        "https://desk.example.com")
    assert origin_forwarded_elsewhere("https://desk.example.com", {"x-forwarded-proto": "https, http",
                                                                   "x-forwarded-host": "desk.example.com:8443"}) == (
        "https://desk.example.com:8443")


def test_a_request_no_proxy_forwarded_names_nothing():
    assert origin_forwarded_elsewhere("https://desk.example.com", {"host": "127.0.0.1:8080"}) is None

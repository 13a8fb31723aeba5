"""The origin a TLS-terminating proxy says a request was made to (`X-Forwarded-Proto`, `X-Forwarded-Host`).
Never trusted for anything (a client can send any header): only named in the log when a signature fails
while it differs from the public URL, the usual cause of every webhook getting 403 behind a proxy."""
from __future__ import annotations

from typing import Protocol
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class _Headers(Protocol):
    def get(self, key: str, /) -> str | None: ...


def origin_forwarded_elsewhere(public_url: str, headers: _Headers) -> str | None:
    """`scheme://host` as forwarded by a proxy, when it names another origin than `public_url`'s; else None."""
    proto = (headers.get("x-forwarded-proto") or "").split(",")[0].strip().lower()
    host = (headers.get("x-forwarded-host") or headers.get("host") or "").split(",")[0].strip().lower()
    if not proto or not host:
        return None
    forwarded = f"{proto}://{host}"
    return None if _origin(forwarded) == _origin(public_url) else forwarded


def _origin(url: str) -> tuple[str, str, int | None]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return ("", url, None)
    return (parts.scheme, parts.hostname or "", port or _DEFAULT_PORTS.get(parts.scheme))

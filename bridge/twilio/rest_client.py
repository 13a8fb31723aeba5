"""twilio-python's async HTTP hook on httpx, so the `*_async` REST methods run under Trio.

twilio-python ships an aiohttp client (asyncio only). `HttpxTwilioClient` plugs into
`twilio.rest.Client(account_sid, auth_token, http_client=HttpxTwilioClient())` instead; httpx runs
on anyio, which supports Trio. Behaviour mirrors the sync `TwilioHttpClient` (protocols/twilio.md §6).
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

import httpx
from twilio.http import AsyncHttpClient
from twilio.http.response import Response

_logger = logging.getLogger(__name__)

# Content types twilio-python sends as a JSON body; everything else is form-encoded.
_JSON_CONTENT_TYPES = frozenset({"application/json", "application/scim+json"})


class HttpxTwilioClient(AsyncHttpClient):  # type: ignore[misc]  # twilio ships no type information
    """A `twilio.http.AsyncHttpClient` on `httpx.AsyncClient`.

    Pass either a ready `client` (you own it: `aclose` leaves it open) or a `transport` (e.g.
    `httpx.MockTransport` in tests); otherwise a pooled client is created and owned here.
    `timeout` (seconds) applies when a call gives none; with neither, the httpx client's own
    default applies (5 s unless configured), never "wait forever".
    `origin` (`scheme://host:port`) replaces the origin of every request, the path kept: Twilio's API
    reached through a relay, or a test double over loopback.
    Transport failures surface as httpx exceptions; HTTP errors are returned as responses and
    twilio-python turns them into `TwilioRestException`.
    """

    def __init__(
        self,
        client: httpx.AsyncClient | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float | None = None,
        origin: str | None = None,
        logger: logging.Logger = _logger,
    ) -> None:
        super().__init__(logger, is_async=True, timeout=timeout)
        if client is not None and transport is not None:
            raise ValueError("pass either an httpx client or a transport, not both")
        self._origin = httpx.URL(origin) if origin is not None else None
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(transport=transport)

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (twilio's HttpClient.request signature)
        allow_redirects: bool = False,
    ) -> Response:
        if timeout is None:
            timeout = self.timeout
        elif timeout <= 0:
            raise ValueError(timeout)

        body: dict[str, Any] = {"json": data} if _is_json(headers) else {"data": data}
        target = httpx.URL(url)
        if self._origin is not None:
            target = target.copy_with(scheme=self._origin.scheme, host=self._origin.host, port=self._origin.port)
        response = await self._client.request(
            method.upper(),
            target,
            params=params,  # type: ignore[arg-type]  # twilio's request params are str-valued
            headers=headers,
            # None means "no auth" to httpx; a credential provider has then set Authorization already.
            auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            follow_redirects=allow_redirects,
            **body,
        )
        # Path only: query strings and bodies can carry phone numbers.
        self.logger.debug("twilio %s %s -> %s", method.upper(), response.request.url.path, response.status_code)
        return Response(response.status_code, response.text, response.headers)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> HttpxTwilioClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


def _is_json(headers: dict[str, str] | None) -> bool:
    if not headers:
        return False
    for name, value in headers.items():
        if name.lower() == "content-type":
            return value.split(";", 1)[0].strip().lower() in _JSON_CONTENT_TYPES
    return False

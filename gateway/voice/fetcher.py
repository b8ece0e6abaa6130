"""HTTP GET for customer URLs (action_url, media) over the shared policy session.

The session (gateway/egress/client.py) decides which addresses may be reached; this adds what
a fetch for the voice bridge needs on top:
- only http and https; a host is required;
- redirects are followed by hand (at most 3), each hop checked like the first;
- the body is streamed and abandoned past max_bytes; one deadline covers every hop.

`PolicyFetcher.get` raises only FetchRefused (policy) and FetchFailed (anything else); their
messages are details for the operator log, their `public` text what a tenant may be shown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp
from yarl import URL

from gateway.egress.client import session_policy
from gateway.egress.policy import AddressRefused
from gateway.voice.interfaces import FetchFailed, FetchRefused, FetchResult

MAX_REDIRECTS = 3
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024


def _shown(url: URL) -> str:
    """The URL for messages, without credentials, query or fragment (they may hold secrets)."""
    try:
        return str(url.with_user(None).with_query(None).with_fragment(None))
    except ValueError:
        return "<invalid URL>"


class PolicyFetcher:
    """`Fetcher` over a session made by `policy_session`."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.policy = session_policy(session)  # ValueError for a session without the policy
        self._session = session

    async def get(
        self, url: str, *, max_bytes: int, timeout: float, headers: Mapping[str, str] | None = None
    ) -> FetchResult:
        try:
            target = URL(url)
        except (ValueError, TypeError) as exc:
            raise FetchRefused(f"invalid URL: {exc}") from exc
        try:
            async with asyncio.timeout(timeout):
                return await self._follow(target, max_bytes, headers)
        except FetchFailed:
            raise
        except TimeoutError:
            raise FetchFailed(f"timed out after {timeout:g} s fetching {_shown(target)}") from None
        except Exception as exc:  # the contract: nothing but FetchFailed/FetchRefused leaves here
            detail = str(exc) or type(exc).__name__
            raise FetchFailed(f"fetching {_shown(target)} failed: {detail}") from exc

    async def _follow(self, url: URL, max_bytes: int, headers: Mapping[str, str] | None) -> FetchResult:
        for hop in range(MAX_REDIRECTS + 1):
            try:
                # The signature headers are for the customer's server only, not a redirect's target.
                next_url = await self._hop(url, max_bytes, None if hop else headers)
            except FetchRefused as exc:
                if hop:
                    raise FetchRefused(f"{exc} (redirect {hop})") from None
                raise
            if isinstance(next_url, FetchResult):
                return next_url
            url = next_url
        raise FetchRefused(f"too many redirects (more than {MAX_REDIRECTS}) from {_shown(url)}")

    async def _hop(self, url: URL, max_bytes: int, headers: Mapping[str, str] | None) -> FetchResult | URL:
        """One request: the final result, or where a redirect points."""
        if url.scheme not in ("http", "https"):
            raise FetchRefused(f"scheme {url.scheme or '(none)'!r} not allowed: only http and https")
        if not url.raw_host:
            raise FetchRefused(f"URL has no host: {_shown(url)}")
        try:
            async with self._session.get(url, allow_redirects=False, headers=headers) as resp:
                location = resp.headers.get("Location")
                if resp.status in _REDIRECT_STATUSES and location:
                    try:
                        return url.join(URL(location))
                    except (ValueError, TypeError) as exc:
                        raise FetchFailed(f"bad redirect Location {location!r}: {exc}") from exc
                body = await self._read_capped(resp, max_bytes, url)
                return FetchResult(status=resp.status, content_type=resp.content_type, body=body)
        except AddressRefused as exc:
            raise FetchRefused(str(exc)) from None

    @staticmethod
    async def _read_capped(resp: aiohttp.ClientResponse, max_bytes: int, url: URL) -> bytes:
        declared = resp.content_length
        if declared is not None and declared > max_bytes:
            raise FetchRefused(
                f"response from {_shown(url)} is {declared} bytes, over the {max_bytes}-byte cap"
            )
        body = bytearray()
        async for chunk in resp.content.iter_chunked(_CHUNK):
            body += chunk
            if len(body) > max_bytes:
                raise FetchRefused(f"response from {_shown(url)} exceeds the {max_bytes}-byte cap")
        return bytes(body)

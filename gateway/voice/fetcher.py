"""HTTP GET for customer URLs (action_url, media) under the SSRF policy.

How the policy is enforced:
- only http and https; a host is required;
- an IP-literal host is checked as is; a host the C library would read as a number although
  it is not a canonical address (`2130706433`, `0x7f.1`, `127.1`, `0177.0.0.1`) is refused;
- every other host is resolved by `PolicyResolver`, the resolver of the session's connector
  (see `policy_session`): it resolves with the event loop's getaddrinfo, checks EVERY
  address, refuses the host if any is refused, and hands aiohttp only the checked numeric
  addresses. The connection goes to exactly what was checked: there is no second lookup a
  DNS-rebinding server could answer differently;
- redirects are followed by hand (at most 3), each hop checked like the first;
- the body is streamed and abandoned past max_bytes; one deadline covers every hop.

`PolicyFetcher.get` raises only FetchRefused (policy) and MediaError (anything else).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from gateway.voice.interfaces import FetchRefused, FetchResult, MediaError
from gateway.voice.ssrf import SsrfPolicy, parse_ip

MAX_REDIRECTS = 3
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
_NUMERIC_FLAGS = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV


def _shown(url: URL) -> str:
    """The URL for messages, without credentials, query or fragment (they may hold secrets)."""
    try:
        return str(url.with_user(None).with_query(None).with_fragment(None))
    except ValueError:
        return "<invalid URL>"


def _legacy_numeric(host: str) -> str | None:
    """The address the C library reads a non-canonical numeric host as (`127.1` -> 127.0.0.1),
    else None. AI_NUMERICHOST: no DNS traffic, so this never blocks."""
    try:
        infos = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError, ValueError):
        return None
    return str(infos[0][4][0]) if infos else None


def check_literal_host(policy: SsrfPolicy, host: str) -> bool:
    """Judge a host that is an address (or looks like one to the C library) without DNS.

    Returns True when `host` is a canonical IP literal that the policy allows, False when
    it is a name (left to `resolve_checked`); raises FetchRefused otherwise."""
    ip = parse_ip(host)
    if ip is not None:
        reason = policy.check_address(ip)
        if reason:
            raise FetchRefused(f"address refused: {reason}")
        return True
    numeric = _legacy_numeric(host)
    if numeric is not None:
        raise FetchRefused(
            f"host {host!r} is a non-canonical numeric address (the system would read it as {numeric})"
        )
    return False


async def resolve_checked(
    policy: SsrfPolicy, host: str, port: int = 0, family: int = socket.AF_UNSPEC
) -> list[ResolveResult]:
    """Resolve `host` and check every address; FetchRefused if any is refused."""
    if check_literal_host(policy, host):
        ip = ipaddress.ip_address(host.strip("[]"))
        fam = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        return [
            ResolveResult(hostname=host, host=str(ip), port=port, family=fam, proto=0, flags=_NUMERIC_FLAGS)
        ]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise MediaError(f"cannot resolve host {host!r}: {exc}") from exc
    results: list[ResolveResult] = []
    seen: set[tuple[int, str]] = set()
    for fam, _type, proto, _canon, sockaddr in infos:
        text = str(sockaddr[0])
        if fam == socket.AF_INET6 and len(sockaddr) >= 4 and sockaddr[3] and "%" not in text:
            text = f"{text}%{sockaddr[3]}"
        reason = policy.check_address(text)
        if reason:
            raise FetchRefused(f"host {host!r} resolves to a refused address: {reason}")
        if (fam, text) in seen:
            continue
        seen.add((fam, text))
        results.append(
            ResolveResult(
                hostname=host,
                host=text,
                port=int(sockaddr[1]),
                family=fam,
                proto=proto,
                flags=_NUMERIC_FLAGS,
            )
        )
    if not results:
        raise MediaError(f"host {host!r} has no address")
    return results


class PolicyResolver(AbstractResolver):
    """aiohttp resolver that only ever returns addresses the policy allowed."""

    def __init__(self, policy: SsrfPolicy) -> None:
        self.policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return await resolve_checked(self.policy, host, port, family)

    async def close(self) -> None:
        return None


def policy_session(policy: SsrfPolicy, *, user_agent: str = "voice-sms-gateway") -> aiohttp.ClientSession:
    """A session whose connections can only reach addresses `policy` allows.

    No DNS cache (each new connection resolves and checks afresh), no cookie jar (customers'
    URLs must not share cookies), no proxies from the environment. Close it on shutdown."""
    connector = aiohttp.TCPConnector(resolver=PolicyResolver(policy), use_dns_cache=False)
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        headers={"User-Agent": user_agent},
    )


class PolicyFetcher:
    """`Fetcher` over a session made by `policy_session` with the same policy."""

    def __init__(self, session: aiohttp.ClientSession, policy: SsrfPolicy) -> None:
        resolver = getattr(session.connector, "_resolver", None)
        if not isinstance(resolver, PolicyResolver) or resolver.policy != policy:
            raise ValueError(
                "PolicyFetcher needs a session from policy_session() with the same policy: "
                "only its resolver pins connections to checked addresses"
            )
        self._session = session
        self.policy = policy

    async def get(self, url: str, *, max_bytes: int, timeout: float) -> FetchResult:
        try:
            target = URL(url)
        except (ValueError, TypeError) as exc:
            raise FetchRefused(f"invalid URL: {exc}") from exc
        try:
            async with asyncio.timeout(timeout):
                return await self._follow(target, max_bytes)
        except MediaError:
            raise
        except TimeoutError:
            raise MediaError(f"timed out after {timeout:g} s fetching {_shown(target)}") from None
        except Exception as exc:  # the contract: nothing but MediaError/FetchRefused leaves here
            detail = str(exc) or type(exc).__name__
            raise MediaError(f"fetching {_shown(target)} failed: {detail}") from exc

    async def _follow(self, url: URL, max_bytes: int) -> FetchResult:
        for hop in range(MAX_REDIRECTS + 1):
            try:
                next_url = await self._hop(url, max_bytes)
            except FetchRefused as exc:
                if hop:
                    raise FetchRefused(f"{exc} (redirect {hop})") from None
                raise
            if isinstance(next_url, FetchResult):
                return next_url
            url = next_url
        raise FetchRefused(f"too many redirects (more than {MAX_REDIRECTS}) from {_shown(url)}")

    async def _hop(self, url: URL, max_bytes: int) -> FetchResult | URL:
        """One request: the final result, or where a redirect points."""
        self._check_url(url)
        async with self._session.get(url, allow_redirects=False) as resp:
            location = resp.headers.get("Location")
            if resp.status in _REDIRECT_STATUSES and location:
                try:
                    return url.join(URL(location))
                except (ValueError, TypeError) as exc:
                    raise MediaError(f"bad redirect Location {location!r}: {exc}") from exc
            body = await self._read_capped(resp, max_bytes, url)
            return FetchResult(status=resp.status, content_type=resp.content_type, body=body)

    def _check_url(self, url: URL) -> None:
        if url.scheme not in ("http", "https"):
            raise FetchRefused(f"scheme {url.scheme or '(none)'!r} not allowed: only http and https")
        host = url.raw_host
        if not host:
            raise FetchRefused(f"URL has no host: {_shown(url)}")
        check_literal_host(self.policy, host)

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

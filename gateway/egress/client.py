"""The one HTTP client for customer URLs: a session whose every connection obeys the policy.

How the policy is enforced, on every request the session makes (redirect hops included):
- `PolicyConnector.connect` judges the URL's host before any connection is taken from the
  pool or opened: an IP literal is checked as is, a host the C library would read as a number
  although it is not a canonical address (`2130706433`, `0x7f.1`, `127.1`, `0177.0.0.1`) is
  refused, and so are `localhost` names unless loopback is allowed (`SsrfPolicy.check_host`);
- every other host is resolved by `PolicyResolver`: it resolves with the event loop's
  getaddrinfo, checks EVERY address, refuses the host if any is refused, and hands aiohttp only
  the checked numeric addresses. The connection goes to exactly what was checked: there is no
  second lookup a DNS-rebinding server could answer differently, and no DNS cache, so each new
  connection resolves and checks afresh (DNS may change between a URL's save and its use).

A refusal raises `AddressRefused` out of the request (it is not an aiohttp.ClientError: a
caller must treat it as final, not retry it). The session has no cookie jar (tenants posting
to the same host must not share cookies) and ignores proxy settings from the environment.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

from gateway.egress.policy import AddressRefused, SsrfPolicy

_NUMERIC_FLAGS = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV


def check_host(policy: SsrfPolicy, host: str) -> None:
    """AddressRefused unless the policy lets a URL name `host` (names: before resolving)."""
    reason = policy.check_host(host)
    if reason:
        raise AddressRefused(reason)


async def resolve_checked(
    policy: SsrfPolicy, host: str, port: int = 0, family: int = socket.AF_UNSPEC
) -> list[ResolveResult]:
    """Resolve `host` and check every address; AddressRefused if any is refused, OSError if the
    name does not resolve."""
    check_host(policy, host)
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(literal)
    except ValueError:
        pass
    else:
        fam = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        return [
            ResolveResult(hostname=host, host=str(ip), port=port, family=fam, proto=0, flags=_NUMERIC_FLAGS)
        ]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        # (errno, strerror): aiohttp shows the strerror in its ClientConnectorDNSError.
        raise OSError(getattr(exc, "errno", None) or 0, f"cannot resolve host {host!r}: {exc}") from exc
    results: list[ResolveResult] = []
    seen: set[tuple[int, str]] = set()
    for fam, _type, proto, _canon, sockaddr in infos:
        text = str(sockaddr[0])
        if fam == socket.AF_INET6 and len(sockaddr) >= 4 and sockaddr[3] and "%" not in text:
            text = f"{text}%{sockaddr[3]}"
        reason = policy.check_address(text)
        if reason:
            raise AddressRefused(f"host {host!r} resolves to a refused address: {reason}")
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
        raise OSError(0, f"host {host!r} has no address")
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


class PolicyConnector(aiohttp.TCPConnector):
    """TCP connector that checks each request's host and resolves through `PolicyResolver`.

    aiohttp never asks the resolver about an IP-literal host, hence the check in `connect`,
    which runs for every request (pooled connection or new, every redirect hop)."""

    def __init__(self, policy: SsrfPolicy, *, limit: int = 100, limit_per_host: int = 0) -> None:
        super().__init__(
            resolver=PolicyResolver(policy),
            use_dns_cache=False,
            limit=limit,
            limit_per_host=limit_per_host,
        )
        self.policy = policy

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> Connection:
        host = req.url.raw_host
        if not host:
            raise AddressRefused("the URL has no host")
        check_host(self.policy, host)
        return await super().connect(req, traces, timeout)


def policy_session(
    policy: SsrfPolicy,
    *,
    user_agent: str = "voice-sms-gateway",
    limit: int = 100,
    limit_per_host: int = 0,
) -> aiohttp.ClientSession:
    """A session whose connections can only reach addresses `policy` allows; close it on
    shutdown. No cookie jar, no proxies from the environment (see the module docstring)."""
    return aiohttp.ClientSession(
        connector=PolicyConnector(policy, limit=limit, limit_per_host=limit_per_host),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        headers={"User-Agent": user_agent},
    )


def session_policy(session: aiohttp.ClientSession) -> SsrfPolicy:
    """The policy a session from `policy_session` enforces; ValueError for any other session."""
    connector = session.connector
    if not isinstance(connector, PolicyConnector):
        raise ValueError(
            "customer URLs need a session from policy_session(): only its connector checks "
            "every address and pins connections to them"
        )
    return connector.policy

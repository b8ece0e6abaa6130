"""SSRF policy and the policy-enforcing fetcher, against a real local HTTP server."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from gateway.config import OutboundHttpConfig
from gateway.egress.client import PolicyResolver, policy_session
from gateway.egress.policy import AddressRefused, SsrfPolicy, parse_ip
from gateway.voice.fetcher import MAX_REDIRECTS, PolicyFetcher
from gateway.voice.interfaces import FetchFailed, FetchRefused

# --------------------------------------------------------------------------- the policy

OK, PRIVATE, LOOPBACK, ALWAYS = "ok", "private", "loopback", "always"

ADDRESSES: list[tuple[str, str]] = [
    # public
    ("8.8.8.8", OK),
    ("93.184.215.14", OK),
    ("172.15.255.255", OK),
    ("172.32.0.1", OK),
    ("100.63.255.255", OK),
    ("100.128.0.1", OK),
    ("2606:4700:4700::1111", OK),
    ("::ffff:8.8.8.8", OK),
    ("64:ff9b::808:808", OK),
    ("2002:808:808::1", OK),
    # loopback
    ("127.0.0.1", LOOPBACK),
    ("127.255.255.254", LOOPBACK),
    ("::1", LOOPBACK),
    ("::ffff:127.0.0.1", LOOPBACK),
    ("::ffff:0:127.0.0.1", LOOPBACK),  # IPv4-translated
    ("64:ff9b::7f00:1", LOOPBACK),  # NAT64
    ("2002:7f00:1::1", LOOPBACK),  # 6to4
    # private
    ("10.0.0.1", PRIVATE),
    ("172.16.0.1", PRIVATE),
    ("172.31.255.255", PRIVATE),
    ("192.168.1.1", PRIVATE),
    ("100.64.0.1", PRIVATE),  # CGNAT
    ("100.127.255.254", PRIVATE),
    ("fc00::1", PRIVATE),
    ("fd12:3456::1", PRIVATE),
    ("::ffff:10.0.0.1", PRIVATE),
    ("::ffff:192.168.0.1", PRIVATE),
    ("64:ff9b::a00:1", PRIVATE),
    # always refused: metadata (also inside otherwise-allowed ranges)
    ("169.254.169.254", ALWAYS),
    ("169.254.170.2", ALWAYS),
    ("100.100.100.200", ALWAYS),
    ("fd00:ec2::254", ALWAYS),
    ("::ffff:169.254.169.254", ALWAYS),
    ("::ffff:100.100.100.200", ALWAYS),
    ("64:ff9b::a9fe:a9fe", ALWAYS),
    ("2002:a9fe:a9fe::1", ALWAYS),
    # link-local
    ("169.254.1.1", ALWAYS),
    ("fe80::1", ALWAYS),
    ("febf::ffff", ALWAYS),
    ("fe80::1%eth0", ALWAYS),
    ("::ffff:169.254.1.1", ALWAYS),
    # unspecified / this network
    ("0.0.0.0", ALWAYS),
    ("0.1.2.3", ALWAYS),
    ("::", ALWAYS),
    ("::ffff:0.0.0.0", ALWAYS),
    # multicast, broadcast, reserved
    ("224.0.0.1", ALWAYS),
    ("239.255.255.250", ALWAYS),
    ("ff02::1", ALWAYS),
    ("ff05::1:3", ALWAYS),
    ("::ffff:224.0.0.1", ALWAYS),
    ("255.255.255.255", ALWAYS),
    ("::ffff:255.255.255.255", ALWAYS),
    ("240.0.0.1", ALWAYS),
    ("192.0.2.1", ALWAYS),
    ("2001:db8::1", ALWAYS),
    ("100::1", ALWAYS),
    ("::127.0.0.1", ALWAYS),  # deprecated IPv4-compatible
    ("4000::1", ALWAYS),  # outside global unicast
]

POLICIES = [SsrfPolicy(allow_private=p, allow_loopback=lb) for p in (False, True) for lb in (False, True)]


def _expect_refused(category: str, policy: SsrfPolicy) -> bool:
    if category == ALWAYS:
        return True
    if category == PRIVATE:
        return not policy.allow_private
    if category == LOOPBACK:
        return not policy.allow_loopback
    return False


def _policy_id(p: SsrfPolicy) -> str:
    return f"private={p.allow_private},loop={p.allow_loopback}"


@pytest.mark.parametrize("policy", POLICIES, ids=_policy_id)
@pytest.mark.parametrize(("address", "category"), ADDRESSES, ids=[a for a, _ in ADDRESSES])
def test_address_table(address: str, category: str, policy: SsrfPolicy) -> None:
    reason = policy.check_address(address)
    if _expect_refused(category, policy):
        assert reason is not None, f"{address} ({category}) should be refused by {policy}"
        assert str(ipaddress.ip_address(address)) in reason  # names the address it judged
    else:
        assert reason is None, f"{address} ({category}) should pass {policy}: {reason}"


def test_reasons_name_the_class() -> None:
    open_policy = SsrfPolicy(allow_private=True, allow_loopback=True)
    closed = SsrfPolicy(allow_private=False, allow_loopback=False)
    assert "metadata" in (open_policy.check_address("169.254.169.254") or "")
    assert "metadata" in (open_policy.check_address("fd00:ec2::254") or "")
    assert "metadata" in (open_policy.check_address("100.100.100.200") or "")
    mapped = open_policy.check_address("::ffff:169.254.169.254") or ""
    assert "embeds 169.254.169.254" in mapped and "metadata" in mapped
    assert "link-local" in (open_policy.check_address("fe80::1") or "")
    assert "multicast" in (open_policy.check_address("ff02::1") or "")
    assert "loopback" in (closed.check_address("127.0.0.1") or "")
    assert "private" in (closed.check_address("10.1.2.3") or "")


@pytest.mark.parametrize(
    "text", ["127.1", "2130706433", "0x7f.1", "0177.0.0.1", "localhost", "", "1.2.3.4.5"]
)
def test_only_strict_addresses_parse(text: str) -> None:
    assert parse_ip(text) is None
    assert SsrfPolicy(allow_private=True, allow_loopback=True).check_address(text) is not None


def test_policy_defaults_refuse_private_and_loopback() -> None:
    policy = SsrfPolicy.from_config(OutboundHttpConfig())
    assert policy == SsrfPolicy(allow_private=False, allow_loopback=False)
    for address in ("169.254.169.254", "127.0.0.1", "10.0.0.1", "::1"):
        assert policy.check_address(address) is not None


# --------------------------------------------------------------------------- a real server


class MiniServer:
    """Local HTTP server: fixed routes for the fetcher, and `files` for media tests."""

    def __init__(self) -> None:
        self.base_url = ""
        self.port = 0
        self.hits: list[str] = []
        self.host_headers: list[str] = []
        self.files: dict[str, tuple[bytes, str]] = {}
        self.gate: asyncio.Event | None = None  # when set, /files wait for it
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def count(self, path: str) -> int:
        return sum(1 for h in self.hits if h == path)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.hits.append(path)
        self.host_headers.append(request.headers.get("Host", ""))
        parts = path.strip("/").split("/")
        if path in self.files:
            if self.gate is not None:
                await self.gate.wait()
            body, ctype = self.files[path]
            return web.Response(body=body, content_type=ctype)
        if parts[0] == "ok":
            return web.Response(text="hello", content_type="text/plain")
        if parts[0] == "status":
            return web.Response(status=int(parts[1]), text="nope")
        if parts[0] == "redirect":
            raise web.HTTPFound(request.query["to"])
        if parts[0] == "chain":
            n = int(parts[1])
            if n == 0:
                return web.Response(text="end of chain")
            raise web.HTTPFound(f"/chain/{n - 1}")  # relative Location
        if parts[0] == "bytes":
            return web.Response(body=b"x" * int(parts[1]))
        if parts[0] == "stream":  # chunked: no Content-Length to trust
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            remaining = int(parts[1])
            while remaining > 0:
                n = min(remaining, 700)
                await resp.write(b"y" * n)
                remaining -= n
            await resp.write_eof()
            return resp
        if parts[0] == "slow":
            await asyncio.sleep(5)
            return web.Response(text="late")
        if parts[0] == "drip":
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for _ in range(50):
                await resp.write(b".")
                await asyncio.sleep(0.1)
            await resp.write_eof()
            return resp
        if parts[0] == "close":  # no keep-alive: the next fetch opens (and resolves) anew
            resp = web.Response(text="closing")
            resp.force_close()
            return resp
        return web.Response(status=404, text="no such route")


@pytest_asyncio.fixture
async def server() -> AsyncIterator[MiniServer]:
    srv = MiniServer()
    await srv.start()
    yield srv
    await srv.stop()


FetcherFactory = Callable[..., Awaitable[PolicyFetcher]]


@pytest_asyncio.fixture
async def make_fetcher() -> AsyncIterator[FetcherFactory]:
    sessions: list[aiohttp.ClientSession] = []

    async def make(*, allow_private: bool = False, allow_loopback: bool = True) -> PolicyFetcher:
        policy = SsrfPolicy(allow_private=allow_private, allow_loopback=allow_loopback)
        session = policy_session(policy)
        sessions.append(session)
        return PolicyFetcher(session)

    yield make
    for s in sessions:
        await s.close()


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[list[str]]]) -> dict[str, int]:
    """Make the running loop's getaddrinfo answer `answers[name]` (one list per call, the last
    one repeating) for names no real DNS here can provide (metadata, link-local)."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    calls: dict[str, int] = dict.fromkeys(answers, 0)

    async def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in answers:
            seq = answers[host]
            addrs = seq[min(calls[host], len(seq) - 1)]
            calls[host] += 1
            out: list[tuple[Any, ...]] = []
            for a in addrs:
                if ":" in a:
                    out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, int(port or 0), 0, 0)))
                else:
                    out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, int(port or 0))))
            return out
        return await real(host, port, *args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return calls


# --------------------------------------------------------------------------- fetcher


async def test_fetch_ok_when_loopback_allowed(server: MiniServer, make_fetcher: FetcherFactory) -> None:
    fetcher = await make_fetcher(allow_loopback=True)
    result = await fetcher.get(server.url("/ok"), max_bytes=1000, timeout=5)
    assert (result.status, result.content_type, result.body) == (200, "text/plain", b"hello")
    via_name = await fetcher.get(f"http://localhost:{server.port}/ok", max_bytes=1000, timeout=5)
    assert via_name.body == b"hello"
    assert server.host_headers[-1] == f"localhost:{server.port}"  # the name is kept for Host


async def test_non_2xx_is_returned_not_raised(server: MiniServer, make_fetcher: FetcherFactory) -> None:
    fetcher = await make_fetcher()
    result = await fetcher.get(server.url("/status/404"), max_bytes=1000, timeout=5)
    assert (result.status, result.body) == (404, b"nope")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]"])
async def test_loopback_refused_when_not_allowed(
    host: str, server: MiniServer, make_fetcher: FetcherFactory
) -> None:
    fetcher = await make_fetcher(allow_private=True, allow_loopback=False)
    with pytest.raises(FetchRefused, match="loopback"):
        await fetcher.get(f"http://{host}:{server.port}/ok", max_bytes=1000, timeout=5)
    assert server.hits == []


@pytest.mark.parametrize(
    "host", ["2130706433", "0x7f000001", "0x7f.1", "127.1", "127.0.1", "0177.0.0.1", "017700000001", "0"]
)
@pytest.mark.parametrize("allow_loopback", [False, True])
async def test_numeric_host_tricks_refused(
    host: str, allow_loopback: bool, server: MiniServer, make_fetcher: FetcherFactory
) -> None:
    fetcher = await make_fetcher(allow_private=True, allow_loopback=allow_loopback)
    with pytest.raises(FetchRefused, match="non-canonical numeric"):
        await fetcher.get(f"http://{host}:{server.port}/ok", max_bytes=1000, timeout=5)
    assert server.hits == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://169.254.1.1/",
        "http://[fe80::1]/",
        "http://[fe80::1%25eth0]/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://224.0.0.1/",
        "http://[ff02::1]/",
        "http://255.255.255.255/",
    ],
)
async def test_always_refused_literals(url: str, make_fetcher: FetcherFactory) -> None:
    fetcher = await make_fetcher(allow_private=True, allow_loopback=True)
    with pytest.raises(FetchRefused):
        await fetcher.get(url, max_bytes=1000, timeout=5)


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (["169.254.169.254"], "metadata"),
        (["fd00:ec2::254"], "metadata"),
        (["fe80::1"], "link-local"),
        (["93.184.215.14", "169.254.169.254"], "metadata"),  # every address is checked
        (["2606:4700:4700::1111", "::ffff:169.254.169.254"], "metadata"),
    ],
)
async def test_name_resolving_to_refused_address(
    answer: list[str], why: str, monkeypatch: pytest.MonkeyPatch, make_fetcher: FetcherFactory
) -> None:
    calls = fake_dns(monkeypatch, {"metadata.test": [answer]})
    fetcher = await make_fetcher(allow_private=True, allow_loopback=True)
    with pytest.raises(FetchRefused, match=why):
        await fetcher.get("http://metadata.test/latest/meta-data/", max_bytes=1000, timeout=5)
    assert calls["metadata.test"] == 1


async def test_connection_pinned_to_checked_answer(
    server: MiniServer, monkeypatch: pytest.MonkeyPatch, make_fetcher: FetcherFactory
) -> None:
    """DNS rebinding: the name answers loopback (allowed here), then the metadata address.
    Each connection resolves exactly once and connects to what that resolution checked."""
    calls = fake_dns(monkeypatch, {"rebind.test": [["127.0.0.1"], ["169.254.169.254"]]})
    fetcher = await make_fetcher(allow_loopback=True)
    url = f"http://rebind.test:{server.port}/close"
    first = await fetcher.get(url, max_bytes=1000, timeout=5)
    assert first.body == b"closing"
    assert server.host_headers == [f"rebind.test:{server.port}"]
    assert calls["rebind.test"] == 1  # no separate check-then-connect lookup
    with pytest.raises(FetchRefused, match="metadata"):
        await fetcher.get(url, max_bytes=1000, timeout=5)
    assert calls["rebind.test"] == 2
    assert len(server.hits) == 1


async def test_resolver_returns_only_checked_numeric_addresses() -> None:
    resolver = PolicyResolver(SsrfPolicy(allow_private=False, allow_loopback=True))
    results = await resolver.resolve("localhost", 8080, family=socket.AF_UNSPEC)
    assert results
    for r in results:
        assert r["host"] in ("127.0.0.1", "::1")
        assert r["port"] == 8080
        assert r["flags"] & socket.AI_NUMERICHOST
    with pytest.raises(AddressRefused):
        await PolicyResolver(SsrfPolicy(allow_private=True, allow_loopback=False)).resolve("localhost", 80)


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://[::ffff:169.254.169.254]/",
        "http://metadata.test/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:25/",
        "http://0x7f.1/",
    ],
)
async def test_redirect_to_refused_target(
    target: str, server: MiniServer, monkeypatch: pytest.MonkeyPatch, make_fetcher: FetcherFactory
) -> None:
    fake_dns(monkeypatch, {"metadata.test": [["169.254.169.254"]]})
    fetcher = await make_fetcher(allow_private=True, allow_loopback=True)
    with pytest.raises(FetchRefused, match=r"redirect 1"):
        await fetcher.get(server.url(f"/redirect?to={target}"), max_bytes=1000, timeout=5)
    assert server.hits == ["/redirect"]


async def test_redirect_chain_limit(server: MiniServer, make_fetcher: FetcherFactory) -> None:
    fetcher = await make_fetcher()
    ok = await fetcher.get(server.url(f"/chain/{MAX_REDIRECTS}"), max_bytes=1000, timeout=5)
    assert ok.body == b"end of chain"
    server.hits.clear()
    with pytest.raises(FetchRefused, match="too many redirects"):
        await fetcher.get(server.url(f"/chain/{MAX_REDIRECTS + 1}"), max_bytes=1000, timeout=5)
    assert len(server.hits) == MAX_REDIRECTS + 1


async def test_allowed_redirect_is_followed(server: MiniServer, make_fetcher: FetcherFactory) -> None:
    fetcher = await make_fetcher()
    result = await fetcher.get(
        server.url(f"/redirect?to=http://localhost:{server.port}/ok"), max_bytes=1000, timeout=5
    )
    assert result.body == b"hello"
    assert server.hits == ["/redirect", "/ok"]


async def test_a_form_post_is_policed_and_never_redirected(
    server: MiniServer, make_fetcher: FetcherFactory
) -> None:
    """A gather's --method=POST: the same policy, but a redirect is the answer, not followed (the
    form would reach a URL the script does not name)."""
    strict = await make_fetcher(allow_loopback=False)
    with pytest.raises(FetchRefused, match="loopback"):
        await strict.post_form(server.url("/ok"), b"digits=1", max_bytes=1000, timeout=5)
    fetcher = await make_fetcher()
    ok = await fetcher.post_form(server.url("/ok"), b"digits=1", max_bytes=1000, timeout=5)
    assert (ok.status, ok.body) == (200, b"hello")
    moved = await fetcher.post_form(
        server.url(f"/redirect?to=http://localhost:{server.port}/ok"), b"digits=1", max_bytes=1000, timeout=5
    )
    assert moved.status == 302
    assert server.hits == ["/ok", "/redirect"]
    with pytest.raises(FetchRefused, match="cap"):
        await fetcher.post_form(server.url("/bytes/1001"), b"digits=1", max_bytes=1000, timeout=5)


@pytest.mark.parametrize("path", ["/bytes/2000", "/stream/2000"])
async def test_body_over_cap_refused(path: str, server: MiniServer, make_fetcher: FetcherFactory) -> None:
    fetcher = await make_fetcher()
    with pytest.raises(FetchRefused, match="1000-byte cap"):
        await fetcher.get(server.url(path), max_bytes=1000, timeout=5)


@pytest.mark.parametrize("path", ["/bytes/1000", "/stream/1000"])
async def test_body_at_cap_accepted(path: str, server: MiniServer, make_fetcher: FetcherFactory) -> None:
    fetcher = await make_fetcher()
    result = await fetcher.get(server.url(path), max_bytes=1000, timeout=5)
    assert len(result.body) == 1000


@pytest.mark.parametrize("path", ["/slow", "/drip"])
async def test_timeout(path: str, server: MiniServer, make_fetcher: FetcherFactory) -> None:
    fetcher = await make_fetcher()
    started = time.monotonic()
    with pytest.raises(FetchFailed, match="timed out") as info:
        await fetcher.get(server.url(path), max_bytes=100_000, timeout=0.4)
    assert not isinstance(info.value, FetchRefused)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/file.mp3",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
        "javascript:alert(1)",
        "data:audio/wav;base64,UklGRg==",
        "//127.0.0.1/ok",
        "not a url",
        "http:///nohost",
    ],
)
async def test_non_http_refused(url: str, make_fetcher: FetcherFactory) -> None:
    fetcher = await make_fetcher(allow_private=True, allow_loopback=True)
    with pytest.raises(FetchRefused):
        await fetcher.get(url, max_bytes=1000, timeout=5)


async def test_connection_failure_is_fetch_failed(make_fetcher: FetcherFactory) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fetcher = await make_fetcher()
    with pytest.raises(FetchFailed) as info:
        await fetcher.get(f"http://127.0.0.1:{port}/", max_bytes=1000, timeout=5)
    assert type(info.value) is FetchFailed
    with pytest.raises(FetchFailed, match="cannot resolve"):
        await fetcher.get("http://no-such-host.invalid/", max_bytes=1000, timeout=5)


async def test_fetcher_requires_a_policy_session() -> None:
    async with aiohttp.ClientSession() as plain:
        with pytest.raises(ValueError, match="policy_session"):
            PolicyFetcher(plain)


async def test_policy_session_checks_every_request_itself(server: MiniServer) -> None:
    """Not only through PolicyFetcher: any request on the session (a webhook POST, a redirect
    aiohttp follows on its own) is checked, IP literals included (aiohttp never asks the
    resolver about those)."""
    port = server.port
    async with policy_session(SsrfPolicy(allow_private=False, allow_loopback=False)) as strict:
        for host in ("127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "127.1", "[::1]", "0.0.0.0"):
            with pytest.raises(AddressRefused):
                async with strict.get(f"http://{host}:{port}/ok"):
                    pass
    assert server.hits == []
    async with policy_session(SsrfPolicy(allow_private=False, allow_loopback=True)) as loose:
        async with loose.get(server.url("/ok")) as ok:
            assert await ok.text() == "hello"
        with pytest.raises(AddressRefused, match="metadata"):
            async with loose.get(server.url("/redirect?to=http://169.254.169.254/latest/")):
                pass
    assert server.hits == ["/ok", "/redirect"]

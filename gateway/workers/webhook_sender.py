"""Delivers the webhook outbox: at least once, signed, with doubling retries.

2xx: done. 5xx, 429, timeouts, connection errors: retried after 5 s, 10 s, 20 s ...
until the next try would fall beyond ~23 h after the event. Other 4xx: the receiver
rejected this payload for good, so it is dropped (kept with its status for inspection).
A URL the outbound policy refuses (gateway/egress: checked on every connection, as DNS may
have changed since the URL was saved) is dropped at once too: it would be refused for 23 h.
A 429 or 503 with a Retry-After header (seconds or an HTTP date) is not retried before
that time: the delay is the larger of the backoff and Retry-After, which counts up to
an hour (a larger value would only expire the delivery; a retry that comes early just
gets another 429).

Every POST carries X-Gateway-Timestamp, X-Gateway-Delivery-Id (the same on every retry) and
X-Gateway-Signature-256 (outbox.sign); X-Gateway-Signature (outbox.sign_legacy) is deprecated.
POST slots are shared fairly between receiver hosts and accounts (fair_share.FairShare).
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast
from urllib.parse import urlsplit

import aiohttp
from sqlalchemy import ColumnElement, Table, bindparam, exists, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from gateway.db import leases
from gateway.db.availability import DbOutage
from gateway.db.group_commit import GroupCommitter
from gateway.db.models import Account, WebhookAttempt, WebhookDelivery
from gateway.egress.client import session_policy
from gateway.egress.policy import AddressRefused
from gateway.services.outbox import Job, sign, sign_legacy
from gateway.workers.fair_share import FairShare
from gateway.workers.lifecycle import Lifecycle
from gateway.workers.observer import NullObserver, Observer

log = logging.getLogger(__name__)


# A SIN webhook may answer 200 with a text/plain body: that text is sent back as the reply.
ReplyHook = Callable[[str, str], Awaitable[None]]
MAX_REPLY_CHARS = 1600
MAX_RETRY_AFTER = 3600.0
# How long a round of POSTs waits for its slowest before recording the rest and moving on.
STRAGGLER_WAIT = 1.0  # seconds of a receiver's Retry-After that are honoured
_RETRY_AFTER_STATUSES = frozenset({429, 503})
# last_error of a delivery the policy refused: the tenant may read it, the reason is logged.
REFUSED_ERROR = "receiver address not allowed"
# Results are written this long after the first of them, with whatever else finished meanwhile:
# each write held SQLite's one connection while MO and receipt transactions, whose
# deliver_sm_resp waits on them, queued behind it (bench/sms_in.py at 1,000 MO/s: p50 7.4-8.3 ms
# without, 5.6-6.2 with). A delivery waiting behind one (_IN_ORDER) and a webhook's reply text
# are that much later; a crash in between resends the POST (at least once, as always).
RECORD_LINGER = 0.05
# A claim whose oldest due rows are all for capped hosts or accounts looks again past them,
# this many times at most (each pass caps at least one more host or account).
_CLAIM_PASSES = 3
# Fast-path jobs looked at per round, at most, to find ones whose host and account have a slot.
_MAX_SCAN = 500
# (ref, url) keys remembered for wait_behind; past this, forgotten (their rows wait for a poll).
_MAX_BEHIND = 10_000


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A Retry-After header (RFC 9110 10.2.3: delay-seconds or an HTTP-date) as seconds from
    `now`; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)  # any length: a huge number is just a long wait
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class Result:
    job: Job
    status_code: int | None
    error: str | None
    reply_text: str | None = None
    retry_after: float | None = None  # seconds the receiver asked us to wait (429/503)
    refused: str | None = None  # why the outbound policy refused the URL (operator log only)

    @property
    def done(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        if self.refused:
            return False
        return self.status_code is None or self.status_code >= 500 or self.status_code == 429


# Which log field names the subject of a webhook, by kind (the row's `ref`).
_SUBJECT_FIELD = {
    "sms.status": "msgid",
    "link.access": "msgid",
    "sms.inbound": "inbound_id",
    "voice.status": "callid",
    "voice.voicemail": "voicemail_id",
    "voice.event": "callid",
    "voice.recording": "recording_id",
}


def _without_query(url: str) -> str:
    # Receivers often put their own secret in the query string.
    return urlsplit(url)._replace(query="", fragment="").geturl()


def _log_result(r: Result, outcome: str, attempts: int) -> None:
    fields: dict[str, object] = {
        _SUBJECT_FIELD.get(r.job.kind, "ref"): r.job.ref,
        "webhook_id": r.job.id,
        "kind": r.job.kind,
        "http_status": r.status_code,
        "attempts": attempts,
        "url": _without_query(r.job.url),
    }
    if outcome == "DONE":
        log.info("webhook delivered", extra=fields)
    elif outcome == "RETRY":
        log.info("webhook to retry: %s", r.error or f"HTTP {r.status_code}", extra=fields)
    else:  # DROPPED (a 4xx, a refused address) or EXPIRED (retried past the window): never again
        why = r.refused or r.error or f"HTTP {r.status_code}"
        log.warning("webhook %s: %s", outcome.lower(), why, extra=fields)


def _not_among(ids: list[int]) -> list[ColumnElement[bool]]:
    return [WebhookDelivery.id.not_in(ids)] if ids else []


_EARLIER = aliased(WebhookDelivery)
# In order per subject and receiver: a DELIVERED callback never overtakes the DELIVERING one
# still pending (or retrying) for the same message. Built once (an alias is costly to adapt).
_IN_ORDER = ~exists().where(
    _EARLIER.ref == WebhookDelivery.ref,
    _EARLIER.url == WebhookDelivery.url,
    _EARLIER.status == "PENDING",
    _EARLIER.id < WebhookDelivery.id,
)
_OUTBOX = cast(Table, WebhookDelivery.__table__)
# One round's outcomes, a row each (executemany), built once: building the statement (and its
# cache key) per round cost more CPU than the write. A None leaves the column as it is: a retry
# changes next_attempt_at, not status or done_at (a row another node recorded meanwhile, after
# its lease ran out here, stays DONE); the other outcomes set status and done_at.
_RECORD = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("row_id"))
    .values(
        attempts=bindparam("attempts"),
        claimed_until=None,
        claimed_by=None,
        last_status_code=bindparam("code"),
        last_error=bindparam("error"),
        status=func.coalesce(bindparam("status", type_=_OUTBOX.c.status.type), _OUTBOX.c.status),
        done_at=func.coalesce(bindparam("done_at", type_=_OUTBOX.c.done_at.type), _OUTBOX.c.done_at),
        next_attempt_at=func.coalesce(
            bindparam("next_at", type_=_OUTBOX.c.next_attempt_at.type), _OUTBOX.c.next_attempt_at
        ),
    )
)


class WebhookSender:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        http: aiohttp.ClientSession,
        *,
        timeout: float = 10.0,
        first_retry: float = 5.0,
        give_up_after: float = 23 * 3600.0,
        batch_size: int = 10,
        poll_interval: float = 1.0,
        lease_seconds: float = 120.0,
        reply_hook: ReplyHook | None = None,
        loops: int = 4,
        observer: Observer | None = None,
        max_in_flight_per_host: int = 20,
        max_in_flight_per_account: int = 30,
        db: DbOutage | None = None,
    ) -> None:
        self._share = FairShare(max(1, max_in_flight_per_host), max(1, max_in_flight_per_account))
        self._db = db or DbOutage()
        self._observer = observer or NullObserver()
        self._loops = loops
        self._reply_hook = reply_hook
        self._sessions = sessions
        session_policy(http)  # ValueError unless every POST goes through the URL policy
        self._http = http
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._first_retry = first_retry
        self._give_up = timedelta(seconds=give_up_after)
        self._batch = batch_size
        self._poll = poll_interval
        self._lease = timedelta(seconds=max(lease_seconds, timeout * 3))
        self._fast_token = f"fast:{uuid.uuid4().hex}"
        self._ready: collections.deque[tuple[float, Job]] = collections.deque()  # (offered at, job)
        # Claims look in the table only when it may hold work: after a wake() (rows written for
        # the table) or a poll interval. An offer() does not count: its rows are leased to us, and
        # the loops it wakes must not all run an empty claim on the connection the next MO's
        # commit needs (SQLite has one).
        self._table_gen = 1  # bumped by wake()
        self._claimed_gen = 0  # the last generation a claim saw through to an empty table
        self._last_claim = 0.0
        # (ref, url) of fast-path deliveries that table rows wait behind (outbox.lease_fast).
        self._behind: set[tuple[str, str]] = set()
        self._recorder: GroupCommitter[list[Result]] = GroupCommitter(self._record, linger=RECORD_LINGER)
        self._settling: set[asyncio.Task[None]] = set()
        self.lifecycle = Lifecycle()

    def wake(self) -> None:
        self._table_gen += 1
        self.lifecycle.wake()

    def _table_may_have_work(self) -> bool:
        return self._table_gen > self._claimed_gen or time.monotonic() - self._last_claim >= self._poll

    # -- outbox.FastPath ----------------------------------------------------------------------

    def lease(self) -> tuple[datetime, str]:
        return datetime.now(UTC) + self._lease, self._fast_token

    def offer(self, jobs: list[Job]) -> None:
        now = time.monotonic()
        self._ready.extend((now, job) for job in jobs)
        self.lifecycle.wake()

    def wait_behind(self, keys: list[tuple[str, str]]) -> None:
        if len(self._behind) + len(keys) > _MAX_BEHIND:
            self._behind.clear()
        self._behind.update(keys)

    def _take_ready(self, limit: int) -> tuple[list[Job], list[Job]]:
        """Up to `limit` offered jobs whose host and account have a free slot, in order, and the
        jobs passed over for `STRAGGLER_WAIT` because theirs are at the cap: those go back to the
        table (_unlease), where claims take them in turn, rather than waiting here while the
        slots are held by a slow receiver. Younger ones keep their place: a fast receiver at
        its cap frees a slot within milliseconds."""
        jobs: list[Job] = []
        spilled: list[Job] = []
        kept: list[tuple[float, Job]] = []
        too_old = time.monotonic() - STRAGGLER_WAIT
        for _ in range(min(len(self._ready), _MAX_SCAN)):
            if len(jobs) >= limit:
                break
            offered, job = self._ready.popleft()
            if self._share.take(job.host, job.account_id):
                jobs.append(job)
            elif offered < too_old:
                spilled.append(job)
            else:
                kept.append((offered, job))
        self._ready.extendleft(reversed(kept))
        return jobs, spilled

    async def _unlease(self, jobs: list[Job]) -> None:
        try:
            async with self._sessions.begin() as s:
                await s.execute(
                    update(WebhookDelivery)
                    .where(
                        WebhookDelivery.id.in_([j.id for j in jobs]),
                        WebhookDelivery.claimed_by == self._fast_token,
                    )
                    .values(claimed_until=None, claimed_by=None)
                    .execution_options(synchronize_session=False)
                )
            self._table_gen += 1
        except Exception as exc:  # their lease runs out instead
            self._db.failed(exc, f"handing {len(jobs)} webhooks back to the table", log)

    async def _send(self, job: Job) -> Result:
        try:
            result = await self._post(job)
        finally:
            self._share.give_back(job.host, job.account_id)
        self._observer.webhook(result.status_code)  # counted as it happens, not when recorded
        return result

    async def run(self) -> None:
        try:
            await asyncio.gather(*(self._loop() for _ in range(self._loops)))
        finally:
            # Results of the last rounds: recorded before the loops count as stopped.
            while self._settling:
                await asyncio.gather(*self._settling, return_exceptions=True)
            await self._recorder.close()

    async def _loop(self) -> None:
        """Rounds of up to batch_size POSTs, each recorded when the round ends, in the
        background and in one write with the rounds other loops finished meanwhile, as long as
        receivers answer promptly. A POST still running STRAGGLER_WAIT into its round
        is left in flight, holding one slot, and is recorded when it ends: a receiver that hangs
        until the timeout does not hold up the deliveries claimed alongside it."""
        in_flight: set[asyncio.Task[Result]] = set()
        while in_flight or not self.lifecycle.stopping:
            new: set[asyncio.Task[Result]] = set()
            free = self._batch - len(in_flight)
            if free > 0 and not self.lifecycle.stopping:
                jobs, spilled = self._take_ready(free)
                try:
                    if not jobs and self._table_may_have_work():
                        jobs = await self._claim(free)
                except Exception as exc:
                    await self.lifecycle.idle(self._db.failed(exc, "claiming webhooks", log))
                new = {asyncio.create_task(self._send(j)) for j in jobs}
                in_flight |= new
                if spilled:
                    await self._unlease(spilled)
            if not in_flight:
                await self.lifecycle.idle(self._poll)
                continue
            if new:
                await asyncio.wait(new, timeout=STRAGGLER_WAIT)
            else:
                # Only stragglers: wake when one ends, or (with a free slot) for new work.
                waiter = None
                if free > 0 and not self.lifecycle.stopping:
                    waiter = asyncio.create_task(self.lifecycle.idle(self._poll))
                await asyncio.wait(
                    [*in_flight, *([waiter] if waiter else [])], return_when=asyncio.FIRST_COMPLETED
                )
                if waiter is not None and not waiter.done():
                    waiter.cancel()
            finished = [t for t in in_flight if t.done()]
            if not finished:
                continue
            in_flight.difference_update(finished)
            # Recorded in the background, with what other loops finished meanwhile, in one
            # transaction: the loop goes on to the next POSTs at once.
            task = asyncio.create_task(self._settle([t.result() for t in finished]))
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)

    async def _settle(self, results: list[Result]) -> None:
        try:
            await self._recorder.submit(results)
        except Exception as exc:
            # Unrecorded rows stay claimed and are sent again when their lease runs out.
            self._db.failed(exc, "recording webhook results", log)
            return
        freed = [key for r in results if (key := (r.job.ref, r.job.url)) in self._behind]
        self._behind.difference_update(freed)
        if freed or any(r.job.from_table for r in results):
            # Recorded: the next delivery of the same ref may be due now (_IN_ORDER).
            self._table_gen += 1
            self.lifecycle.wake()
        await self._replies(results)

    async def _claim(self, limit: int) -> list[Job]:
        """Up to `limit` due deliveries, oldest first, skipping those whose receiver host or
        account has all its slots in flight (FairShare): one tenant's backlog to a dead
        receiver does not stand in front of the others'."""
        now = datetime.now(UTC)
        token = uuid.uuid4().hex
        gen, self._last_claim = self._table_gen, time.monotonic()
        taken: list[tuple[str, int]] = []  # slots reserved before the rows are stamped
        jobs: list[Job] = []
        try:
            async with self._sessions.begin() as s:
                ids: list[int] = []
                for _ in range(_CLAIM_PASSES):
                    rows = await leases.due(
                        s,
                        WebhookDelivery,
                        ready_status="PENDING",
                        now=now,
                        limit=limit - len(ids),
                        order_by=(WebhookDelivery.next_attempt_at, WebhookDelivery.id),
                        extra=(_IN_ORDER, *self._not_full(), *_not_among(ids)),
                        columns=(WebhookDelivery.receiver_host, WebhookDelivery.account_id),
                    )
                    passed_over = False
                    for row in rows:
                        host, account_id = row.receiver_host, row.account_id
                        if self._share.take(host, account_id):
                            ids.append(row.id)
                            taken.append((host, account_id))
                        else:
                            passed_over = True
                    if not passed_over or len(ids) >= limit:
                        break
                claimed = await leases.stamp(
                    s,
                    WebhookDelivery,
                    ids,
                    ready_status="PENDING",
                    now=now,
                    lease_until=now + self._lease,
                    token=token,
                )
                if claimed:
                    leased = await s.execute(
                        select(_OUTBOX, Account.webhook_secret)
                        .join(Account, Account.id == _OUTBOX.c.account_id)
                        .where(_OUTBOX.c.claimed_by == token, _OUTBOX.c.status == "PENDING")
                    )
                    jobs = [Job.of(row._mapping, row.webhook_secret, from_table=True) for row in leased]
        except BaseException:
            for host, account_id in taken:
                self._share.give_back(host, account_id)
            raise
        # Rows another worker stamped first (SQLite has no SKIP LOCKED) give their slot back.
        unclaimed = collections.Counter(taken)
        unclaimed.subtract((j.host, j.account_id) for j in jobs)
        for (host, account_id), n in unclaimed.items():
            for _ in range(n):
                self._share.give_back(host, account_id)
        if len(jobs) < limit and not self._share.full_hosts() and not self._share.full_accounts():
            self._claimed_gen = max(self._claimed_gen, gen)  # nothing left that was due then
        else:
            self._table_gen += 1  # a full batch: more may be due
        return jobs

    def _not_full(self) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        if hosts := self._share.full_hosts():
            out.append(WebhookDelivery.receiver_host.not_in(hosts))
        if accounts := self._share.full_accounts():
            out.append(WebhookDelivery.account_id.not_in(accounts))
        return out

    async def _post(self, job: Job) -> Result:
        body = job.body.encode()
        ts = str(int(time.time()))
        headers = {
            "Content-Type": job.content_type,
            "X-Gateway-Timestamp": ts,
            "X-Gateway-Delivery-Id": job.uid,
            "X-Gateway-Signature-256": sign(job.secret, ts, job.uid, body),
            # Deprecated (no separator between timestamp and body): dropped next release.
            "X-Gateway-Signature": sign_legacy(job.secret, ts, body),
            "User-Agent": "sms-voice-gateway/1",
        }
        try:
            async with self._http.post(
                job.url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as resp:
                body = await resp.content.read(64 * 1024)
                reply = None
                if (
                    job.kind == "sms.inbound"
                    and 200 <= resp.status < 300
                    and resp.content_type == "text/plain"
                ):
                    reply = (
                        body.decode(resp.charset or "utf-8", errors="replace").strip()[:MAX_REPLY_CHARS]
                        or None
                    )
                retry_after = None
                if resp.status in _RETRY_AFTER_STATUSES:
                    retry_after = retry_after_seconds(resp.headers.get("Retry-After"), datetime.now(UTC))
                return Result(job, resp.status, None, reply, retry_after)
        except AddressRefused as exc:
            return Result(job, None, REFUSED_ERROR, refused=str(exc))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return Result(job, None, f"{type(exc).__name__}: {exc}"[:500])

    async def _replies(self, results: list[Result]) -> None:
        if self._reply_hook is None:
            return
        for r in results:
            if r.reply_text:
                try:
                    await self._reply_hook(r.job.ref, r.reply_text)
                except Exception:
                    log.exception("reply from webhook %d failed", r.job.id)

    async def _record(self, rounds: Sequence[list[Result]]) -> None:
        results = [r for batch in rounds for r in batch]
        now = datetime.now(UTC)
        rows: list[dict[str, object]] = []
        failed: list[dict[str, object]] = []  # the attempts history (WebhookAttempt)
        for r in results:
            attempts = r.job.attempts + 1
            row: dict[str, object] = {
                "row_id": r.job.id,
                "attempts": attempts,
                "code": r.status_code,
                "error": r.error,
                "status": None,
                "done_at": None,
                "next_at": None,
            }
            if r.done:
                row.update(status="DONE", done_at=now)
            elif r.retryable:
                delay = self._first_retry * 2 ** (attempts - 1)
                if r.retry_after is not None:
                    delay = max(delay, min(r.retry_after, MAX_RETRY_AFTER))
                next_at = now + timedelta(seconds=delay)
                if next_at > r.job.created_at + self._give_up:
                    row.update(status="EXPIRED", done_at=now)
                else:
                    row.update(next_at=next_at)
            else:
                row.update(status="DROPPED", done_at=now)
            rows.append(row)
            _log_result(r, str(row["status"] or "RETRY"), attempts)
            if not r.done:
                failed.append(
                    {
                        "delivery_id": r.job.id,
                        "attempt": attempts,
                        "at": now,
                        "status_code": r.status_code,
                        "next_attempt_at": row["next_at"],
                    }
                )
        async with self._sessions.begin() as s:
            if failed:
                await s.execute(insert(WebhookAttempt), failed)
            await s.execute(_RECORD, rows)

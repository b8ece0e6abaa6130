"""Sinch delivery report callbacks, written to the webhook outbox in the transaction of the change
they report (signed and retried like every webhook):

- `per_recipient`: a recipient report on every status change of a message of the batch;
  `per_recipient_final`: on its final status only. The batch's messages carry its
  callback_url as their `callbackurl`, so every path that writes a status callback (the
  dispatcher, receipts, cancel, expiry) reaches `recipient_callback`.
- `summary` / `full`: one batch report once every message is final, or at `expire_at` with what
  is known then; written by the batch sweep, guarded so that only one node writes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.models import Batch, Message, MessagePart
from gateway.services import outbox, sinch

KIND = "sinch.delivery_report"
_CHUNK = 500  # ids per IN (...) query
_CACHE = "sinch_batches"  # session.info: batch id -> Batch, for the transaction's callbacks


def needs_batch_report(delivery_report: str, callback_url: str | None) -> bool:
    return delivery_report in sinch.BATCH_REPORT and callback_url is not None


async def failed_receipts(s: AsyncSession, message_ids: Sequence[int]) -> dict[int, list[sinch.Receipt]]:
    """The failed receipts of these messages' parts: how a FAIL the SMSC reported went."""
    out: dict[int, list[sinch.Receipt]] = {}
    for i in range(0, len(message_ids), _CHUNK):
        q = (
            select(MessagePart.message_id, MessagePart.stat, MessagePart.err)
            .where(MessagePart.message_id.in_(message_ids[i : i + _CHUNK]), MessagePart.state == "FAILED")
            .order_by(MessagePart.seq)
        )
        for mid, stat, err in await s.execute(q):
            out.setdefault(mid, []).append(sinch.Receipt(stat or "", err))
    return out


async def outcomes(s: AsyncSession, msgs: Sequence[Message]) -> list[sinch.Outcome]:
    """Each message's Sinch status and code."""
    failed = await failed_receipts(s, [m.id for m in msgs if m.status == "FAIL" and m.fail_code is None])
    return [sinch.outcome(m, failed.get(m.id, ())) for m in msgs]


async def _batch(s: AsyncSession, batch_id: int) -> Batch | None:
    cache: dict[int, Batch] = s.info.setdefault(_CACHE, {})
    if batch_id not in cache:
        found = (await s.execute(select(Batch).where(Batch.id == batch_id))).scalar_one_or_none()
        if found is None:
            return None
        cache[batch_id] = found
    return cache[batch_id]


async def recipient_callback(s: AsyncSession, msg: Message) -> None:
    """The recipient report for `msg`'s present status, if its batch asked for one."""
    if msg.batch_id is None or not msg.callbackurl:
        return
    batch = await _batch(s, msg.batch_id)
    if batch is None or batch.delivery_report not in sinch.PER_RECIPIENT:
        return
    [result] = await outcomes(s, [msg])
    if batch.delivery_report == "per_recipient_final" and result.status not in sinch.FINAL_STATUSES:
        return
    outbox.enqueue(
        s,
        account_id=msg.account_id,
        kind=KIND,
        ref=msg.msgid,
        url=msg.callbackurl,
        payload=sinch.recipient_report(batch, msg, result),
    )


async def recipient_callbacks(s: AsyncSession, message_ids: Iterable[int]) -> None:
    """`recipient_callback` for each of these messages (those the batch code failed itself)."""
    ids = list(message_ids)
    if not ids:
        return
    q = select(Message).where(Message.id.in_(ids), Message.callbackurl.is_not(None)).order_by(Message.id)
    for msg in (await s.execute(q)).scalars():
        await recipient_callback(s, msg)


async def batch_reports_due(s: AsyncSession, now: datetime, limit: int) -> int:
    """Writes the summary/full report of batches that are done (or past expire_at) and not
    reported yet; returns how many."""
    pending = exists().where(Message.batch_id == Batch.id, Message.status.in_(("QUEUED", "DELIVERING")))
    due = (
        await s.execute(
            select(Batch)
            .where(Batch.reported_at.is_(None), or_(Batch.expire_at <= now, ~pending))
            .order_by(Batch.expire_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).scalars()
    written = 0
    for batch in list(due):
        won = await s.execute(
            update(Batch).where(Batch.id == batch.id, Batch.reported_at.is_(None)).values(reported_at=now)
        )
        if not getattr(won, "rowcount", 0) or not needs_batch_report(
            batch.delivery_report, batch.callback_url
        ):
            continue
        msgs = list((await s.execute(select(Message).where(Message.batch_id == batch.id))).scalars())
        results = [(m.recipient, o) for m, o in zip(msgs, await outcomes(s, msgs), strict=True)]
        assert batch.callback_url is not None
        outbox.enqueue(
            s,
            account_id=batch.account_id,
            kind=KIND,
            ref=batch.uid,
            url=batch.callback_url,
            payload=sinch.batch_report(batch, results, full=batch.delivery_report == "full", total=len(msgs)),
        )
        written += 1
    return written

"""A status change and its callback are written in one transaction: the customer's webhook,
and the receipt an ESME asked for when it submitted the message over the SMPP server."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.in_list import in_list
from gateway.db.models import EsmeOutbox, Message, TrackedLink
from gateway.services import batch_reports, outbox, sinch
from gateway.services.views import message_json

# SMPP 3.4 message_state and receipt stat of a final status (5.2.28).
ESME_DELIVERED = ("DELIVRD", 2)
ESME_EXPIRED = ("EXPIRED", 3)
ESME_UNDELIVERABLE = ("UNDELIV", 5)
ESME_ENROUTE = ("ENROUTE", 1)

# Messages whose status change reports somewhere: a callback URL or an ESME's receipt.
REPORTED: ColumnElement[bool] = or_(Message.callbackurl.is_not(None), Message.esme_receipt != 0)
# Those of the messages `ids` that report, to enqueue_status_callback: read from their rows even
# when the session holds them already (populate_existing), as the UPDATEs that changed their
# status leave the session's objects as they were.
REPORTED_MESSAGES = (
    select(Message).where(in_list(Message.id, "ids"), REPORTED).execution_options(populate_existing=True)
)


def esme_state(status: str, fail_code: int | None) -> tuple[str, int]:
    """The receipt stat and SMPP message_state of a message in this status."""
    if status == "DELIVERED":
        return ESME_DELIVERED
    if status == "FAIL":
        return ESME_EXPIRED if fail_code == sinch.EXPIRED else ESME_UNDELIVERABLE
    return ESME_ENROUTE


def esme_receipt(s: AsyncSession, msg: Message) -> None:
    """The deliver_sm receipt for the ESME that submitted `msg`, once its status is final."""
    if not msg.esme_receipt or msg.status not in ("DELIVERED", "FAIL"):
        return
    if msg.esme_receipt == 2 and msg.status == "DELIVERED":
        return  # registered_delivery 2: failures only
    stat, state = esme_state(msg.status, msg.fail_code)
    s.add(
        EsmeOutbox(
            account_id=msg.account_id,
            status="PENDING",
            source=msg.recipient,
            destination=msg.sender,
            body="",
            receipted_id=msg.msgid,
            message_state=state,
            stat=stat,
            submitted_at=msg.created_at,
            done_at=msg.done_at or datetime.now(UTC),
        )
    )
    outbox.esme_written(s, msg.account_id)


async def esme_receipts(s: AsyncSession, message_ids: Iterable[int]) -> None:
    """esme_receipt for each of these messages (failed by a sweep, not one by one)."""
    ids = list(message_ids)
    if ids:
        q = select(Message).where(Message.id.in_(ids), Message.esme_receipt != 0)
        for msg in (await s.execute(q)).scalars():
            esme_receipt(s, msg)


async def enqueue_status_callback(s: AsyncSession, msg: Message, base_url: str) -> None:
    esme_receipt(s, msg)
    if not msg.callbackurl:
        return
    if msg.batch_id is not None:  # a Sinch batch's recipient: its delivery report instead
        await batch_reports.recipient_callback(s, msg)
        return
    links: list[TrackedLink] = []
    if msg.track_link:
        links = list((await s.execute(select(TrackedLink).where(TrackedLink.message_id == msg.id))).scalars())
    outbox.enqueue(
        s,
        account_id=msg.account_id,
        kind="sms.status",
        ref=msg.msgid,
        url=msg.callbackurl,
        payload=message_json(msg, base_url, links),
        fast=True,
    )

"""A status change and its callback are written in one transaction."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.models import Message, TrackedLink
from gateway.services import batch_reports, outbox
from gateway.services.views import message_json


async def enqueue_status_callback(s: AsyncSession, msg: Message, base_url: str) -> None:
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

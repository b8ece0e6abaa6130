"""The core's side of smpp.types.SmppEvents."""

from __future__ import annotations

import logging

from gateway.workers.receipts import ReceiptApplier
from smpp.types import DeliveryReceipt, MoPart

log = logging.getLogger(__name__)


class InboundNotReady(Exception):
    """Raised for MO until inbound storage exists, so the SMSC keeps and redelivers it."""


class CoreSmppEvents:
    def __init__(self, receipts: ReceiptApplier) -> None:
        self._receipts = receipts
        self.bound = False

    async def on_receipt(self, receipt: DeliveryReceipt) -> None:
        await self._receipts.on_receipt(receipt)

    async def on_mo(self, part: MoPart) -> None:
        # Answering deliver_sm with an error keeps the SMSC responsible for the message
        # instead of acknowledging something we cannot store yet.
        log.warning("MO from %s to %s refused: inbound SMS is not enabled", part.source, part.destination)
        raise InboundNotReady("inbound SMS not enabled")

    def on_bind_state(self, bound: bool) -> None:
        self.bound = bound
        log.info("SMPP bind %s", "up" if bound else "down")

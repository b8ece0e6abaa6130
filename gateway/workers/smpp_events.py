"""The core's side of smpp.types.SmppEvents."""

from __future__ import annotations

import logging

from gateway.services.inbound import InboundService
from gateway.workers.receipts import ReceiptApplier
from smpp.types import DeliveryReceipt, MoPart

log = logging.getLogger(__name__)


class CoreSmppEvents:
    def __init__(self, receipts: ReceiptApplier, inbound: InboundService) -> None:
        self._receipts = receipts
        self._inbound = inbound
        self.bound = False

    async def on_receipt(self, receipt: DeliveryReceipt) -> None:
        await self._receipts.on_receipt(receipt)

    async def on_mo(self, part: MoPart) -> None:
        # Returns only once stored: the adapter acknowledges the deliver_sm after this.
        await self._inbound.receive(part)

    def on_bind_state(self, bound: bool) -> None:
        self.bound = bound
        log.info("SMPP bind %s", "up" if bound else "down")

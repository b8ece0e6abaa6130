"""The core's side of smpp.types.SmppEvents: one per SMSC connector, so receipts are matched
against the parts sent over that connector only."""

from __future__ import annotations

import logging
from collections.abc import Callable

from gateway.db.availability import DbOutage, is_outage
from gateway.services.inbound import InboundService
from gateway.workers.observer import NullObserver, Observer
from gateway.workers.receipts import ReceiptApplier
from smpp.types import DeliveryReceipt, MoPart, StoreUnavailable

log = logging.getLogger(__name__)


class CoreSmppEvents:
    def __init__(
        self,
        receipts: ReceiptApplier,
        inbound: InboundService,
        observer: Observer | None = None,
        db: DbOutage | None = None,
        connector: str = "default",
        bind_changed: Callable[[], None] | None = None,
    ) -> None:
        self._db = db or DbOutage()
        self._receipts = receipts
        self._inbound = inbound
        self._observer = observer or NullObserver()
        self.connector = connector
        self._bind_changed = bind_changed  # the bind report writes the new state

    async def on_receipt(self, receipt: DeliveryReceipt) -> None:
        self._observer.receipt(receipt.state.value)
        try:
            await self._receipts.on_receipt(receipt, self.connector)
        except Exception as exc:
            self._unavailable(exc, "storing a delivery receipt")
            raise

    async def on_mo(self, part: MoPart) -> None:
        self._observer.mo(self.connector)
        # Returns only once stored: the adapter acknowledges the deliver_sm after this.
        try:
            await self._inbound.receive(part, self.connector)
        except Exception as exc:
            self._unavailable(exc, "storing an inbound SMS")
            raise

    def _unavailable(self, exc: Exception, what: str) -> None:
        """An outage is reported once per interval and the SMSC asked to redeliver quietly."""
        if is_outage(exc):
            self._db.report(exc, what)
            raise StoreUnavailable(str(exc)) from exc

    def on_bind_state(self, bound: bool) -> None:
        # One call per bind of the connector; /metrics reads the connectors' binds themselves.
        log.info("SMPP bind %s", "up" if bound else "down", extra={"smsc": self.connector})
        if self._bind_changed is not None:
            self._bind_changed()

"""Cost per message: parts x the price configured for the longest matching destination prefix."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal


class PriceList:
    def __init__(self, prices: Mapping[str, float]) -> None:
        # Longest prefix first so "8190" beats "81" beats "".
        self._prices = sorted(
            ((p.lstrip("+"), Decimal(str(v))) for p, v in prices.items()), key=lambda kv: -len(kv[0])
        )

    def price_per_part(self, recipient: str) -> Decimal:
        digits = recipient.lstrip("+")
        for prefix, price in self._prices:
            if digits.startswith(prefix):
                return price
        return Decimal(0)

    def covers(self, recipient: str) -> bool:
        """Some prefix of the table (the catch-all "" included) prices `recipient`."""
        digits = recipient.lstrip("+")
        return any(digits.startswith(prefix) for prefix, _ in self._prices)

    def cost(self, recipient: str, parts: int) -> Decimal:
        return self.price_per_part(recipient) * parts

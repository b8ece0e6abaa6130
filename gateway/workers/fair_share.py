"""Caps on the webhook POSTs one node has in flight per receiver host and per account.

A receiver that hangs until the timeout holds its slot all that while; without caps, one
tenant's backlog to a dead receiver takes every slot and every other tenant's callbacks wait
behind it. With them, a host or an account at its cap is skipped when work is taken, and the
other slots stay free for everyone else.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class FairShare:
    per_host: int
    per_account: int
    hosts: Counter[str] = field(default_factory=Counter)
    accounts: Counter[int] = field(default_factory=Counter)

    def full_hosts(self) -> list[str]:
        return [h for h, n in self.hosts.items() if n >= self.per_host]

    def full_accounts(self) -> list[int]:
        return [a for a, n in self.accounts.items() if n >= self.per_account]

    def take(self, host: str, account_id: int) -> bool:
        """A slot for one POST, unless its host or account is at its cap."""
        if self.hosts[host] >= self.per_host or self.accounts[account_id] >= self.per_account:
            return False
        self.hosts[host] += 1
        self.accounts[account_id] += 1
        return True

    def give_back(self, host: str, account_id: int) -> None:
        self.hosts[host] -= 1
        self.accounts[account_id] -= 1
        # Drop zero counts: the counters only hold what is in flight now.
        if self.hosts[host] <= 0:
            del self.hosts[host]
        if self.accounts[account_id] <= 0:
            del self.accounts[account_id]

"""What every SMSC test peer offers, so one test can run against each of them.

Two peers implement it: our own simulator (smpp/simulator.py, wrapped by
tests/peers/simulator_peer.py) and an SMSC that is not our code (the npm `smpp`
package's server, tests/peers/node_smsc/, wrapped by tests/peers/node_smsc.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ReceivedSubmit:
    """A submit_sm as the peer saw it on the wire (after any throttled retries were refused)."""

    source_addr: str
    source_addr_ton: int
    destination_addr: str
    data_coding: int
    esm_class: int
    registered_delivery: int
    short_message: bytes  # raw octets, UDH included when esm_class has 0x40
    message_id: str  # the id the peer returned in submit_sm_resp


class SmscPeer(Protocol):
    host: str
    port: int
    system_id: str
    password: str

    async def submits(self) -> list[ReceivedSubmit]:
        """Every accepted submit_sm so far, in arrival order."""

    async def configure(
        self,
        *,
        throttle_next: int = 0,  # answer the next N submit_sm with ESME_RTHROTTLED (0x58)
        drop_after: int | None = None,  # close the socket right after accepting the Nth submit from now
        dlr_mode: str = "both",  # "tlv" | "text" | "both" | "none": how DLRs carry the id
        id_format: str = "hex",  # "hex" | "dec": message ids returned in submit_sm_resp
        dlr_id_format: str | None = None,  # id format inside the DLR text; None = same as id_format
        dlr_stat: str = "DELIVRD",  # stat word in DLRs (DELIVRD, UNDELIV, EXPIRED, REJECTD...)
        dlr_delay_ms: int = 0,
        reject_binds: bool = False,  # answer binds with ESME_RBINDFAIL
        respond_delay_ms: int = 0,  # delay before each submit_sm_resp
    ) -> None:
        """Change behaviour from now on; every call resets omitted knobs to these defaults."""

    async def bind_count(self) -> int:
        """Successful binds since start (a reconnect shows as +1)."""

    async def inject_mo(
        self,
        source: str,
        destination: str,
        short_message: bytes,
        data_coding: int = 0,
        esm_class: int = 0,
    ) -> None:
        """Send a mobile-originated deliver_sm to the bound ESME."""

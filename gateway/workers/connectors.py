"""The SMSC connectors of the configuration, built for the app: each one's client settings
(TLS context included), its sending-rate cap, and the events that tell the core which
connector a receipt or an MO came from."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.config import ConfigError, ConnectorConfig
from gateway.db.availability import DbOutage
from gateway.db.submit_rate import ClusterRate
from smpp.client import Pace, SmppClientConfig
from smpp.connector import Connector
from smpp.pacing import TokenBucket
from smpp.types import SmppEvents


@dataclass(frozen=True)
class ConnectorPlan:
    """A connector checked at start-up, ready to build."""

    settings: ConnectorConfig
    client: SmppClientConfig


def plan(settings: ConnectorConfig) -> ConnectorPlan:
    """The client settings of one connector; ConfigError names the connector and the file
    that cannot be used."""
    return ConnectorPlan(
        settings,
        SmppClientConfig(
            host=settings.host,
            port=settings.port,
            system_id=settings.system_id,
            password=settings.password,
            system_type=settings.system_type,
            name=settings.id,
            window=settings.window,
            enquire_link_interval=settings.enquire_link_interval,
            response_timeout=settings.response_timeout,
            max_inbound_in_flight=settings.max_inbound_in_flight,
            tls=_tls_context(settings) if settings.tls else None,
            data_coding=settings.data_coding,
            alnum_source_ton=settings.alnum_source_ton,
            alnum_source_npi=settings.alnum_source_npi,
            numeric_source_ton=settings.numeric_source_ton,
            numeric_source_npi=settings.numeric_source_npi,
            dest_ton=settings.dest_ton,
            dest_npi=settings.dest_npi,
        ),
    )


def _tls_context(c: ConnectorConfig) -> ssl.SSLContext:
    """Certificate and host name checked against tls_ca_file (else the system's CAs); the
    client certificate sent when one is set."""
    if c.tls_key_file and not c.tls_cert_file:
        raise ConfigError(f"connector {c.id}: tls_key_file is set but tls_cert_file is not")
    try:
        context = ssl.create_default_context(cafile=c.tls_ca_file or None)
        if c.tls_cert_file:
            context.load_cert_chain(c.tls_cert_file, c.tls_key_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"connector {c.id}: TLS files unusable: {exc}") from None
    return context


class Connectors(Mapping[str, Connector]):
    """The app's connectors by id, in configuration order (the first is where a message no
    routing rule matches goes)."""

    def __init__(self, connectors: list[Connector]) -> None:
        self._by_id = {c.id: c for c in connectors}

    def __getitem__(self, key: str) -> Connector:
        return self._by_id[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def bound_binds(self) -> dict[str, int]:
        """Binds up per connector: gateway_smpp_bound."""
        return {cid: c.bound_binds for cid, c in self._by_id.items()}

    async def run(self) -> None:
        await asyncio.gather(*(c.run() for c in self._by_id.values()))

    async def stop(self) -> None:
        await asyncio.gather(*(c.stop() for c in self._by_id.values()))


def build(
    plans: list[ConnectorPlan],
    events: Callable[[str], SmppEvents],
    sessions: async_sessionmaker[AsyncSession],
    shared_rate: bool,
    db: DbOutage,
) -> Connectors:
    """Every connector with its events and rate cap; `shared_rate` (PostgreSQL) shares each
    cap with the other nodes through the database, else it holds for this process."""
    built = []
    for p in plans:
        s = p.settings
        pace: Pace | None = None
        if s.max_submits_per_second:
            if shared_rate:
                pace = ClusterRate(sessions, s.id, s.max_submits_per_second, db).take
            else:
                pace = TokenBucket(s.max_submits_per_second).take
        built.append(
            Connector(
                s.id,
                p.client,
                events(s.id),
                binds=s.binds,
                separate_receiver=s.bind_mode == "transmitter_receiver",
                pace=pace,
            )
        )
    return Connectors(built)

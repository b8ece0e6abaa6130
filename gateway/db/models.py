"""SQLAlchemy models. Every change here needs an alembic migration in migrations/versions."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite has no 64-bit autoincrement type name; PostgreSQL gets BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC on every engine, returned as aware UTC.

    SQLite drops tz info and PostgreSQL would convert to the session zone; storing
    naive UTC gives both engines the same comparisons and the same wire format.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sid: Mapped[str] = mapped_column(String(32), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    freeform: Mapped[bool] = mapped_column(Boolean, default=False)
    webhook_secret: Mapped[str] = mapped_column(String(128))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Template(Base):
    __tablename__ = "templates"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    uid: Mapped[str] = mapped_column(String(32), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    content: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="PENDING")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Message(Base):
    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    msgid: Mapped[str] = mapped_column(String(32), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    template_id: Mapped[int | None] = mapped_column(ForeignKey("templates.id"), index=True)
    sender: Mapped[str] = mapped_column(String(20))
    recipient: Mapped[str] = mapped_column(String(20))
    body: Mapped[str] = mapped_column(Text)
    parts: Mapped[int] = mapped_column(Integer)
    cost: Mapped[Decimal] = mapped_column(Numeric(14, 4))
    status: Mapped[str] = mapped_column(String(16), default="QUEUED")
    tags: Mapped[str] = mapped_column(Text, default="")
    callbackurl: Mapped[str | None] = mapped_column(Text)
    lt_callbackurl: Mapped[str | None] = mapped_column(Text)
    track_link: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_time: Mapped[datetime | None] = mapped_column()
    done_at: Mapped[datetime | None] = mapped_column()
    # Dispatcher lease: a QUEUED row is worked on by whoever holds an unexpired lease.
    claimed_until: Mapped[datetime | None] = mapped_column()
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_messages_account_created", "account_id", "created_at"),
        Index("ix_messages_status_next", "status", "next_attempt_at"),
    )


class MessagePart(Base):
    __tablename__ = "message_parts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    smsc_id: Mapped[str] = mapped_column(String(65), index=True)  # normalized (smpp.dlr.normalize_id)
    state: Mapped[str] = mapped_column(String(16), default="SUBMITTED")
    stat: Mapped[str | None] = mapped_column(String(16))


class OrphanReceipt(Base):
    """A receipt that arrived before its submit's SMSC id was stored; matched by a sweep."""

    __tablename__ = "orphan_receipts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    smsc_id: Mapped[str] = mapped_column(String(65), index=True)
    state: Mapped[str] = mapped_column(String(16))
    stat: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """Outbox of signed POSTs (status callbacks, link-access callbacks), delivered at least once."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    ref: Mapped[str] = mapped_column(String(64))  # msgid or other id the payload is about
    url: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(64), default="application/json")
    status: Mapped[str] = mapped_column(String(16), default="PENDING")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column()
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column()
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),)


class TrackedLink(Base):
    __tablename__ = "tracked_links"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    url: Mapped[str] = mapped_column(Text)
    first_access_at: Mapped[datetime | None] = mapped_column()
    access_count: Mapped[int] = mapped_column(Integer, default=0)

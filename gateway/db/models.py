"""SQLAlchemy models. Every change here needs an alembic migration in gateway/db/migrations/versions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
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
    # Operator-set toll-fraud guards (gateway/services/dialing.py); NULL: the global setting.
    outbound_allow_prefixes: Mapped[str | None] = mapped_column(Text)  # comma-separated, "" = none
    outbound_max_concurrent: Mapped[int | None] = mapped_column(Integer)
    outbound_max_per_minute: Mapped[int | None] = mapped_column(Integer)
    verified_callers: Mapped[str | None] = mapped_column(Text)  # comma-separated E.164
    # Operator-set API rate limit (requests/s, 0 = none; gateway/http/ratelimit.py) and burst;
    # NULL: ratelimit.rate / ratelimit.burst apply.
    rate_limit: Mapped[float | None] = mapped_column(Float)
    rate_burst: Mapped[int | None] = mapped_column(Integer)


class SenderId(Base):
    """A sender id an account may use besides the SINs it holds: operator-managed
    (gateway/services/senders.py). Numeric ones are stored as E.164 with +."""

    __tablename__ = "sender_ids"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    sender: Mapped[str] = mapped_column(String(20))
    # "operator" (gateway accounts senders add) or "migration" (used before the lists existed).
    origin: Mapped[str] = mapped_column(String(16), default="operator")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("account_id", "sender"),)


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


class Batch(Base):
    """A Sinch-style batch: one text to up to 1,000 recipients, each of them a messages row
    (batch_id) sent like any other message."""

    __tablename__ = "batches"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    uid: Mapped[str] = mapped_column(String(32), unique=True)  # the batch id in the API
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    sender: Mapped[str] = mapped_column(String(20))
    recipients: Mapped[str] = mapped_column(Text)  # JSON list of E.164 numbers, as given (deduplicated)
    body: Mapped[str] = mapped_column(Text)  # with its ${parameter}s
    parameters: Mapped[str | None] = mapped_column(Text)  # JSON {name: {recipient | "default": value}}
    delivery_report: Mapped[str] = mapped_column(String(24), default="none")
    send_at: Mapped[datetime | None] = mapped_column()
    expire_at: Mapped[datetime] = mapped_column()
    callback_url: Mapped[str | None] = mapped_column(Text)
    client_reference: Mapped[str | None] = mapped_column(String(128))
    flash_message: Mapped[bool] = mapped_column(Boolean, default=False)
    feedback_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    truncate_concat: Mapped[bool] = mapped_column(Boolean, default=False)
    max_parts: Mapped[int | None] = mapped_column(Integer)  # max_number_of_message_parts
    canceled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When the batch's summary/full delivery report was written to the outbox (once).
    reported_at: Mapped[datetime | None] = mapped_column()

    __table_args__ = (
        Index("ix_batches_account_created", "account_id", "created_at"),
        # The batches whose summary report is still to be written, for the batch sweep.
        Index(
            "ix_batches_unreported",
            "expire_at",
            postgresql_where=text("reported_at IS NULL"),
            sqlite_where=text("reported_at IS NULL"),
        ),
    )


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
    # The connector (smpp.connectors id) that took the message, or refused it for good.
    smsc: Mapped[str | None] = mapped_column(String(32))
    # A batch's recipient: its batch, when it stops being worth sending (QUEUED after it: FAIL),
    # and the Sinch delivery report code of a FAIL the gateway decided itself (cancelled,
    # expired, opted out, ...; NULL when the SMSC did).
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"), index=True)
    expire_at: Mapped[datetime | None] = mapped_column()
    fail_code: Mapped[int | None] = mapped_column(Integer)
    # Submitted over the SMPP server with registered_delivery 1 (any final status) or 2 (only a
    # failure): it goes back to the ESME as a deliver_sm receipt (esme_deliveries); 0 none.
    esme_receipt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Set for 8-bit data from the SMPP server (data_coding 2 or 4): `body` holds its octets in
    # hex, sent as they are.
    data_coding: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_messages_account_created", "account_id", "created_at"),
        Index("ix_messages_status_next", "status", "next_attempt_at"),
        # A batch's messages by recipient: which batch an MO from that number answers.
        Index(
            "ix_messages_batch_recipient",
            "recipient",
            "created_at",
            postgresql_where=text("batch_id IS NOT NULL"),
            sqlite_where=text("batch_id IS NOT NULL"),
        ),
        # Queued messages with an expiry, for the sweep that fails them once it has passed.
        Index(
            "ix_messages_queued_expiry",
            "expire_at",
            postgresql_where=text("status = 'QUEUED' AND expire_at IS NOT NULL"),
            sqlite_where=text("status = 'QUEUED' AND expire_at IS NOT NULL"),
        ),
    )


class MessagePart(Base):
    __tablename__ = "message_parts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    smsc_id: Mapped[str] = mapped_column(String(65), index=True)  # normalized (smpp.dlr.normalize_id)
    # The connector it went out on: its receipt comes from there, and an SMSC id is unique only
    # within one SMSC.
    connector: Mapped[str] = mapped_column(String(32), server_default="default")
    state: Mapped[str] = mapped_column(String(16), default="SUBMITTED")
    stat: Mapped[str | None] = mapped_column(String(16))
    err: Mapped[str | None] = mapped_column(String(16))  # the receipt's error code, as it came


class OrphanReceipt(Base):
    """A receipt that arrived before its submit's SMSC id was stored; matched by a sweep."""

    __tablename__ = "orphan_receipts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    smsc_id: Mapped[str] = mapped_column(String(65), index=True)
    connector: Mapped[str] = mapped_column(String(32), server_default="default")  # where it came from
    state: Mapped[str] = mapped_column(String(16))
    stat: Mapped[str] = mapped_column(String(16))
    err: Mapped[str | None] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class SmppRateWindow(Base):
    """A connector's submits in the current second across every node (PostgreSQL): its
    max_submits_per_second is taken from here in blocks (gateway/db/submit_rate.py)."""

    __tablename__ = "smpp_rate_windows"
    connector: Mapped[str] = mapped_column(String(32), primary_key=True)
    epoch_second: Mapped[int] = mapped_column(BigInteger)  # Unix time by the database's clock
    taken: Mapped[int] = mapped_column(Integer)


class SmscBind(Base):
    """One SMPP bind of one gateway node as that node last reported it
    (gateway/workers/bind_report.py), so the operator's console shows every node's binds. A row
    its node has not refreshed by `stale_after` is shown stale: the node stopped reporting."""

    __tablename__ = "smsc_binds"
    node: Mapped[str] = mapped_column(String(128), primary_key=True)  # dispatcher.node_id
    bind: Mapped[str] = mapped_column(String(64), primary_key=True)  # connector#1, connector#rx
    connector: Mapped[str] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(16))  # transceiver, transmitter, receiver
    peer: Mapped[str] = mapped_column(String(300))  # the SMSC's host:port
    tls: Mapped[bool] = mapped_column(Boolean)
    bound: Mapped[bool] = mapped_column(Boolean)
    since: Mapped[datetime] = mapped_column()  # in this state since (as the node saw it)
    updated_at: Mapped[datetime] = mapped_column()
    stale_after: Mapped[datetime] = mapped_column()  # a few of the node's report intervals on


class WebhookDelivery(Base):
    """Outbox of signed POSTs (status callbacks, link-access callbacks), delivered at least once."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # X-Gateway-Delivery-Id, the same on every retry so receivers can deduplicate. Random, not
    # the row id, which would tell every tenant how many webhooks the gateway sends. Never
    # looked up, so not indexed.
    uid: Mapped[str] = mapped_column(String(32), default=lambda: uuid.uuid4().hex)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    ref: Mapped[str] = mapped_column(String(64))  # msgid or other id the payload is about
    url: Mapped[str] = mapped_column(Text)
    # host:port of `url` (outbox.receiver_host): the sender caps POSTs in flight per receiver.
    receiver_host: Mapped[str] = mapped_column(String(255))
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

    __table_args__ = (
        # The claim's order, so its LIMIT stops the scan (migration 0008 says why).
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at", "id"),
        # Per-subject ordering in the claim: is an earlier delivery of this ref still pending?
        Index(
            "ix_webhook_deliveries_pending_ref",
            "ref",
            "id",
            postgresql_where=text("status = 'PENDING'"),
            sqlite_where=text("status = 'PENDING'"),
        ),
        # One receiver's backlog (what is pending for a dead host, and clearing it).
        Index("ix_webhook_deliveries_host_status", "receiver_host", "status"),
    )


class WebhookAttempt(Base):
    """A webhook POST that did not succeed: when, the HTTP status (None: no HTTP answer) and when
    the next try is due (None: given up). A successful attempt needs no row: the delivery's own
    row records it, so the common path writes nothing here."""

    __tablename__ = "webhook_attempts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_deliveries.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column()
    status_code: Mapped[int | None] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None] = mapped_column()


class TrackedLink(Base):
    __tablename__ = "tracked_links"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    url: Mapped[str] = mapped_column(Text)
    first_access_at: Mapped[datetime | None] = mapped_column()
    access_count: Mapped[int] = mapped_column(Integer, default=0)


class Number(Base):
    """Operator's number inventory, shared by SIN (SMS in) and DIN (voice in)."""

    __tablename__ = "numbers"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    uid: Mapped[str] = mapped_column(String(32), unique=True)  # sin_uid / din_uid in the API
    number: Mapped[str] = mapped_column(String(20), unique=True)  # E.164 with +
    country_code: Mapped[str] = mapped_column(String(2), index=True)  # ISO 3166-1 alpha-2
    prefix: Mapped[str] = mapped_column(String(16), index=True)  # digits, e.g. 813
    sms: Mapped[bool] = mapped_column(Boolean, default=False)
    voice: Mapped[bool] = mapped_column(Boolean, default=False)
    monthly_cost: Mapped[Decimal] = mapped_column(Numeric(14, 4))
    minute_cost: Mapped[Decimal] = mapped_column(Numeric(14, 4))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class NumberSubscription(Base):
    """An account's subscription to a number as SIN or DIN; at most one per (number, kind)."""

    __tablename__ = "number_subscriptions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    number_id: Mapped[int] = mapped_column(ForeignKey("numbers.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # "sin" | "din"
    action_url: Mapped[str | None] = mapped_column(Text)
    voicemail_url: Mapped[str | None] = mapped_column(Text)  # DIN: webhook for new voicemails
    status_url: Mapped[str | None] = mapped_column(Text)  # DIN: webhook for call events
    # SIN: the MO webhook's shape, "xoxzo" (form-encoded) or "sinch" (mo_text JSON).
    webhook_format: Mapped[str] = mapped_column(String(8), default="xoxzo", server_default="xoxzo")
    # SIN: where its MO go: "webhook" (action_url), "smpp" (the account's SMPP receiver; the
    # webhook instead while the account has no SMPP credentials) or "both".
    mo_delivery: Mapped[str] = mapped_column(String(8), default="webhook", server_default="webhook")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("number_id", "kind"),)


class MoPartRow(Base):
    """A part of a concatenated MO waiting for its siblings."""

    __tablename__ = "mo_parts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source: Mapped[str] = mapped_column(String(32))
    destination: Mapped[str] = mapped_column(String(32))
    ref: Mapped[int] = mapped_column(Integer)
    total: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set when the message was assembled; kept a while so a redelivered part is recognised.
    assembled_at: Mapped[datetime | None] = mapped_column()
    smsc: Mapped[str | None] = mapped_column(String(32))  # the connector it came over

    __table_args__ = (UniqueConstraint("source", "destination", "ref", "total", "seq"),)


class InboundMessage(Base):
    __tablename__ = "inbound_messages"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    uid: Mapped[str] = mapped_column(String(32), unique=True)
    # NULL when the number had no SIN subscriber: kept and counted, never dropped.
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    number_id: Mapped[int | None] = mapped_column(ForeignKey("numbers.id"))
    sender: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)
    parts: Mapped[int] = mapped_column(Integer, default=1)
    keyword: Mapped[str | None] = mapped_column(String(16))  # STOP / START / HELP handling applied
    client_reference: Mapped[str | None] = mapped_column(String(128))
    operator_id: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The SMSC connector (smpp.connectors id) that delivered it (the last part of a long one);
    # NULL for MO received before 0016.
    smsc: Mapped[str | None] = mapped_column(String(32))

    __table_args__ = (
        Index("ix_inbound_messages_account_received", "account_id", "received_at"),
        Index("ix_inbound_messages_recipient", "recipient"),
    )


class OptOut(Base):
    __tablename__ = "opt_outs"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    number: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("account_id", "number"),)


class AutoReplyRule(Base):
    __tablename__ = "auto_reply_rules"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    uid: Mapped[str] = mapped_column(String(32), unique=True)
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("number_subscriptions.id", ondelete="CASCADE"), index=True
    )
    match: Mapped[str] = mapped_column(String(8))  # "keyword" | "regex"
    pattern: Mapped[str] = mapped_column(String(200))
    reply: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Call(Base):
    """One inbound (DIN) or outbound call, with what ran on it; written for every call."""

    __tablename__ = "calls"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    uid: Mapped[str] = mapped_column(String(32), unique=True)  # callid in the API
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    number_id: Mapped[int | None] = mapped_column(ForeignKey("numbers.id"))
    direction: Mapped[str] = mapped_column(String(8))  # "inbound" | "outbound"
    caller: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # QUEUED, IN_PROGRESS, COMPLETED, FAILED, NO_ANSWER, BUSY
    channel: Mapped[str | None] = mapped_column(String(128))
    asterisk_uniqueid: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    answered_at: Mapped[datetime | None] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
    duration: Mapped[int] = mapped_column(Integer, default=0)  # seconds
    cost: Mapped[Decimal] = mapped_column(Numeric(14, 4), default=Decimal(0))
    actions: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of the actions run
    result: Mapped[str | None] = mapped_column(Text)  # how the call ended (hangup, transferred, ...)
    # Inbound transfers: the last Dial's DIALSTATUS, and when answered the talk time (no ringing).
    transfer_status: Mapped[str | None] = mapped_column(String(16))
    transfer_seconds: Mapped[Decimal | None] = mapped_column(Numeric(10, 3))
    error: Mapped[str | None] = mapped_column(Text)  # why the fallback ran, if it did
    # Inbound: JSON list, one object per gather: digits, and the script fetched (url, status, error).
    steps: Mapped[str | None] = mapped_column(Text)
    # Outbound calls: what to play, and where to report.
    recording_url: Mapped[str | None] = mapped_column(Text)
    tts_message: Mapped[str | None] = mapped_column(Text)
    tts_lang: Mapped[str | None] = mapped_column(String(35))
    callbackurl: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_calls_account_started", "account_id", "started_at"),
        # The account's open calls, counted for its concurrent-call limit on every new call.
        Index(
            "ix_calls_open_by_account",
            "account_id",
            postgresql_where=text("ended_at IS NULL"),
            sqlite_where=text("ended_at IS NULL"),
        ),
    )


class _CallAudio:
    """What a caller left on a call, as a WAV file: voicemails and recordings alike."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    uid: Mapped[str] = mapped_column(String(32), unique=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    caller: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(String(32))
    duration: Mapped[float] = mapped_column(Numeric(10, 2), default=0)
    path: Mapped[str] = mapped_column(Text)  # the WAV file, in its kind's store
    size: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Voicemail(_CallAudio, Base):
    __tablename__ = "voicemails"


class Recording(_CallAudio, Base):
    """What a script's `record` command took: kept like a voicemail, counted apart from them."""

    __tablename__ = "recordings"


class ConsoleSession(Base):
    """A browser signed in to the web console (gateway/http/console). The cookie holds a random
    token; only its SHA-256 is stored, so a copy of the table signs nobody in. A row that is
    gone (logout, expiry, token rotation) is a session that no longer works, on every node."""

    __tablename__ = "console_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))  # "customer" | "operator"
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), index=True)  # customer
    operator: Mapped[str | None] = mapped_column(String(64))  # the operator's user name
    csrf: Mapped[str] = mapped_column(String(64))  # every form POST carries it back
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)  # absolute end
    idle_until: Mapped[datetime] = mapped_column()  # pushed forward while the browser is in use


class SmppCredential(Base):
    """An account's login to the SMPP server: system_id and a scrypt hash of its password."""

    __tablename__ = "smpp_credentials"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), unique=True)
    system_id: Mapped[str] = mapped_column(String(16), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EsmeOutbox(Base):
    """A deliver_sm (receipt or MO) for an account's SMPP receiver, kept until the ESME
    acknowledges it; claimed with a lease by the session sending it (gateway/db/leases.py)."""

    __tablename__ = "esme_deliveries"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    status: Mapped[str] = mapped_column(String(16), default="PENDING")
    source: Mapped[str] = mapped_column(String(32))
    destination: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text, default="")
    receipted_id: Mapped[str | None] = mapped_column(String(32))  # a receipt: our msgid
    message_state: Mapped[int | None] = mapped_column(Integer)
    stat: Mapped[str] = mapped_column(String(8), default="")
    submitted_at: Mapped[datetime | None] = mapped_column()
    done_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column()
    claimed_by: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("ix_esme_deliveries_account_next", "account_id", "next_attempt_at"),)


class EsmePart(Base):
    """A part of a long message submitted over the SMPP server, waiting for its siblings; every
    part was answered with `msgid`, the message the parts become once all are in."""

    __tablename__ = "esme_parts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    source: Mapped[str] = mapped_column(String(32))
    destination: Mapped[str] = mapped_column(String(32))
    ref: Mapped[int] = mapped_column(Integer)
    total: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    msgid: Mapped[str] = mapped_column(String(32))
    esme_receipt: Mapped[int] = mapped_column(Integer, default=0)  # registered_delivery
    data_coding: Mapped[int | None] = mapped_column(Integer)  # 8-bit data: `text` is hex
    received_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("account_id", "source", "destination", "ref", "total", "seq"),)

"""Typed keys for what the app factory puts on the aiohttp Application and Request."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gateway.config import Config
from gateway.egress.policy import SsrfPolicy
from gateway.services.accounts import AccountInfo, AccountService
from gateway.services.batches import BatchService
from gateway.services.inbound import InboundService
from gateway.services.messages import MessageService
from gateway.services.numbers import NumberService
from gateway.services.reports import Reports
from gateway.services.templates import TemplateService
from gateway.services.tracking import LinkTracker
from gateway.voice.calls import CallService
from gateway.workers.connectors import Connectors

CONFIG = web.AppKey("config", Config)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONS = web.AppKey("sessions", async_sessionmaker[AsyncSession])
ACCOUNTS = web.AppKey("accounts", AccountService)
MESSAGES = web.AppKey("messages", MessageService)
TEMPLATES = web.AppKey("templates", TemplateService)
LINKS = web.AppKey("links", LinkTracker)
NUMBERS = web.AppKey("numbers", NumberService)
INBOUND = web.AppKey("inbound", InboundService)
BATCHES = web.AppKey("batches", BatchService)
REPORTS = web.AppKey("reports", Reports)  # read-only views: console pages, call lists, usage
URL_POLICY = web.AppKey("url_policy", SsrfPolicy)  # where customer URLs may point
CALLS = web.AppKey("calls", CallService)
CONNECTORS = web.AppKey("smsc_connectors", Connectors)
# This gateway process among the nodes on one database: dispatcher.node_id, else host:HTTP port
# (the same after a restart, so a restarted node takes its rows of smsc_binds back).
NODE_ID = web.AppKey("node_id", str)

ACCOUNT = web.RequestKey("account", AccountInfo)

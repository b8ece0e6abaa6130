"""SIN (SMS-in number) inventory and subscriptions: /sms/sins/..."""

from __future__ import annotations

from aiohttp import web

routes = web.RouteTableDef()

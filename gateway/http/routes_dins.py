"""DIN (voice number) inventory and subscriptions: /voice/dins/..., the same calls as SINs."""

from __future__ import annotations

from gateway.http.routes_sins import number_routes

routes = number_routes("din", "/voice/dins")

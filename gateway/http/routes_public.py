"""Unauthenticated routes: tracked-link redirects and the health check."""

from __future__ import annotations

from aiohttp import web

from gateway.http.errors import json_response, not_found
from gateway.keys import LINKS

routes = web.RouteTableDef()


@routes.get("/l/{code}")
async def follow_link(request: web.Request) -> web.StreamResponse:
    target = await request.app[LINKS].open(request.match_info["code"])
    if target is None:
        raise not_found("No such link.")
    raise web.HTTPFound(target)


@routes.get("/healthz")
async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})

"""SIN (SMS-in number) inventory and subscriptions: /sms/sins/...

`number_routes(kind, base)` builds the Xoxzo number API for either kind, so the DIN module is
`routes = number_routes("din", "/voice/dins")`. GETs are also routed without the trailing
slash (xoxzo-cloudpy sometimes omits it)."""

from __future__ import annotations

from aiohttp import web

from gateway.http.errors import json_response
from gateway.http.params import optional_str, read_params
from gateway.keys import ACCOUNT, NUMBERS, URL_POLICY
from gateway.services.errors import FieldErrors
from gateway.services.numbers import Kind, parse_filters

FILTERS = ("country", "prefix")


def query_filters(request: web.Request) -> tuple[str | None, str | None]:
    """`?country=JP` and/or `?prefix=813`; any other parameter is a 400 naming it."""
    errors: dict[str, list[str]] = {}
    for name in set(request.query.keys()):
        if name not in FILTERS:
            errors[name] = ["Unknown filter; use country or prefix."]
        elif len(request.query.getall(name)) > 1:
            errors[name] = ["Give this filter at most once."]
    country, prefix = request.query.get("country"), request.query.get("prefix")
    try:
        parse_filters(country, prefix)
    except FieldErrors as exc:
        errors.update(exc.body)
    if errors:
        raise FieldErrors(errors)
    return country, prefix


def number_routes(kind: Kind, base: str) -> web.RouteTableDef:
    routes = web.RouteTableDef()
    uid_field = f"{kind}_uid"
    subs = f"{base}/subscriptions"

    @routes.get(f"{base}/")
    @routes.get(base)
    async def list_available(request: web.Request) -> web.Response:
        country, prefix = query_filters(request)
        return json_response(await request.app[NUMBERS].list_available(kind, country, prefix))

    @routes.post(f"{subs}/")
    async def subscribe(request: web.Request) -> web.Response:
        params = await read_params(request)
        uid = optional_str(params, uid_field)
        out = await request.app[NUMBERS].subscribe(request[ACCOUNT].id, kind, uid)
        return json_response(out, status=201)

    @routes.get(f"{subs}/")
    @routes.get(subs)
    async def list_subscriptions(request: web.Request) -> web.Response:
        return json_response(await request.app[NUMBERS].list_subscriptions(request[ACCOUNT].id, kind))

    @routes.get(f"{subs}/{{uid}}/")
    @routes.get(f"{subs}/{{uid}}")
    async def get_subscription(request: web.Request) -> web.Response:
        out = await request.app[NUMBERS].get_subscription(
            request[ACCOUNT].id, kind, request.match_info["uid"]
        )
        return json_response(out)

    @routes.post(f"{subs}/{{uid}}/")
    async def set_action_url(request: web.Request) -> web.Response:
        params = await read_params(request)
        out = await request.app[NUMBERS].set_action_url(
            request[ACCOUNT].id,
            kind,
            request.match_info["uid"],
            optional_str(params, "action_url"),
            optional_str(params, "voicemail_url"),
            url_policy=request.app[URL_POLICY],
        )
        return json_response(out)

    @routes.delete(f"{subs}/{{uid}}/")
    async def unsubscribe(request: web.Request) -> web.Response:
        await request.app[NUMBERS].unsubscribe(request[ACCOUNT].id, kind, request.match_info["uid"])
        return json_response({})

    return routes


routes = number_routes("sin", "/sms/sins")
_AUTOREPLIES = "/sms/sins/subscriptions/{uid}/autoreplies"


@routes.get(f"{_AUTOREPLIES}/")
@routes.get(_AUTOREPLIES)
async def list_autoreplies(request: web.Request) -> web.Response:
    return json_response(
        await request.app[NUMBERS].list_rules(request[ACCOUNT].id, request.match_info["uid"])
    )


@routes.post(f"{_AUTOREPLIES}/")
async def add_autoreply(request: web.Request) -> web.Response:
    params = await read_params(request)
    out = await request.app[NUMBERS].add_rule(
        request[ACCOUNT].id,
        request.match_info["uid"],
        optional_str(params, "match"),
        optional_str(params, "pattern"),
        optional_str(params, "reply"),
    )
    return json_response(out, status=201)


@routes.delete(f"{_AUTOREPLIES}/{{rule_id}}/")
async def delete_autoreply(request: web.Request) -> web.Response:
    await request.app[NUMBERS].delete_rule(
        request[ACCOUNT].id, request.match_info["uid"], request.match_info["rule_id"]
    )
    return json_response({})

"""SIN (SMS-in number) inventory and subscriptions: /sms/sins/..., and the SINs' auto-reply rules.

`number_routes` declares the Xoxzo number API for either kind, so the DIN module is the same
call with its own models. GETs are also routed without the trailing slash (xoxzo-cloudpy
sometimes omits it)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Self

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, Field, ValidationInfo, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from gateway.http.api import Json, Query, Routes, array_of, refusal
from gateway.http.fields import (
    REQUIRED,
    Text,
    Url,
    documented,
    no_controls,
    optional,
    reason,
    required,
    words,
)
from gateway.http.responses import AutoReply, Empty, SinNumber, SinSubscription
from gateway.keys import ACCOUNT, NUMBERS
from gateway.services.numbers import (
    MATCHES,
    MAX_REPLY,
    WEBHOOK_FORMATS,
    Kind,
    parse_filters,
    pattern_problem,
)


def _country(value: Any) -> str | None:
    text = optional(value)
    return None if text is None else reason(lambda: parse_filters(text, None))[0]


def _prefix(value: Any) -> str | None:
    text = optional(value)
    return None if text is None else reason(lambda: parse_filters(None, text))[1]


class Filters(Query):
    unknown: ClassVar[str] = "Unknown filter; use country or prefix."
    repeated: ClassVar[str] = "Give this filter at most once."
    country: Annotated[
        str | SkipJsonSchema[None],
        BeforeValidator(_country),
        documented(pattern="^[A-Za-z]{2}$"),
    ] = Field(None, description="ISO 3166-1 alpha-2 code, e.g. JP.")
    prefix: Annotated[
        str | SkipJsonSchema[None], BeforeValidator(_prefix), documented(pattern="^[0-9]+$")
    ] = Field(None, description="Digits the number starts with (after +), e.g. 813.")


def _din_only(value: Any) -> None:
    if value is not None:
        raise ValueError("Only DIN subscriptions take a voicemail_url.")


def _status_din_only(value: Any) -> None:
    if value is not None:
        raise ValueError("Only DIN subscriptions take a status_url.")


def _sin_only(value: Any) -> None:
    if value is not None:
        raise ValueError("Only SIN subscriptions take a webhook_format or mo_delivery.")


class NumberUrls(BaseModel):
    """What POST /subscriptions/<uid>/ sets; each kind's model says which fields it takes."""

    action_url: Url = Field(None, description="Webhook for this number.")
    voicemail_url: str | None = None
    status_url: str | None = None
    webhook_format: str | None = None
    mo_delivery: str | None = None

    @model_validator(mode="after")
    def _one_at_least(self) -> Self:
        given = (self.action_url, self.voicemail_url, self.status_url, self.webhook_format, self.mo_delivery)
        if all(value is None for value in given):
            raise refusal(type(self), {"action_url": REQUIRED})
        return self


class DinUrls(NumberUrls):
    voicemail_url: Url = Field(None, description="Receives a signed POST on each new voicemail.")
    status_url: Url = Field(
        None, description="Receives a signed POST on each call event: ringing, answered, completed."
    )
    webhook_format: SkipJsonSchema[Annotated[None, BeforeValidator(_sin_only)]] = None
    mo_delivery: SkipJsonSchema[Annotated[None, BeforeValidator(_sin_only)]] = None


def _mo_delivery(value: Any) -> str | None:
    text = optional(value)
    if text is not None and text not in ("webhook", "smpp", "both"):
        raise ValueError('Expected "webhook", "smpp" or "both".')
    return text


def _format(value: Any) -> str | None:
    text = optional(value)
    if text is not None and text not in WEBHOOK_FORMATS:
        raise ValueError('Expected "xoxzo" or "sinch".')
    return text


class SinUrls(NumberUrls):
    voicemail_url: SkipJsonSchema[Annotated[None, BeforeValidator(_din_only)]] = None
    status_url: SkipJsonSchema[Annotated[None, BeforeValidator(_status_din_only)]] = None
    webhook_format: Annotated[Literal["xoxzo", "sinch"] | SkipJsonSchema[None], BeforeValidator(_format)] = (
        Field(
            None,
            description="How MOs are POSTed to action_url: `xoxzo` (form-encoded, the default) or"
            " `sinch` (Sinch's mo_text JSON).",
        )
    )
    mo_delivery: Annotated[
        Literal["webhook", "smpp", "both"] | SkipJsonSchema[None], BeforeValidator(_mo_delivery)
    ] = Field(
        None,
        description="Where MOs go: `webhook` (action_url, the default), `smpp` (your SMPP receiver"
        " bound to our SMPP server, held until it binds; the webhook while your account has no SMPP"
        " credentials) or `both`.",
    )


class Subscribe(BaseModel):
    """The number's id, named after its kind (`sin_uid`, `din_uid`) by the subclass's alias."""

    uid: Text


class SubscribeSin(Subscribe):
    uid: Text = Field(alias="sin_uid")


def number_routes(
    kind: Kind,
    base: str,
    *,
    subscribe: type[Subscribe],
    urls: type[NumberUrls],
    number: type[BaseModel],
    subscription: type[BaseModel],
) -> Routes:
    """The number API of one kind; `number` and `subscription` are its answers' models."""
    cap = kind.capitalize()
    uid = {"type": "string", "description": f"`{kind}_uid` of your subscription."}
    routes = Routes(f"{kind.upper()}s", path_params={"uid": uid})
    subs = f"{base}/subscriptions/"

    @routes.get(f"{base}/", returns=array_of(number), no_slash=True, operation_id=f"list{cap}s")
    async def list_available(request: web.Request, query: Filters) -> Json:
        """Numbers available to subscribe to"""
        return await request.app[NUMBERS].list_available(kind, query.country, query.prefix)

    @routes.post(subs, status=201, returns=subscription, body=subscribe, operation_id=f"subscribe{cap}")
    async def subscribe_number(request: web.Request, body: Subscribe) -> Json:
        """Subscribe to a number"""
        return await request.app[NUMBERS].subscribe(request[ACCOUNT].id, kind, body.uid)

    @routes.get(subs, returns=array_of(subscription), no_slash=True, operation_id=f"list{cap}Subscriptions")
    async def list_subscriptions(request: web.Request) -> Json:
        """Your subscriptions"""
        return await request.app[NUMBERS].list_subscriptions(request[ACCOUNT].id, kind)

    @routes.get(subs + "{uid}/", returns=subscription, no_slash=True, operation_id=f"get{cap}Subscription")
    async def get_subscription(request: web.Request) -> Json:
        """One subscription"""
        return await request.app[NUMBERS].get_subscription(
            request[ACCOUNT].id, kind, request.match_info["uid"]
        )

    @routes.post(subs + "{uid}/", returns=subscription, body=urls, operation_id=f"set{cap}Urls")
    async def set_urls(request: web.Request, body: NumberUrls) -> Json:
        """Set the subscription's webhook URL(s)"""
        uid = request.match_info["uid"]
        return await request.app[NUMBERS].set_action_url(
            request[ACCOUNT].id,
            kind,
            uid,
            body.action_url,
            body.voicemail_url,
            body.webhook_format,
            body.mo_delivery,
            status_url=body.status_url,
        )

    @routes.delete(subs + "{uid}/", returns=Empty, operation_id=f"unsubscribe{cap}")
    async def unsubscribe(request: web.Request) -> Json:
        """End a subscription

        Its auto-reply rules go with it; the number is free again."""
        await request.app[NUMBERS].unsubscribe(request[ACCOUNT].id, kind, request.match_info["uid"])
        return {}

    return routes


routes = number_routes(
    "sin", "/sms/sins", subscribe=SubscribeSin, urls=SinUrls, number=SinNumber, subscription=SinSubscription
)


def _match(value: Any) -> str:
    match = required(value)
    if match not in MATCHES:
        raise ValueError('Expected "keyword" or "regex".')
    return match


def _reply(value: Any) -> str:
    return no_controls(words(value, MAX_REPLY))


class NewAutoReply(BaseModel):
    match: Annotated[Literal["keyword", "regex"], BeforeValidator(_match)]
    pattern: Text = Field(description="A single word (keyword), or a regular expression.")
    reply: Annotated[str, BeforeValidator(_reply)] = Field(description="The answer text.")

    @field_validator("pattern")
    @classmethod
    def _fits_match(cls, pattern: str, info: ValidationInfo) -> str:
        match = info.data.get("match")  # absent when `match` itself was refused
        problem = None if match is None else pattern_problem(match, pattern)
        if problem is not None:
            raise ValueError(problem)
        return pattern


_AUTOREPLIES = "/sms/sins/subscriptions/{uid}/autoreplies/"


@routes.get(_AUTOREPLIES, returns=list[AutoReply], no_slash=True)
async def list_auto_replies(request: web.Request) -> Json:
    """Auto-reply rules of a SIN"""
    return await request.app[NUMBERS].list_rules(request[ACCOUNT].id, request.match_info["uid"])


@routes.post(_AUTOREPLIES, status=201, returns=AutoReply)
async def add_auto_reply(request: web.Request, body: NewAutoReply) -> Json:
    """Add an auto-reply rule

    The first matching rule answers an MO; opt-out keywords are never matched."""
    return await request.app[NUMBERS].add_rule(
        request[ACCOUNT].id, request.match_info["uid"], body.match, body.pattern, body.reply
    )


@routes.delete(_AUTOREPLIES + "{rule_id}/", returns=Empty)
async def delete_auto_reply(request: web.Request) -> Json:
    """Delete an auto-reply rule"""
    await request.app[NUMBERS].delete_rule(
        request[ACCOUNT].id, request.match_info["uid"], request.match_info["rule_id"]
    )
    return {}

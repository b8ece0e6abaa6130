"""DIN (voice number) inventory and subscriptions: /voice/dins/..., the same calls as SINs."""

from __future__ import annotations

from pydantic import Field

from gateway.http.fields import Text
from gateway.http.responses import DinNumber, DinSubscription
from gateway.http.routes_sins import DinUrls, Subscribe, number_routes


class SubscribeDin(Subscribe):
    uid: Text = Field(alias="din_uid")


routes = number_routes(
    "din", "/voice/dins", subscribe=SubscribeDin, urls=DinUrls, number=DinNumber, subscription=DinSubscription
)

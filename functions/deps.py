"""`Annotated` dependency aliases shared by the routers, so routes read like signatures.

Auth aliases (`CurrentUser`, `AdminUser`, ...) live in `functions.auth`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from emlib.resources import Resources
from emlib.settings import Settings
from functions.orderbook_client import OrderbookClient


def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_orderbook(request: Request) -> OrderbookClient:
    client: OrderbookClient = request.app.state.orderbook
    return client


ResourcesDep = Annotated[Resources, Depends(get_resources)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
OrderbookDep = Annotated[OrderbookClient, Depends(get_orderbook)]

"""The functions API app. `create_app(settings)` builds it; `app` is the process's instance.

Nothing here opens a connection at import: resources are created on first use so a
Lambda cold start only pays for imports.
"""

from __future__ import annotations

from fastapi import FastAPI

from emlib.audit_http import make_audit_router
from emlib.resources import Resources
from emlib.service import create_service_app
from emlib.settings import Settings, get_settings
from emlib.signing_http import require_signature
from functions.openapi import install as install_openapi
from functions.orderbook_client import OrderbookClient
from functions.routers import admin as admin_routes
from functions.routers import auth as auth_routes
from functions.routers import ingest as ingest_routes
from functions.routers import markets as markets_routes
from functions.routers import orders as orders_routes
from functions.routers import reads as reads_routes
from functions.routers import search as search_routes
from functions.routers import watchlists as watchlist_routes

SERVICE_NAME = "functions"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    resources = Resources(settings)
    app = create_service_app(
        SERVICE_NAME,
        settings,
        ready_checks={
            "database": resources.check_database,
            "object_store": lambda: resources.blob_store.ping(),
        },
        version="0.1.0",
        description="Everything Market public API",
    )
    app.state.resources = resources
    app.state.orderbook = OrderbookClient(settings)
    app.state.signature_check = require_signature(lambda: resources.keyring, resources.remember_nonce)
    # Service callers (HMAC) or admin sessions (JWT + X-TOTP) may verify the audit log.
    app.include_router(make_audit_router(resources.audit_log, guard=admin_routes.signed_or_admin))
    app.include_router(auth_routes.router)
    app.include_router(orders_routes.router)
    app.include_router(markets_routes.router)
    app.include_router(admin_routes.router)
    app.include_router(search_routes.router)
    app.include_router(watchlist_routes.router)
    app.include_router(reads_routes.router)
    app.include_router(ingest_routes.router)
    # problem+json errors and security documented centrally (functions/openapi.py)
    install_openapi(app)
    return app


app = create_app()

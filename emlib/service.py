"""The FastAPI skeleton every service shares: problem+json errors, body limit,
request ids in logs, `/health` (liveness) and `/ready` (dependencies)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI
from starlette.responses import JSONResponse

from emlib.logs import RequestIdMiddleware, get_logger
from emlib.problems import PROBLEM_JSON, install_problem_handlers
from emlib.settings import Settings

ReadyCheck = Callable[[], None]
"""Raises when the dependency is not usable; its message goes into /ready's body."""


def create_service_app(
    name: str,
    settings: Settings,
    *,
    ready_checks: Mapping[str, ReadyCheck] | None = None,
    **fastapi_kwargs: Any,
) -> FastAPI:
    app = FastAPI(title=name, **fastapi_kwargs)
    logger = get_logger(name, settings.log_level)
    app.state.logger = logger
    app.state.settings = settings
    install_problem_handlers(app, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware, logger=logger)
    checks = dict(ready_checks or {})

    @app.get("/health", tags=["ops"])
    def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok", "service": name}

    @app.get("/ready", tags=["ops"], responses={503: {"description": "a dependency is not ready"}})
    def ready() -> JSONResponse:
        """Readiness: every dependency answers."""
        results: dict[str, str] = {}
        ok = True
        for check_name, check in checks.items():
            try:
                check()
                results[check_name] = "ok"
            except Exception as exc:  # any failure means not ready; the body says which
                ok = False
                results[check_name] = f"error: {type(exc).__name__}: {exc}"[:300]
        if ok:
            return JSONResponse({"status": "ready", "service": name, "checks": results})
        return JSONResponse(
            {
                "type": "https://everything.market/problems/not_ready",
                "title": "Service Unavailable",
                "status": 503,
                "detail": "a dependency is not ready",
                "code": "not_ready",
                "checks": results,
            },
            status_code=503,
            media_type=PROBLEM_JSON,
        )

    return app

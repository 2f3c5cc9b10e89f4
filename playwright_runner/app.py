"""The scraping runner's HTTP face: /health, /ready (the browser is connected) and, outside
production, a `POST /render` endpoint to try the browser pool by hand.

The browser pool starts and stops with the app's lifespan, so Chromium lives exactly as
long as the server. The ingest pipeline (job claims, politeness, snapshots) is not here yet.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

from emlib.problems import ProblemError
from emlib.service import create_service_app
from emlib.settings import Settings
from playwright_runner.browser import (
    BrowserPool,
    PageTooLargeError,
    RenderError,
    RenderTimeoutError,
    RunnerBusyError,
)

SERVICE_NAME = "playwright-runner"


class RenderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, Field(pattern=r"^https?://", max_length=2048)]
    timeout_ms: Annotated[int | None, Field(ge=100, le=60_000)] = None


class RenderResponse(BaseModel):
    status: int
    title: str
    html: str


def create_app(settings: Settings, pool: BrowserPool | None = None) -> FastAPI:
    browser_pool = pool or BrowserPool(settings.chromium_path, settings.runner_contexts)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await browser_pool.start()
        try:
            yield
        finally:
            await browser_pool.stop()

    app = create_service_app(
        SERVICE_NAME, settings, ready_checks={"browser": browser_pool.check_ready}, lifespan=lifespan
    )
    app.state.browser_pool = browser_pool

    if settings.app_env != "production":
        # Unauthenticated and able to fetch any URL: never exposed in production.
        @app.post("/render", tags=["debug"])
        async def render(body: RenderRequest, request: Request) -> RenderResponse:
            pool_: BrowserPool = request.app.state.browser_pool
            try:
                status, html, title = await pool_.render(body.url, timeout_ms=body.timeout_ms)
            except RunnerBusyError as exc:
                raise ProblemError(503, "runner_busy", str(exc), headers={"Retry-After": "5"}) from exc
            except RenderTimeoutError as exc:
                raise ProblemError(504, "render_timeout", str(exc)) from exc
            except PageTooLargeError as exc:
                raise ProblemError(502, "page_too_large", str(exc)) from exc
            except RenderError as exc:
                raise ProblemError(502, "render_failed", str(exc)) from exc
            return RenderResponse(status=status, title=title, html=html)

    return app

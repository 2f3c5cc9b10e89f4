"""A pool of headless Chromium contexts that renders pages (async Playwright).

One browser process (Debian's `chromium`, launched through Playwright's `executable_path`
because Playwright's own browser downloads are not available) holds N isolated contexts.
A render borrows a context, so at most N pages load at once and a caller waits at most
`acquire_timeout_ms` for a free one. Every page load has a deadline and every returned
page a size limit.

Errors (all `RenderError`):

    RenderError
    ├── RunnerBusyError      no context became free in time
    ├── RenderTimeoutError   the page did not load before its deadline
    └── PageTooLargeError    the rendered HTML exceeds `max_html_bytes`
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import NamedTuple

from playwright.async_api import Browser, BrowserContext, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # Containers give /dev/shm 64 MB; Chromium then crashes on large pages.
    "--disable-dev-shm-usage",
)


class RenderError(Exception):
    """The page could not be rendered."""


class RunnerBusyError(RenderError):
    pass


class RenderTimeoutError(RenderError):
    pass


class PageTooLargeError(RenderError):
    pass


class Rendered(NamedTuple):
    """What a render returns; unpacks as `(status, html, title)`."""

    status: int  # HTTP status of the main document; 0 when there was no response (e.g. about:)
    html: str  # the DOM serialized after load
    title: str


class BrowserPool:
    """One Chromium, N contexts. `start()`/`stop()` run in the app's lifespan."""

    def __init__(
        self,
        chromium_path: str,
        contexts: int,
        *,
        timeout_ms: int = 15_000,
        acquire_timeout_ms: int = 30_000,
        max_html_bytes: int = 10 * 1024 * 1024,
        user_agent: str | None = None,
    ) -> None:
        assert contexts >= 1
        assert timeout_ms > 0 and acquire_timeout_ms > 0 and max_html_bytes > 0
        self.chromium_path = chromium_path
        self.context_count = contexts
        self.timeout_ms = timeout_ms
        self.acquire_timeout_ms = acquire_timeout_ms
        self.max_html_bytes = max_html_bytes
        self.user_agent = user_agent
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._contexts: list[BrowserContext] = []
        self._free: asyncio.Queue[BrowserContext] | None = None

    async def start(self) -> None:
        assert self._playwright is None, "already started"
        self._playwright = await async_playwright().start()
        try:
            self._browser = await self._playwright.chromium.launch(
                executable_path=self.chromium_path, headless=True, args=list(CHROMIUM_ARGS)
            )
            self._free = asyncio.Queue()
            for _ in range(self.context_count):
                context = await self._browser.new_context(user_agent=self.user_agent)
                self._contexts.append(context)
                self._free.put_nowait(context)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close the contexts, the browser (its processes exit) and the driver."""
        contexts, self._contexts, self._free = self._contexts, [], None
        browser, self._browser = self._browser, None
        driver, self._playwright = self._playwright, None
        for context in contexts:
            # If the browser is already gone, closing it below still reaps its processes.
            with contextlib.suppress(PlaywrightError):
                await context.close()
        if browser is not None:
            await browser.close()
        if driver is not None:
            await driver.stop()

    def is_connected(self) -> bool:
        return self._browser is not None and self._browser.is_connected()

    def check_ready(self) -> None:
        """Raise unless the browser is up (a /ready check)."""
        if not self.is_connected():
            raise RuntimeError("browser not connected")

    async def render(self, url: str, *, timeout_ms: int | None = None) -> Rendered:
        """Load `url` in a free context and return its status, HTML and title."""
        if self._free is None:
            raise RenderError("browser pool is not started")
        deadline_ms = min(timeout_ms or self.timeout_ms, self.timeout_ms)
        try:
            context = await asyncio.wait_for(self._free.get(), self.acquire_timeout_ms / 1000)
        except TimeoutError as exc:
            raise RunnerBusyError(f"no browser context free within {self.acquire_timeout_ms} ms") from exc
        try:
            page = await context.new_page()
            try:
                try:
                    response = await page.goto(url, wait_until="load", timeout=deadline_ms)
                except PlaywrightTimeoutError as exc:
                    raise RenderTimeoutError(f"page did not load within {deadline_ms} ms") from exc
                except PlaywrightError as exc:
                    raise RenderError(
                        exc.message.splitlines()[0] if exc.message else "navigation failed"
                    ) from exc
                html = await page.content()
                if len(html.encode("utf-8")) > self.max_html_bytes:
                    raise PageTooLargeError(f"rendered page exceeds {self.max_html_bytes} bytes")
                title = await page.title()
                return Rendered(response.status if response is not None else 0, html, title)
            finally:
                await page.close()
        finally:
            # Cookies from one site must not follow the context to the next render.
            await context.clear_cookies()
            if self._free is not None:
                self._free.put_nowait(context)

"""One headless Chromium per process, driven by Playwright, shared by every WebShop env of the process.

- Lookup (DESIGN.md, ``chromium.py``): ``$AGENTGYM_CHROMIUM``, then Playwright's own downloaded
  Chromium, then ``/usr/bin/chromium`` (or ``chromium`` / ``chromium-browser`` on the PATH).
- Playwright runs on a private asyncio loop in a background thread, and envs submit their page
  operations to it. So envs work from any thread (Playwright's sync API is tied to the thread that
  started it, and refuses to run inside a running asyncio loop such as Jupyter's), and envs used from
  several threads overlap their page loads.
- Each env gets its own browser context (cookies, history) with one page.
- Off the network: Chromium's background services are off (updates, sync, safe browsing, metrics,
  QUIC, DNS prefetch), all non-loopback traffic goes to a proxy on 127.0.0.1:9 where nothing listens,
  host names other than 127.0.0.1 do not resolve, and a Playwright route in every context aborts each
  request whose URL is not on 127.0.0.1.
- A browser that dies (crash, killed) is relaunched by the next ``recover``; the env that saw it reports
  its episode as aborted.
- The browser starts with the first env and closes ``BrowserHost.LINGER_S`` (10) seconds after the last
  one closes, or at interpreter exit.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from playwright.async_api import Browser, BrowserContext, Page, Playwright, Route, async_playwright
from playwright.async_api import Error as PlaywrightError

from agentgym.envs.webshop.chromium import BrowserNotFound, find_chromium, require_chromium

__all__ = ["BrowserHost", "BrowserNotFound", "Tab", "find_chromium", "require_chromium"]

LOCAL_PREFIX = "http://127.0.0.1:"
CALL_TIMEOUT_S = 60.0
PAGE_TIMEOUT_MS = 15_000

LAUNCH_ARGS = [
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-breakpad",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    # the last two make each page load about twice as fast: no new frame host per navigation, no
    # back/forward cache to fill
    "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication,SafeBrowsing,"
    "RenderDocument,BackForwardCache",
    "--disable-quic",
    "--dns-prefetch-disable",
    "--metrics-recording-only",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-pings",
    "--proxy-server=http://127.0.0.1:9",  # loopback bypasses the proxy; everything else goes nowhere
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]

T = TypeVar("T")


async def _block_non_local(route: Route) -> None:
    await route.abort("blockedbyclient")


class BrowserHost:
    """The process's browser. ``acquire``/``release`` count its users; it closes ``LINGER_S`` seconds after
    the last one leaves, unless a new user comes first (code that makes a fresh env per episode then
    does not pay a browser launch each time)."""

    LINGER_S = 10.0
    _instance: BrowserHost | None = None
    _users = 0
    _lock = threading.RLock()
    _closer: threading.Timer | None = None

    def __init__(self, executable: str) -> None:
        self.executable = executable
        self.generation = 0  # bumped at every (re)launch: contexts of an older generation are dead
        self.launches = 0
        self._playwright: Playwright | None = None
        self.browser: Browser | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="webshop-browser", daemon=True)
        self._thread.start()
        self._relaunch_lock: asyncio.Lock | None = None
        try:
            self.call(self._launch())
        except BaseException:
            self._stop_loop()
            raise

    # ----- lifetime -----
    @classmethod
    def acquire(cls) -> BrowserHost:
        with cls._lock:
            if cls._closer is not None:
                cls._closer.cancel()
                cls._closer = None
            if cls._instance is None:
                cls._instance = cls(require_chromium())
            cls._users += 1
            return cls._instance

    @classmethod
    def release(cls) -> None:
        with cls._lock:
            cls._users = max(0, cls._users - 1)
            if cls._users == 0 and cls._instance is not None:
                if cls.LINGER_S > 0:
                    cls._closer = threading.Timer(cls.LINGER_S, cls._close_if_unused)
                    cls._closer.daemon = True
                    cls._closer.start()
                else:
                    cls._close_if_unused()

    @classmethod
    def _close_if_unused(cls) -> None:
        with cls._lock:
            if cls._users == 0 and cls._instance is not None:
                cls._instance._shutdown()
                cls._instance = None

    @classmethod
    def _close_at_exit(cls) -> None:
        with cls._lock:
            if cls._closer is not None:
                cls._closer.cancel()
            if cls._instance is not None:
                cls._instance._shutdown()
                cls._instance = None
                cls._users = 0

    def _shutdown(self) -> None:
        try:
            self.call(self._close_all(), timeout=20)
        except Exception:  # a dead browser or driver has nothing left to close
            pass
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _close_all(self) -> None:
        if self.browser is not None:
            await self.browser.close()
        if self._playwright is not None:
            await self._playwright.stop()

    # ----- running page operations -----
    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT_S) -> T:
        """Run ``coroutine`` on the browser's loop and wait for its result."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    async def _launch(self) -> None:
        if self._playwright is None:
            self._playwright = await async_playwright().start()
        playwright = self._playwright
        args = list(LAUNCH_ARGS)
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium refuses to start as root with its sandbox on
        self.browser = await playwright.chromium.launch(
            executable_path=self.executable, headless=True, args=args
        )
        self.generation += 1
        self.launches += 1

    async def _recover(self) -> None:
        if self._relaunch_lock is None:
            self._relaunch_lock = asyncio.Lock()
        async with self._relaunch_lock:  # several envs may notice the same crash
            if self.browser is not None and self.browser.is_connected():
                return
            try:
                if self.browser is not None:
                    await asyncio.wait_for(self.browser.close(), 5)
            except Exception:
                pass
            try:
                await self._launch()
            except PlaywrightError:  # the Playwright driver went down with the browser: start a new one
                if self._playwright is not None:
                    try:
                        await asyncio.wait_for(self._playwright.stop(), 5)
                    except Exception:
                        pass
                self._playwright = None
                await self._launch()

    def recover(self) -> None:
        """Relaunch the browser if it is gone (a no-op while it is alive)."""
        self.call(self._recover())

    def alive(self) -> bool:
        return self.browser is not None and self.browser.is_connected()

    def new_tab(self) -> Tab:
        return self.call(self._new_tab())

    async def _new_tab(self) -> Tab:
        if self.browser is None:
            raise RuntimeError("the browser is not running (closed, or its launch failed)")
        context = await self.browser.new_context(service_workers="block", accept_downloads=False)
        await context.route(lambda url: not url.startswith(LOCAL_PREFIX), _block_non_local)
        page = await context.new_page()
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        return Tab(self, context, page, self.generation)


# Walks the page's visible text in document order, as WebShop's text_rich mode renders it: clickable
# elements as "[button] text [button_]" ("[clicked button] ..." for a chosen option or a product already
# viewed), other text as is, one piece per line. Clickables get a data-ag-id used to click them. It
# waits for the document to be parsed itself, so a click only needs to wait for the navigation to commit.
EXTRACT_JS = """
async () => {
  if (document.readyState === 'loading') {
    await new Promise(resolve => document.addEventListener('DOMContentLoaded', resolve, {once: true}));
  }
  const lines = [], clickables = [], done = new Set();
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.textContent.replace(/\\s+/g, ' ').trim();
    const parent = node.parentElement;
    if (!text || !parent || parent.closest('script, style, noscript, template')) continue;
    if (!parent.checkVisibility()) continue;
    const target = parent.closest('a[href], button');
    if (!target) { lines.push(text); continue; }
    if (done.has(target)) continue;
    done.add(target);
    const label = target.innerText.replace(/\\s+/g, ' ').trim();
    const clicked = target.getAttribute('aria-pressed') === 'true' || target.classList.contains('visited');
    const tag = clicked ? 'clicked button' : 'button';
    lines.push(`[${tag}] ${label} [${tag}_]`);
    if (target.id !== 'search_button') {
      target.dataset.agId = String(clickables.length);
      clickables.push(label);
    }
  }
  return {text: lines.join('\\n'), clickables: clickables,
          has_search: document.querySelector('#search_input') !== null, url: location.href};
}
"""


class Tab:
    """One env's browser context and page; every method runs on the host's loop."""

    def __init__(self, host: BrowserHost, context: BrowserContext, page: Page, generation: int) -> None:
        self.host, self.context, self.page, self.generation = host, context, page, generation

    @property
    def stale(self) -> bool:
        """The browser this tab lived in is gone (or was replaced)."""
        return self.generation != self.host.generation or not self.host.alive() or self.page.is_closed()

    def goto(self, url: str) -> dict:
        return self.host.call(self._goto(url))

    def search(self, query: str) -> dict:
        return self.host.call(self._search(query))

    def click(self, index: int) -> dict:
        return self.host.call(self._click(index))

    def close(self) -> None:
        try:
            self.host.call(self.context.close(), timeout=10)
        except Exception:  # the browser may already be gone
            pass

    async def _goto(self, url: str) -> dict:
        await self.page.goto(url, wait_until="commit")
        return await self.page.evaluate(EXTRACT_JS)

    async def _search(self, query: str) -> dict:
        await self.page.fill("#search_input", query)
        async with self.page.expect_navigation(wait_until="commit"):
            await self.page.click("#search_button", force=True)
        return await self.page.evaluate(EXTRACT_JS)

    async def _click(self, index: int) -> dict:
        async with self.page.expect_navigation(wait_until="commit"):
            # a real mouse click at the element; the actionability waits are skipped because the page is
            # static and the element was just found visible
            await self.page.click(f'[data-ag-id="{index}"]', force=True)
        return await self.page.evaluate(EXTRACT_JS)


def _forget_after_fork() -> None:
    # a forked child has none of the parent's threads: it starts its own browser when it needs one
    BrowserHost._instance, BrowserHost._users, BrowserHost._closer = None, 0, None
    BrowserHost._lock = threading.RLock()


atexit.register(BrowserHost._close_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)

"""One headless Chromium per process, driven by Playwright, shared by every WebShop env of the process.

- Lookup (DESIGN.md, ``chromium.py``): ``$AGENTGYM_CHROMIUM``, then Playwright's own downloaded
  Chromium, then ``/usr/bin/chromium`` (or ``chromium`` / ``chromium-browser`` on the PATH).
- Playwright runs on a private asyncio loop in a background thread, and envs submit their page
  operations to it. So envs work from any thread (Playwright's sync API is tied to the thread that
  started it, and refuses to run inside a running asyncio loop such as Jupyter's), and envs used from
  several threads overlap their page loads.
- Each env has a tab: its own browser context (cookies, history, cache) with one page. The env collects
  the renderer's garbage at each reset and replaces the tab by a fresh one every ``TAB_EPISODES``
  episodes; without them memory grows by megabytes per episode (see ``TAB_EPISODES``).
- Off the network: Chromium's background services are off (updates, sync, safe browsing, metrics,
  QUIC, DNS prefetch), all non-loopback traffic goes to a proxy on 127.0.0.1:9 where nothing listens,
  host names other than 127.0.0.1 do not resolve, and a Playwright route in every context aborts each
  request whose URL is not on 127.0.0.1.
- Two processes can die under us: Chromium, and Playwright's driver (a Node.js process that relays every
  call to Chromium, which exits with it). A dead driver leaves the Python side believing the browser is
  connected, so ``alive`` checks both: the driver by a round trip that involves no browser, the browser
  by its connection. ``recover`` relaunches what is dead (driver and browser, or the browser alone);
  the env that saw it reports its episode as aborted.
- The browser starts with the first env and closes ``BrowserHost.LINGER_S`` (10) seconds after the last
  one closes, or at interpreter exit.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from playwright.async_api import (
    Browser,
    BrowserContext,
    CDPSession,
    Page,
    Playwright,
    Route,
    async_playwright,
)
from playwright.async_api import Error as PlaywrightError

from agentgym.envs.webshop.chromium import BrowserNotFound, find_chromium, require_chromium

__all__ = ["BrowserHost", "BrowserNotFound", "Tab", "find_chromium", "require_chromium"]

LOCAL_PREFIX = "http://127.0.0.1:"
CALL_TIMEOUT_S = 60.0
PAGE_TIMEOUT_MS = 15_000
DRIVER_PING_S = 5.0  # a live driver answers in milliseconds; one that has not in 5 s is hung
# Memory over long runs (measured on the generated catalogue, PSS of the whole process tree, 2 busy
# cores). Kept for every episode, a page grows the tree by 2.9-6.4 MB per oracle episode without bound,
# almost all in its renderer (55 -> 505 MB in 100 episodes): the renderer never runs a full garbage
# collection on its own, so every page it has left stays on its heap (260 documents and 250 MB of JS
# heap after 60 episodes; a forced collection brings back 0.8 MB and a renderer of 88 MB). And every
# request leaves a Request, Response and Route object in the driver and in Python until its context
# closes (~0.2 MB per episode in Python). So the env does two things:
# - at each reset, a full collection in the renderer (``Tab.collect_garbage``): ~12 ms, and the renderer
#   stays at ~77 MB;
# - every ``TAB_EPISODES`` episodes, a fresh context and page, which frees the rest: ~80-130 ms.
# A fresh context for every episode alone also holds the tree flat (0.17 MB per episode over 400
# episodes, none after the first ~150) but adds ~15% CPU per step; a fresh page in the same context
# frees no more than a new context. With both, 1,000 mixed oracle/random episodes in one process stay
# at 0.63-0.81 GB, a trend of +62 MB per 1,000 episodes, against 11.9 GB per 1,000 before
# (benchmarks/webshop_soak.py).
TAB_EPISODES = 20

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
        self.launches = 0  # browser launches
        self.driver_launches = 0  # Playwright driver starts
        self._playwright: Playwright | None = None
        self.browser: Browser | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="webshop-browser", daemon=True)
        self._thread.start()
        self._relaunch_lock = asyncio.Lock()  # bound to the loop at first use (Python >= 3.10)
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
        """Run ``coroutine`` on the browser's loop and wait for its result (``TimeoutError`` after
        ``timeout`` seconds)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError as exc:  # not the builtin TimeoutError before Python 3.11
            future.cancel()
            raise TimeoutError(f"the browser did not answer in {timeout:g} s") from exc

    async def _launch(self) -> None:
        if self._playwright is None:
            self._playwright = await async_playwright().start()
            self.driver_launches += 1
        playwright = self._playwright
        args = list(LAUNCH_ARGS)
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium refuses to start as root with its sandbox on
        self.browser = await playwright.chromium.launch(
            executable_path=self.executable, headless=True, args=args
        )
        self.generation += 1
        self.launches += 1

    async def _driver_responds(self) -> bool:
        """Whether Playwright's driver answers a call that involves no browser: an HTTP client context,
        made and disposed in the driver. Once the driver has exited every call fails at once; a hung one
        is given ``DRIVER_PING_S``."""
        if self._playwright is None:
            return False
        try:
            client = await asyncio.wait_for(self._playwright.request.new_context(), DRIVER_PING_S)
            await asyncio.wait_for(client.dispose(), DRIVER_PING_S)
        except (PlaywrightError, asyncio.TimeoutError):
            return False
        return True

    def _browser_connected(self) -> bool:
        return self.browser is not None and self.browser.is_connected()

    async def _recover(self) -> None:
        async with self._relaunch_lock:  # several envs may notice the same crash: the first relaunches
            driver_ok = await self._driver_responds()
            if driver_ok and self._browser_connected():
                return
            if self.browser is not None:
                try:
                    await asyncio.wait_for(self.browser.close(), 5)
                except Exception:  # already gone
                    pass
                self.browser = None
            if not driver_ok:  # the browser died with it (it talks to Chromium over a pipe)
                if self._playwright is not None:
                    try:
                        await asyncio.wait_for(self._playwright.stop(), 5)
                    except Exception:
                        pass
                self._playwright = None
            await self._launch()

    def recover(self) -> None:
        """Relaunch the driver and the browser if the driver is dead, the browser alone if only it is
        dead; a no-op while both are alive."""
        self.call(self._recover())

    def driver_alive(self) -> bool:
        """Playwright's driver answers (a round trip to it; milliseconds)."""
        return self.call(self._driver_responds())

    def browser_alive(self) -> bool:
        """Chromium's connection is up, as the driver last reported (meaningless once the driver is dead)."""
        return self._browser_connected()

    def alive(self) -> bool:
        """Both the driver and the browser are up."""
        return self.driver_alive() and self.browser_alive()

    def new_tab(self) -> Tab:
        return self.call(self._new_tab())

    def fresh_tab(self) -> Tab:
        """A new tab; when that fails, the driver and browser are checked, what is dead is relaunched and
        the tab made again (an error from this second try is a real fault, and propagates)."""
        try:
            return self.new_tab()
        except (PlaywrightError, TimeoutError):
            self.recover()
            return self.new_tab()

    async def _new_tab(self) -> Tab:
        async with self._relaunch_lock:  # not in the middle of a relaunch
            browser, generation = self.browser, self.generation
        if browser is None:
            raise RuntimeError("the browser is not running (closed, or its launch failed)")
        context = await browser.new_context(service_workers="block", accept_downloads=False)
        await context.route(lambda url: not url.startswith(LOCAL_PREFIX), _block_non_local)
        page = await context.new_page()
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        return Tab(self, context, page, generation)


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
        self.episodes = 0  # episodes started in this tab (the env counts them)
        self._devtools: CDPSession | None = None

    @property
    def stale(self) -> bool:
        """The browser this tab lived in is known to be gone or replaced (local checks only: a dead driver
        shows up as the next call failing)."""
        return (
            self.generation != self.host.generation or not self.host.browser_alive() or self.page.is_closed()
        )

    def goto(self, url: str) -> dict:
        return self.host.call(self._goto(url))

    def search(self, query: str) -> dict:
        return self.host.call(self._search(query))

    def click(self, index: int) -> dict:
        return self.host.call(self._click(index))

    def collect_garbage(self) -> None:
        """A full garbage collection in the page's renderer (see ``TAB_EPISODES`` for why)."""
        self.host.call(self._collect_garbage())

    async def _collect_garbage(self) -> None:
        if self._devtools is None:
            self._devtools = await self.context.new_cdp_session(self.page)
        await self._devtools.send("HeapProfiler.collectGarbage")

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

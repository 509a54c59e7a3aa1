"""The shop web app (Flask): WebShop's pages for many sessions at once.

Pages, as in WebShop: the search page, results (10 per page of the top 50 BM25 hits, with ``< Prev`` and
``Next >``), the item page (option choices, Description / Features / Reviews, Buy Now), the sub-pages
and the done page. A page's URL holds everything it shows (query, result page, chosen options), so the
browser's history and reloads work as on a real shop; the server keeps per session only the goal, the
products visited and the purchase. Buying computes WebShop's reward (``reward.py``).

Sessions are opened from Python by the env (``ShopApp.open_session``), never over HTTP: an agent in
the browser cannot pick its own goal.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, abort, render_template, request

from agentgym.envs.webshop.data import Catalogue, Goal
from agentgym.envs.webshop.reward import TitleTagger, get_tagger, webshop_reward
from agentgym.envs.webshop.search import TOP_N, SearchEngine

PER_PAGE = 10
SUB_PAGES = ("Description", "Features", "Reviews")


@dataclass
class Shop:
    """A catalogue and its search index."""

    catalogue: Catalogue
    search: SearchEngine

    @classmethod
    def from_catalogue(cls, catalogue: Catalogue) -> Shop:
        return cls(catalogue, SearchEngine(catalogue.products))


@dataclass
class ShopSession:
    shop: Shop
    goal: Goal
    tagger: TitleTagger  # finds the title nouns of the reward's type factor
    visited: set[str] = field(default_factory=set)
    purchase: dict[str, Any] | None = None  # asin, options, price once bought
    reward: float | None = None
    reward_parts: dict[str, Any] | None = None


def _parse_options(raw: str | None) -> dict[str, str]:
    try:
        options = json.loads(raw or "{}")
    except json.JSONDecodeError:
        abort(400, "options must be a JSON object")
    if not isinstance(options, dict) or not all(isinstance(v, str) for v in options.values()):
        abort(400, "options must be a JSON object of strings")
    return options


def _page_number(raw: str | None) -> int:
    try:
        return max(1, int(raw or 1))
    except ValueError:
        abort(400, "page must be a number")


class ShopApp:
    """The Flask app and the sessions it serves."""

    def __init__(self) -> None:
        self.sessions: dict[str, ShopSession] = {}
        self._lock = threading.Lock()
        self.flask = Flask(__name__)
        self._routes(self.flask)

    def open_session(self, shop: Shop, goal: Goal, tagger: TitleTagger | None = None) -> str:
        sid = secrets.token_hex(8)
        tagger = tagger or get_tagger()
        with self._lock:
            self.sessions[sid] = ShopSession(shop, goal, tagger)
        return sid

    def close_session(self, sid: str) -> None:
        with self._lock:
            self.sessions.pop(sid, None)

    def _session(self, sid: str) -> ShopSession:
        session = self.sessions.get(sid)
        if session is None:
            abort(404, "unknown session")
        return session

    def _routes(self, app: Flask) -> None:
        @app.get("/<sid>")
        def index(sid: str):
            session = self._session(sid)
            return render_template("search_page.html", sid=sid, instruction=session.goal.instruction)

        @app.get("/results/<sid>")
        def results(sid: str):
            session = self._session(sid)
            query = request.args.get("q", "").strip().lower()
            page = _page_number(request.args.get("page"))
            asins = session.shop.search.search(query, TOP_N) if query else []
            shown = asins[(page - 1) * PER_PAGE : page * PER_PAGE]
            return render_template(
                "results_page.html",
                sid=sid,
                instruction=session.goal.instruction,
                query=query,
                page=page,
                per_page=PER_PAGE,
                total=len(asins),
                visited=session.visited,
                products=[session.shop.catalogue.by_asin[a] for a in shown],
            )

        def product_or_404(session: ShopSession, asin: str):
            product = session.shop.catalogue.by_asin.get(asin)
            if product is None:
                abort(404, "unknown product")
            return product

        @app.get("/item/<sid>/<asin>")
        def item(sid: str, asin: str):
            session = self._session(sid)
            product = product_or_404(session, asin)
            options = _parse_options(request.args.get("options"))
            session.visited.add(asin)

            def with_option(name: str, value: str) -> str:
                return json.dumps({**options, name: value})

            return render_template(
                "item_page.html",
                sid=sid,
                instruction=session.goal.instruction,
                product=product,
                query=request.args.get("q", ""),
                page=_page_number(request.args.get("page")),
                options=options,
                options_json=json.dumps(options),
                with_option=with_option,
                sub_pages=SUB_PAGES,
            )

        @app.get("/item/<sid>/<asin>/<sub>")
        def item_sub_page(sid: str, asin: str, sub: str):
            session = self._session(sid)
            product = product_or_404(session, asin)
            names = {s.lower(): s for s in SUB_PAGES}
            if sub not in names:
                abort(404, "unknown page")
            options = _parse_options(request.args.get("options"))
            return render_template(
                "sub_page.html",
                sid=sid,
                instruction=session.goal.instruction,
                product=product,
                sub_page=names[sub],
                query=request.args.get("q", ""),
                page=_page_number(request.args.get("page")),
                options_json=json.dumps(options),
            )

        @app.post("/buy/<sid>/<asin>")
        def buy(sid: str, asin: str):
            session = self._session(sid)
            product = product_or_404(session, asin)
            options = _parse_options(request.args.get("options"))
            with self._lock:
                if session.purchase is None:  # a session buys once
                    price = session.shop.catalogue.prices[asin]
                    reward, parts = webshop_reward(product, session.goal, price, options, session.tagger)
                    session.purchase = {"asin": asin, "options": options, "price": price}
                    session.reward, session.reward_parts = reward, parts
            return render_template(
                "done_page.html",
                instruction=session.goal.instruction,
                asin=session.purchase["asin"],
                options=session.purchase["options"],
                reward=session.reward,
            )

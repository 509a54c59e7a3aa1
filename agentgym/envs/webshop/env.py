"""WebShop in a real browser: find and buy the product an instruction asks for (``agentgym/WebShop-v0``).

Each env opens a session on the process's shop server (``server.py``) and a tab in the process's
Chromium (``browser.py``). Actions go through the browser: ``search[query]`` types the query into the
search box and submits the form, ``click[text]`` clicks the element with that text. The observation is
the page's visible text with clickable elements marked as WebShop's ``text_rich`` mode marks them
(``[button] Next > [button_]``), followed by the available actions. The page always shows the
instruction.

Rules, as in WebShop:
- ``search[...]`` needs a page with a search bar (the start page, or ``click[Back to Search]``);
- ``click[...]`` takes the text of a clickable element on the page, case-insensitive: a product ID on a
  results page, an option value, ``Next >``, ``< Prev``, ``Back to Search``, ``Description``,
  ``Features``, ``Reviews``, ``Buy Now``;
- an action that is impossible on the current page changes nothing and says why;
- ``Buy Now`` ends the episode with WebShop's reward for the purchase (``reward.py``); success means
  reward 1. Running out of turns ends it with reward 0.

A goal comes from the real WebShop files (``data_dir=`` or ``$AGENTGYM_WEBSHOP_DATA``) or, without
them, from a generated catalogue. ``split="test"`` (the default) holds the first 500 shuffled goals,
``"train"`` the rest; the seed picks a goal of the split, or ``reset(options={"goal_index": i})`` picks
goal ``i``. On the last step ``info`` holds ``goal``, ``purchase``, ``reward_parts`` and ``title_tagger``
(see the class docstring). If the browser or Playwright's driver dies, what died is relaunched and the
episode in flight is reported as aborted (``truncated`` with ``info["aborted"]`` and ``info["error"]``);
the next ``reset`` works. For long runs each reset collects the renderer's garbage, and every
``browser.TAB_EPISODES`` episodes the env's tab (context and page) is replaced by a fresh one, so memory
stays flat (``benchmarks/webshop_soak.py``).

Differences from upstream WebShop (princeton-nlp/WebShop), besides those of ``data.py``, ``search.py``
and ``reward.py``: the pages are our own plain HTML with no external CSS, scripts or images (product
images live on external hosts, which the browser may not reach); ``search[...]`` is accepted only where
the page has a search bar, as the action lists of upstream's text env say (its simulator accepted it
anywhere); clickable texts keep their case and match case-insensitively (upstream lower-cases them).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
from playwright.async_api import Error as PlaywrightError

from agentgym.env import AgentEnv, Applied
from agentgym.envs.webshop.browser import TAB_EPISODES, BrowserHost, Tab
from agentgym.envs.webshop.data import (
    GOAL_KINDS,
    SPLITS,
    Catalogue,
    Goal,
    generated_catalogue,
    load_catalogue,
    resolve_data_dir,
)
from agentgym.envs.webshop.reward import TitleTagger, get_tagger, token_set_ratio
from agentgym.envs.webshop.server import ShopServer
from agentgym.formats import Tool, match_tool

SEARCH_TOOL = Tool(
    "search",
    "Search the shop (only on a page with a search bar).",
    {"query": "the search keywords"},
    "search[{query}]",
)
CLICK_TOOL = Tool(
    "click",
    "Click a button or link on the page by its text.",
    {"element": "the exact text of a clickable element, e.g. a product ID, an option, Buy Now"},
    "click[{element}]",
)


def _label(text: str) -> str:
    return " ".join(text.split()).casefold()


class WebShopEnv(AgentEnv):
    """Find and buy what the instruction asks for on a local web shop, in a real Chromium.

    ## Description

    WebShop (Yao et al., 2022, princeton-nlp/WebShop) as a text game in a real browser. Each episode
    gives an instruction such as "i want a men's t-shirt with color: navy, and size: large, and price
    lower than 30.00 dollars"; the agent searches the shop, opens products, chooses their options and
    buys one. The purchase is scored by WebShop's reward, computed as upstream computes it
    (``reward.py``). Goals come from WebShop's real 1000-product files (``data_dir=``) or, without
    them, from a generated catalogue of ``num_products`` products.

    ## Action Space

    A text response (``spaces.Text``, up to 32,768 characters) in the env's response format (by
    default ``<think>...</think><answer>ACTION</answer>``) holding one action:

    - ``search[query]``: type ``query`` into the search box and submit it (only on a page with a
      search bar: the start page, or after ``click[Back to Search]``);
    - ``click[text]``: click the element whose text is ``text`` (case-insensitive): a product ID on a
      results page, an option value, ``Next >``, ``< Prev``, ``Back to Search``, ``Description``,
      ``Features``, ``Reviews``, ``Buy Now``.

    ## Observation Space

    Text (``spaces.Text``): the page's visible text, with clickable elements marked as WebShop's
    ``text_rich`` mode marks them (``[button] Next > [button_]``, ``[clicked button] ... [clicked
    button_]`` for a chosen option), the instruction on every page, the available actions and the
    turns left. A product page, for example::

        Instruction:
        i want to buy shampoo that is paraben free with scent: mint, and price lower than 60.00 dollars
        [button] Back to Search [button_]
        [button] < Prev [button_]
        scent
        [button] mint [button_]
        [button] unscented [button_]
        Orchard & Pine Herbal Clarifying Shampoo B91N
        Price: $23.19
        [button] Description [button_]
        [button] Buy Now [button_]

        Available actions:
        click[Back to Search]
        click[< Prev]
        click[mint]
        ...
        Turns left: 13.

    ## Starting State

    The search page of a new shop session for one goal of the split: ``reset(seed=s)`` draws the goal
    uniformly from the split's goals, ``reset(options={"goal_index": i})`` picks goal ``i``.

    ## Rewards

    Buying gives WebShop's reward, in [0, 1]::

        reward = r_type * (attribute matches + option matches + [price <= price_upper])
                        / (len(goal attributes) + len(goal options) + 1)

    A goal attribute matches when it is fuzzily one of the product's attributes (thefuzz 0.19's
    ``token_set_ratio`` above 85) or a substring of its title, bullet points or description; a goal
    option matches when one of the *purchased* option values scores above 85 with it, after colour
    normalisation (the product's text does not count). ``r_type`` is 1, 0.5, 0.1 or 0 from the search
    query, the category breadcrumb and the nouns shared by the two titles; see ``reward.py`` for every
    rule. Success means reward 1. Every other step gives 0; an invalid action (impossible on the
    current page) or a malformed response gives ``format_penalty`` (default -0.1) and changes nothing.

    ## Episode End

    - Termination: ``click[Buy Now]`` (the purchase is scored).
    - Truncation: ``max_turns`` turns (default 15) pass without a purchase (no reward for it), the
      optional ``max_actions`` budget (default none) runs out, or the browser or Playwright's driver
      dies (reported with ``info["aborted"]`` and the reason in ``info["error"]``, reward 0; both are
      relaunched as needed and the next ``reset`` works).

    ## Info

    Every step: ``success``, ``format_ok``, ``action_valid`` and ``grader`` (``webshop-get_reward/``
    and the title tagger's name, e.g. ``webshop-get_reward/spacy:en_core_web_sm-3.8.0``; counted in
    the eval summary); ``reset`` adds ``instructions`` (the system prompt), a step ``actions``, or
    ``error`` for a malformed response. At the episode's
    end also: ``goal`` (instruction, target ASIN, attributes, options, price bound, kind), ``goal_index``,
    ``purchase`` (ASIN, options, price; None without one), ``reward``, ``reward_parts`` (``r_type``,
    ``r_att``, ``r_option``, ``r_price``, their weights, match counts, ``title_score``),
    ``title_tagger`` (which part-of-speech tagger found the title nouns: ``spacy:en_core_web_sm-...``
    as upstream, or the ``lexicon:...`` fallback) and ``aborted``.

    ## Arguments

    - ``data_dir``: folder of WebShop's files (``items_shuffle_1000.json``, ``items_ins_v2_1000.json``,
      optionally ``items_human_ins_1000.json``); default ``$AGENTGYM_WEBSHOP_DATA``, else the generated
      catalogue.
    - ``goals``: ``"synthetic"`` (default) or ``"human"`` instructions.
    - ``split``: ``"test"`` (default; the first 500 goals after upstream's seeded shuffle), ``"train"``
      (the rest) or ``"all"``.
    - ``num_products``: size of the generated catalogue (default 300; without ``data_dir``).
    - ``title_tagger``: the tagger of the reward's title nouns: ``"auto"`` (default, or
      ``$AGENTGYM_WEBSHOP_TAGGER``: spaCy's ``en_core_web_sm`` when installed, else the lexicon
      fallback), ``"spacy"``, ``"lexicon"``, or a spaCy model's name or path.
    - ``max_turns`` (15), ``response_format`` (``"answer"``), ``max_actions_per_turn`` (1),
      ``max_actions`` (None), ``format_penalty`` (-0.1), ``max_response_chars``, ``render_mode``
      (``"ansi"``): see ``agentgym.env.AgentEnv``.

    ## Version History

    - v0: the reward computed as upstream's ``get_reward``, and checked against it on real purchases
      (``tests/fixtures/webshop_reward_golden.json``): options are matched against the purchased
      options only, with the same fuzzy rule for size as for every other option, and title nouns
      come from spaCy's tagger as upstream (or a documented fallback). Earlier v0 builds also counted
      an option found anywhere in the product's text and matched size exactly, so a right product
      bought with a wrong colour or size could score 1.0. The id is unchanged.
    - v0 (first release): WebShop in a real Chromium on a local shop server.
    """

    tools = (SEARCH_TOOL, CLICK_TOOL)

    def __init__(
        self,
        *,
        data_dir: str | None = None,
        goals: str = "synthetic",
        split: str = "test",
        num_products: int = 300,
        max_turns: int = 15,
        title_tagger: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(max_turns=max_turns, **kwargs)
        self.tagger: TitleTagger = get_tagger(title_tagger)  # before the browser: a bad choice fails fast
        if goals not in GOAL_KINDS:
            raise ValueError(f"goals must be one of {GOAL_KINDS}, got {goals!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        path = resolve_data_dir(data_dir)
        self.catalogue: Catalogue = load_catalogue(path) if path else generated_catalogue(num_products)
        self.goal_list: list[Goal] = self.catalogue.goals(goals, split)
        if not self.goal_list:
            raise ValueError(
                f"the {self.catalogue.name} catalogue has no {goals} goals in the {split!r} split"
            )
        self._closed = True
        self.server = ShopServer.acquire()
        try:
            self.host = BrowserHost.acquire()
        except BaseException:
            ShopServer.release()
            raise
        self._closed = False
        self.shop = self.server.shop(self.catalogue)
        self.tab: Tab = self.host.fresh_tab()
        self.sid: str | None = None
        self.goal: Goal = self.goal_list[0]
        self._page: dict = {"text": "", "clickables": [], "has_search": False, "url": ""}
        self._aborted: str | None = None
        self._aborted_now = False
        self._purchase: dict | None = None
        self._reward_parts: dict | None = None
        self._reward = 0.0

    # ----- episode -----
    def _new_episode(self, options: dict) -> None:
        index = options.get("goal_index")
        if index is None:
            index = int(self.np_random.integers(len(self.goal_list)))
        if not 0 <= int(index) < len(self.goal_list):
            raise ValueError(f"goal_index must be in [0, {len(self.goal_list)}), got {index}")
        self.goal_index = int(index)
        self.goal = self.goal_list[self.goal_index]
        if self.sid is not None:
            self.server.app.close_session(self.sid)
        self.sid = self.server.app.open_session(self.shop, self.goal, self.tagger)
        self._aborted, self._aborted_now = None, False
        self._purchase, self._reward_parts, self._reward = None, None, 0.0
        self._oracle_query = self._choose_oracle_query()
        start = f"{self.server.base_url}/{self.sid}"
        try:
            if self.tab.stale or self.tab.episodes >= TAB_EPISODES:
                self._replace_tab()
            self._page = self.tab.goto(start)
            if self.tab.episodes:  # the renderer keeps every page it left until a full collection
                self.tab.collect_garbage()
        except (PlaywrightError, TimeoutError):  # the driver or browser died between episodes
            self._replace_tab(recover=True)
            self._page = self.tab.goto(start)
        self.tab.episodes += 1

    def _replace_tab(self, recover: bool = False) -> None:
        """Close the tab and open a fresh one; with ``recover``, first relaunch the driver and browser if
        either is dead (``fresh_tab`` does so anyway when the new tab cannot be made)."""
        self.tab.close()
        if recover:
            self.host.recover()
        self.tab = self.host.fresh_tab()

    def _failure(self, error: Exception) -> str:
        """Why a browser action failed, in words for the agent and ``info["error"]``."""
        if self.tab.generation != self.host.generation:
            return "The browser was restarted (after a crash seen by another env)"
        if not self.host.driver_alive():
            return "Playwright's driver died"
        if not self.host.browser_alive():
            return "The browser crashed"
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        return f"The browser failed ({type(error).__name__}: {first_line})"

    def _apply(self, command: str) -> Applied:
        found = match_tool(command, self.tools)
        if found is None:
            return Applied(
                valid=False, message=f"Unknown action {command!r}; use search[query] or click[element]."
            )
        tool, arguments = found
        if tool.name == "search":
            query = arguments["query"].strip()
            if not self._page["has_search"]:
                return Applied(
                    valid=False, message="There is no search bar on this page; click[Back to Search] first."
                )
            if not query:
                return Applied(valid=False, message="The search query is empty.")
            return self._browse(lambda: self.tab.search(query.lower()))
        wanted = _label(arguments["element"])
        labels = [_label(c) for c in self._page["clickables"]]
        if wanted == "search" and self._page["has_search"]:
            return Applied(valid=False, message="To search, use search[your query].")
        if wanted not in labels:
            return Applied(
                valid=False,
                message=f"There is no clickable element {arguments['element']!r} on this "
                "page; see the available actions.",
            )
        index = labels.index(wanted)
        return self._browse(lambda: self.tab.click(index))

    def _browse(self, action) -> Applied:
        """Carry out a browser action; a dead browser aborts the episode instead of raising."""
        try:
            self._page = action()
        except (PlaywrightError, TimeoutError) as exc:
            self._aborted = f"{self._failure(exc)}; the episode was aborted. The next reset starts afresh."
            self._aborted_now = True
            try:
                self._replace_tab(recover=True)
            except Exception as restart_error:  # a browser that cannot restart is a real fault
                raise RuntimeError(f"the browser died and could not be restarted: {restart_error}") from exc
            return Applied(valid=False, message=self._aborted)
        session = self.server.app.sessions.get(self.sid) if self.sid is not None else None
        if session is not None and session.purchase is not None and self._purchase is None:
            self._purchase = dict(session.purchase)
            self._reward, self._reward_parts = float(session.reward or 0.0), dict(session.reward_parts or {})
            return Applied(
                reward=self._reward,
                message=f"You bought {self._purchase['asin']}; the reward is {self._reward:.3f}.",
            )
        return Applied()

    def step(self, action: str):
        self._aborted_now = False
        obs, reward, terminated, truncated, info = super().step(action)
        if self._aborted_now:  # not the agent's doing: no penalty, and the episode is cut, not ended
            reward, terminated, truncated = 0.0, False, True
            info.update(aborted=True, error=self._aborted)
        return obs, reward, terminated, truncated, info

    @property
    def success(self) -> bool:
        return self._purchase is not None and self._reward >= 1.0 - 1e-9

    @property
    def terminal(self) -> bool:
        return self._purchase is not None or self._aborted is not None

    def _info(self, format_ok: bool, action_valid: bool, **extra: Any) -> dict[str, Any]:
        info = super()._info(format_ok, action_valid, **extra)
        info["grader"] = f"webshop-get_reward/{self.tagger.name}"
        if self._started and (self.terminal or self.turn >= self.max_turns or self.actions_left == 0):
            info.update(
                goal=self.goal.as_dict(),
                goal_index=self.goal_index,
                purchase=self._purchase,
                reward=self._reward,
                reward_parts=self._reward_parts,
                title_tagger=self.tagger.name,
                aborted=self._aborted is not None,
            )
        return info

    # ----- what the agent sees -----
    def _available_actions(self) -> list[str]:
        actions = ["search[<your query>]"] if self._page["has_search"] else []
        return actions + [f"click[{c}]" for c in self._page["clickables"]]

    def _render_state(self) -> str:
        if self._aborted is not None:
            return self._aborted
        if self._purchase is not None:
            return self._page["text"]
        actions = "\n".join(self._available_actions())
        return f"{self._page['text']}\n\nAvailable actions:\n{actions}"

    def _task_instructions(self) -> str:
        return (
            "You are shopping on WebShop, a web store, in a web browser. Buy the product that the "
            "instruction "
            "on the page asks for: the right kind of product, with the requested attributes and options "
            "(size, color, ...), below the price limit.\n"
            "The page shows its text with clickable elements marked as [button] text [button_] "
            "([clicked button] for an option you chose or a product you already viewed), then the actions "
            "available.\n"
            "Actions: search[query] on a page with a search bar; click[text] with the text of a clickable "
            "element: a product ID in the results, an option value, Next >, < Prev, Back to Search, "
            "Description, Features, Reviews, Buy Now. Choose every option the instruction names before "
            "clicking Buy Now. Buying ends the episode; its reward is WebShop's score of the purchase "
            f"(1.0 when everything matches). You have {self.max_turns} turns."
        )

    # ----- the scripted shopper -----
    def _choose_oracle_query(self) -> str:
        """The instruction if it finds the target in the top 50, else the target's title."""
        instruction = _label(self.goal.instruction.replace("||", " "))  # "||" separates actions
        if self.goal.asin in self.shop.search.search(instruction):
            return instruction
        return _label(self.catalogue.by_asin[self.goal.asin].title.replace("||", " "))

    def _goal_option_values(self) -> list[str]:
        """The product's option values to choose: the goal's own, or the closest ones for human goals."""
        product = self.catalogue.by_asin[self.goal.asin]
        offered = [(name, value) for name, values in product.options.items() for value in values]
        chosen = []
        for name, wanted in self.goal.options.items():
            if wanted in product.options.get(name, []):
                chosen.append(wanted)
                continue
            scored = [(token_set_ratio(wanted, value), value) for _, value in offered if value not in chosen]
            if scored and max(scored)[0] > 85:
                chosen.append(max(scored)[1])
        return chosen

    def _oracle_plan(self) -> tuple[str, str]:
        """(think, command) of the scripted shopper on the current page."""
        url = urlparse(self._page["url"])
        parts = [p for p in url.path.split("/") if p]
        args = parse_qs(url.query)
        target = self.goal.asin
        labels = [_label(c) for c in self._page["clickables"]]
        if self._page["has_search"]:
            return f"I will search for the product: {self._oracle_query}", f"search[{self._oracle_query}]"
        if parts[:1] == ["results"]:
            query = args.get("q", [""])[0]
            if _label(target) in labels:
                return f"{target} is the product I want.", f"click[{target}]"
            ranked = self.shop.search.search(query) if query else []
            if _label(query) != self._oracle_query or target not in ranked:
                return "The product is not in these results.", "click[Back to Search]"
            page = int(args.get("page", ["1"])[0])
            later = ranked.index(target) >= page * 10
            return (
                ("The product is on a later page.", "click[Next >]")
                if later
                else ("The product is on an earlier page.", "click[< Prev]")
            )
        if parts[:1] == ["item"] and len(parts) == 3:
            if parts[2] != target:
                return "This is not the product I want.", "click[< Prev]"
            selected = set(json.loads(args.get("options", ["{}"])[0]).values())
            for value in self._goal_option_values():
                if value not in selected:
                    return f"The instruction asks for {value}.", f"click[{value}]"
            return "Every requested option is chosen; I will buy it.", "click[Buy Now]"
        return "I will go back to the product.", "click[< Prev]"

    def _oracle_commands(self) -> list[str]:
        return [self._oracle_plan()[1]]

    def _oracle_think(self) -> str:
        return self._oracle_plan()[0]

    def _random_command(self, rng: np.random.Generator) -> str:
        actions = [a for a in self._available_actions() if not a.startswith("search[")]
        if self._page["has_search"]:
            words = re.findall(r"[a-z]+", self.goal.instruction.lower())
            actions.append(f"search[{' '.join(rng.choice(words, size=min(3, len(words)), replace=False))}]")
        return actions[int(rng.integers(len(actions)))] if actions else "click[Back to Search]"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.sid is not None:
            self.server.app.close_session(self.sid)
        self.tab.close()
        BrowserHost.release()
        ShopServer.release()
        super().close()

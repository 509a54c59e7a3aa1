"""The golden WebShop purchases (tests/fixtures/webshop_reward_golden.json): regenerate them with upstream's
own code, and read them back.

The cases are (goal, purchased product, purchased options, price): 391 drawn with a fixed seed from the real
1000-product data (``items_shuffle_1000.json`` and friends, loaded by ``agentgym.envs.webshop.data``)
and 21 hand-made hard cases (wrong colour or size, possessive titles, a price over the limit, ...) on
products and goals written here. Each is scored by ``get_reward`` of upstream's
``web_agent_site/engine/goal.py`` (princeton-nlp/WebShop), imported from a checkout given on the command
line (this repository holds none of upstream's code).

The data set's text never enters the fixture (/work/shared/data/PROVENANCE.md: those files are read
from a path, not copied): a real case names its goal by kind and index in the loader's goal list
(``Catalogue.goals(kind, "all")``) and its product by ASIN, with the purchased options and the price
paid; the reader (``real_cases``) loads the goal and product texts from the data folder, after checking
that its files are the ones the fixture was made from (their SHA-256 is in the header). Upstream's
outputs are stored as they came: the reward and its parts. The hand-made cases carry their own
(invented) products and goals. The nouns upstream's spaCy model found in each title are stored per
ASIN (and per hand-made goal) as short SHA-256 digests (``noun_digest``): the type factor only counts
which nouns the two titles share and how many the goal's has, which the digests keep, while a list of
the nouns themselves would be most of the title's words. ``FixtureNouns`` replays them, so the reward
can be checked against upstream's without spaCy.

Upstream's requirements are needed where this runs: ``thefuzz==0.19.0`` (the version upstream pins;
without python-Levenshtein it scores with difflib), ``rich``, ``spacy`` and an English model. Upstream
loads ``en_core_web_sm``; ``--spacy-model`` takes another installed name or a model folder, which is
loaded in its place.

    python -m venv --system-site-packages /tmp/ws-ref
    /tmp/ws-ref/bin/pip install thefuzz==0.19.0 rich spacy
    /tmp/ws-ref/bin/python -m spacy download en_core_web_sm
    PYTHONPATH=$PWD /tmp/ws-ref/bin/python benchmarks/webshop_reward_golden.py \\
        --upstream /path/to/WebShop --upstream-commit "$(git -C /path/to/WebShop rev-parse HEAD)" \\
        --data ../shared/data/webshop
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from agentgym.envs.webshop.data import Catalogue, Goal, Product, load_catalogue
from agentgym.envs.webshop.reward import COLOR_WORDS

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "webshop_reward_golden.json"
DATA_FILES = ("items_shuffle_1000.json", "items_ins_v2_1000.json", "items_human_ins_1000.json")
PRODUCT_FIELDS = ("title", "bullet_points", "description", "attributes", "query", "product_category")
GOAL_FIELDS = ("kind", "attributes", "options", "price_upper", "name", "query", "product_category")
NOUN_DIGEST_CHARS = 8  # hex digits of a noun's SHA-256; main() checks that no two of its nouns collide
POOL, POOL_OWNERS = 110, 20  # products the real cases are drawn from; of them, with "'s" in the title
Case = tuple[str, Goal, Product, dict[str, str], float]  # kind, goal, bought product, options, price


def import_upstream(checkout: Path, spacy_model: str) -> Any:
    """Upstream's ``engine/goal.py`` as a module, its spaCy model replaced by ``spacy_model``."""
    if not (checkout / "web_agent_site" / "engine" / "goal.py").is_file():
        raise SystemExit(
            f"{checkout} has no web_agent_site/engine/goal.py (a princeton-nlp/WebShop checkout)"
        )
    import spacy

    real_load = spacy.load
    spacy.load = lambda name, *args, **kwargs: real_load(spacy_model, *args, **kwargs)
    sys.path.insert(0, str(checkout))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # thefuzz 0.19 warns that it runs on difflib
            from web_agent_site.engine import goal
    finally:
        spacy.load = real_load
    return goal


def upstream_product(product: Product) -> dict[str, Any]:
    return {
        "asin": product.asin,
        "name": product.title,
        "Title": product.title,
        "query": product.query,
        "product_category": product.product_category,
        "Attributes": list(product.attributes),
        "BulletPoints": list(product.bullet_points),
        "Description": product.description,
    }


def upstream_goal(goal: Goal) -> dict[str, Any]:
    return {
        "asin": goal.asin,
        "name": goal.name,
        "query": goal.query,
        "product_category": goal.product_category,
        "attributes": list(goal.attributes),
        # upstream's synthetic goals keep their options as a dict, human goals as a list of values
        "goal_options": dict(goal.options) if goal.kind == "synthetic" else list(goal.options.values()),
        "price_upper": goal.price_upper,
    }


def some_options(product: Product, rng: random.Random, keep: float = 0.0, like: dict | None = None) -> dict:
    """A random option value per option of ``product``; with ``like``, each kept with probability ``keep``."""
    chosen = {}
    for name, values in sorted(product.options.items()):
        if not values:
            continue
        if like and name in like and rng.random() < keep:
            chosen[name] = like[name]
        else:
            chosen[name] = rng.choice(values)
    return chosen


def make_product(asin: str, title: str, **fields: Any) -> Product:
    defaults: dict[str, Any] = dict(
        description="",
        bullet_points=[""],
        category="fashion",
        query="",
        product_category="",
        pricing=[10.0],
        price_tag="$10.0",
        options={},
        attributes=["DUMMY_ATTR"],
    )
    defaults.update(fields)
    return Product(asin=asin, title=title, **defaults)


def make_goal(product: Product, kind: str = "synthetic", **fields: Any) -> Goal:
    defaults: dict[str, Any] = dict(
        instruction="",
        attributes=["cotton"],  # upstream divides by the number of attributes: never none
        options={},
        price_upper=100.0,
        query=product.query,
        category=product.category,
        product_category=product.product_category,
        name=product.title,
    )
    defaults.update(fields)
    return Goal(asin=product.asin, kind=kind, **defaults)


def hand_made_cases_made() -> list[Case]:
    """Hard cases: wrong colour or size, possessives, prices over the limit, odd characters."""
    shirt = make_product(
        "HM00000001",
        "Acme Men's Cotton Crew Neck T-Shirt, Navy Blue, Large",
        description="A navy blue shirt, also sold in red and x-large.",
        bullet_points=["Machine wash", "Short sleeve", "Sizes large and x-large"],
        query="men's t-shirts",
        product_category="Clothing, Shoes & Jewelry › Men › Clothing › Shirts › T-Shirts",
        options={"color": ["navy blue", "red", "jet black"], "size": ["large", "x-large", "small"]},
        attributes=["machine wash", "short sleeve", "cotton"],
    )
    goal = make_goal(
        shirt, attributes=["machine wash", "short sleeve"], options={"color": "red", "size": "x-large"}
    )
    black = make_goal(shirt, attributes=["cotton"], options={"color": "black", "size": "small"})
    jet = make_goal(shirt, attributes=["cotton"], options={"color": "jet black", "size": "large"})
    women_shoe = make_product(
        "HM00000002",
        "Women's Lightweight Running Shoes, Breathable Mesh Sneakers for Women",
        query="women's running shoes",
        product_category="Clothing, Shoes & Jewelry › Women › Shoes › Athletic",
        attributes=["rubber sole", "lightweight"],
        options={"size": ["7", "7.5", "8"], "color": ["white | pink", "black"]},
    )
    women_watch = make_product(
        "HM00000003",
        "Casio Women's Classic Quartz Watch with Resin Strap",
        query="women's watches",
        product_category="Electronics › Wearable Technology › Smartwatches",
        attributes=["quartz movement", "water resistant"],
    )
    men_wallet = make_product(
        "HM00000004",
        "Men's Leather Bifold Wallet",
        query="men's wallets",
        product_category="Accessories › Wallets",
        attributes=["genuine leather"],
    )
    shoe_goal = make_goal(
        women_shoe, attributes=["rubber sole", "lightweight"], options={"size": "7.5", "color": "black"}
    )
    human = make_goal(
        women_shoe,
        kind="human",
        attributes=["lightweight"],
        options={"option 1": "x-large", "option 2": "white"},
    )
    odd = make_product(
        "HM00000005",
        "Caf\u00e9 Women\u2019s Latte Mug \u2013 12 oz",
        description="A ceramic caf\u00e9 mug.",
        query="mugs",
        product_category="Home & Kitchen › Kitchen & Dining › Mugs",
        attributes=["women\u2019s fit", "caf\u00e9 style", "dishwasher safe", "t\u2019shirt"],
    )
    odd_goal = make_goal(
        odd,
        attributes=["womens fit", "caf style", "microwave safe", "tshirt"],
        options={"style": "caf\u00e9"},
    )
    # thefuzz 0.19's difflib scores these pairs 84 one way round and 89 the other (RapidFuzz: 89 both)
    binoculars = make_product(
        "HM00000006",
        "Bushnell HD Binoculars for Adults, Waterproof",
        query="binoculars",
        product_category="Electronics › Camera & Photo › Binoculars",
        attributes=["10x50 hd binoculars", "waterproof"],
    )
    wide = make_goal(
        binoculars,
        kind="human",
        attributes=["15x60 hd binoculars"],
        options={"option 1": "15x60 hd binoculars"},
    )
    narrow = make_goal(
        binoculars, kind="human", attributes=["waterproof"], options={"option 1": "10x50 hd binoculars"}
    )
    no_nouns = make_goal(men_wallet, name="soft and warm", query="other", product_category="Elsewhere")
    return [
        (
            "wrong colour and size named in the text",
            goal,
            shirt,
            {"color": "navy blue", "size": "large"},
            9.0,
        ),
        ("wrong colour, right size", goal, shirt, {"color": "navy blue", "size": "x-large"}, 9.0),
        ("right colour, wrong size", goal, shirt, {"color": "red", "size": "small"}, 9.0),
        (
            "size x-large bought for large",
            make_goal(shirt, options={"size": "large"}),
            shirt,
            {"size": "x-large"},
            9.0,
        ),
        ("right options", goal, shirt, {"color": "red", "size": "x-large"}, 9.0),
        ("right options, price over the limit", goal, shirt, {"color": "red", "size": "x-large"}, 100.01),
        ("price exactly at the limit", goal, shirt, {"color": "red", "size": "x-large"}, 100.0),
        ("no options bought", goal, shirt, {}, 9.0),
        ("colour word goal, shade bought", black, shirt, {"color": "jet black", "size": "small"}, 9.0),
        ("shade goal, plain colour bought", jet, shirt, {"color": "black", "size": "large"}, 9.0),
        ("shade goal, other shade bought", jet, shirt, {"color": "navy blue", "size": "large"}, 9.0),
        ("possessive titles, other product", shoe_goal, women_watch, {}, 50.0),
        ("possessive titles, other product 2", shoe_goal, men_wallet, {}, 50.0),
        ("possessive titles, target", shoe_goal, women_shoe, {"size": "7.5", "color": "black"}, 50.0),
        (
            "possessive titles, wrong size 7 for 7.5",
            shoe_goal,
            women_shoe,
            {"size": "7", "color": "black"},
            50.0,
        ),
        (
            "human goal, fuzzy option values",
            human,
            women_shoe,
            {"size": "x large", "color": "white | pink"},
            50.0,
        ),
        ("human goal, nothing bought", human, women_shoe, {}, 50.0),
        ("characters beyond ASCII", odd_goal, odd, {"style": "caf\u00e9"}, 10.0),
        (
            "fuzzy score 84 (difflib) for bought 10x50, wanted 15x60",
            wide,
            binoculars,
            {"style": "10x50 hd binoculars"},
            10.0,
        ),
        (
            "fuzzy score 89 (difflib) for bought 15x60, wanted 10x50",
            narrow,
            binoculars,
            {"style": "15x60 hd binoculars"},
            10.0,
        ),
        ("a goal title without nouns", no_nouns, men_wallet, {}, 10.0),
    ]


def colour_inside(value: str) -> bool:
    """``value`` holds one of upstream's colour words without being one."""
    return value not in COLOR_WORDS and any(c in value for c in COLOR_WORDS)


def goals_of_pool(pool: list[Product], goals_of: dict[str, list[Goal]]) -> list[Goal]:
    return [g for p in pool for g in goals_of[p.asin]]


def data_cases(catalogue: Catalogue, rng: random.Random) -> list[Case]:
    """Purchases for real goals of a pool of products (which keeps the fixture small): the target with
    right, wrong or missing options or over the price limit, and other products of the pool."""
    goals_of: dict[str, list[Goal]] = {}
    for goal in catalogue.goals("synthetic", "all"):
        goals_of.setdefault(goal.asin, []).append(goal)
    with_goals = [p for p in catalogue.products if p.asin in goals_of]
    owners = [p for p in with_goals if "'s" in p.title.lower()]  # possessive titles: "Men's", "Women's"
    pool = rng.sample([p for p in with_goals if p not in owners], POOL - POOL_OWNERS)
    pool += rng.sample(owners, POOL_OWNERS)
    owners = [p for p in pool if p in owners]
    by_query: dict[str, list[Product]] = {}
    for p in pool:
        by_query.setdefault(p.query, []).append(p)
    cases: list[Case] = []

    def add(
        kind: str, goal: Goal, product: Product, options: dict[str, str], paid: float | None = None
    ) -> None:
        cases.append((kind, goal, product, options, catalogue.prices[product.asin] if paid is None else paid))

    def goal_of(products: list[Product], need: Any = lambda g: True) -> Goal:
        while True:
            found = [g for g in goals_of[rng.choice(products).asin] if need(g)]
            if found:
                return rng.choice(found)

    def some_other(goal: Goal, choices: list[Product]) -> Product:
        return rng.choice([p for p in choices if p.asin != goal.asin] or pool)

    for _ in range(60):
        goal = goal_of(pool)
        add("target, the goal's options", goal, catalogue.by_asin[goal.asin], dict(goal.options))
    for _ in range(90):
        goal = goal_of(pool, lambda g: g.options)
        target = catalogue.by_asin[goal.asin]
        add("target, random options", goal, target, some_options(target, rng, keep=0.5, like=goal.options))
    for _ in range(20):
        goal = goal_of(pool, lambda g: len(g.options) > 1)
        options = dict(goal.options)
        options.pop(rng.choice(sorted(options)))
        add("target, an option missing", goal, catalogue.by_asin[goal.asin], options)
    for _ in range(25):
        goal = goal_of(pool, lambda g: g.price_upper < 1e6)
        target = catalogue.by_asin[goal.asin]
        add("target, price over the limit", goal, target, dict(goal.options), goal.price_upper + 0.5)
    shared_query = [p for p in pool if len(by_query[p.query]) > 1]
    for _ in range(45):
        goal = goal_of(shared_query)
        other = some_other(goal, by_query[goal.query])
        add("other product, same query", goal, other, some_options(other, rng))
    for _ in range(70):
        goal = goal_of(pool)
        other = some_other(goal, pool)
        add("other product, random", goal, other, some_options(other, rng))
    for _ in range(40):
        goal = goal_of(owners)
        other = some_other(goal, owners)
        add("other product, possessive titles", goal, other, some_options(other, rng))
    # a colour word inside a value ("rec-tan-gular", "r.brown2070"): upstream's right purchase scores < 1
    inside = [g for g in goals_of_pool(pool, goals_of) if any(colour_inside(v) for v in g.options.values())]
    for goal in rng.sample(inside, min(15, len(inside))):
        add(
            "target, the goal's options, a colour word inside one",
            goal,
            catalogue.by_asin[goal.asin],
            dict(goal.options),
        )
    for goal in catalogue.goals("human", "all"):
        target = catalogue.by_asin[goal.asin]
        add("human goal, target", goal, target, some_options(target, rng))
        other = some_other(goal, pool)
        add("human goal, other product", goal, other, some_options(other, rng))
    return cases


# ----- reading the fixture back -----
@dataclass
class GoldenCase:
    id: int
    kind: str
    goal: Goal
    product: Product  # the purchased product
    options: dict[str, str]  # the purchased options
    price: float  # the price paid
    upstream: dict[str, Any]  # upstream's reward and its parts
    source: str  # "data" (drawn from the data files) or "hand-made"
    goal_nouns: list[str] | None = None  # a hand-made goal's own title's noun digests (else its target's)


def noun_digest(noun: str) -> str:
    return hashlib.sha256(noun.encode("utf-8")).hexdigest()[:NOUN_DIGEST_CHARS]


class FixtureNouns:
    """A title tagger that answers with the nouns upstream's spaCy model found (as digests), for the
    titles of ``cases``: everything of upstream's reward but the tagger itself."""

    name = "upstream-nouns (from the fixture)"

    def __init__(self, golden: dict[str, Any], cases: list[GoldenCase]) -> None:
        self.by_title: dict[str, list[str]] = {}
        for case in cases:
            self.by_title[case.product.title] = golden["nouns"][case.product.asin]
            own = case.goal_nouns  # a real goal's name is its target's title
            self.by_title[case.goal.name] = golden["nouns"][case.goal.asin] if own is None else own

    def nouns(self, title: str) -> list[str]:
        return list(self.by_title[title])


def read_golden(fixture: Path = FIXTURE) -> dict[str, Any]:
    return json.loads(fixture.read_text(encoding="utf-8"))


def file_digests(data_dir: Path) -> dict[str, str | None]:
    """SHA-256 of each of WebShop's files the fixture is made from (None for a missing one)."""
    return {
        name: hashlib.sha256((data_dir / name).read_bytes()).hexdigest()
        if (data_dir / name).is_file()
        else None
        for name in DATA_FILES
    }


def _product(asin: str, fields: dict[str, Any]) -> Product:
    return Product(
        asin=asin,
        category="",
        pricing=[],
        price_tag="",
        options={},
        **{f: fields[f] for f in PRODUCT_FIELDS},
    )


def hand_made_cases(golden: dict[str, Any]) -> list[GoldenCase]:
    """The hand-made cases, self-contained (their products and goals are written in the fixture)."""
    products = {asin: _product(asin, fields) for asin, fields in golden["hand_made_products"].items()}
    cases = []
    for case in golden["cases"]:
        if case["source"] == "hand-made":
            g = case["goal"]
            goal = Goal(asin=g["asin"], instruction="", category="", **{f: g[f] for f in GOAL_FIELDS})
            cases.append(_case(case, goal, products[case["product"]]))
    return cases


def real_cases(golden: dict[str, Any], data_dir: Path) -> list[GoldenCase]:
    """The cases drawn from the data, their goals and products loaded from the files in ``data_dir``."""
    found, made_from = file_digests(data_dir), golden["header"]["data_sha256"]
    if found != made_from:
        differ = [name for name in DATA_FILES if found[name] != made_from[name]]
        raise ValueError(
            f"{data_dir}: {differ} are not the files the WebShop golden fixture was made from "
            f"(SHA-256 {made_from}); regenerate it with benchmarks/webshop_reward_golden.py"
        )
    catalogue = load_catalogue(data_dir.resolve())
    cases = []
    for case in golden["cases"]:
        if case["source"] == "data":
            g = case["goal"]
            goal = catalogue.goals(g["kind"], "all")[g["index"]]
            if goal.asin != g["asin"]:
                raise ValueError(f"case {case['id']}: goal {g} is for {goal.asin} in {data_dir}")
            cases.append(_case(case, goal, catalogue.by_asin[case["product"]]))
    return cases


def _case(case: dict[str, Any], goal: Goal, product: Product) -> GoldenCase:
    return GoldenCase(
        id=case["id"],
        kind=case["kind"],
        goal=goal,
        product=product,
        options=case["options"],
        price=case["price"],
        upstream=case["upstream"],
        source=case["source"],
        goal_nouns=case["goal"].get("nouns"),
    )


# ----- writing it -----
def dump(fixture: dict[str, Any]) -> str:
    """JSON with one product, noun list or case a line, so that a regenerated fixture diffs well."""

    def one(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    lines = ["{", f'"header": {json.dumps(fixture["header"], indent=1, ensure_ascii=False)},']
    for key in ("hand_made_products", "nouns"):
        items = [f"{one(k)}:{one(v)}" for k, v in fixture[key].items()]
        lines += [f'"{key}": {{', ",\n".join(items), "},"]
    lines += ['"cases": [', ",\n".join(one(c) for c in fixture["cases"]), "]", "}"]
    return "\n".join(lines) + "\n"


def stored_goal(goal: Goal, source: str, index_of: dict[int, int], nouns: list[str] | None) -> dict[str, Any]:
    """A real goal by its place in the loader's list; a hand-made one whole, with its title's nouns when
    that is not its target's title."""
    if source == "data":
        return {"kind": goal.kind, "index": index_of[id(goal)], "asin": goal.asin}
    stored = {"asin": goal.asin, **{f: getattr(goal, f) for f in GOAL_FIELDS}}
    return stored if nouns is None else {**stored, "nouns": nouns}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--upstream", type=Path, required=True, help="a princeton-nlp/WebShop checkout")
    parser.add_argument("--upstream-commit", required=True, help="the checkout's commit, for the header")
    parser.add_argument("--data", type=Path, required=True, help="folder with items_shuffle_1000.json etc.")
    parser.add_argument("--spacy-model", default="en_core_web_sm", help="spaCy model name or folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=FIXTURE)
    args = parser.parse_args()

    goal_module = import_upstream(args.upstream.resolve(), args.spacy_model)
    nlp = goal_module.nlp
    data_dir = args.data.resolve()
    catalogue = load_catalogue(data_dir)
    index_of = {
        id(g): i for kind in ("synthetic", "human") for i, g in enumerate(catalogue.goals(kind, "all"))
    }
    rng = random.Random(args.seed)
    drawn = [("data", *case) for case in data_cases(catalogue, rng)]
    drawn += [("hand-made", *case) for case in hand_made_cases_made()]

    def nouns(title: str) -> list[str]:
        return [t.text.lower() for t in nlp(title) if t.pos_ in ("PNOUN", "NOUN", "PROPN")]

    all_nouns: set[str] = set()

    def digests(title: str) -> list[str]:
        found = nouns(title)
        all_nouns.update(found)
        return [noun_digest(n) for n in found]

    known = {**catalogue.by_asin, **{product.asin: product for _, _, _, product, _, _ in drawn}}
    hand_made_products: dict[str, dict] = {}
    noun_digests: dict[str, list[str]] = {}
    cases: list[dict[str, Any]] = []
    for index, (source, kind, goal, product, options, paid) in enumerate(drawn):
        target = known[goal.asin]
        reward, info = goal_module.get_reward(
            upstream_product(product), upstream_goal(goal), price=paid, options=dict(options), verbose=True
        )
        for p in (product, target):
            if p.asin not in noun_digests:
                noun_digests[p.asin] = digests(p.title)
            if source == "hand-made":
                hand_made_products.setdefault(p.asin, {f: getattr(p, f) for f in PRODUCT_FIELDS})
        if goal.name != target.title and source == "data":
            raise SystemExit(f"case {index}: a real goal whose name is not its target's title")
        goal_nouns = digests(goal.name) if goal.name != target.title else None
        cases.append(
            {
                "id": index,
                "source": source,
                "kind": kind,
                "goal": stored_goal(goal, source, index_of, goal_nouns),
                "product": product.asin,
                "options": options,
                "price": paid,
                "upstream": {"reward": reward, **{k: v for k, v in info.items() if not k.startswith("w_")}},
            }
        )
    if len({noun_digest(n) for n in all_nouns}) != len(all_nouns):
        raise SystemExit(f"two nouns share a {NOUN_DIGEST_CHARS}-digit digest: raise NOUN_DIGEST_CHARS")
    header = {
        "what": "WebShop purchases scored by upstream's get_reward (web_agent_site/engine/goal.py)",
        "regenerate": "benchmarks/webshop_reward_golden.py (see its docstring, which also tells the layout)",
        "upstream": {"repository": "princeton-nlp/WebShop", "commit": args.upstream_commit},
        "thefuzz": metadata.version("thefuzz"),
        "spacy": metadata.version("spacy"),
        "spacy_model": f"{nlp.meta['lang']}_{nlp.meta['name']}-{nlp.meta['version']}",
        "data": "WebShop's items_shuffle_1000, items_ins_v2_1000, items_human_ins_1000 (MIT, Princeton NLP), "
        "read from a path: real goals are named by kind and index in agentgym's goal list, products by ASIN",
        "data_sha256": file_digests(data_dir),
        "seed": args.seed,
        "cases": len(cases),
        "nouns": f"per ASIN (and per hand-made goal with its own name): the first {NOUN_DIGEST_CHARS} hex "
        "digits of the SHA-256 of each token upstream's spaCy model tags NOUN or PROPN in the title, "
        "lower-cased, in order",
    }
    fixture = {
        "header": header,
        "hand_made_products": hand_made_products,
        "nouns": noun_digests,
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dump(fixture))

    # read it back as the tests do: the same goals, products and purchases
    golden = read_golden(args.out)
    back = {c.id: c for c in real_cases(golden, data_dir) + hand_made_cases(golden)}
    for index, (_, _, goal, product, options, paid) in enumerate(drawn):
        case = back[index]
        fields = ("asin", *GOAL_FIELDS)
        assert [getattr(case.goal, f) for f in fields] == [getattr(goal, f) for f in fields], index
        assert (case.options, case.price) == (options, paid), index
        assert case.product.asin == product.asin and case.product.title == product.title, index
    rewards = [c["upstream"]["reward"] for c in cases]
    mean = sum(rewards) / len(rewards)
    print(f"{len(cases)} cases, {len(noun_digests)} products, mean upstream reward {mean:.3f}")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()

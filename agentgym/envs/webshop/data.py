"""WebShop's catalogue and goals: the real data files, or a generated catalogue, in one form.

Products are read from WebShop's raw files and cleaned as upstream does (princeton-nlp/WebShop,
``web_agent_site/engine/engine.py``: ``load_products``):
- ``items_shuffle*.json``: the products (name, description, bullet points, pricing, options, ...);
  an ASIN that is ``nan``, longer than 10 characters or seen before is skipped;
- ``items_ins_v2*.json``: per ASIN, its attributes and the synthetic instruction (with the attributes
  the instruction asks for);
- ``items_human_ins*.json`` (optional): per ASIN, the human-written instructions;
- ``reviews.json`` (optional): per ASIN, reviews and the average rating.

Option values are lower-cased and ``/`` becomes `` | ``; a price string ``"$12.99 - $20.00"`` gives the
range [12.99, 20.0]. A product's price is the price itself, 100.0 when it has none, or a uniform draw
inside its range.

Goals follow upstream's ``engine/goal.py``:
- synthetic: one goal per product with an instruction and per combination of its option values,
  ``"<instruction> with <name>: <value>, and <name>: <value>, and price lower than <bound> dollars"``;
- human: one goal per human instruction that names at least one attribute;
- the price upper bound: of the first four multiples of 10 above the price (10, 20, ..., 990), two are
  sampled and the larger kept; with fewer than two such multiples the bound is 1,000,000 and the
  instruction says nothing of price;
- goals are shuffled with ``random.Random(233)`` (the same permutation as upstream's
  ``random.seed(233); random.shuffle(goals)``); the first 500 are the test split, the rest train.

Difference from upstream: upstream draws product prices and price bounds from the unseeded global
``random`` module, so they change from run to run; here they come from seeded generators, so every
machine builds the same goals.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

DATA_ENV_VAR = "AGENTGYM_WEBSHOP_DATA"
PRICE_STEPS = [10.0 * i for i in range(1, 100)]
NO_PRICE_BOUND = 1_000_000.0
GOAL_SHUFFLE_SEED = 233
TEST_GOALS = 500
PRICE_SEED = 0  # seeds the product prices and the goals' price bounds (unseeded upstream)
SPLITS = ("test", "train", "all")
GOAL_KINDS = ("synthetic", "human")


@dataclass
class Product:
    asin: str
    title: str
    description: str
    bullet_points: list[str]
    category: str
    query: str
    product_category: str
    pricing: list[float]
    price_tag: str
    options: dict[str, list[str]]
    attributes: list[str]
    rating: str = "N.A."
    reviews: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Goal:
    asin: str
    instruction: str
    attributes: list[str]
    # option name -> wanted value; human goals name their options "option 1", "option 2", ...
    options: dict[str, str]
    price_upper: float
    query: str
    category: str
    product_category: str
    name: str  # the target product's title (used by the type reward)
    kind: str  # "synthetic" or "human"
    weight: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "instruction": self.instruction,
            "asin": self.asin,
            "attributes": list(self.attributes),
            "options": dict(self.options),
            "price_upper": self.price_upper,
            "kind": self.kind,
            "query": self.query,
            "category": self.category,
        }


@dataclass
class Catalogue:
    """Products, their prices and both kinds of goals (shuffled, before the split)."""

    name: str
    products: list[Product]
    prices: dict[str, float]
    goals_by_kind: dict[str, list[Goal]]

    def __post_init__(self) -> None:
        self.by_asin = {p.asin: p for p in self.products}

    def goals(self, kind: str = "synthetic", split: str = "test") -> list[Goal]:
        """The goals of one kind in one split: the first 500 shuffled goals are ``test``, others ``train``."""
        if kind not in GOAL_KINDS:
            raise ValueError(f"goals must be one of {GOAL_KINDS}, got {kind!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        goals = self.goals_by_kind[kind]
        if split == "test":
            return goals[:TEST_GOALS]
        if split == "train":
            return goals[TEST_GOALS:]
        return goals


# ----- cleaning raw records -----
def parse_pricing(raw: Any) -> tuple[list[float], str]:
    """``"$12.99 - $20.00"`` -> ([12.99, 20.0], "$12.99 to $20.0"); no price -> ([100.0], "$100.0")."""
    values = []
    if isinstance(raw, str):
        for part in raw.split("$")[1:]:
            digits = re.sub(r"[^\d.]", "", part)
            try:
                values.append(float(Decimal(digits)))
            except InvalidOperation:
                continue
    if not values:
        return [100.0], "$100.0"
    if len(values) == 1:
        return values, f"${values[0]}"
    return values[:2], f"${values[0]} to ${values[1]}"


def clean_options(raw: Any) -> dict[str, list[str]]:
    """Customization options as {lower-case name: [lower-case values]}."""
    options: dict[str, list[str]] = {}
    if not isinstance(raw, dict):
        return options
    for name, contents in raw.items():
        if contents is None:
            continue
        values = [str(c["value"]).strip().replace("/", " | ").lower() for c in contents if c and "value" in c]
        options[name.lower()] = values
    return options


def product_price(pricing: list[float], rng: random.Random) -> float:
    if not pricing:
        return 100.0
    if len(pricing) == 1:
        return pricing[0]
    return rng.uniform(*pricing[:2])


def price_bound(price: float, rng: random.Random) -> tuple[float, str]:
    """The goal's price upper bound and its instruction suffix."""
    steps = [p for p in PRICE_STEPS if p > price][:4]
    if len(steps) < 2:
        return NO_PRICE_BOUND, ""
    upper = max(rng.sample(steps, 2))
    return upper, f", and price lower than {upper:.2f} dollars"


def build_catalogue(
    name: str,
    raw_products: list[dict],
    attributes: dict[str, dict],
    human_instructions: dict[str, list[dict]] | None = None,
    reviews: list[dict] | None = None,
) -> Catalogue:
    """Clean raw WebShop records into products, draw prices and build the goals."""
    review_by_asin = {r["asin"]: r for r in reviews or []}
    products: list[Product] = []
    seen: set[str] = set()
    for raw in raw_products:
        asin = str(raw.get("asin", ""))
        if asin == "nan" or len(asin) > 10 or asin in seen:
            continue
        seen.add(asin)
        pricing, price_tag = parse_pricing(raw.get("pricing"))
        bullets = raw.get("small_description")
        bullets = bullets if isinstance(bullets, list) else [bullets or ""]
        review = review_by_asin.get(asin, {})
        rating = review.get("average_rating") or raw.get("average_rating") or "N.A."
        products.append(
            Product(
                asin=asin,
                title=raw.get("name") or "",
                description=raw.get("full_description") or "",
                bullet_points=[str(b) for b in bullets],
                category=raw.get("category") or "",
                query=(raw.get("query") or "").lower().strip(),
                product_category=raw.get("product_category") or "",
                pricing=pricing,
                price_tag=price_tag,
                options=clean_options(raw.get("customization_options")),
                attributes=list(attributes.get(asin, {}).get("attributes") or ["DUMMY_ATTR"]),
                rating=str(rating),
                reviews=[
                    {
                        "score": r.get("score", r.get("stars")),
                        "title": r.get("title", ""),
                        "body": r.get("body", r.get("review", "")),
                    }
                    for r in review.get("reviews") or raw.get("reviews") or []
                ],
            )
        )

    rng = random.Random(PRICE_SEED)
    prices = {p.asin: product_price(p.pricing, rng) for p in products}
    synthetic = _synthetic_goals(products, prices, attributes, rng)
    human = _human_goals(products, prices, human_instructions or {}, rng)
    for goals in (synthetic, human):
        random.Random(GOAL_SHUFFLE_SEED).shuffle(goals)
    return Catalogue(name, products, prices, {"synthetic": synthetic, "human": human})


def _goal(
    product: Product,
    kind: str,
    instruction: str,
    attributes: list[str],
    options: dict[str, str],
    price_upper: float,
) -> Goal:
    return Goal(
        asin=product.asin,
        instruction=instruction,
        attributes=list(attributes),
        options=options,
        price_upper=price_upper,
        query=product.query,
        category=product.category,
        product_category=product.product_category,
        name=product.title,
        kind=kind,
    )


def _synthetic_goals(
    products: list[Product], prices: dict[str, float], attributes: dict[str, dict], rng: random.Random
) -> list[Goal]:
    goals: list[Goal] = []
    attribute_counts: dict[str, int] = defaultdict(int)
    for product in products:
        record = attributes.get(product.asin, {})
        instruction = record.get("instruction")
        wanted = record.get("instruction_attributes")
        if not instruction or not wanted:
            continue
        price_upper, price_text = price_bound(prices[product.asin], rng)
        names = sorted(product.options)
        for combination in itertools.product(*(product.options[n] for n in names)):
            options = dict(zip(names, combination, strict=True))
            option_text = ", and ".join(f"{k}: {v}" for k, v in options.items())
            option_text = f" with {option_text}" if option_text else ""
            goals.append(
                _goal(
                    product,
                    "synthetic",
                    f"{instruction}{option_text}{price_text}",
                    wanted,
                    options,
                    price_upper,
                )
            )
            for attribute in wanted:
                attribute_counts[attribute] += 1
    for goal in goals:  # rarer attributes weigh more, as upstream's goal sampling weights
        goal.weight = sum(1.0 / attribute_counts[a] for a in goal.attributes) / len(goal.attributes)
    return goals


def _human_goals(
    products: list[Product], prices: dict[str, float], human: dict[str, list[dict]], rng: random.Random
) -> list[Goal]:
    goals: list[Goal] = []
    for product in products:
        for record in human.get(product.asin, []):
            wanted = record.get("instruction_attributes") or []
            if not wanted:
                continue
            price_upper, price_text = price_bound(prices[product.asin], rng)
            options = {f"option {i + 1}": v for i, v in enumerate(record.get("instruction_options") or [])}
            instruction = record["instruction"].strip(".") + price_text
            goals.append(_goal(product, "human", instruction, wanted, options, price_upper))
    return goals


# ----- files -----
def _find(data_dir: Path, stem: str, preferred: str, required: bool) -> Path | None:
    exact = data_dir / preferred
    if exact.is_file():
        return exact
    matches = sorted(data_dir.glob(f"{stem}*.json"))
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise FileNotFoundError(
            f"several {stem}*.json files in {data_dir} ({[m.name for m in matches]}); "
            f"keep one, or name it {preferred}"
        )
    if required:
        raise FileNotFoundError(
            f"no {stem}*.json in {data_dir}. WebShop's data files (items_shuffle_1000.json, "
            "items_ins_v2_1000.json) come from the princeton-nlp/WebShop setup (its Google Drive links); "
            f"point data_dir= or ${DATA_ENV_VAR} at the folder that holds them, or leave both unset to "
            "use the generated catalogue."
        )
    return None


def _require(data_dir: Path, stem: str, preferred: str) -> Path:
    """``_find`` for a file that must exist (it raises when it does not)."""
    found = _find(data_dir, stem, preferred, required=True)
    assert found is not None  # _find raised otherwise
    return found


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """The data folder from the argument or ``AGENTGYM_WEBSHOP_DATA``; None means the generated catalogue."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_ENV_VAR) or None
    if chosen is None:
        return None
    path = Path(chosen).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"WebShop data folder {path} does not exist")
    return path


@functools.lru_cache(maxsize=4)
def load_catalogue(data_dir: Path) -> Catalogue:
    """The catalogue of WebShop's files in ``data_dir`` (cached: every env of a process shares it)."""
    products_file = _require(data_dir, "items_shuffle", "items_shuffle_1000.json")
    attributes_file = _require(data_dir, "items_ins_v2", "items_ins_v2_1000.json")
    human_file = _find(data_dir, "items_human_ins", "items_human_ins_1000.json", required=False)
    reviews_file = data_dir / "reviews.json"
    with open(products_file, encoding="utf-8") as f:
        raw_products = json.load(f)
    with open(attributes_file, encoding="utf-8") as f:
        attributes = json.load(f)
    human = None
    if human_file is not None:
        with open(human_file, encoding="utf-8") as f:
            human = json.load(f)
    reviews = None
    if reviews_file.is_file():
        with open(reviews_file, encoding="utf-8") as f:
            reviews = json.load(f)
    return build_catalogue(str(data_dir), raw_products, attributes, human, reviews)


@functools.lru_cache(maxsize=4)
def generated_catalogue(num_products: int = 300, seed: int = 0) -> Catalogue:
    """The deterministic generated catalogue (see ``generated.py``), cached per process."""
    from agentgym.envs.webshop.generated import generate_raw

    raw_products, attributes, reviews = generate_raw(num_products, seed)
    return build_catalogue(f"generated-{num_products}-{seed}", raw_products, attributes, None, reviews)

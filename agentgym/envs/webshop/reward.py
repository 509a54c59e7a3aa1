"""WebShop's reward for a purchase, as upstream defines it (princeton-nlp/WebShop, ``engine/goal.py``).

    reward = r_type * (attribute matches + option matches + [price <= price_upper])
                    / (len(goal attributes) + len(goal options) + 1)

- Attribute match: a goal attribute matches when its fuzzy ``token_set_ratio`` with one of the product's
  attributes is above 85, or else when it is a substring of the lower-cased title, bullet points or
  description.
- Option match: each purchased option value (colors normalized to a base color word first) matches when
  it is exactly one of the goal's option values for ``size``, or fuzzy above 85 otherwise; failing that,
  when it is a substring of the title, bullet points or description.
- Type factor r_type: 1 when the product shares the goal's search query, or at least two levels of its
  category breadcrumb, or more than 20% of the goal title's nouns; 0.5 when none of those hold; 0.1 when
  less than 10% of the goal title's nouns are in the purchased title; 0 when none are. A goal title
  without nouns scores 0.2.
- The fuzzy score is thefuzz's ``token_set_ratio``: ASCII only, lower-cased, non-alphanumerics to spaces,
  rounded to an integer; computed here with RapidFuzz, which thefuzz itself wraps.

Difference from upstream: upstream finds the title nouns with spaCy's ``en_core_web_lg`` part-of-speech
tagger (tokens tagged NOUN or PROPN). That model is a separate download that cannot be installed from
PyPI, so here a word counts as a noun when the LemmInflect lexicon (80,000 English word forms with their
parts of speech, shipped in its PyPI wheel) lists it as a noun, or when the lexicon does not know it at
all and it is not a function word (brand names, product codes: what spaCy tags PROPN). The lexicon file
is read directly: importing the ``lemminflect`` package also imports spaCy when it is installed, which
takes seconds. The lexicon has no context: a word that can be a noun counts as one
even where spaCy would tag it an adjective ("white" in "white shirt"), so title scores of a different
product can be somewhat higher than upstream's. The target product shares the goal's search query, so
its type factor is 1 whichever tagger is used: the reward of a correct purchase is unchanged.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import re
from pathlib import Path
from typing import Any

from rapidfuzz import fuzz
from rapidfuzz.utils import default_process

from agentgym.envs.webshop.data import Goal, Product

FUZZY_THRESHOLD = 85
EXACT_MATCH_OPTIONS = ("size",)

# upstream's color vocabulary (engine/normalize.py): an option value is normalized to the first of these
# words it contains
COLOR_WORDS = (
    "alabaster",
    "apricot",
    "aqua",
    "ash",
    "asphalt",
    "azure",
    "banana",
    "beige",
    "black",
    "blue",
    "blush",
    "bordeaux",
    "bronze",
    "brown",
    "burgundy",
    "camel",
    "camo",
    "caramel",
    "champagne",
    "charcoal",
    "cheetah",
    "chestnut",
    "chocolate",
    "christmas",
    "coffee",
    "cognac",
    "copper",
    "coral",
    "cranberry",
    "cream",
    "crystal",
    "dark",
    "denim",
    "eggplant",
    "elephant",
    "espresso",
    "fuchsia",
    "gold",
    "granite",
    "grape",
    "graphite",
    "grass",
    "gray",
    "green",
    "grey",
    "heather",
    "indigo",
    "ivory",
    "ivy",
    "khaki",
    "lavender",
    "lemon",
    "leopard",
    "light",
    "lilac",
    "lime",
    "magenta",
    "maroon",
    "mauve",
    "merlot",
    "midnight",
    "mint",
    "mocha",
    "multicolor",
    "mushroom",
    "mustard",
    "natural",
    "navy",
    "nude",
    "olive",
    "orange",
    "peach",
    "pewter",
    "pink",
    "plum",
    "purple",
    "rainbow",
    "red",
    "rose",
    "royal",
    "rust",
    "sand",
    "sapphire",
    "seashell",
    "silver",
    "skull",
    "slate",
    "steel",
    "stone",
    "stonewash",
    "sunflower",
    "tan",
    "taupe",
    "teal",
    "tiger",
    "turquoise",
    "violet",
    "walnut",
    "wheat",
    "white",
    "wine",
    "yellow",
)

# closed-class English words, which the LemmInflect lexicon (open classes only) does not list
FUNCTION_WORDS = frozenset(
    """
a an the this that these those my your his her its our their some any each every no all both either neither
and or but nor so yet for of in on at by to from with without into onto over under about above below across
after before between through during against among around behind beside beyond near off out up down upon
within along inside outside since until via per than as if then while because though although whether
i you he she it we they me him us them who whom whose which what where when why how not also very too
is are was were be been being am do does did done have has had can could will would shall should may might
must s t x
""".split()
)


def normalize_color(value: str) -> str:
    """The first color word contained in ``value``, else ``value`` itself."""
    for color in COLOR_WORDS:
        if color in value:
            return color
    return value


def _ascii(text: str) -> str:
    return "".join(c for c in text if ord(c) < 128)


def token_set_ratio(a: str, b: str) -> int:
    """thefuzz's ``fuzz.token_set_ratio`` with its default processing, as an integer 0..100."""
    return int(round(fuzz.token_set_ratio(default_process(_ascii(a)), default_process(_ascii(b)))))


@functools.lru_cache(maxsize=1)
def _lexicon() -> tuple[frozenset[str], frozenset[str]]:
    """(word forms that can be nouns, all word forms) of LemmInflect's lexicon."""
    spec = importlib.util.find_spec("lemminflect")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("WebShop's reward needs lemminflect: pip install 'agentgym[webshop]'")
    path = Path(spec.submodule_search_locations[0]) / "resources" / "lemma_lu.csv.gz"
    nouns, known = set(), set()
    with gzip.open(path, "rt", encoding="utf-8") as lines:  # word,upos,lemma
        for line in lines:
            word, upos, _ = line.split(",", 2)
            known.add(word.lower())
            if upos == "noun":
                nouns.add(word.lower())
    return frozenset(nouns), frozenset(known)


@functools.lru_cache(maxsize=100_000)
def _is_noun(word: str) -> bool:
    if not word.isalpha() or word in FUNCTION_WORDS:
        return False
    nouns, known = _lexicon()
    return word in nouns or word not in known


def title_nouns(title: str) -> list[str]:
    """Lower-cased nouns of a product title (see the module docstring for how nouns are found)."""
    words = re.findall(r"[A-Za-z]+(?:'[A-Za-z]+)?|\d+(?:\.\d+)?|\S", title)
    return [w.lower() for w in words if _is_noun(w.lower())]


def _product_text(product: Product) -> tuple[str, str, str]:
    return product.title.lower(), " ".join(product.bullet_points).lower(), product.description.lower()


def type_reward(product: Product, goal: Goal) -> dict[str, Any]:
    query_match = product.query == goal.query
    purchased_path = {x.strip() for x in product.product_category.split("›")}
    goal_path = {x.strip() for x in goal.product_category.split("›")}
    category_match = len(purchased_path & goal_path) >= 2
    purchased_nouns, goal_nouns = set(title_nouns(product.title)), title_nouns(goal.name)
    title_score = 0.2 if not goal_nouns else len(purchased_nouns & set(goal_nouns)) / len(goal_nouns)
    r_type = 1.0 if (query_match or category_match or title_score > 0.2) else 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    return {
        "r_type": r_type,
        "query_match": query_match,
        "category_match": category_match,
        "title_score": title_score,
    }


def attribute_matches(product: Product, goal_attributes: list[str]) -> int:
    title, bullets, description = _product_text(product)
    matches = 0
    for wanted in goal_attributes:
        if any(token_set_ratio(have, wanted) > FUZZY_THRESHOLD for have in product.attributes):
            matches += 1
        elif wanted in title or wanted in bullets or wanted in description:
            matches += 1
    return matches


def option_matches(product: Product, goal_options: list[str], purchased_options: dict[str, str]) -> int:
    title, bullets, description = _product_text(product)
    wanted = [normalize_color(o) for o in goal_options]
    matches = 0
    for name, value in purchased_options.items():
        value = normalize_color(value)
        if name.lower() in EXACT_MATCH_OPTIONS:
            matched = value in wanted
        else:
            matched = any(token_set_ratio(w, value) > FUZZY_THRESHOLD for w in wanted)
        if matched or value in title or value in bullets or value in description:
            matches += 1
    return matches


def webshop_reward(product: Product, goal: Goal, price: float, options: dict[str, str]) -> tuple[float, dict]:
    """The reward of buying ``product`` at ``price`` with ``options`` for ``goal``, and its parts."""
    goal_options = list(goal.options.values())
    type_parts = type_reward(product, goal)
    price_ok = price <= goal.price_upper
    n_attr = attribute_matches(product, goal.attributes)
    n_opt = option_matches(product, goal_options, options)
    denominator = len(goal.attributes) + len(goal_options) + 1
    reward = (n_attr + n_opt + int(price_ok)) / denominator * type_parts["r_type"]
    parts = {
        **type_parts,
        "r_att": n_attr / len(goal.attributes) if goal.attributes else None,
        "r_option": n_opt / len(goal_options) if goal_options else None,
        "r_price": price_ok,
        "w_att": len(goal.attributes) / denominator,
        "w_option": len(goal_options) / denominator,
        "w_price": 1 / denominator,
        "attribute_matches": n_attr,
        "option_matches": n_opt,
    }
    return reward, parts

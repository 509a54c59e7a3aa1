"""WebShop's reward for a purchase, computed as upstream computes it (princeton-nlp/WebShop,
``web_agent_site/engine/goal.py``, ``get_reward``; checked against that code on 412 real and hand-made
purchases by ``tests/test_webshop_reward_golden.py``).

    reward = r_type * (attribute matches + option matches + [price <= price_upper])
                    / (len(goal attributes) + len(goal options) + 1)

- Attribute match: a goal attribute counts once when its fuzzy score (below) with one of the product's
  attributes is above 85, or else when it is a substring of the lower-cased title, bullet points or
  description.
- Option match: only the purchased options count, never the product's text. Each goal option counts
  once when some purchased option value scores above 85 with it. Size has no rule of its own. Every
  purchased value is first colour-normalised: replaced by the first word of upstream's colour list
  (``COLOR_WORDS``) that it contains, even inside another word ("rectangular" -> "tan", "fashion" ->
  "ash").
- What a goal option is: upstream hands the scorer a synthetic goal's options as ``(name, value)``
  pairs and a human goal's as bare values. A pair is replaced by a colour word only when its name or
  value *is* one; otherwise the scorer reads it as its Python text, ``('size', 'x-large')``, whose words
  include the option's name. So ``large`` scores 100 against ``('size', 'x-large')`` (all its words are
  in the pair) while ``x-large`` scores 83 against ``('size', 'large')``; and a bought value with a
  colour word inside it can miss its own goal option: on 20 of the 500 real test goals the right
  purchase scores 0.8-0.89, as upstream (``normalize_color`` on one side only).
- Type factor r_type: 1 when the product shares the goal's search query, or at least two levels of its
  category breadcrumb, or more than 20% of the goal title's nouns; 0.5 when none of those hold; then 0.1
  when less than 10% of the goal title's nouns are in the purchased title and 0 when none are, whatever
  the query and category. A goal title without nouns scores 0.2. The nouns are the tokens a
  part-of-speech tagger marks NOUN or PROPN, lower-cased; the score counts the goal title's nouns with
  repeats, the shared ones without.
- Fuzzy score: ``token_set_ratio`` of thefuzz 0.19, the version upstream pins, which without
  python-Levenshtein runs on Python's ``difflib.SequenceMatcher``: text lower-cased, the code points
  128-255 dropped, every other non-word character a space; then the best of three similarity ratios
  between the sorted shared words and the sorted shared + own words of each side, rounded to an integer.
  difflib is not symmetric, so the argument order is upstream's (product or purchased side first).
  thefuzz >= 0.20 computes the ratios with RapidFuzz instead; on real option values the two disagree
  across the threshold on a few pairs ("10x50 hd binoculars" vs "15x60 hd binoculars": 84 or 89).
- Success is reward 1.

The tagger (``title_tagger``): upstream's goal.py loads spaCy's ``en_core_web_sm`` (its setup script
downloads ``en_core_web_lg``, which its first version loaded). When spaCy and that model are installed
(``pip install spacy && python -m spacy download en_core_web_sm``) this module uses them as upstream
does and the reward equals upstream's on every golden case. Without them it falls back to
``LexiconTagger``: titles are split into tokens as spaCy's English tokenizer mostly splits them ("Men's"
-> "Men" "'s", "T-Shirt" -> "T" "-" "Shirt", "16oz" -> "16" "oz"), and a token is a noun when it is
capitalised (spaCy tags nearly every capitalised word of a product title PROPN), or when LemmInflect's
lexicon (80,000 English word forms with their parts of speech, shipped in its PyPI wheel) lists it as
a noun and not as an adjective, or does not know it (brand names, product codes); function words,
number words, "x" and "'s" never are. It has no context, so its nouns differ from spaCy's on some
titles (its noun lists equal spaCy's for 42% of the 1000 real titles; 93% overlap). That changes the
type factor only when the bought product is not the goal's own: the type factor agrees with spaCy's on
98.2% of random pairs of real products, and the reward equals upstream's on 98.5% of the golden cases
(``benchmarks/fidelity.py``). Which tagger scored a purchase is in the reward parts and the env's
``info["title_tagger"]``.
"""

from __future__ import annotations

import difflib
import functools
import gzip
import importlib.util
import os
import re
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from agentgym.envs.webshop.data import Goal, Product

FUZZY_THRESHOLD = 85
NOUN_TAGS = ("NOUN", "PROPN")
TAGGER_ENV_VAR = "AGENTGYM_WEBSHOP_TAGGER"
DEFAULT_SPACY_MODEL = "en_core_web_sm"  # the model upstream's goal.py loads
CACHE_SIZE = 100_000

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
must
""".split()
)

NUMBER_WORDS = frozenset(
    "one two three four five six seven eight nine ten eleven twelve hundred thousand".split()
)


# ----- the fuzzy score (thefuzz 0.19) -----
_DROPPED = dict.fromkeys(range(128, 256))  # thefuzz's "force ascii" drops only these code points
_NON_WORD = re.compile(r"\W")


def _fuzzy_text(value: object) -> str:
    text = value if isinstance(value, str) else str(value)
    return _NON_WORD.sub(" ", text.translate(_DROPPED)).lower().strip()


def _ratio(a: str, b: str) -> int:
    if a == b:
        return 100
    if not a or not b:
        return 0
    return int(round(100 * difflib.SequenceMatcher(None, a, b).ratio()))


def token_set_ratio(a: object, b: object) -> int:
    """thefuzz 0.19's ``fuzz.token_set_ratio(a, b)``, 0..100 (the argument order matters, rarely)."""
    words_a, words_b = _fuzzy_text(a).split(), _fuzzy_text(b).split()
    if not words_a or not words_b:
        return 0
    set_a, set_b = set(words_a), set(words_b)
    shared = " ".join(sorted(set_a & set_b))
    with_a = f"{shared} {' '.join(sorted(set_a - set_b))}".strip()
    with_b = f"{shared} {' '.join(sorted(set_b - set_a))}".strip()
    return max(_ratio(shared, with_a), _ratio(shared, with_b), _ratio(with_a, with_b))


# ----- colours -----
def normalize_color(value: str) -> str:
    """The first colour word contained in ``value``, else ``value`` itself."""
    for color in COLOR_WORDS:
        if color in value:
            return color
    return value


def goal_option_texts(goal: Goal) -> list[str]:
    """The goal's options as upstream's option scorer sees them (see the module docstring)."""
    if goal.kind == "human":  # a list of values upstream
        return [normalize_color(value) for value in goal.options.values()]
    texts = []
    for name, value in goal.options.items():  # (name, value) pairs upstream
        color = next((c for c in COLOR_WORDS if c in (name, value)), None)
        texts.append(color if color is not None else repr((name, value)))
    return texts


# ----- title nouns -----
class TitleTagger(Protocol):
    """Finds the nouns of a product title for the type factor."""

    name: str

    def nouns(self, title: str) -> list[str]: ...


class SpacyTagger:
    """spaCy's part-of-speech tags, as upstream: tokens tagged NOUN or PROPN, lower-cased."""

    def __init__(self, model: str = DEFAULT_SPACY_MODEL) -> None:
        import spacy

        self.nlp = spacy.load(model)  # the whole pipeline: leaving out the parser changes a few tags
        meta = self.nlp.meta
        self.name = f"spacy:{meta.get('lang', 'xx')}_{meta.get('name', model)}-{meta.get('version', '?')}"
        self._cache: dict[str, list[str]] = {}

    def nouns(self, title: str) -> list[str]:
        found = self._cache.get(title)
        if found is None:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            found = self._cache[title] = [t.text.lower() for t in self.nlp(title) if t.pos_ in NOUN_TAGS]
        return list(found)


# spaCy-like token splitting (its English tokenizer's main rules): whitespace first, then opening and
# closing punctuation, "'s", units after numbers, and hyphens and slashes inside words
_OPENING = "\"'“‘«([{<$#*&_§%=+…,:;!?"
_CLOSING = "\"'”’»)]}>,;:!?…*&#_%"
_UNITS = "km|m|dm|cm|mm|ha|nm|yd|in|ft|kg|g|mg|t|lb|oz|mph|kmh|hPa|Pa|mbar|mb|MB|kb|KB|gb|GB|tb|TB|T|G|M|K"
_NUMBER_UNIT = re.compile(rf"^(\d+(?:[.,]\d+)*)({_UNITS})$")
_INFIX = re.compile(
    r"(?<=[A-Za-z0-9])(?:-|–|—|~|[:<>=/])(?=[A-Za-z])"  # hyphens, slashes, ... before a letter
    r"|(?<=[0-9])[-+*^](?=[0-9-])"  # number ranges: 2001-2005
    r"|(?<=[A-Za-z]),(?=[A-Za-z])"
    r"|(?<=[a-z])\.(?=[A-Z])"
)
_PERIOD_END = re.compile(r"(?<=[0-9a-z%])\.$|(?<=[A-Z][A-Z])\.$")


def _split_infixes(chunk: str) -> list[str]:
    tokens, start = [], 0
    for match in _INFIX.finditer(chunk):
        tokens += [chunk[start : match.start()], match.group()]
        start = match.end()
    tokens.append(chunk[start:])
    return [t for t in tokens if t]


def split_title(title: str) -> list[str]:
    """Tokens of a title, split roughly as spaCy's English tokenizer splits them."""
    tokens: list[str] = []
    for chunk in title.split():
        head: list[str] = []
        tail: list[str] = []
        while len(chunk) > 1 and chunk[0] in _OPENING:
            head.append(chunk[0])
            chunk = chunk[1:]
        while len(chunk) > 1:
            if chunk[-2:].lower() in ("'s", "’s") and len(chunk) > 2:
                tail.insert(0, chunk[-2:])
                chunk = chunk[:-2]
            elif chunk[-1] in _CLOSING or _PERIOD_END.search(chunk):
                tail.insert(0, chunk[-1])
                chunk = chunk[:-1]
            elif found := _NUMBER_UNIT.match(chunk):
                tail.insert(0, found.group(2))
                chunk = found.group(1)
            else:
                break
        tokens += head + _split_infixes(chunk) + tail
    return tokens


@functools.lru_cache(maxsize=1)
def _lexicon() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(word forms that can be nouns, that can be adjectives, all word forms) of LemmInflect's lexicon."""
    # read the file directly: importing lemminflect also imports spaCy when it is installed (seconds)
    spec = importlib.util.find_spec("lemminflect")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("WebShop's reward needs lemminflect: pip install 'agentgym[webshop]'")
    path = Path(spec.submodule_search_locations[0]) / "resources" / "lemma_lu.csv.gz"
    nouns, adjectives, known = set(), set(), set()
    with gzip.open(path, "rt", encoding="utf-8") as lines:  # word,upos,lemma
        for line in lines:
            word, upos, _ = line.split(",", 2)
            known.add(word.lower())
            if upos == "noun":
                nouns.add(word.lower())
            elif upos == "adj":
                adjectives.add(word.lower())
    return frozenset(nouns), frozenset(adjectives), frozenset(known)


class LexiconTagger:
    """The fallback without spaCy: spaCy-like tokens, capitalised or lexicon nouns (module docstring)."""

    def __init__(self) -> None:
        _lexicon()  # load it now, not at the first purchase
        self.name = f"lexicon:lemminflect-{metadata.version('lemminflect')}"

    def nouns(self, title: str) -> list[str]:
        return [token.lower() for token in split_title(title) if _is_lexicon_noun(token)]


@functools.lru_cache(maxsize=CACHE_SIZE)
def _is_lexicon_noun(token: str) -> bool:
    word = token.lower()
    if word == "|":  # spaCy tags a lone bar NOUN in most titles ("Black | White")
        return True
    if not any(c.isalpha() for c in word) or word in FUNCTION_WORDS or word in NUMBER_WORDS:
        return False
    if word in ("x", "'s", "’s"):  # "16 X 20" (SYM), possessive endings (PART)
        return False
    if token[0].isupper():  # spaCy tags most capitalised words of a title PROPN
        return True
    nouns, adjectives, known = _lexicon()
    return word not in known or (word in nouns and word not in adjectives)


@functools.lru_cache(maxsize=8)
def get_tagger(choice: str | None = None) -> TitleTagger:
    """The title tagger for ``choice``: ``"auto"`` (spaCy's ``en_core_web_sm`` when installed, else the
    lexicon), ``"lexicon"``, ``"spacy"`` (``en_core_web_sm``, an error when missing), or a spaCy model's
    name or path. ``None`` reads ``$AGENTGYM_WEBSHOP_TAGGER`` (default ``"auto"``)."""
    choice = choice or os.environ.get(TAGGER_ENV_VAR) or "auto"
    if choice == "lexicon":
        return LexiconTagger()
    if choice == "auto":
        try:
            return SpacyTagger(DEFAULT_SPACY_MODEL)
        except Exception:  # no spaCy, no model, or a spaCy that fails to import: the fallback says so
            return LexiconTagger()
    model = DEFAULT_SPACY_MODEL if choice == "spacy" else choice
    try:
        return SpacyTagger(model)
    except ImportError as exc:
        raise ImportError(f"title tagger {choice!r} needs spaCy: pip install spacy") from exc
    except OSError as exc:
        raise OSError(
            f"spaCy model {model!r} is not installed: python -m spacy download {model} "
            "(or choose the 'lexicon' tagger)"
        ) from exc


def title_nouns(title: str, tagger: TitleTagger | None = None) -> list[str]:
    """Lower-cased nouns of a product title, by ``tagger`` (default: ``get_tagger()``)."""
    return (tagger or get_tagger()).nouns(title)


# ----- the reward -----
def type_reward(product: Product, goal: Goal, tagger: TitleTagger | None = None) -> dict[str, Any]:
    tagger = tagger or get_tagger()
    query_match = product.query == goal.query
    purchased_path = {x.strip() for x in product.product_category.split("›")}
    goal_path = {x.strip() for x in goal.product_category.split("›")}
    category_match = len(purchased_path & goal_path) >= 2
    purchased_nouns, goal_nouns = set(tagger.nouns(product.title)), tagger.nouns(goal.name)
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


def attribute_matches(product: Product, goal_attributes: Iterable[str]) -> int:
    title = product.title.lower()
    bullets = " ".join(product.bullet_points).lower()
    description = product.description.lower()
    matches = 0
    for wanted in goal_attributes:
        if any(token_set_ratio(have, wanted) > FUZZY_THRESHOLD for have in product.attributes):
            matches += 1
        elif wanted in title or wanted in bullets or wanted in description:
            matches += 1
    return matches


def option_matches(goal_options: Iterable[str], purchased_options: dict[str, str]) -> int:
    """How many of the goal's options (``goal_option_texts``) some purchased option value matches."""
    bought = [normalize_color(value) for value in purchased_options.values()]
    return sum(
        any(token_set_ratio(value, wanted) > FUZZY_THRESHOLD for value in bought) for wanted in goal_options
    )


def webshop_reward(
    product: Product, goal: Goal, price: float, options: dict[str, str], tagger: TitleTagger | None = None
) -> tuple[float, dict[str, Any]]:
    """The reward of buying ``product`` at ``price`` with ``options`` for ``goal``, and its parts."""
    tagger = tagger or get_tagger()
    type_parts = type_reward(product, goal, tagger)
    price_ok = price <= goal.price_upper
    n_attr = attribute_matches(product, goal.attributes)
    n_opt = option_matches(goal_option_texts(goal), options)
    denominator = len(goal.attributes) + len(goal.options) + 1
    reward = (n_attr + n_opt + price_ok) / denominator  # summed and divided in upstream's order
    reward *= type_parts["r_type"]
    parts = {
        **type_parts,
        "r_att": n_attr / len(goal.attributes) if goal.attributes else None,
        "r_option": n_opt / len(goal.options) if goal.options else None,
        "r_price": price_ok,
        "w_att": len(goal.attributes) / denominator,
        "w_option": len(goal.options) / denominator,
        "w_price": 1 / denominator,
        "attribute_matches": n_attr,
        "option_matches": n_opt,
        "title_tagger": tagger.name,
    }
    return reward, parts

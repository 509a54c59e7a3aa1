"""A deterministic generated catalogue in WebShop's raw file format, so the env works with no data files.

``generate_raw(n, seed)`` returns what the real files hold: product records as in ``items_shuffle*.json``,
attribute/instruction records as in ``items_ins_v2*.json`` and reviews as in ``reviews.json``. They go
through the same cleaning and goal building as the real data (``data.build_catalogue``), so goals,
options, price bounds and rewards behave as on the real set. Only ``random.Random(seed)`` is used, so
the catalogue is the same on every machine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class ProductType:
    noun: str  # how titles and instructions name it
    category: str  # WebShop's top-level category
    path: str  # the product_category breadcrumb
    adjectives: tuple[str, ...]
    attributes: tuple[str, ...]
    options: dict  # option name -> possible values
    price: tuple[float, float]


_COLORS = ("black", "white", "navy blue", "red", "grey", "green", "pink", "beige", "brown", "purple")
_SIZES = ("x-small", "small", "medium", "large", "x-large", "xx-large")
_SHOE_SIZES = ("6", "7", "7.5", "8", "8.5", "9", "10", "11", "12")

TYPES = (
    ProductType(
        "shampoo",
        "beauty",
        "Beauty & Personal Care › Hair Care › Shampoo & Conditioner › Shampoos",
        ("gentle", "daily", "clarifying", "moisturizing", "herbal"),
        (
            "sulfate free",
            "paraben free",
            "natural ingredients",
            "dry hair",
            "color treated hair",
            "cruelty free",
        ),
        {
            "size": ("8 fl oz", "12 fl oz", "16.9 fl oz", "33.8 fl oz"),
            "scent": ("lavender", "coconut", "mint", "unscented"),
        },
        (6.0, 38.0),
    ),
    ProductType(
        "face moisturizer",
        "beauty",
        "Beauty & Personal Care › Skin Care › Face › Creams & Moisturizers",
        ("hydrating", "lightweight", "overnight", "soothing", "firming"),
        (
            "hyaluronic acid",
            "oil free",
            "sensitive skin",
            "fragrance free",
            "anti aging",
            "dermatologist tested",
        ),
        {"size": ("1.7 oz", "2.5 oz", "3.4 oz")},
        (9.0, 65.0),
    ),
    ProductType(
        "lipstick",
        "beauty",
        "Beauty & Personal Care › Makeup › Lips › Lipstick",
        ("matte", "creamy", "velvet", "satin", "bold"),
        ("long lasting", "cruelty free", "paraben free", "highly pigmented", "vegan"),
        {"color": ("ruby red", "nude", "berry", "coral", "mauve", "plum")},
        (5.0, 30.0),
    ),
    ProductType(
        "wireless headphones",
        "electronics",
        "Electronics › Headphones, Earbuds & Accessories › Headphones › Over-Ear",
        ("foldable", "studio", "travel", "bass", "premium"),
        (
            "noise cancelling",
            "bluetooth 5.0",
            "long battery life",
            "built in microphone",
            "fast charging",
            "hands free",
        ),
        {"color": _COLORS[:5]},
        (25.0, 320.0),
    ),
    ProductType(
        "usb c cable",
        "electronics",
        "Electronics › Computers & Accessories › Cables & Accessories › USB Cables",
        ("braided", "durable", "compact", "heavy duty", "flexible"),
        ("fast charging", "high speed", "nylon braided", "data transfer", "tangle free"),
        {"size": ("3 ft", "6 ft", "10 ft"), "color": ("black", "white", "red")},
        (6.0, 25.0),
    ),
    ProductType(
        "phone case",
        "electronics",
        "Cell Phones & Accessories › Cases, Holsters & Sleeves › Basic Cases",
        ("slim", "rugged", "clear", "shockproof", "minimal"),
        ("wireless charging", "drop protection", "easy install", "scratch resistant", "raised edges"),
        {
            "color": ("clear", "black", "blue", "pink", "green"),
            "style": ("iphone 13", "iphone 14", "galaxy s22"),
        },
        (8.0, 35.0),
    ),
    ProductType(
        "portable speaker",
        "electronics",
        "Electronics › Portable Audio & Video › Portable Speakers & Docks",
        ("waterproof", "outdoor", "mini", "rugged", "party"),
        ("bluetooth 5.0", "waterproof", "long battery life", "stereo sound", "usb charging"),
        {"color": ("black", "blue", "red", "grey")},
        (20.0, 150.0),
    ),
    ProductType(
        "throw pillow cover",
        "garden",
        "Home & Kitchen › Bedding › Decorative Pillows, Inserts & Covers › Throw Pillow Covers",
        ("velvet", "boho", "farmhouse", "striped", "cozy"),
        ("machine washable", "hidden zipper", "soft fabric", "living room", "double sided"),
        {"color": _COLORS, "size": ("16 x 16 inch", "18 x 18 inch", "20 x 20 inch")},
        (9.0, 30.0),
    ),
    ProductType(
        "table lamp",
        "garden",
        "Tools & Home Improvement › Lighting & Ceiling Fans › Lamps & Shades › Table Lamps",
        ("modern", "ceramic", "industrial", "bedside", "minimalist"),
        ("usb charging", "touch control", "dimmable", "living room", "energy efficient", "easy assemble"),
        {"color": ("white", "black", "brass", "grey")},
        (18.0, 120.0),
    ),
    ProductType(
        "storage ottoman",
        "garden",
        "Home & Kitchen › Furniture › Living Room Furniture › Ottomans",
        ("tufted", "folding", "round", "faux leather", "linen"),
        ("easy assemble", "living room", "solid wood", "space saving", "storage space"),
        {"color": ("grey", "beige", "navy blue", "brown")},
        (30.0, 180.0),
    ),
    ProductType(
        "running shoes",
        "fashion",
        "Clothing, Shoes & Jewelry › Men › Shoes › Athletic › Running",
        ("lightweight", "breathable", "cushioned", "trail", "everyday"),
        ("non slip", "rubber sole", "arch support", "memory foam", "lace up", "machine washable"),
        {"size": _SHOE_SIZES, "color": ("black", "white", "grey", "navy blue", "red")},
        (30.0, 140.0),
    ),
    ProductType(
        "t-shirt",
        "fashion",
        "Clothing, Shoes & Jewelry › Men › Clothing › Shirts › T-Shirts",
        ("classic", "slim fit", "crew neck", "graphic", "pocket"),
        ("cotton blend", "machine wash", "short sleeve", "relaxed fit", "moisture wicking", "tagless"),
        {"size": _SIZES, "color": _COLORS[:6]},
        (8.0, 35.0),
    ),
    ProductType(
        "yoga leggings",
        "fashion",
        "Clothing, Shoes & Jewelry › Women › Clothing › Active › Leggings",
        ("high waisted", "seamless", "ribbed", "compression", "butter soft"),
        ("tummy control", "four way stretch", "moisture wicking", "squat proof", "hidden pocket"),
        {"size": _SIZES[:5], "color": ("black", "navy blue", "grey", "purple")},
        (15.0, 60.0),
    ),
    ProductType(
        "ground coffee",
        "grocery",
        "Grocery & Gourmet Food › Beverages › Coffee, Tea & Cocoa › Coffee › Ground Coffee",
        ("dark roast", "medium roast", "breakfast blend", "single origin", "smooth"),
        ("fair trade", "non gmo", "usda organic", "kosher", "gluten free"),
        {
            "size": ("12 ounce", "24 ounce", "2 pound"),
            "flavor name": ("original", "hazelnut", "french vanilla"),
        },
        (7.0, 40.0),
    ),
    ProductType(
        "protein bars",
        "grocery",
        "Grocery & Gourmet Food › Snacks & Sweets › Bars › Protein Bars",
        ("chewy", "crunchy", "keto", "plant based", "high protein"),
        ("gluten free", "low sugar", "non gmo", "high protein", "dairy free", "individually wrapped"),
        {
            "flavor name": ("chocolate chip", "peanut butter", "cookies and cream", "mixed berry"),
            "size": ("12 count", "24 count"),
        },
        (12.0, 45.0),
    ),
    ProductType(
        "herbal tea",
        "grocery",
        "Grocery & Gourmet Food › Beverages › Coffee, Tea & Cocoa › Tea › Herbal",
        ("calming", "caffeine free", "organic", "loose leaf", "sleepy time"),
        ("caffeine free", "usda organic", "non gmo", "individually wrapped", "kosher"),
        {"flavor name": ("chamomile", "rooibos", "ginger", "hibiscus"), "size": ("20 count", "40 count")},
        (4.0, 22.0),
    ),
)

BRANDS = (
    "Lumora",
    "Kestrel",
    "Brightwell",
    "Oakline",
    "Nordvik",
    "Sablewood",
    "Vireo",
    "Marlowe",
    "Zephyra",
    "Quillon",
    "Tamsin",
    "Halcyra",
    "Orchard & Pine",
    "Corvana",
    "Pellucid",
    "Rowanby",
)

_INSTRUCTIONS = (
    "i am looking for {noun} that is {a1} and {a2}",
    "i need {a1} {noun}",
    "find me {noun} with {a1} and {a2}",
    "i want to buy {noun} that is {a1}",
)

_REVIEW_LINES = {
    5: ("Exactly what I wanted.", "Great quality for the price."),
    4: ("Works well, would buy again.", "Good, but shipping was slow."),
    3: ("It is okay.", "Does the job, nothing special."),
    2: ("Not as described.", "Broke after a few weeks."),
    1: ("Very disappointed.", "Returned it."),
}


def _pick_options(kind: ProductType, rng: random.Random) -> dict:
    options = {}
    for name, values in kind.options.items():
        if rng.random() < 0.25:  # some products have fewer option groups than their type allows
            continue
        chosen = rng.sample(values, k=min(len(values), rng.randint(2, 4)))
        options[name.title()] = [{"value": v} for v in chosen]
    return options


def _pricing(kind: ProductType, rng: random.Random) -> str:
    low = round(rng.uniform(*kind.price), 2)
    if rng.random() < 0.15:  # a price range, as some real products have
        return f"${low} - ${round(low * rng.uniform(1.2, 1.8), 2)}"
    return f"${low}"


def generate_raw(num_products: int = 300, seed: int = 0) -> tuple[list[dict], dict[str, dict], list[dict]]:
    """(products, attribute records by ASIN, reviews) in WebShop's raw formats."""
    if num_products < 1:
        raise ValueError("num_products must be at least 1")
    rng = random.Random(seed)
    products, attributes, reviews = [], {}, []
    for index in range(num_products):
        kind = TYPES[index % len(TYPES)]
        asin = f"G{index:05d}{rng.choice('ABCDEFGHJKLMNPQRSTUVWXYZ')}{rng.randint(100, 999)}"
        brand = rng.choice(BRANDS)
        adjectives = rng.sample(kind.adjectives, 2)
        model = f"{rng.choice('ABCDEFGHKMNPRSTVWXZ')}{rng.randint(10, 99)}{rng.choice('ABCDEFGHKMNPRSTVWXZ')}"
        title = f"{brand} {adjectives[0].title()} {adjectives[1].title()} {kind.noun.title()} {model}"
        own = rng.sample(kind.attributes, 3)
        template = rng.choice(_INSTRUCTIONS)
        wanted = own[:2] if "{a2}" in template else own[:1]
        instruction = template.format(noun=kind.noun, a1=wanted[0], a2=wanted[-1])
        features = [f"{a.capitalize()}: made for everyday use." for a in own]
        products.append(
            {
                "asin": asin,
                "name": title,
                "full_description": (
                    f"The {brand} {kind.noun} is {adjectives[0]} and {adjectives[1]}. "
                    f"It is {own[0]}, {own[1]} and {own[2]}. Model {model}."
                ),
                "small_description": features,
                "pricing": _pricing(kind, rng),
                "images": [],
                "product_category": kind.path,
                "average_rating": "",
                "customization_options": _pick_options(kind, rng),
                "category": kind.category,
                "query": kind.noun,
            }
        )
        attributes[asin] = {"attributes": own, "instruction": instruction, "instruction_attributes": wanted}
        scores = [rng.randint(1, 5) for _ in range(rng.randint(0, 3))]
        reviews.append(
            {
                "asin": asin,
                "average_rating": f"{sum(scores) / len(scores):.1f}" if scores else "N.A.",
                "reviews": [
                    {
                        "score": s,
                        "title": rng.choice(_REVIEW_LINES[s]),
                        "body": f"{rng.choice(_REVIEW_LINES[s])} ({kind.noun})",
                    }
                    for s in scores
                ],
            }
        )
    return products, attributes, reviews

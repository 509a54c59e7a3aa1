"""WebShop's reward formula on hand-made products and goals (no browser, no data files)."""

from __future__ import annotations

import pytest

from agentgym.envs.webshop.data import Goal, Product
from agentgym.envs.webshop.reward import (
    normalize_color,
    title_nouns,
    token_set_ratio,
    type_reward,
    webshop_reward,
)


def make_product(**overrides) -> Product:
    fields = dict(
        asin="B000000001",
        title="Acme Cotton Crew Neck T-Shirt for Men",
        description="A soft shirt made of cotton jersey.",
        bullet_points=["Machine wash cold", "Short sleeve"],
        category="fashion",
        query="men t-shirts",
        product_category="Clothing, Shoes & Jewelry › Men › Clothing › Shirts › T-Shirts",
        pricing=[15.0],
        price_tag="$15.0",
        options={"color": ["navy blue", "red"], "size": ["large", "x-large"]},
        attributes=["machine wash", "short sleeve", "cotton"],
    )
    fields.update(overrides)
    return Product(**fields)


def make_goal(product: Product, **overrides) -> Goal:
    fields = dict(
        asin=product.asin,
        instruction="i want a t-shirt",
        attributes=["machine wash", "short sleeve"],
        options={"color": "red", "size": "large"},
        price_upper=20.0,
        query=product.query,
        category=product.category,
        product_category=product.product_category,
        name=product.title,
        kind="synthetic",
    )
    fields.update(overrides)
    return Goal(**fields)


def test_perfect_purchase_scores_one():
    product = make_product()
    reward, parts = webshop_reward(product, make_goal(product), 15.0, {"color": "red", "size": "large"})
    assert reward == pytest.approx(1.0)
    assert parts["r_type"] == 1.0 and parts["r_price"] is True
    assert parts["attribute_matches"] == 2 and parts["option_matches"] == 2
    assert parts["w_att"] + parts["w_option"] + parts["w_price"] == pytest.approx(1.0)


def test_each_part_counts_over_the_total():
    product = make_product()
    goal = make_goal(product)  # 2 attributes + 2 options + price = 5 parts
    wrong_size = webshop_reward(product, goal, 15.0, {"color": "red", "size": "x-large"})[0]
    assert wrong_size == pytest.approx(4 / 5)
    too_expensive = webshop_reward(product, goal, 25.0, {"color": "red", "size": "large"})[0]
    assert too_expensive == pytest.approx(4 / 5)
    no_options = webshop_reward(product, goal, 25.0, {})[0]
    assert no_options == pytest.approx(2 / 5)


def test_size_is_exact_but_other_options_are_fuzzy():
    product = make_product(title="Acme Shirt", description="", bullet_points=[""])
    goal = make_goal(product, attributes=["cotton"], options={"size": "large", "style": "crew neck"})
    # "x-large" is not "large" (size is matched exactly); "crew-neck" is "crew neck" to the fuzzy score
    reward, parts = webshop_reward(product, goal, 1.0, {"size": "x-large", "style": "crew-neck"})
    assert parts["option_matches"] == 1
    assert reward == pytest.approx((1 + 1 + 1) / 4)


def test_colors_are_normalized_before_matching():
    product = make_product(title="Acme Shirt", description="", bullet_points=[""])
    goal = make_goal(product, options={"color": "royal blue"})
    assert token_set_ratio("royal blue", "blue 2") <= 85  # too far apart as they are
    assert webshop_reward(product, goal, 1.0, {"color": "blue 2"})[1]["option_matches"] == 1  # both "blue"
    assert webshop_reward(product, goal, 1.0, {"color": "red"})[1]["option_matches"] == 0


def test_option_found_in_the_product_text_counts():
    product = make_product(description="Comes in a gift box.")
    goal = make_goal(product, options={"style": "wrapped"})
    assert webshop_reward(product, goal, 1.0, {"style": "gift box"})[1]["option_matches"] == 1


def test_attribute_matches_fuzzily_or_by_substring_of_the_text():
    product = make_product(attributes=["gluten-free"], description="Vegan and non gmo.", bullet_points=["x"])
    goal = make_goal(product, attributes=["gluten free", "non gmo", "sugar free"], options={})
    _, parts = webshop_reward(product, goal, 1.0, {})
    assert parts["attribute_matches"] == 2  # fuzzy + description substring; "sugar free" is nowhere
    assert parts["r_att"] == pytest.approx(2 / 3)


def test_type_factor_levels():
    target = make_product(title="Acme Cotton Shirt Tee Top Blouse Tunic Jersey Polo Henley Sweater Hoodie")
    goal = make_goal(target)
    other_path = "Grocery › Snacks › Chips"
    unrelated = make_product(title="Crunchy Potato Chips", query="chips", product_category=other_path)
    assert type_reward(unrelated, goal)["r_type"] == 0.0  # no shared noun
    one_noun = make_product(title="Potato Shirt", query="chips", product_category=other_path)
    parts = type_reward(one_noun, goal)
    assert 0 < parts["title_score"] < 0.1 and parts["r_type"] == 0.1
    two_nouns = make_product(title="Shirt Tee", query="chips", product_category=other_path)
    parts = type_reward(two_nouns, goal)
    assert 0.1 <= parts["title_score"] <= 0.2 and parts["r_type"] == 0.5  # no query/category/title match
    same_query = make_product(title="Shirt Tee", product_category=other_path)
    assert type_reward(same_query, goal)["r_type"] == 1.0  # the same search query is enough
    same_category = make_product(title="Shirt Tee", query="chips")
    assert (
        type_reward(same_category, goal)["category_match"]
        and type_reward(same_category, goal)["r_type"] == 1.0
    )


def test_type_factor_scales_the_whole_reward():
    target = make_product()
    goal = make_goal(target)
    chips = make_product(
        title="Crunchy Potato Chips",
        query="chips",
        product_category="Grocery › Snacks",
        attributes=["machine wash", "short sleeve"],
    )
    reward, parts = webshop_reward(chips, goal, 1.0, {"color": "red", "size": "large"})
    assert parts["r_type"] == 0.0 and reward == 0.0


def test_title_nouns_use_the_lexicon():
    nouns = title_nouns("Vhomes Reclaimed Wood Console Table with 2 Drawers")
    assert {"vhomes", "wood", "console", "table", "drawers"} <= set(nouns)
    assert "reclaimed" not in nouns and "with" not in nouns and "2" not in nouns


def test_normalize_color_takes_the_first_color_word():
    # the cases of upstream's own test of this function
    for text, expected in [
        ("", ""),
        ("black forest", "black"),
        ("violet lavender", "lavender"),
        ("steelivy fuchsia", "fuchsia"),
        ("123alabaster", "alabaster"),
        ("webshop", "webshop"),
    ]:
        assert normalize_color(text) == expected


def test_token_set_ratio_processes_like_thefuzz():
    assert token_set_ratio("fuzzy was a bear", "fuzzy fuzzy was a bear") == 100
    assert token_set_ratio("Gluten-Free!", "gluten free") == 100
    assert isinstance(token_set_ratio("abc", "abd"), int)
    assert token_set_ratio("café latte", "caf latte") == 100  # non-ASCII characters are dropped first

"""WebShop's reward formula on hand-made products and goals (no browser, no data files).

``test_webshop_reward_golden.py`` checks the same functions against upstream's own code on real data."""

from __future__ import annotations

from typing import Any

import pytest

from agentgym.envs.webshop.data import Goal, Product
from agentgym.envs.webshop.reward import (
    LexiconTagger,
    get_tagger,
    goal_option_texts,
    normalize_color,
    split_title,
    token_set_ratio,
    type_reward,
    webshop_reward,
)


class EveryWord:
    """A tagger that calls every word of a title a noun: keeps the type-factor tests tagger-free."""

    name = "every-word"

    def nouns(self, title: str) -> list[str]:
        return title.lower().split()


WORDS = EveryWord()


def make_product(**overrides: Any) -> Product:
    fields: dict[str, Any] = dict(
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


def make_goal(product: Product, **overrides: Any) -> Goal:
    fields: dict[str, Any] = dict(
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
    reward, parts = webshop_reward(
        product, make_goal(product), 15.0, {"color": "red", "size": "large"}, WORDS
    )
    assert reward == pytest.approx(1.0) and parts["title_tagger"] == "every-word"
    assert parts["r_type"] == 1.0 and parts["r_price"] is True
    assert parts["attribute_matches"] == 2 and parts["option_matches"] == 2
    assert parts["w_att"] + parts["w_option"] + parts["w_price"] == pytest.approx(1.0)


def test_each_part_counts_over_the_total():
    product = make_product()
    goal = make_goal(product)  # 2 attributes + 2 options + price = 5 parts
    wrong_size = webshop_reward(product, goal, 15.0, {"color": "red", "size": "x-large"}, WORDS)[0]
    assert wrong_size == pytest.approx(4 / 5)
    too_expensive = webshop_reward(product, goal, 25.0, {"color": "red", "size": "large"}, WORDS)[0]
    assert too_expensive == pytest.approx(4 / 5)
    no_options = webshop_reward(product, goal, 25.0, {}, WORDS)[0]
    assert no_options == pytest.approx(2 / 5)


def test_size_uses_the_same_fuzzy_rule_as_every_option():  # (b): it was matched exactly
    product = make_product(title="Acme Shirt", description="", bullet_points=[""])
    human = make_goal(product, kind="human", attributes=["cotton"], options={"option 1": "x-large"})
    assert webshop_reward(product, human, 1.0, {"size": "x large"}, WORDS)[1]["option_matches"] == 1
    assert webshop_reward(product, human, 1.0, {"size": "small"}, WORDS)[1]["option_matches"] == 0
    # all the words of "large" are in "x-large" (token sets): it matches, as upstream
    assert webshop_reward(product, human, 1.0, {"size": "large"}, WORDS)[1]["option_matches"] == 1
    # a synthetic goal's option is its (name, value) pair, whose words include the name
    synthetic = make_goal(product, attributes=["cotton"], options={"size": "x-large", "style": "crew neck"})
    _, parts = webshop_reward(product, synthetic, 1.0, {"size": "large", "style": "crew-neck"}, WORDS)
    assert parts["option_matches"] == 2
    smaller = make_goal(product, attributes=["cotton"], options={"size": "large"})
    assert webshop_reward(product, smaller, 1.0, {"size": "x-large"}, WORDS)[1]["option_matches"] == 0


def test_goal_options_as_upstream_hands_them_to_the_scorer():
    product = make_product()
    synthetic = make_goal(product, options={"color": "black", "size": "x-large", "style": "jet black"})
    assert goal_option_texts(synthetic) == ["black", "('size', 'x-large')", "('style', 'jet black')"]
    human = make_goal(product, kind="human", options={"option 1": "jet black", "option 2": "x-large"})
    assert goal_option_texts(human) == ["black", "x-large"]


def test_colors_are_normalized_before_matching():
    product = make_product(title="Acme Shirt", description="", bullet_points=[""])
    goal = make_goal(product, options={"color": "royal blue"})
    assert token_set_ratio("royal blue", "blue 2") <= 85  # too far apart as they are
    assert webshop_reward(product, goal, 1.0, {"color": "blue 2"}, WORDS)[1]["option_matches"] == 1  # "blue"
    assert webshop_reward(product, goal, 1.0, {"color": "red"}, WORDS)[1]["option_matches"] == 0
    # a colour word inside another word counts too: upstream's right purchase of "rectangular" misses
    shape = make_goal(product, options={"item shape": "rectangular"})
    assert webshop_reward(product, shape, 1.0, {"item shape": "rectangular"}, WORDS)[1]["option_matches"] == 0


def test_options_count_only_from_the_purchase():  # (a): the product's text counted too
    product = make_product(
        title="Acme Men's Cotton T-Shirt, Navy Blue, Large",
        description="Also in red and small.",
        bullet_points=["Navy blue", "Large"],
    )
    goal = make_goal(product, options={"color": "red", "size": "small"})
    reward, parts = webshop_reward(product, goal, 15.0, {"color": "navy blue", "size": "large"}, WORDS)
    assert parts["option_matches"] == 0 and reward == pytest.approx(3 / 5)  # the attributes and the price
    gift = make_goal(make_product(description="Comes in a gift box."), options={"style": "wrapped"})
    assert webshop_reward(product, gift, 1.0, {"style": "gift box"}, WORDS)[1]["option_matches"] == 0


def test_each_goal_option_counts_once():
    product = make_product()
    goal = make_goal(product, options={"color": "red", "size": "large"})
    _, parts = webshop_reward(product, goal, 1.0, {"color": "red", "pattern": "red", "size": "small"}, WORDS)
    assert parts["option_matches"] == 1


def test_attribute_matches_fuzzily_or_by_substring_of_the_text():
    product = make_product(attributes=["gluten-free"], description="Vegan and non gmo.", bullet_points=["x"])
    goal = make_goal(product, attributes=["gluten free", "non gmo", "sugar free"], options={})
    _, parts = webshop_reward(product, goal, 1.0, {}, WORDS)
    assert parts["attribute_matches"] == 2  # fuzzy + description substring; "sugar free" is nowhere
    assert parts["r_att"] == pytest.approx(2 / 3)


def test_type_factor_levels():
    target = make_product(title="Acme Cotton Shirt Tee Top Blouse Tunic Jersey Polo Henley Sweater Hoodie")
    goal = make_goal(target)
    other_path = "Grocery › Snacks › Chips"
    unrelated = make_product(title="Crunchy Potato Chips", query="chips", product_category=other_path)
    assert type_reward(unrelated, goal, WORDS)["r_type"] == 0.0  # no shared noun
    one_noun = make_product(title="Potato Shirt", query="chips", product_category=other_path)
    parts = type_reward(one_noun, goal, WORDS)
    assert 0 < parts["title_score"] < 0.1 and parts["r_type"] == 0.1
    two_nouns = make_product(title="Shirt Tee", query="chips", product_category=other_path)
    parts = type_reward(two_nouns, goal, WORDS)
    assert 0.1 <= parts["title_score"] <= 0.2 and parts["r_type"] == 0.5  # no query/category/title match
    same_query = make_product(title="Shirt Tee", product_category=other_path)
    assert type_reward(same_query, goal, WORDS)["r_type"] == 1.0  # the same search query is enough
    same_category = make_product(title="Shirt Tee", query="chips")
    assert (
        type_reward(same_category, goal, WORDS)["category_match"]
        and type_reward(same_category, goal, WORDS)["r_type"] == 1.0
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
    reward, parts = webshop_reward(chips, goal, 1.0, {"color": "red", "size": "large"}, WORDS)
    assert parts["r_type"] == 0.0 and reward == 0.0


def test_a_goal_title_without_nouns_scores_a_fifth():
    product = make_product(title="soft and warm")
    other = make_product(title="Chips", query="chips", product_category="Grocery")
    parts = type_reward(other, make_goal(product), get_tagger("lexicon"))
    assert parts["title_score"] == 0.2 and parts["r_type"] == 0.5


def test_lexicon_tagger_finds_nouns_without_spacy():
    tagger = LexiconTagger()
    assert tagger.name.startswith("lexicon:lemminflect-")
    nouns = tagger.nouns("Vhomes Reclaimed Wood Console Table with 2 Drawers, black finish")
    assert {"vhomes", "wood", "console", "table", "drawers", "finish"} <= set(nouns)
    assert not {"with", "2", "black"} & set(nouns)  # "black" can be a noun, but also an adjective


def test_possessive_titles_keep_their_noun():  # (c): "Men's" was not a noun
    assert "men" in LexiconTagger().nouns("Men's Running Shoes")
    goal = make_goal(make_product(title="Women's Watch Band"))
    scarf = make_product(title="Women's Scarf", query="scarves", product_category="Accessories")
    parts = type_reward(scarf, goal, LexiconTagger())
    assert parts["title_score"] == pytest.approx(1 / 3) and parts["r_type"] == 1.0


def test_titles_split_as_spacy_splits_them():
    assert split_title("Men's T-Shirt, Black/White (16oz) 2001-2005") == [
        "Men", "'s", "T", "-", "Shirt", ",", "Black", "/", "White", "(", "16", "oz", ")", "2001", "-", "2005",
    ]  # fmt: skip


def test_tagger_choice():
    assert get_tagger("lexicon").name.startswith("lexicon:")
    assert get_tagger("auto").name.split(":")[0] in ("spacy", "lexicon")
    with pytest.raises((ImportError, OSError), match="spacy"):
        get_tagger("no_such_spacy_model_xyz")


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


def test_token_set_ratio_is_thefuzz_019():
    assert token_set_ratio("fuzzy was a bear", "fuzzy fuzzy was a bear") == 100
    assert token_set_ratio("Gluten-Free!", "gluten free") == 100
    assert isinstance(token_set_ratio("abc", "abd"), int)
    assert token_set_ratio("caf\u00e9 latte", "caf latte") == 100  # code points 128-255 are dropped
    assert token_set_ratio("women\u2019s fit", "womens fit") == 86  # others are kept: "women s fit"
    # thefuzz 0.19 scores with difflib, which is not symmetric (RapidFuzz says 89 both ways)
    assert token_set_ratio("10x50 hd binoculars", "15x60 hd binoculars") == 84
    assert token_set_ratio("15x60 hd binoculars", "10x50 hd binoculars") == 89
    assert token_set_ratio("", "abc") == 0 and token_set_ratio("!!", "abc") == 0

"""WebShop's catalogue, goals and search, on the generated catalogue and the real 1000-product files."""

from __future__ import annotations

import json
import random
import shutil

import pytest

from agentgym.envs.webshop import chromium, data
from agentgym.envs.webshop.data import (
    NO_PRICE_BOUND,
    TEST_GOALS,
    build_catalogue,
    generated_catalogue,
    load_catalogue,
    parse_pricing,
    price_bound,
    resolve_data_dir,
)
from agentgym.envs.webshop.generated import generate_raw
from agentgym.envs.webshop.search import TOP_N, SearchEngine


def test_parse_pricing():
    assert parse_pricing("$12.99") == ([12.99], "$12.99")
    assert parse_pricing("$19.99 - $27.99") == ([19.99, 27.99], "$19.99 to $27.99")
    assert parse_pricing("$1,299.50") == ([1299.5], "$1299.5")
    assert parse_pricing("") == ([100.0], "$100.0")
    assert parse_pricing(None) == ([100.0], "$100.0")


def test_price_bound_is_one_of_the_next_multiples_of_ten():
    rng = random.Random(0)
    for price in [0.5, 12.3, 99.99, 500.0, 969.0]:
        upper, text = price_bound(price, rng)
        above = [10.0 * i for i in range(1, 100) if 10.0 * i > price][:4]
        assert upper in above[1:] and upper > price  # the larger of two sampled from the first four
        assert text == f", and price lower than {upper:.2f} dollars"
    assert price_bound(985.0, rng) == (NO_PRICE_BOUND, "")  # fewer than two multiples left


def test_generated_catalogue_is_deterministic_and_rich():
    first, second = generate_raw(120, seed=3), generate_raw(120, seed=3)
    assert first == second
    assert generate_raw(120, seed=4) != first
    catalogue = generated_catalogue()
    assert len(catalogue.products) >= 200
    assert {p.category for p in catalogue.products} == {
        "beauty",
        "electronics",
        "garden",
        "fashion",
        "grocery",
    }
    assert sum(bool(p.options) for p in catalogue.products) > len(catalogue.products) // 2
    assert all(p.attributes and p.reviews is not None for p in catalogue.products)
    goals = catalogue.goals("synthetic", "all")
    assert len(goals) > 2 * TEST_GOALS
    for goal in goals[:50]:
        product = catalogue.by_asin[goal.asin]
        assert set(goal.options) == set(product.options)
        assert all(goal.options[n] in product.options[n] for n in goal.options)
        assert catalogue.prices[goal.asin] < goal.price_upper
        assert all(f"{k}: {v}" in goal.instruction for k, v in goal.options.items())


def test_splits_partition_the_shuffled_goals():
    catalogue = generated_catalogue()
    test, train, everything = (catalogue.goals("synthetic", s) for s in ("test", "train", "all"))
    assert len(test) == TEST_GOALS and test + train == everything
    with pytest.raises(ValueError):
        catalogue.goals("synthetic", "validation")


def test_goal_shuffle_is_upstreams_permutation():
    raw, attributes, reviews = generate_raw(40, seed=1)
    catalogue = build_catalogue("x", raw, attributes, None, reviews)
    rng = random.Random(data.PRICE_SEED)
    prices = {p.asin: data.product_price(p.pricing, rng) for p in catalogue.products}
    expected = data._synthetic_goals(catalogue.products, prices, attributes, rng)
    state = random.getstate()
    try:  # upstream shuffles with the global generator: random.seed(233); random.shuffle(goals)
        random.seed(233)
        random.shuffle(expected)
    finally:
        random.setstate(state)
    assert [g.instruction for g in catalogue.goals("synthetic", "all")] == [g.instruction for g in expected]


def test_search_finds_products_by_title_and_caps_at_fifty():
    catalogue = generated_catalogue()
    engine = SearchEngine(catalogue.products)
    for product in catalogue.products[:30]:
        assert engine.search(product.title.lower())[0] == product.asin
    assert len(engine.search("black")) == TOP_N
    assert engine.search("zzzqqq") == [] and engine.search("the and of") == []


def test_missing_files_raise_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_data_dir(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="items_shuffle"):
        load_catalogue(tmp_path)


def test_data_dir_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("AGENTGYM_WEBSHOP_DATA", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path.resolve()
    monkeypatch.delenv("AGENTGYM_WEBSHOP_DATA")
    assert resolve_data_dir(None) is None


@pytest.mark.data
def test_real_catalogue_and_goals(shared_data):
    catalogue = load_catalogue(shared_data / "webshop")
    assert len(catalogue.products) == 1000
    synthetic = catalogue.goals("synthetic", "all")
    assert len(synthetic) == 6910  # what upstream's loader yields on these files (PROVENANCE.md)
    assert (
        len(catalogue.goals("synthetic", "test")) == 500
        and len(catalogue.goals("synthetic", "train")) == 6410
    )
    assert len(catalogue.goals("human", "all")) == 13
    for goal in synthetic[:200]:
        product = catalogue.by_asin[goal.asin]
        assert goal.instruction.endswith(" dollars") or goal.price_upper == NO_PRICE_BOUND
        assert catalogue.prices[goal.asin] < goal.price_upper
        assert all(v in product.options[k] for k, v in goal.options.items())


@pytest.mark.data
def test_real_search_is_fast_enough_to_use_and_finds_titles(shared_data):
    catalogue = load_catalogue(shared_data / "webshop")
    engine = SearchEngine(catalogue.products)
    hits = [engine.search(p.title.lower())[:1] == [p.asin] for p in catalogue.products[:100]]
    assert sum(hits) >= 95


@pytest.mark.data
def test_copied_data_dir_gives_the_same_goals(shared_data, tmp_path):
    for name in ("items_shuffle_1000.json", "items_ins_v2_1000.json"):
        shutil.copy(shared_data / "webshop" / name, tmp_path / name)
    copy = load_catalogue(tmp_path)
    original = load_catalogue(shared_data / "webshop")
    assert [g.instruction for g in copy.goals()] == [g.instruction for g in original.goals()]
    assert copy.goals("human", "all") == []  # no human instruction file in the copy
    json.dumps([g.as_dict() for g in copy.goals()[:5]])  # goals are plain data


def test_chromium_lookup_order(monkeypatch, tmp_path):
    fake = tmp_path / "my-chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("AGENTGYM_CHROMIUM", str(fake))
    assert chromium.find_chromium() == str(fake)  # the variable comes first
    monkeypatch.setenv("AGENTGYM_CHROMIUM", str(tmp_path / "missing"))
    assert chromium.find_chromium() is None
    with pytest.raises(chromium.BrowserNotFound, match="not an executable"):
        chromium.require_chromium()
    monkeypatch.delenv("AGENTGYM_CHROMIUM")
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", str(tmp_path))
    own = tmp_path / "chromium-1234" / "chrome-linux64" / "chrome"
    own.parent.mkdir(parents=True)
    own.write_text("#!/bin/sh\n")
    own.chmod(0o755)
    assert chromium.find_chromium() == str(own)  # then Playwright's own download

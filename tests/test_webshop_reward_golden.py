"""Our WebShop reward against upstream's own ``get_reward``, on real and hand-made purchases.

``fixtures/webshop_reward_golden.json`` holds 412 purchases, each with the reward upstream's code gave
it and the nouns its spaCy model found in the titles (as digests): 391 drawn from WebShop's
1000-product files, which the fixture names by goal index and ASIN only (the product and goal texts are
read from ../shared/data/webshop, so those tests skip without it), and 21 hand-made hard cases on
invented products, which need no data. ``benchmarks/webshop_reward_golden.py`` regenerates the fixture
from an upstream checkout and reads it back for these tests. Only the test that runs spaCy needs spaCy.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from agentgym.envs.webshop.data import load_catalogue
from agentgym.envs.webshop.reward import (
    COLOR_WORDS,
    TAGGER_ENV_VAR,
    LexiconTagger,
    SpacyTagger,
    get_tagger,
    webshop_reward,
)


def _golden_module() -> Any:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "webshop_reward_golden.py"
    spec = importlib.util.spec_from_file_location("webshop_reward_golden", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


golden = _golden_module()
GOLDEN = golden.read_golden()
HAND_MADE = golden.hand_made_cases(GOLDEN)
LEXICON_MIN_AGREEMENT = 0.97  # measured: 406 of 412 cases (98.5%) equal upstream's reward
PARTS = ("r_type", "title_score", "r_att", "r_option", "r_price", "query_match", "category_match")


@pytest.fixture(scope="module")
def real_cases(shared_data: Path) -> list:
    return golden.real_cases(GOLDEN, shared_data / "webshop")


@pytest.fixture(scope="module")
def all_cases(real_cases: list) -> list:
    return sorted(real_cases + HAND_MADE, key=lambda case: case.id)


def ours(case: Any, tagger: Any) -> tuple[float, dict[str, Any]]:
    return webshop_reward(case.product, case.goal, case.price, case.options, tagger)


def assert_equals_upstream(cases: list, tagger: Any) -> None:
    """Reward and every part equal upstream's, on every case."""
    for case in cases:
        reward, parts = ours(case, tagger)
        want = case.upstream
        assert reward == pytest.approx(want["reward"], abs=1e-9), (case.id, case.kind, reward, want)
        for key in PARTS:
            assert parts[key] == pytest.approx(want.get(key), abs=1e-9), (key, case.id, case.kind)


def test_fixture_covers_the_hard_cases():
    cases = GOLDEN["cases"]
    assert len(cases) >= 400 and len({c["product"] for c in cases}) >= 100
    assert len(HAND_MADE) == sum(c["source"] == "hand-made" for c in cases) >= 20
    kinds = {c["kind"] for c in cases}
    for kind in ("wrong colour and size named in the text", "possessive titles, other product"):
        assert kind in kinds
    assert any(c["upstream"]["r_price"] is False for c in cases)
    assert {c["upstream"]["r_type"] for c in cases} == {0.0, 0.1, 0.5, 1.0}


def test_fixture_holds_no_data_set_text():
    """Real cases name their goal and product only: the texts stay in the data files (PROVENANCE.md)."""
    for case in GOLDEN["cases"]:
        if case["source"] == "data":
            assert set(case["goal"]) == {"kind", "index", "asin"}, case
    assert all(asin.startswith("HM") for asin in GOLDEN["hand_made_products"])
    assert all(len(d) == golden.NOUN_DIGEST_CHARS for ds in GOLDEN["nouns"].values() for d in ds)


def test_hand_made_cases_equal_upstream_given_upstreams_nouns():
    """Without the data: wrong colour or size, possessive titles, prices, fuzzy scores beyond ASCII."""
    assert_equals_upstream(HAND_MADE, golden.FixtureNouns(GOLDEN, HAND_MADE))


def test_wrong_options_named_in_the_text_are_not_success():  # the bug this fixture was made for
    case = next(c for c in HAND_MADE if c.kind == "wrong colour and size named in the text")
    reward, _ = ours(case, golden.FixtureNouns(GOLDEN, HAND_MADE))
    assert reward == pytest.approx(case.upstream["reward"]) and reward < 1.0


@pytest.mark.data
def test_real_purchases_equal_upstream_given_upstreams_nouns(real_cases):
    """Everything but the tagger: the formula, fuzzy scores, colours and option rules, on every case."""
    assert len(real_cases) >= 380
    assert_equals_upstream(real_cases, golden.FixtureNouns(GOLDEN, real_cases))


@pytest.mark.data
def test_a_colour_word_inside_a_value_costs_the_right_purchase_its_option(real_cases):
    """Upstream normalises a bought "rectangular" to "tan" but keeps the goal's pair: 1.0 is out of reach."""
    cases = [c for c in real_cases if c.kind == "target, the goal's options, a colour word inside one"]
    assert cases and any(c.upstream["reward"] < 1.0 for c in cases)
    tagger = golden.FixtureNouns(GOLDEN, cases)
    for case in cases:
        assert ours(case, tagger)[0] == pytest.approx(case.upstream["reward"], abs=1e-9)
        values = case.goal.options.values()
        assert any(v not in COLOR_WORDS and any(c in v for c in COLOR_WORDS) for v in values)


@pytest.mark.data
def test_right_purchase_of_the_real_test_goals(shared_data):
    """Buying the target with the goal's own options scores 1 but where a value holds a colour word."""
    catalogue = load_catalogue(shared_data / "webshop")
    goals = catalogue.goals("synthetic", "test")
    misses = 0
    for goal in goals:
        target = catalogue.by_asin[goal.asin]
        reward, parts = webshop_reward(target, goal, catalogue.prices[goal.asin], dict(goal.options))
        if reward < 1 - 1e-9:  # upstream's colour normalisation: "rectangular" -> "tan", "fashion" -> "ash"
            misses += 1
            assert parts["r_type"] == 1 and parts["r_att"] == 1 and parts["r_price"], parts
            assert any(
                v not in COLOR_WORDS and any(c in v for c in COLOR_WORDS) for v in goal.options.values()
            )
    assert misses / len(goals) <= 0.05, misses  # measured: 20 of 500


def _spacy_tagger() -> SpacyTagger:
    chosen = os.environ.get(TAGGER_ENV_VAR) or "spacy"  # a spaCy model's name or path may be set there
    try:
        tagger = get_tagger("spacy" if chosen in ("auto", "lexicon") else chosen)
    except (ImportError, OSError) as exc:
        pytest.skip(
            f"spaCy's en_core_web_sm is not installed ({exc.__class__.__name__}); "
            "pip install spacy && python -m spacy download en_core_web_sm"
        )
    assert isinstance(tagger, SpacyTagger)
    made_with = GOLDEN["header"]["spacy_model"].rsplit("-", 1)[1]
    if tagger.nlp.meta.get("version") != made_with:
        pytest.skip(f"the fixture's nouns come from model version {made_with}, installed: {tagger.name}")
    return tagger


@pytest.mark.data
def test_reward_equals_upstream_with_spacy(all_cases):
    """With spaCy's model installed (the version that made the fixture) the reward is upstream's exactly."""
    tagger = _spacy_tagger()
    fixture_nouns = golden.FixtureNouns(GOLDEN, all_cases)
    for title, digests in fixture_nouns.by_title.items():
        assert [golden.noun_digest(n) for n in tagger.nouns(title)] == digests, title
    for case in all_cases:
        assert ours(case, tagger)[0] == pytest.approx(case.upstream["reward"], abs=1e-9), case.id


@pytest.mark.data
def test_lexicon_fallback_agrees_with_upstream(all_cases):
    """Without spaCy the type factor can differ; its agreement is measured and held here."""
    pytest.importorskip("lemminflect")
    tagger = LexiconTagger()
    same = 0
    for case in all_cases:
        reward, _ = ours(case, tagger)
        same += reward == pytest.approx(case.upstream["reward"], abs=1e-9)
        if case.product.asin == case.goal.asin and case.goal.name == case.product.title:
            # the goal's own product: both titles are the same, so any tagger finds the same nouns
            assert reward == pytest.approx(case.upstream["reward"], abs=1e-9), case.id
    assert same / len(all_cases) >= LEXICON_MIN_AGREEMENT, f"{same}/{len(all_cases)}"

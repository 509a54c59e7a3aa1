"""Fidelity to the reference implementations: how often our scores equal theirs.

WebShop: our reward against upstream's ``get_reward`` (princeton-nlp/WebShop) on the purchases of
``tests/fixtures/webshop_reward_golden.json`` (real products and goals plus hand-made hard cases, scored
by upstream's code; ``benchmarks/webshop_reward_golden.py`` regenerates it). Three title taggers:
``upstream_nouns`` (the nouns upstream's spaCy model found, from the fixture: everything but the tagger),
``spacy`` (spaCy's ``en_core_web_sm`` run here when installed, or the model ``$AGENTGYM_WEBSHOP_TAGGER``
names) and ``lexicon`` (the fallback without
spaCy).

    python benchmarks/fidelity.py

Prints the figures and records them in benchmarks/results/fidelity.json (one key per environment).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "fidelity.json"
WEBSHOP_GOLDEN = REPO / "tests" / "fixtures" / "webshop_reward_golden.json"


def _webshop_cases(golden: dict[str, Any]) -> list[tuple[Any, Any, dict[str, str], float, float]]:
    """(product, goal, options, price, upstream reward) for every case of the fixture."""
    from agentgym.envs.webshop.data import Goal, Product

    products = {
        asin: Product(
            asin=asin,
            title=p["title"],
            description=p["description"],
            bullet_points=p["bullet_points"],
            category="",
            query=p["query"],
            product_category=p["product_category"],
            pricing=[],
            price_tag="",
            options={},
            attributes=p["attributes"],
        )
        for asin, p in golden["products"].items()
    }
    cases = []
    for case in golden["cases"]:
        g, target = case["goal"], products[case["goal"]["target"]]
        goal = Goal(
            asin=target.asin,
            instruction="",
            attributes=g["attributes"],
            options=g["options"],
            price_upper=g["price_upper"],
            query=g.get("query", target.query),
            category="",
            product_category=g.get("product_category", target.product_category),
            name=g.get("name", target.title),
            kind=g["kind"],
        )
        cases.append(
            (products[case["product"]], goal, case["options"], case["price"], case["upstream"]["reward"])
        )
    return cases


def _agreement(cases: list, tagger: Any) -> dict[str, Any]:
    from agentgym.envs.webshop.reward import webshop_reward

    pairs = [(webshop_reward(p, g, price, opts, tagger)[0], want) for p, g, opts, price, want in cases]
    gaps = [abs(ours - want) for ours, want in pairs]
    successes = [(ours >= 1 - 1e-9) == (want >= 1 - 1e-9) for ours, want in pairs]
    return {
        "tagger": tagger.name,
        "exact": round(sum(gap <= 1e-9 for gap in gaps) / len(gaps), 4),
        "within_0.01": round(sum(gap <= 0.01 for gap in gaps) / len(gaps), 4),
        "success_agrees": round(sum(successes) / len(successes), 4),
        "mean_abs_diff": round(sum(gaps) / len(gaps), 5),
        "max_abs_diff": round(max(gaps), 4),
    }


def webshop_agreement(fixture: Path = WEBSHOP_GOLDEN) -> dict[str, Any]:
    """Agreement of our WebShop reward with upstream's on the golden purchases, per title tagger."""
    from agentgym.envs.webshop.reward import TAGGER_ENV_VAR, LexiconTagger, get_tagger

    golden = json.loads(fixture.read_text(encoding="utf-8"))
    cases = _webshop_cases(golden)

    class UpstreamNouns:
        name = "upstream-nouns (from the fixture)"

        def nouns(self, title: str) -> list[str]:
            return list(golden["nouns"][title])

    result: dict[str, Any] = {
        "reference": golden["header"]["upstream"],
        "reference_setup": {k: golden["header"][k] for k in ("thefuzz", "spacy", "spacy_model")},
        "cases": len(cases),
        "upstream_nouns": _agreement(cases, UpstreamNouns()),
        "lexicon": _agreement(cases, LexiconTagger()),
    }
    chosen = os.environ.get(TAGGER_ENV_VAR) or "spacy"  # may name another spaCy model or a model folder
    try:
        result["spacy"] = _agreement(cases, get_tagger("spacy" if chosen in ("auto", "lexicon") else chosen))
    except (ImportError, OSError) as exc:
        result["spacy"] = {"skipped": f"spaCy's en_core_web_sm is not installed ({type(exc).__name__})"}
    return result


def main() -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results["webshop"] = webshop_agreement()
    print(json.dumps({"webshop": results["webshop"]}, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

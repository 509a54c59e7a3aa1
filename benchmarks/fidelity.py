"""Grader fidelity: how often an environment's checker agrees with the reference grader of its task.

    python benchmarks/fidelity.py

GSM8K: the env's verdict against Hugging Face's math-verify called directly (``verify(parse(gold),
parse(answer))``), before (the regex checker of commit OLD_GSM8K_COMMIT) and after (math-verify), on
varied answers to real test problems (``answer_variants``) and on the gold answers of all 1319 test
problems (gold accepted, gold + 1 rejected); also each grader's agreement with the intended verdict of
each answer, and the time per check. Needs ../shared/data/gsm8k (or AGENTGYM_SHARED_DATA) and git.

Prints a summary and records it in benchmarks/results/fidelity.json under "gsm8k".
"""

from __future__ import annotations

import collections
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


def main() -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results["gsm8k"] = gsm8k_agreement()
    print(json.dumps(results["gsm8k"], indent=2, ensure_ascii=False))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()

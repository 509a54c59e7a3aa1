"""experiments/paired_evals.py: the exact McNemar test against scipy's binomial test, and two real
`agentgym eval` folders compared seed by seed."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from agentgym.eval.runner import evaluate

REPO = Path(__file__).resolve().parents[1]
ENV = "agentgym/FrozenLake-v0"


def _script():
    spec = importlib.util.spec_from_file_location("paired_evals", REPO / "experiments" / "paired_evals.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["paired_evals"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("only_first, only_second", [(0, 27), (3, 10), (5, 5), (1, 0), (12, 30), (0, 0)])
def test_mcnemar_exact_p_is_scipys_two_sided_binomial_test(only_first, only_second):
    stats = pytest.importorskip("scipy.stats")
    n = only_first + only_second
    expected = stats.binomtest(only_first, n, 0.5).pvalue if n else 1.0
    assert _script().mcnemar_exact_p(only_first, only_second) == pytest.approx(expected, rel=1e-9)


def test_random_against_oracle_on_the_same_seeds(tmp_path, capsys):
    paired = _script()
    evaluate(ENV, "random", 12, out=tmp_path / "random", progress=False, seed=50)
    evaluate(ENV, "oracle", 12, out=tmp_path / "oracle", progress=False, seed=50)
    out = tmp_path / "cmp.json"
    assert paired.main([str(tmp_path / "random"), str(tmp_path / "oracle"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    random_episodes = map(json.loads, (tmp_path / "random" / "trajectories.jsonl").open())
    random_solved = {r["seed"] for r in random_episodes if r["success"]}
    assert result["paired_episodes"] == 12 and result["after"]["success_rate"] == 1.0
    assert result["solved_only_before"] == 0
    assert result["seeds_solved_only_after"] == sorted(set(range(50, 62)) - random_solved)
    assert "McNemar exact p" in capsys.readouterr().out

    # another lake size is another task; disjoint seeds share nothing: clear errors, status 2
    evaluate(ENV, "oracle", 4, out=tmp_path / "small", progress=False, env_kwargs={"size": 3}, seed=50)
    evaluate(ENV, "oracle", 4, out=tmp_path / "later", progress=False, seed=500)
    assert paired.main([str(tmp_path / "oracle"), str(tmp_path / "small")]) == 2
    assert paired.main([str(tmp_path / "oracle"), str(tmp_path / "later")]) == 2
    assert paired.main([str(tmp_path / "oracle"), str(tmp_path / "missing")]) == 2
    (tmp_path / "later" / "run.json").write_text("{not json")
    assert paired.main([str(tmp_path / "oracle"), str(tmp_path / "later")]) == 2
    err = capsys.readouterr().err
    assert "different tasks" in err and "share no finished episode" in err and "not an `agentgym eval" in err

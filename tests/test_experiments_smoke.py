"""experiments/snr_filter.py and experiments/mi_predicts_success.py: their statistics on constructed runs
(fast), and both scripts end to end in --quick mode (slow: minutes on a busy 2-core machine)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

pytest.importorskip("scipy")


def load_script(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def fake_run(
    arm: str, seed: int, final: float, steps: int, every: int, mi_at, episodes: int = 100, success_at=None
) -> dict:
    """A run as snr_filter.py stores it: RL records with diagnostics at checkpoints 0, every, 2 every...;
    the rollout success of step t is ``success_at(t)`` (default 0.1 seed + 0.01 t)."""
    metrics = []
    for step in range(1, steps + 1):
        record = {
            "step": step,
            "success": success_at(step) if success_at else 0.1 * seed + 0.01 * step,
            "kept_ratio": 0.5 if arm != "no-filter" else 1.0,
            "rollout_time_s": 2.0,
            "update_time_s": 1.0 if arm != "no-filter" else 2.0,
            "train_tokens": 100.0 if arm != "no-filter" else 200.0,
            "skipped": 0.0,
        }
        if (step - 1) % every == 0:
            record["diag/mi/trajectory/mi"] = mi_at(step - 1)
            record["diag/entropy"] = 1.0
        metrics.append(record)
    successes = int(round(final * episodes))
    return {
        "arm": arm,
        "seed": seed,
        "final": {"success_rate": successes / episodes, "successes": successes, "episodes": episodes},
        "train_wall_s": 1.0,
        "metrics": metrics,
    }


def test_snr_filter_statistics_on_constructed_runs():
    snr = load_script("snr_filter")
    results = []
    for seed in range(5):
        base = 0.3 + 0.05 * seed
        results.append(fake_run("no-filter", seed, base, 4, 2, lambda s: 0.0))
        results.append(fake_run("top-p-linear", seed, base + 0.1 + 0.01 * seed, 4, 2, lambda s: 0.0))
    summary = snr.analyze(results, ["no-filter", "top-p-linear"])
    arm = summary["arms"]["top-p-linear"]
    assert arm["pooled_episodes"] == 500
    lo, hi = arm["pooled_wilson95"]
    assert lo < arm["pooled_success"] < hi
    tlo, thi = arm["mean_success_t95"]
    assert tlo < arm["mean_success"] < thi
    assert arm["kept_ratio"] == pytest.approx(0.5)
    comparison = summary["comparisons"]["top-p-linear"]
    assert comparison["mean_difference"] == pytest.approx(0.12)
    assert comparison["paired_t_p"] < 1e-3  # a consistent gain on every paired seed
    assert comparison["welch_p"] > comparison["paired_t_p"]  # the seeds' spread hides it without pairing
    assert comparison["update_time_change_pct"] == pytest.approx(-50.0)
    assert comparison["verdict"].startswith("significant")
    # no gain at all: not significant
    same = [dict(r, arm="top-p-linear") if r["arm"] == "no-filter" else None for r in results]
    flat = [r for r in results if r["arm"] == "no-filter"] + [r for r in same if r is not None]
    verdict = snr.analyze(flat, ["no-filter", "top-p-linear"])["comparisons"]["top-p-linear"]
    assert verdict["paired_t_p"] == 1.0 and verdict["verdict"].startswith("not significant")


def test_mi_predicts_success_on_constructed_runs(tmp_path):
    mps = load_script("mi_predicts_success")
    rng = np.random.default_rng(0)
    runs = []
    for seed in range(8):
        final = rng.uniform(0.1, 0.9)
        runs.append(fake_run("no-filter", seed, final, 6, 2, lambda s, f=final: f + 0.01 * s))
    source = tmp_path / "snr.json"
    source.write_text(json.dumps({"config": {"save_every": 2}, "runs": runs}))
    result = mps.main(
        ["--input", str(source), "--out", str(tmp_path), "--permutations", "300", "--bootstrap", "100"]
    )
    assert (tmp_path / "mi_predicts_success.png").stat().st_size > 0
    assert len(result["points"]) == 8 * 3  # checkpoints 0, 2, 4 of each run
    final = result["correlations"]["final"]["mi (trajectory)"]
    assert final["rho"] > 0.9 and final["p_value"] < 0.01 and final["ci95"][0] > 0.5
    assert final["rho_within"] == pytest.approx(1.0) and final["p_within"] < 0.01  # runs ranked alike
    assert result["correlations"]["final"]["token entropy"]["rho"] is None  # constant: no correlation
    # "next": the success of the rollouts of steps s+2 .. s+every+1; incomplete windows are left out
    point = next(p for p in result["points"] if p["seed"] == 3 and p["checkpoint"] == 0)
    assert point["next"] == pytest.approx(np.mean([0.3 + 0.02, 0.3 + 0.03]))
    assert all(p["next"] is None for p in result["points"] if p["checkpoint"] == 4)


@pytest.mark.slow
def test_quick_runs_end_to_end(tmp_path):
    snr = load_script("snr_filter")
    mps = load_script("mi_predicts_success")
    out = snr.main(["--quick", "--jobs", "1", "--out", str(tmp_path), "--runs-dir", str(tmp_path / "runs")])
    assert len(out["runs"]) == 3 * 2
    assert set(out["summary"]["arms"]) == set(snr.ARMS)
    # diagnostics at every checkpoint (the quick warm start is too short to write think blocks, so the MI
    # estimate itself may be absent: its share of valid thinking is logged either way)
    for run in out["runs"]:
        logged = [r for r in run["metrics"] if "diag/entropy" in r]
        assert [r["step"] for r in logged] == [1, 2]
        assert all("diag/mi/trajectory/valid_thinking_rate" in r for r in logged)
    assert (tmp_path / "snr_filter_quick.png").stat().st_size > 0
    source = tmp_path / "snr_filter_quick.json"
    result = mps.main(
        ["--input", str(source), "--out", str(tmp_path), "--permutations", "50", "--bootstrap", "20"]
    )
    assert len(result["points"]) == 6 * 2  # checkpoints 0 and 1 of each run


def test_a_shared_trend_is_not_read_as_prediction(tmp_path):
    """MI and success both rise over training, independently of each other within a checkpoint: the pooled
    rho is high, but permuting whole runs keeps the trend in the null, so it is not significant."""
    mps = load_script("mi_predicts_success")
    rng = np.random.default_rng(1)
    runs = []
    for seed in range(8):
        noise, offset = rng.uniform(0, 0.05, size=100), rng.uniform(0, 0.5)
        runs.append(
            fake_run(
                "no-filter",
                seed,
                0.5,
                9,
                2,
                lambda s, k=offset: s + k,  # the trend plus a per-run offset
                success_at=lambda t, n=noise: 0.05 * t + n[t],
            )
        )
    source = tmp_path / "snr.json"
    source.write_text(json.dumps({"config": {"save_every": 2}, "runs": runs}))
    result = mps.main(
        ["--input", str(source), "--out", str(tmp_path), "--permutations", "300", "--bootstrap", "50"]
    )
    trend = result["correlations"]["next"]["mi (trajectory)"]
    assert trend["rho"] > 0.8  # pooled: the trend
    assert trend["p_value"] > 0.05  # but runs' MI tells nothing about which run does better
    assert abs(trend["rho_within"]) < 0.6 and trend["p_within"] > 0.05

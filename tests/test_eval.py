"""`agentgym eval`: summaries, Wilson intervals, resume after a kill, worker processes, the CLI."""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter

import pytest

from agentgym.cli import main
from agentgym.eval.metrics import summarize, wilson_interval
from agentgym.eval.run_files import TrajectoryLog
from agentgym.eval.runner import evaluate
from agentgym.eval.summary import build_summary, grader_counts

ENV = "agentgym/FrozenLake-v0"


def test_wilson_interval_known_values():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27754), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.72246, 1.0), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_summarize_per_turn_format_rate():
    records = [
        {
            "success": True,
            "return": 1.0,
            "turns": 2,
            "format_ok": [False, True],
            "action_valid": [False, True],
        },
        {"success": False, "return": -0.1, "turns": 1, "format_ok": [True], "action_valid": [True]},
    ]
    s = summarize(records)
    assert s["success_rate"] == 0.5 and s["mean_turns"] == 1.5
    assert s["format_valid_rate"] == pytest.approx(2 / 3)
    assert s["format_valid_rate_per_turn"] == [0.5, 1.0]
    assert s["mean_return"] == pytest.approx(0.45)


def test_eval_writes_summary_and_trajectories(tmp_path):
    summary = evaluate(ENV, "oracle", 12, seed=100, out=tmp_path, progress=False)
    for key in (
        "env",
        "policy",
        "episodes",
        "success_rate",
        "success_ci95",
        "mean_return",
        "format_valid_rate",
        "mean_turns",
    ):
        assert key in summary
    assert summary["success_rate"] == 1.0 and summary["episodes"] == 12
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    records = [json.loads(line) for line in (tmp_path / "trajectories.jsonl").read_text().splitlines()]
    assert sorted(r["seed"] for r in records) == list(range(100, 112))
    for r in records:
        assert r["env"] == ENV and r["messages"][0]["role"] == "system"
        assert len(r["rewards"]) == len(r["format_ok"]) == r["turns"]


def test_workers_give_the_same_episodes(tmp_path):
    one = evaluate(ENV, "random", 16, out=tmp_path / "one", progress=False)
    two = evaluate(ENV, "random", 16, out=tmp_path / "two", workers=2, progress=False)
    assert {k: one[k] for k in ("success_rate", "mean_return", "mean_turns")} == {
        k: two[k] for k in ("success_rate", "mean_return", "mean_turns")
    }

    def by_seed(path):
        return {r["seed"]: r["messages"] for r in TrajectoryLog(path / "trajectories.jsonl").load()}

    assert by_seed(tmp_path / "one") == by_seed(tmp_path / "two")


def test_resume_refuses_a_different_run(tmp_path):
    evaluate(ENV, "oracle", 2, out=tmp_path, progress=False)
    with pytest.raises(ValueError, match="different run"):
        evaluate(ENV, "random", 2, out=tmp_path, progress=False)


_SLOW_EVAL = textwrap.dedent("""
    import sys, time
    from agentgym.eval.runner import evaluate
    from agentgym.policies import RandomPolicy

    class SlowRandom(RandomPolicy):
        spec = "random"
        def act(self, chats, envs):
            time.sleep(0.02)
            return super().act(chats, envs)

    evaluate("agentgym/FrozenLake-v0", SlowRandom(), int(sys.argv[2]), out=sys.argv[1], progress=False)
""")


def test_resume_after_kill_loses_and_repeats_nothing(tmp_path):
    out, episodes = tmp_path / "run", 150
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_EVAL, str(out), str(episodes)])
    log = out / "trajectories.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and (not log.exists() or len(log.read_bytes().splitlines()) < 10):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = log.read_bytes()
    assert 10 <= len(before.splitlines()) < episodes, "the run should have been killed midway"
    with log.open("ab") as f:  # a write torn by the kill
        f.write(b'{"env": "agentgym/FrozenLake-v0", "seed": 9')

    summary = evaluate(ENV, "random", episodes, out=out, progress=False)
    after = log.read_bytes()
    assert after.startswith(before), "stored episodes must be kept as they were"
    seeds = [json.loads(line)["seed"] for line in after.splitlines()]
    assert sorted(seeds) == list(range(episodes)), "every seed exactly once"
    assert summary["episodes"] == episodes
    assert summary["episodes_played_now"] == episodes - len(before.splitlines())
    fresh = evaluate(ENV, "random", episodes, out=tmp_path / "fresh", progress=False)
    assert fresh["success_rate"] == summary["success_rate"] and fresh["mean_return"] == summary["mean_return"]


def test_cli_envs_and_eval(tmp_path, capsys):
    assert main(["envs"]) == 0
    assert "agentgym/Sokoban-v0" in capsys.readouterr().out
    out = tmp_path / "cli"
    assert (
        main(
            [
                "eval",
                "--env",
                ENV,
                "--policy",
                "oracle",
                "--episodes",
                "3",
                "--out",
                str(out),
                "--env-kwargs",
                '{"size": 4}',
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert '"success_rate": 1.0' in printed
    assert json.loads((out / "summary.json").read_text())["env_kwargs"] == {"size": 4}


def test_cli_reports_bad_input(capsys):
    assert main(["eval", "--env", "agentgym/Nope-v0", "--policy", "oracle", "--episodes", "1"]) == 2
    assert "unknown environment" in capsys.readouterr().err
    assert main(["eval", "--env", ENV, "--policy", "nonsense", "--episodes", "1", "--no-progress"]) == 2
    assert "unknown policy" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "--env", ENV, "--policy", "oracle", "--env-kwargs", "[1, 2]"])


# ----- which grader scored the run -----
def test_summary_counts_the_graders_of_the_episodes():
    def record(seed, final_info):
        return {
            "seed": seed,
            "success": True,
            "return": 1.0,
            "turns": 1,
            "format_ok": [True],
            "action_valid": [True],
            "terminated": True,
            "messages": [],
            "final_info": final_info,
        }

    records = [
        record(0, {"grader": "b-grader-2.0"}),
        record(1, {"grader": "a-grader-1.0"}),
        record(2, {"grader": "b-grader-2.0"}),
        record(3, {}),  # an env that names no grader
        {k: v for k, v in record(4, {}).items() if k != "final_info"},  # a record from before final_info
    ]
    assert grader_counts(records) == {"a-grader-1.0": 1, "b-grader-2.0": 2}
    assert list(grader_counts(records)) == ["a-grader-1.0", "b-grader-2.0"]
    summary = build_summary(
        records,
        env_id=ENV,
        policy_spec="oracle",
        seed=0,
        env_kwargs={},
        policy_kwargs={},
        workers=1,
        elapsed=0.0,
        played_now=5,
    )
    assert summary["graders"] == {"a-grader-1.0": 1, "b-grader-2.0": 2}
    assert grader_counts(records[3:]) == {}


def cli_eval(env_id: str, out, episodes: int, env_kwargs: dict) -> dict:
    args = ["eval", "--env", env_id, "--policy", "oracle", "--episodes", str(episodes), "--out", str(out)]
    assert main([*args, "--env-kwargs", json.dumps(env_kwargs), "--no-progress"]) == 0
    return json.loads((out / "summary.json").read_text())


def test_eval_summary_names_the_gsm8k_grader(tmp_path, capsys):
    pytest.importorskip("math_verify", reason="GSM8K grades with math-verify (pip install math-verify)")
    problems = [
        {
            "question": "Ann has 3 apples and buys 4 more. How many apples does she have?",
            "answer": "3+4=7\n#### 7",
        },
        {"question": "A box holds 12 pens. How many pens are in 2 boxes?", "answer": "12*2=24\n#### 24"},
    ]
    data = tmp_path / "mini.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in problems))
    summary = cli_eval("agentgym/GSM8K-v0", tmp_path / "run", 3, {"data_path": str(data)})
    assert summary["success_rate"] == 1.0
    assert summary["graders"] == {f"math-verify-{importlib.metadata.version('math-verify')}": 3}


def test_eval_summary_names_the_codeexec_grader_per_task_style(tmp_path, capsys):
    asserts = {
        "task_id": "mini/add",
        "entry_point": "add",
        "prompt": 'def add(a: int, b: int) -> int:\n    """The sum of a and b."""\n',
        "solution": "def add(a: int, b: int) -> int:\n    return a + b\n",
        "tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"],
    }
    humaneval = {
        "task_id": "Mini/0",
        "entry_point": "double",
        "prompt": 'def double(x: int) -> int:\n    """Twice x."""\n',
        "canonical_solution": "    return 2 * x\n",
        "test": "def check(candidate):\n    assert candidate(3) == 6\n    assert candidate(0) == 0\n",
    }
    data = tmp_path / "tasks.jsonl"
    data.write_text(json.dumps(asserts) + "\n" + json.dumps(humaneval) + "\n")
    out = tmp_path / "run"
    summary = cli_eval("agentgym/CodeExec-v0", out, 8, {"data_path": str(data)})
    assert summary["success_rate"] == 1.0
    styles = Counter(r["final_info"]["grading"] for r in TrajectoryLog(out / "trajectories.jsonl").load())
    assert styles["asserts"] and styles["humaneval"], styles  # seeds 0-7 draw both tasks
    assert summary["graders"] == {"assert-list": styles["asserts"], "human-eval": styles["humaneval"]}

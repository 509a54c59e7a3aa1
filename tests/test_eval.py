"""`agentgym eval`: summaries, Wilson intervals, resume after a kill, worker processes, the CLI, aborted
episodes, corrupt log lines and the lock on an output directory."""

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
from typing import ClassVar

import gymnasium as gym
import pytest

from agentgym.cli import main
from agentgym.envs.frozenlake import FrozenLakeEnv
from agentgym.eval.metrics import summarize, wilson_interval
from agentgym.eval.run_files import RunDirLock, TrajectoryLog, latest_by_seed
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


# ----- aborted episodes: counted apart, left out of the metrics, played again by a rerun -----
class CrashingLake(FrozenLakeEnv):
    """FrozenLake whose first step aborts the episodes of the seeds in ``crashing``, as WebShop reports a
    crashed browser: truncated, reward 0, ``info["aborted"]`` and the reason in ``info["error"]``."""

    crashing: ClassVar[set[int]] = set()

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        if self.np_random_seed in self.crashing:
            return obs, 0.0, False, True, {**info, "aborted": True, "error": "the test browser crashed"}
        return obs, reward, terminated, truncated, info


CRASHING_ENV = "agentgym-test/CrashingLake-v0"
if CRASHING_ENV not in gym.registry:
    gym.register(CRASHING_ENV, entry_point=CrashingLake)


def _log_lines(out) -> list[dict]:
    return [json.loads(line) for line in (out / "trajectories.jsonl").read_bytes().splitlines()]


def test_aborted_episodes_are_counted_apart_and_replayed(tmp_path, monkeypatch):
    monkeypatch.setattr(CrashingLake, "crashing", {2, 5})
    first = evaluate(CRASHING_ENV, "oracle", 8, out=tmp_path, progress=False)
    assert first["episodes"] == 6 and first["aborted"] == 2 and first["aborted_seeds"] == [2, 5]
    assert first["success_rate"] == 1.0, "an aborted episode is no failure of the policy"
    assert first["success_ci95"][1] == 1.0 and first["turn_states"]["healthy_tool_call"] < 1.0
    stored = {r["seed"]: r for r in _log_lines(tmp_path)}
    assert stored[2]["aborted"] and stored[2]["abort_reason"] == "the test browser crashed"
    assert not stored[0]["aborted"] and stored[0]["abort_reason"] is None

    monkeypatch.setattr(CrashingLake, "crashing", {5})  # seed 2 now plays through; 5 crashes again
    second = evaluate(CRASHING_ENV, "oracle", 8, out=tmp_path, progress=False)
    assert second["episodes_played_now"] == 2  # only the aborted seeds
    assert second["episodes"] == 7 and second["aborted"] == 1 and second["aborted_seeds"] == [5]
    lines = _log_lines(tmp_path)
    assert sorted(r["seed"] for r in lines) == list(range(8)), "the replayed record supersedes the old one"
    assert not next(r for r in lines if r["seed"] == 2)["aborted"]
    assert [r["seed"] for r in lines][:6] == [0, 1, 3, 4, 6, 7], "untouched records keep their place"

    monkeypatch.setattr(CrashingLake, "crashing", set())
    third = evaluate(CRASHING_ENV, "oracle", 8, out=tmp_path, progress=False)
    assert third["episodes"] == 8 and third["aborted"] == 0 and third["episodes_played_now"] == 1
    assert third["success_rate"] == 1.0 and len(_log_lines(tmp_path)) == 8


def test_summary_metrics_are_over_completed_episodes():
    def record(seed, success, aborted=None):
        info = {} if aborted is None else {"aborted": aborted, "error": "crashed" if aborted else None}
        return {
            "seed": seed,
            "success": success,
            "return": float(success),
            "turns": 1,
            "format_ok": [True],
            "action_valid": [True],
            "terminated": success,
            "messages": [{"role": "assistant", "content": "<answer>x</answer>"}],
            "final_info": info,
        }

    # records from before the `aborted` field: the flag is read from final_info
    records = [record(0, True), record(1, False), record(2, False, aborted=True), record(3, True, False)]
    summary = build_summary(
        records,
        env_id=ENV,
        policy_spec="oracle",
        seed=0,
        env_kwargs={},
        policy_kwargs={},
        workers=1,
        elapsed=0.0,
        played_now=4,
    )
    assert summary["episodes"] == 3 and summary["aborted"] == 1 and summary["aborted_seeds"] == [2]
    assert summary["success_rate"] == pytest.approx(2 / 3)
    assert summary["success_ci95"] == pytest.approx(list(wilson_interval(2, 3)))
    assert summary["turn_states"]["turns"] == 3 and summary["success_by_turn"] == [pytest.approx(2 / 3)]


# ----- the trajectory log: a corrupt line in the middle is skipped, the records after it kept -----
def test_corrupt_middle_line_is_skipped_and_counted_not_the_records_after_it(tmp_path):
    evaluate(ENV, "random", 10, out=tmp_path, progress=False)
    log = tmp_path / "trajectories.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    corrupt_seed = json.loads(lines[3])["seed"]
    lines[3] = b'{"env": "agentgym/FrozenLake-v0", "seed": \x00\xff garbage\n'
    log.write_bytes(b"".join(lines))

    with pytest.warns(UserWarning, match=r"skipped 1 corrupt line\(s\) \(line 4\)"):
        summary = evaluate(ENV, "random", 10, out=tmp_path, progress=False)
    assert summary["corrupt_lines_skipped"] == 1
    assert summary["episodes_played_now"] == 1, "only the corrupt line's episode is played again"
    assert summary["episodes"] == 10
    after = log.read_bytes().splitlines(keepends=True)
    assert after[:10] == lines, "the corrupt line and every record after it stay as they were"
    assert json.loads(after[10])["seed"] == corrupt_seed and len(after) == 11
    fresh = evaluate(ENV, "random", 10, out=tmp_path / "fresh", progress=False)
    assert {k: summary[k] for k in ("success_rate", "mean_return", "mean_turns")} == {
        k: fresh[k] for k in ("success_rate", "mean_return", "mean_turns")
    }


def test_trajectory_log_cuts_only_a_torn_last_line(tmp_path):
    path = tmp_path / "trajectories.jsonl"
    good = [json.dumps({"seed": s, "x": s}).encode() + b"\n" for s in range(4)]
    kept = good[0] + b"not json\n" + good[1] + b'["a list"]\n' + good[2] + b'{"seed": "3"}\n'
    path.write_bytes(kept + b'{"seed": 3, "x"')
    log = TrajectoryLog(path)
    with pytest.warns(UserWarning, match=r"skipped 3 corrupt line\(s\) \(line 2, 4, 6\)"):
        records = log.load()
    assert [r["seed"] for r in records] == [0, 1, 2] and log.corrupt_lines == [2, 4, 6]
    assert path.read_bytes() == kept  # the torn write is cut; complete corrupt lines stay

    # a later record of a seed wins; compacting drops the superseded one and keeps the corrupt lines
    log.append({"seed": 1, "x": "again"})
    with pytest.warns(UserWarning):
        assert latest_by_seed(log.load())[1] == {"seed": 1, "x": "again"}
    assert log.compact() == 1 and log.compact() == 0
    assert path.read_bytes().splitlines() == [
        good[0].strip(),
        b"not json",
        b'["a list"]',
        good[2].strip(),
        b'{"seed": "3"}',
        b'{"seed": 1, "x": "again"}',
    ]


# ----- one eval at a time per output directory -----
_LOCKED_EVAL = textwrap.dedent("""
    import sys, time
    from agentgym.eval.run_files import RunDirBusy
    from agentgym.eval.runner import evaluate
    from agentgym.policies import RandomPolicy

    class SlowRandom(RandomPolicy):
        spec = "random"
        def act(self, chats, envs):
            time.sleep(0.02)
            return super().act(chats, envs)

    try:
        evaluate("agentgym/FrozenLake-v0", SlowRandom(), 60, out=sys.argv[1], progress=False)
    except RunDirBusy as exc:
        print(exc, file=sys.stderr)
        sys.exit(3)
""")


def test_a_second_eval_on_the_same_out_fails_at_once_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    errs = [tmp_path / "err0", tmp_path / "err1"]
    procs = [  # both started at once, on one directory
        subprocess.Popen([sys.executable, "-c", _LOCKED_EVAL, str(out)], stderr=err.open("w")) for err in errs
    ]
    finished: list[int] = []
    deadline = time.time() + 300
    while len(finished) < 2 and time.time() < deadline:
        finished += [i for i, p in enumerate(procs) if i not in finished and p.poll() is not None]
        time.sleep(0.01)
    for p in procs:
        if p.poll() is None:
            p.kill()
    assert len(finished) == 2, "an eval hung"
    loser, winner = finished  # the loser fails at once, while the winner still runs
    assert procs[loser].returncode == 3, errs[loser].read_text()
    assert procs[winner].returncode == 0, errs[winner].read_text()
    assert f"in use by another eval (pid {procs[winner].pid})" in errs[loser].read_text()
    seeds = [r["seed"] for r in _log_lines(out)]
    assert sorted(seeds) == list(range(60)), "the winner wrote every seed once; the loser wrote nothing"
    assert (out / "eval.lock").read_text() == "", "a finished eval leaves no pid in the lock file"
    # the lock went with its holder: the next eval on the same directory runs
    assert evaluate(ENV, "random", 60, out=out, progress=False)["episodes_played_now"] == 0


def test_lock_error_from_the_cli(tmp_path, capsys):
    out = tmp_path / "run"
    with RunDirLock(out):
        assert main(["eval", "--env", ENV, "--policy", "oracle", "--episodes", "1", "--out", str(out)]) == 2
    assert f"in use by another eval (pid {os.getpid()})" in capsys.readouterr().err
    assert main(["eval", "--env", ENV, "--policy", "oracle", "--episodes", "1", "--out", str(out)]) == 0

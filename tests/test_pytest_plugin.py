"""The pytest plugin: episodes as tests across xdist workers give the same results as `agentgym eval`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from agentgym.eval.run_files import TrajectoryLog
from agentgym.eval.runner import evaluate

ENV = "agentgym/FrozenLake-v0"
# keys that describe how a run was executed rather than what it measured
EXECUTION_KEYS = {"elapsed_s", "workers", "route", "episodes_played_now"}

USER_TEST = textwrap.dedent("""
    def test_users_own_eval(agentgym_env, agentgym_policy):
        obs, info = agentgym_env.reset(seed=5)
        chat = [{"role": "system", "content": info["instructions"]}, {"role": "user", "content": obs}]
        (reply,) = agentgym_policy.act([chat], [agentgym_env])
        _, _, _, _, info = agentgym_env.step(reply.text)
        assert info["format_ok"]

    def test_plain():
        assert True
""")


def _pytest(args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _records(path):
    return {r["seed"]: r for r in TrajectoryLog(path / "trajectories.jsonl").load()}


def _comparable(summary):
    return {k: v for k, v in summary.items() if k not in EXECUTION_KEYS}


def test_plugin_matches_agentgym_eval_under_xdist(tmp_path):
    tests = tmp_path / "evals"
    tests.mkdir()
    (tests / "test_user.py").write_text(USER_TEST)
    out = tmp_path / "pytest-run"
    done = _pytest(
        [
            str(tests),
            "--agentgym-env",
            ENV,
            "--agentgym-policy",
            "random",
            "--agentgym-episodes",
            "12",
            "--agentgym-seed",
            "40",
            "--agentgym-out",
            str(out),
            "-n",
            "2",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "14 passed" in done.stdout  # 12 episodes + the user's two tests
    assert "agentgym evaluation" in done.stdout

    reference = evaluate(ENV, "random", 12, seed=40, out=tmp_path / "cli-run", progress=False)
    plugin = json.loads((out / "summary.json").read_text())
    assert plugin["route"] == "pytest" and plugin["workers"] == 2
    assert _comparable(plugin) == _comparable(reference)
    assert _records(out) == _records(tmp_path / "cli-run")
    assert sorted(_records(out)) == list(range(40, 52))


def test_plugin_only_mode_and_usage_errors(tmp_path):
    tests = tmp_path / "evals"
    tests.mkdir()
    (tests / "test_user.py").write_text(USER_TEST)
    done = _pytest(
        [
            str(tests),
            "--agentgym-env",
            ENV,
            "--agentgym-policy",
            "oracle",
            "--agentgym-episodes",
            "3",
            "--agentgym-only",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed, 2 deselected" in done.stdout
    missing = _pytest([str(tests), "--agentgym-env", ENV], tmp_path)
    assert missing.returncode == 4 and "--agentgym-policy" in missing.stderr
    unknown = _pytest(
        [str(tests), "--agentgym-env", "agentgym/Nope-v0", "--agentgym-policy", "oracle"], tmp_path
    )
    assert unknown.returncode == 4 and "unknown environment" in unknown.stderr


def test_plugin_is_inert_without_its_options(tmp_path):
    tests = tmp_path / "evals"
    tests.mkdir()
    (tests / "test_user.py").write_text(USER_TEST)
    done = _pytest([str(tests), "-rs"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed, 1 skipped" in done.stdout
    assert "needs --agentgym-env" in done.stdout
    assert not list(tmp_path.glob("**/summary.json"))


@pytest.fixture
def tiny_model_dir(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    path = tmp_path / "tiny-model"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.slow
def test_plugin_matches_eval_for_a_model_policy_with_diagnostics(tmp_path, tiny_model_dir):
    spec = f"hf:{tiny_model_dir}"
    kwargs = {"max_new_tokens": 12, "device": "cpu"}
    out = tmp_path / "pytest-run"
    (tmp_path / "empty").mkdir()
    done = _pytest(
        [
            str(tmp_path / "empty"),
            "--agentgym-env",
            ENV,
            "--agentgym-policy",
            spec,
            "--agentgym-episodes",
            "4",
            "--agentgym-policy-kwargs",
            json.dumps(kwargs),
            "--agentgym-out",
            str(out),
            "-n",
            "2",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    reference = evaluate(ENV, spec, 4, out=tmp_path / "cli-run", policy_kwargs=kwargs, progress=False)
    plugin = json.loads((out / "summary.json").read_text())
    assert "diagnostics" in plugin and "diagnostics" in reference
    for d in (plugin["diagnostics"], reference["diagnostics"]):
        d.pop("elapsed_s")
    assert plugin["diagnostics"]["entropy"] == pytest.approx(reference["diagnostics"]["entropy"], rel=1e-4)
    assert plugin["diagnostics"]["control_tokens"] == pytest.approx(
        reference["diagnostics"]["control_tokens"], rel=1e-4, abs=1e-7
    )
    plugin.pop("diagnostics"), reference.pop("diagnostics")
    assert _comparable(plugin) == _comparable(reference)
    pytest_ids = {s: r["response_ids"] for s, r in _records(out).items()}
    cli_ids = {s: r["response_ids"] for s, r in _records(tmp_path / "cli-run").items()}
    assert pytest_ids == cli_ids  # greedy decoding: the same tokens, batched or not


CRASHING_CONFTEST = textwrap.dedent("""
    import gymnasium as gym
    from agentgym.envs.frozenlake import FrozenLakeEnv

    class CrashingLake(FrozenLakeEnv):
        # aborts the episodes of crash_seeds on their first step, as WebShop reports a crashed browser
        def __init__(self, crash_seeds=(), **kwargs):
            super().__init__(**kwargs)
            self.crash_seeds = set(crash_seeds)

        def step(self, action):
            obs, reward, terminated, truncated, info = super().step(action)
            if self.np_random_seed in self.crash_seeds:
                return obs, 0.0, False, True, {**info, "aborted": True, "error": "the test browser crashed"}
            return obs, reward, terminated, truncated, info

    gym.register("agentgym-test/CrashingLake-v0", entry_point=CrashingLake)
""")


def test_plugin_skips_and_counts_aborted_episodes_and_holds_the_lock(tmp_path):
    from agentgym.eval.run_files import RunDirLock

    tests = tmp_path / "evals"
    tests.mkdir()
    (tests / "conftest.py").write_text(CRASHING_CONFTEST)
    out = tmp_path / "pytest-run"
    args = [
        str(tests),
        "-rs",
        "--agentgym-env",
        "agentgym-test/CrashingLake-v0",
        "--agentgym-policy",
        "oracle",
        "--agentgym-episodes",
        "5",
        "--agentgym-env-kwargs",
        json.dumps({"crash_seeds": [1, 3]}),
        "--agentgym-out",
        str(out),
    ]
    with RunDirLock(out):  # another eval writes there: the plugin refuses at once
        busy = _pytest(args, tmp_path)
    assert busy.returncode == 4 and f"in use by another eval (pid {os.getpid()})" in busy.stderr

    done = _pytest(args, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed, 2 skipped" in done.stdout
    assert "the environment aborted the episode: the test browser crashed" in done.stdout
    assert "3 episodes (2 more aborted)" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 3 and summary["aborted"] == 2 and summary["aborted_seeds"] == [1, 3]
    assert summary["success_rate"] == 1.0
    records = _records(out)
    assert sorted(records) == list(range(5)) and records[3]["abort_reason"] == "the test browser crashed"

"""Leaderboards: runs stored one JSON each, boards rendered from them, `eval --submit`, the CLI."""

from __future__ import annotations

import json
from html.parser import HTMLParser

from agentgym.cli import main
from agentgym.eval.leaderboard import boards, config_hash, load_runs, model_name, render, submit_run
from agentgym.eval.runner import evaluate

ENV = "agentgym/FrozenLake-v0"


def _summary(policy="random", success=0.25, episodes=8, seed=0, **extra):
    return {
        "env": ENV,
        "policy": policy,
        "episodes": episodes,
        "success_rate": success,
        "success_ci95": [0.1, 0.6],
        "mean_return": success,
        "format_valid_rate": 1.0,
        "format_valid_rate_per_turn": [1.0, 0.5],
        "action_valid_rate": 1.0,
        "mean_turns": 2.0,
        "success_by_turn": [success / 2, success],
        "seed": seed,
        "env_kwargs": {},
        "policy_kwargs": {},
        "response_format": "answer",
        **extra,
    }


def test_render_from_stored_runs(tmp_path):
    submit_run(_summary("random", 0.25), tmp_path)
    submit_run(_summary("oracle", 1.0), tmp_path)
    submit_run(_summary("random", 0.5, env="agentgym/Sokoban-v0"), tmp_path)
    runs = load_runs(tmp_path)
    assert len(runs) == 3 and all(r["_file"].startswith("runs/") for r in runs)
    grouped = boards(runs)
    assert list(grouped) == ["agentgym/FrozenLake-v0", "agentgym/Sokoban-v0"]
    assert [r["policy"] for r in grouped[ENV]] == ["oracle", "random"]  # best first

    written = render(tmp_path)
    names = {p.name for p in written}
    assert names == {"frozenlake-v0.md", "sokoban-v0.md", "README.md", "index.html"}
    board = (tmp_path / "frozenlake-v0.md").read_text()
    rows = [line for line in board.splitlines() if line.startswith("| ")]
    assert rows[1].startswith("| 1 | oracle | 1.000") and rows[2].startswith("| 2 | random | 0.250")
    page = (tmp_path / "index.html").read_text()
    assert page.count("<svg") == 4 and "<polyline" in page and "<script" not in page
    HTMLParser().feed(page)  # well-formed enough to parse
    assert "sokoban-v0.md" in (tmp_path / "README.md").read_text()


def test_same_config_replaces_its_run_and_hash_ignores_local_paths(tmp_path):
    first = submit_run(_summary("random", 0.25), tmp_path)
    again = submit_run(_summary("random", 0.30), tmp_path)
    assert first == again and len(load_runs(tmp_path)) == 1
    other_seed = submit_run(_summary("random", 0.30, seed=100), tmp_path)
    assert other_seed != first
    model_dir = tmp_path / "models" / "SmolLM2"
    model_dir.mkdir(parents=True)
    here = _summary(f"hf:{model_dir}", policy_kwargs={"gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"})
    elsewhere = dict(here, policy="hf:/somewhere/else/SmolLM2")
    assert config_hash(here) == config_hash(elsewhere)
    entry = json.loads(submit_run(here, tmp_path).read_text())
    assert entry["model"] == "SmolLM2-135M-Instruct.Q4_1" and entry["policy"] == "hf:SmolLM2"
    assert str(tmp_path) not in json.dumps(entry)
    for key in ("env", "policy", "model", "config_hash", "seeds", "metrics", "date", "machine"):
        assert key in entry
    assert model_name("openai:gpt-x@http://h/v1", {}) == "gpt-x" and model_name("oracle", {}) is None


def test_eval_submit_and_leaderboard_cli(tmp_path, capsys):
    board = tmp_path / "boards"
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
                "--no-progress",
                "--submit",
                "--leaderboard-dir",
                str(board),
            ]
        )
        == 0
    )
    runs = load_runs(board)
    assert len(runs) == 1 and runs[0]["metrics"]["success_rate"] == 1.0
    assert runs[0]["seeds"]["first"] == 0 and runs[0]["seeds"]["last"] == 2
    assert (board / "frozenlake-v0.md").exists()

    out = tmp_path / "random-run"
    evaluate(ENV, "random", 4, out=out, progress=False)
    capsys.readouterr()
    assert main(["leaderboard", "--dir", str(board), "--add", str(out)]) == 0
    assert "index.html" in capsys.readouterr().out
    assert len(load_runs(board)) == 2
    assert main(["leaderboard", "--dir", str(tmp_path / "empty")]) == 2  # no runs: a clear error
    assert main(["leaderboard", "--dir", str(board), "--add", str(tmp_path / "missing")]) == 2


def test_repository_runs_are_valid():
    """The runs seeded in the repository load and render (nothing to check when there are none)."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1] / "leaderboards"
    runs = load_runs(repo)
    for run in runs:
        assert run["metrics"]["episodes"] >= 1 and 0.0 <= run["metrics"]["success_rate"] <= 1.0
        assert run["config_hash"] and run["date"] and run["machine"]
    assert boards(runs).keys() == {r["env"] for r in runs}

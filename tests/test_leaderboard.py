"""Leaderboards: runs stored one JSON each, boards rendered from them, `eval --submit`, the CLI."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from agentgym.cli import main
from agentgym.eval.leaderboard import (
    RUNS,
    boards,
    config_hash,
    env_slug,
    load_runs,
    model_name,
    render,
    rendered,
    submit_run,
)
from agentgym.eval.runner import evaluate

ENV = "agentgym/FrozenLake-v0"
REPO_BOARDS = Path(__file__).resolve().parents[1] / "leaderboards"


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


def _board_rows(path: Path) -> list[str]:
    """The config hashes of a board's rows, in rank order."""
    return re.findall(r"^\| \d+ \|.*\| ([0-9a-f]{12}) \|$", path.read_text(), re.MULTILINE)


def test_rendering_depends_on_the_runs_only(tmp_path):
    """Same runs in any order give the same bytes; ties (same success, return and policy) are ordered by
    config, not by the order the files were read in."""
    for seed in (0, 100, 200):
        submit_run(_summary("random", 0.25, seed=seed), tmp_path)
    submit_run(_summary("oracle", 1.0), tmp_path)
    submit_run(_summary("random", 0.5, env="agentgym/Sokoban-v0"), tmp_path)
    runs = load_runs(tmp_path)
    assert rendered(runs) == rendered(runs[::-1]) == rendered(runs[2:] + runs[:2])
    ties = [r["config_hash"] for r in boards(runs)[ENV] if r["policy"] == "random"]
    assert ties == sorted(ties) and len(ties) == 3


def test_submit_keeps_the_other_runs(tmp_path, capsys):
    """`eval --submit` and `leaderboard --add` add a run to a folder that holds several: every earlier run
    stays on its board; re-submitting the same config replaces its file instead of adding a row."""
    board = tmp_path / "boards"
    earlier = [
        submit_run(_summary("random", 0.25), board),
        submit_run(_summary("random", 0.30, seed=100), board),
        submit_run(_summary("oracle", 1.0, env="agentgym/Sokoban-v0"), board),
    ]
    render(board)
    hashes = {p.name.rsplit("__", 1)[1].removesuffix(".json") for p in earlier}

    args = ["eval", "--env", ENV, "--policy", "oracle", "--episodes", "2", "--no-progress", "--submit"]
    assert main([*args, "--leaderboard-dir", str(board)]) == 0
    on_boards = _board_rows(board / "frozenlake-v0.md") + _board_rows(board / "sokoban-v0.md")
    added = {r["config_hash"] for r in load_runs(board)} - hashes
    assert len(added) == 1 and set(on_boards) == hashes | added and len(on_boards) == 4
    assert "sokoban-v0.md): 1 runs" in (board / "README.md").read_text()

    assert main([*args, "--leaderboard-dir", str(board)]) == 0  # the same config again: replaced
    assert len(load_runs(board)) == 4 and len(_board_rows(board / "frozenlake-v0.md")) == 3

    out = tmp_path / "sokoban-random"
    evaluate("agentgym/Sokoban-v0", "random", 2, out=out, progress=False)
    assert main(["leaderboard", "--dir", str(board), "--add", str(out), "--notes", "added later"]) == 0
    assert (
        len(_board_rows(board / "sokoban-v0.md")) == 2 and len(_board_rows(board / "frozenlake-v0.md")) == 3
    )
    assert "added later" in (board / "sokoban-v0.md").read_text()
    capsys.readouterr()


def test_render_warns_about_rows_whose_run_file_is_gone(tmp_path):
    kept = submit_run(_summary("oracle", 1.0), tmp_path)
    gone = submit_run(_summary("random", 0.25), tmp_path)
    render(tmp_path)
    gone.unlink()
    with pytest.warns(UserWarning, match=r"frozenlake-v0.md: dropping 1 row"):
        render(tmp_path)
    assert _board_rows(tmp_path / "frozenlake-v0.md") == [json.loads(kept.read_text())["config_hash"]]


def test_repository_runs_are_valid():
    """leaderboards/runs/ is committed, every run in it is well-formed and every board has its runs."""
    runs = load_runs(REPO_BOARDS)
    assert runs, f"no run files in {REPO_BOARDS / RUNS}: the boards cannot be re-rendered"
    for run in runs:
        m = run["metrics"]
        assert m["episodes"] >= 1 and 0.0 <= m["success_rate"] <= 1.0, run["_file"]
        assert run["date"] and run["machine"], run["_file"]
        config = {
            "env": run["env"],
            "env_kwargs": run["env_kwargs"],
            "policy": run["policy"],
            "policy_kwargs": run["policy_kwargs"],
            "seed": run["seeds"]["first"],
            "episodes": m["episodes"],
            "response_format": run["response_format"],
        }
        assert config_hash(config) == run["config_hash"], f"{run['_file']}: hash and config disagree"
        assert run["_file"].startswith(f"{RUNS}/{env_slug(run['env'])}__")
        assert run["_file"].endswith(f"__{run['config_hash']}.json")
    boards_on_disk = {p.name for p in REPO_BOARDS.glob("*.md")} - {"README.md"}
    assert boards_on_disk == {f"{env_slug(env)}.md" for env in boards(runs)}
    for name in boards_on_disk:
        assert _board_rows(REPO_BOARDS / name), f"{name} has no rows"


def test_committed_boards_are_rendered_from_the_committed_runs(tmp_path):
    """Re-rendering leaderboards/runs/ gives the committed README.md, boards and index.html byte for
    byte: every row on them comes from a run file in the repository."""
    shutil.copytree(REPO_BOARDS / RUNS, tmp_path / RUNS)
    written = render(tmp_path)
    committed = {p.name for p in REPO_BOARDS.iterdir() if p.is_file()}
    assert {p.name for p in written} == committed
    for path in written:
        assert path.read_bytes() == (REPO_BOARDS / path.name).read_bytes(), (
            f"leaderboards/{path.name} differs from its rendering: run `agentgym leaderboard`"
        )


def test_runs_are_ranked_among_runs_of_the_same_env_settings(tmp_path):
    """A 3x3 lake is another task than the default 4x4 one: its runs get a ranking of their own."""
    submit_run(_summary("oracle", 1.0), tmp_path)
    submit_run(_summary("random", 0.25), tmp_path)
    small = {"size": 3}
    submit_run(_summary("random", 0.6, env_kwargs=small), tmp_path)
    submit_run(_summary("oracle", 1.0, env_kwargs=small, seed=5), tmp_path)
    render(tmp_path)
    board = (tmp_path / "frozenlake-v0.md").read_text()
    default_part, small_part = board.split('## settings {"size": 3}')
    assert "## default settings" in default_part
    assert _ranked(default_part) == [("1", "oracle"), ("2", "random")]
    assert _ranked(small_part) == [("1", "oracle"), ("2", "random")]  # 0.6 on 3x3 does not outrank 4x4 runs
    page = (tmp_path / "index.html").read_text()
    assert page.count("<h3>") == 2 and page.count("<svg") == 4
    assert "best with default settings oracle" in (tmp_path / "README.md").read_text()


def test_a_sampled_eval_is_labelled_with_its_temperature(tmp_path):
    submit_run(_summary("hf:/models/smol", 0.2, policy_kwargs={"temperature": 1.0}), tmp_path)
    submit_run(_summary("hf:/models/smol", 0.1, policy_kwargs={"temperature": 0.0}), tmp_path)
    render(tmp_path)
    board = (tmp_path / "frozenlake-v0.md").read_text().splitlines()
    rows = [line for line in board if line.startswith("| ")]
    assert rows[1].startswith("| 1 | hf:smol (temperature 1.0) | 0.200")
    assert rows[2].startswith("| 2 | hf:smol | 0.100")  # greedy: no temperature shown


def _ranked(board_text: str) -> list[tuple[str, str]]:
    return re.findall(r"^\| (\d+) \| (\w+) \|", board_text, re.MULTILINE)

"""agentgym engineer reports from hand-written run folders: the failure type of every attempt, the process
metrics (values computed by hand below), results.csv across runs, report.html and the leaderboard board."""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from agentgym.engineer.reports import FAILURE_TYPES, submit_run, update_results_csv, write_reports
from agentgym.eval import leaderboard
from agentgym.eval.leaderboard import ENGINEER_RUNS, load_engineer_runs, load_runs, render

REPO_BOARDS = Path(__file__).resolve().parents[1] / "leaderboards"


def write_run(
    run_dir: Path,
    submissions: list[dict],
    *,
    end: dict | None,
    meta: dict | None = None,
    baseline: dict | None = None,
    log: str = "",
    torn_tail: str = "",
) -> Path:
    (run_dir / "grader").mkdir(parents=True)
    (run_dir / "logs").mkdir()
    run_meta = {
        "task": "frozenlake",
        "base_model": "/models/tiny-base",
        "agent": "python agents/scripted.py --lr 1e-4",
        "agent_name": "scripted",
        "driver_model": "none",
        "budget_s": 800.0,
        "start_time": 1000.0,
        **(meta or {}),
    }
    (run_dir / "run_meta.json").write_text(json.dumps(run_meta))
    (run_dir / "grader" / "baseline.json").write_text(
        json.dumps(baseline or {"score": 0.25, "format_valid_rate": 0.8, "episodes": 20})
    )
    lines = "".join(json.dumps(s) + "\n" for s in submissions)
    (run_dir / "grader" / "submissions.jsonl").write_text(lines + torn_tail)
    if end is not None:
        (run_dir / "run_end.json").write_text(json.dumps(end))
    (run_dir / "logs" / "agent.log").write_text(log)
    return run_dir


def sub(n: int, done: float, status: str = "scored", **fields) -> dict:
    record = {
        "submission": n,
        "time": done - 5.0,
        "done_time": done,
        "eval_s": 4.0,
        "status": status,
        "reason": None,
        "score": None,
        "baseline": 0.25,
        "same_as_base": False,
        "training_type": "grpo",
    }
    record.update(fields)
    return record


# Six submissions that each show one failure type (or none), in a run resumed once: the agent ran from
# t=1000 to 1400 and from 2000 to 2200 (600 s of its 800 s budget), then the deadline killed it.
MAIN_SUBMISSIONS = [
    sub(1, 1100.0, score=0.25, score_ci95=[0.1, 0.5], format_valid_rate=0.8, same_as_base=True),
    sub(2, 1200.0, status="rejected", reason="the model does not load: model.safetensors is truncated"),
    sub(3, 1300.0, score=0.5, score_ci95=[0.3, 0.7], format_valid_rate=0.9, training_type="sft"),
    sub(4, 2100.0, score=0.05, score_ci95=[0.01, 0.2], format_valid_rate=0.9),
    sub(5, 2150.0, score=0.1, score_ci95=[0.02, 0.4], format_valid_rate=0.3),
    sub(6, 2180.0, score=0.2, score_ci95=[0.05, 0.45], format_valid_rate=0.8),
]
MAIN_META = {"segments": [{"start": 1000.0, "end": 1400.0}, {"start": 2000.0, "end": 2200.0}]}
MAIN_END = {
    "reason": "budget",
    "exit_code": -15,
    "stopped_by_harness": True,
    "end_time": 2200.0,
    "time_used_s": 600.0,
    "budget_s": 800.0,
}


@pytest.fixture
def main_run(tmp_path) -> Path:
    return write_run(
        tmp_path / "runs" / "a-main",
        MAIN_SUBMISSIONS,
        end=MAIN_END,
        meta=MAIN_META,
        torn_tail='{"submission": 7, "sta',  # a write cut by the kill
    )


def test_every_failure_type_and_each_metric_by_hand(main_run):
    metrics = write_reports(main_run)
    lines = [json.loads(line) for line in (main_run / "summary.jsonl").read_text().splitlines()]
    assert [line["failure_type"] for line in lines] == [
        "copy_model_fallback",  # 1: the base model's weights
        "code_error_runtime",  # 2: rejected, does not load
        None,  # 3: 0.5 > 0.25, an improvement
        "training_diverged",  # 4: upper bound 0.2 < 0.25
        "rollout_logic_wrong",  # 5: format-valid 0.3 < 0.5 x 0.8
        "unknown",  # 6: 0.2 < 0.25 but within noise, format fine
        "timeout_no_submission",  # the deadline killed the attempt after 6
    ]
    assert set(line["failure_type"] for line in lines) - {None} == set(FAILURE_TYPES)
    # budget time: 100, 200, 300 in the first segment; 400 + 100, 400 + 150, 400 + 180 in the second
    assert [line["time_s"] for line in lines] == [100.0, 200.0, 300.0, 500.0, 550.0, 580.0, 600.0]
    assert [line["duration_s"] for line in lines] == [100.0, 100.0, 100.0, 200.0, 50.0, 30.0, 20.0]
    assert [line["improvement"] for line in lines[:6]] == [0.0, None, 0.25, -0.2, -0.15, -0.05]
    assert [line["best"] for line in lines] == [0.25, 0.25, 0.5, 0.5, 0.5, 0.5, 0.5]
    assert lines[-1]["status"] == "no_submission" and lines[-1]["exit_code"] == -15
    assert metrics == {
        **{k: metrics[k] for k in ("task", "agent", "driver_model", "base_model")},
        "budget_s": 800.0,
        "baseline": 0.25,
        "best_score": 0.5,
        "improvement": 0.25,
        "submissions": 6,
        "valid_submissions": 5,
        "valid_submission_rate": 5 / 6,
        "first_valid_idx": 1,
        "first_valid_delay": 100.0,
        "time_to_first_improvement": 300.0,
        "time_to_best": 300.0,
        "monotonic_ratio": 0.75,  # 0.25 -> 0.5 up, -> 0.05 down, -> 0.1 up, -> 0.2 up
        "copy_model_count": 1,
        "time_used_s": 600.0,
        "time_used_ratio": 0.75,  # 600 / 800
        "last_submit_gap": 20.0,  # 600 - 580
        "score_trajectory": [0.25, None, 0.5, 0.05, 0.1, 0.2],
        "failure_types": {t: 1 for t in sorted(FAILURE_TYPES)},
        "training_types": {"grpo": 4, "sft": 1},
        "end_reason": "budget",
        "exit_code": -15,
    }
    assert metrics["agent"] == "scripted" and metrics["task"] == "frozenlake"
    assert json.loads((main_run / "metrics.json").read_text()) == metrics


def test_an_agent_that_crashes_before_submitting(tmp_path):
    log = (
        'step 1\nTraceback (most recent call last):\n  File "train.py", line 3\n'
        "ZeroDivisionError: division by zero\n"
    )
    run = write_run(
        tmp_path / "crash",
        [],
        end={"reason": "agent_exited", "exit_code": 1, "end_time": 1042.0, "time_used_s": 42.0},
        log=log,
    )
    metrics = write_reports(run)
    (line,) = [json.loads(x) for x in (run / "summary.jsonl").read_text().splitlines()]
    assert line["status"] == "no_submission" and line["failure_type"] == "code_error_runtime"
    assert "ZeroDivisionError" in line["error_tail"] and line["duration_s"] == 42.0
    assert metrics["submissions"] == 0 and metrics["valid_submission_rate"] is None
    assert metrics["time_used_ratio"] == 42.0 / 800.0 and metrics["last_submit_gap"] is None
    assert "ZeroDivisionError" in (run / "report.html").read_text()


@pytest.mark.parametrize(
    ("end", "expected"),
    [
        ({"reason": "budget", "exit_code": -15, "time_used_s": 800.0}, "timeout_no_submission"),
        ({"timed_out": True, "agent_exit_code": -9, "duration_s": 800.0}, "timeout_no_submission"),
        ({"reason": "agent_exited", "exit_code": 0, "time_used_s": 10.0}, "unknown"),
    ],
)
def test_runs_without_a_submission(tmp_path, end, expected):
    run = write_run(tmp_path / "never", [], end=end)
    write_reports(run)
    (line,) = [json.loads(x) for x in (run / "summary.jsonl").read_text().splitlines()]
    assert line["failure_type"] == expected and line["status"] == "no_submission"


def test_budget_over_submission_and_a_clean_exit(tmp_path):
    submissions = [
        sub(1, 1050.0, score=0.5, score_ci95=[0.3, 0.7], format_valid_rate=0.9),
        sub(2, 1790.0, status="rejected", reason="budget over: the run's deadline has passed"),
    ]
    run = write_run(
        tmp_path / "late",
        submissions,
        end={"reason": "agent_exited", "exit_code": 0, "end_time": 1800.0, "time_used_s": 800.0},
    )
    metrics = write_reports(run)
    lines = [json.loads(x) for x in (run / "summary.jsonl").read_text().splitlines()]
    assert [line["failure_type"] for line in lines] == [None, "timeout_no_submission"]  # no trailing line
    assert metrics["time_to_best"] == 50.0 and metrics["last_submit_gap"] == 10.0
    assert metrics["monotonic_ratio"] is None  # one scored submission


def test_report_page_holds_the_trajectory_image(main_run):
    write_reports(main_run)
    page = (main_run / "report.html").read_text()
    found = re.search(r'<img alt="score trajectory" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)
    assert found and base64.b64decode(found.group(1)).startswith(b"\x89PNG\r\n\x1a\n")
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert page.count("<tr><td>") == 7  # one row per attempt
    for words in ("copy_model_fallback", "timeout_no_submission", "valid_submission_rate", "scripted"):
        assert words in page
    HTMLParser().feed(page)


def test_results_csv_has_a_row_per_run(main_run, tmp_path):
    write_run(
        tmp_path / "runs" / "b-crash",
        [],
        end={"reason": "agent_exited", "exit_code": 1, "time_used_s": 42.0},
        meta={"agent_name": "crasher", "driver_model": "gpt-x"},
    )
    (tmp_path / "runs" / "not-a-run").mkdir()
    path = update_results_csv(tmp_path / "runs")
    rows = list(csv.DictReader(path.open()))
    assert [r["run"] for r in rows] == ["a-main", "b-crash"]
    main, crash = rows
    assert main["agent"] == "scripted" and main["best_score"] == "0.5" and main["improvement"] == "0.25"
    assert main["submissions"] == "6" and main["copy_model_count"] == "1" and main["end_reason"] == "budget"
    assert crash["agent"] == "crasher" and crash["driver_model"] == "gpt-x" and crash["best_score"] == ""
    assert crash["failure_types"] == "code_error_runtime:1" and crash["exit_code"] == "1"
    assert update_results_csv(tmp_path / "runs").read_text() == path.read_text()  # rewritten, not appended


def test_leaderboard_board_for_engineer_runs(main_run, tmp_path):
    board = tmp_path / "boards"
    summary = {
        "env": "agentgym/FrozenLake-v0",
        "policy": "random",
        "episodes": 4,
        "success_rate": 0.25,
        "success_ci95": [0.05, 0.7],
        "mean_return": 0.25,
        "format_valid_rate": 1.0,
        "success_by_turn": [0.25],
        "seed": 0,
    }
    leaderboard.submit_run(summary, board)
    before = {p.name: p.read_bytes() for p in render(board)}
    path = submit_run(main_run, board)
    assert path.parent.name == ENGINEER_RUNS and submit_run(main_run, board) == path  # same key: replaced
    (entry,) = load_engineer_runs(board)
    assert entry["agent"] == "scripted" and entry["base_model"] == "tiny-base" and entry["budget_s"] == 800.0
    assert entry["metrics"]["improvement"] == 0.25 and entry["metrics"]["best_training_type"] == "sft"
    after = {p.name: p.read_bytes() for p in render(board)}
    assert set(after) == set(before) | {"engineer.md"}
    assert after["frozenlake-v0.md"] == before["frozenlake-v0.md"]  # the eval boards are untouched
    text = after["engineer.md"].decode()
    assert (
        "## frozenlake" in text
        and "| 1 | scripted | none | tiny-base | 0.22 h | 0.250 | 0.500 | 0.250 |" in text
    )
    assert b"agentgym engineer" in after["index.html"] and b"engineer.md" in after["README.md"]
    assert len(load_runs(board)) == 1


def test_committed_boards_render_the_same_without_engineer_runs(tmp_path):
    """The eval boards are byte for byte what they were: an engineer board appears only with its runs."""
    shutil.copytree(REPO_BOARDS / "runs", tmp_path / "runs")
    for path in render(tmp_path):
        assert path.read_bytes() == (REPO_BOARDS / path.name).read_bytes(), path.name
    assert not (tmp_path / "engineer.md").exists()

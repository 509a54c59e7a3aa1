"""``agentgym engineer`` end to end: the reference agents' reports, the budget, Ctrl-C, resuming, bad input.

Each run is small (tiny model, 3x3 FrozenLake, 4 held-out episodes) and starts from a copy of one prepared
run folder (``engineer_fixtures.template_run``), so a test costs seconds of agent time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from engineer_fixtures import (
    AGENTS,
    cli,
    cli_env,
    fresh_run,
    host_process,
    kill_group,
    needs_bwrap,
    processes_matching,
    run,
    wait_for,
)

from agentgym.engineer.run import agent_label, parse_budget
from agentgym.errors import UsageError

pytestmark = needs_bwrap


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read(path: Path) -> dict:
    return json.loads(path.read_text())


# ----- inputs -----
@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("2h", 7200),
        ("1h30m", 5400),
        ("1h30m15s", 5415),
        ("45", 45),
        ("0.5h", 1800),
    ],
)
def test_parse_budget(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "2d", "0s", "-5", "h", "1m1h"])
def test_parse_budget_rejects(text):
    with pytest.raises(UsageError, match="budget"):
        parse_budget(text)


def test_agent_label():
    assert agent_label(f"{AGENTS}.sft_grpo --steps 3") == "sft_grpo"
    assert agent_label("OPENAI_API_KEY=x codex exec --json 'do it'") == "codex"
    assert agent_label("/opt/node/bin/claude -p hi") == "claude"


def test_bad_inputs_are_one_line_errors(tmp_path):
    # the command line: exit status 2 and one line on stderr, before anything is built
    unknown = ["--task", "nope", "--base-model", "tiny", "--budget", "1m", "--agent", "true", "--out", "x"]
    result = subprocess.run(
        [sys.executable, "-m", "agentgym.cli", "engineer", *unknown],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "unknown task 'nope'" in result.stderr and "frozenlake" in result.stderr
    bad_budget = subprocess.run(
        cli(tmp_path / "r", "true", "soon"), capture_output=True, text=True, env=cli_env()
    )
    assert bad_budget.returncode == 2 and "--budget 'soon'" in bad_budget.stderr
    assert not (tmp_path / "r").exists()

    with pytest.raises(UsageError, match="no such folder"):
        _run_with_base(tmp_path / "a", str(tmp_path / "missing"))
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(UsageError, match="no config.json"):
        _run_with_base(tmp_path / "b", str(tmp_path / "not-a-model"))
    with pytest.raises(UsageError, match="--agent is empty"):
        run(tmp_path / "c", "  ", 60)
    with pytest.raises(UsageError, match="does not parse"):
        run(tmp_path / "c", "python -c 'unclosed", 60)
    with pytest.raises(UsageError, match="--pass-env NO_SUCH_VARIABLE_X"):
        run(tmp_path / "c", "true", 60, pass_env=["NO_SUCH_VARIABLE_X"])
    with pytest.raises(UsageError, match="--workers"):
        run(tmp_path / "c", "true", 60, workers=0)


def _run_with_base(out: Path, base: str) -> None:
    from engineer_fixtures import SMALL

    from agentgym.engineer.run import run_engineer

    run_engineer("frozenlake", base, 60, "true", out, log=lambda _: None, **SMALL)


def test_agent_program_must_exist_inside_the_sandbox(tmp_path):
    out = fresh_run(tmp_path / "run")
    with pytest.raises(UsageError, match="'no-such-agent-program' is not a program inside the sandbox"):
        run(out, "no-such-agent-program --flag", 60)
    # a host program outside what the sandbox shows is not found either
    script = tmp_path / "agent.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    with pytest.raises(UsageError, match="not a program inside the sandbox"):
        run(out, str(script), 60)
    assert not (out / "run_end.json").exists() and read(out / "run_meta.json")["segments"] == []


def test_a_budget_that_cannot_fit_the_baseline_is_refused(tmp_path):
    out = fresh_run(tmp_path / "run")
    with pytest.raises(UsageError, match=r"baseline evaluation took .* more than half of the .* budget"):
        run(out, "true", 0.01)
    assert read(out / "run_meta.json")["segments"] == []  # the agent never started


def test_a_resumed_run_must_keep_its_settings(tmp_path):
    out = fresh_run(tmp_path / "run")
    run(out, f"{AGENTS}.crash", 30)
    meta = read(out / "run_meta.json")
    meta.pop("segments")
    (out / "run_end.json").unlink()  # as if the host had died
    (out / "run_meta.json").write_text(json.dumps({**meta, "segments": [{"start": 1.0, "end": 2.0}]}))
    with pytest.raises(UsageError, match="holds a run with budget_s=30.0"):
        run(out, f"{AGENTS}.crash", 31)
    with pytest.raises(UsageError, match="holds a run with task='frozenlake'"):
        from agentgym.engineer.run import run_engineer

        run_engineer("sokoban", "tiny", 30, f"{AGENTS}.crash", out, log=lambda _: None)


# ----- the reference agents -----
def test_copy_base_is_a_copy_model_fallback(tmp_path):
    out = fresh_run(tmp_path / "run")
    results = run(out, f"{AGENTS}.copy_base", 120)
    summary = read_jsonl(out / "summary.jsonl")
    assert [line["failure_type"] for line in summary] == ["copy_model_fallback"]
    assert summary[0]["status"] == "scored" and summary[0]["same_as_base"] is True
    metrics = read(out / "metrics.json")
    assert metrics == {k: v for k, v in results.items() if k != "run_dir"}
    assert metrics["copy_model_count"] == 1 and metrics["submissions"] == 1
    assert metrics["valid_submission_rate"] == 1.0
    assert metrics["improvement"] == 0.0 and metrics["end_reason"] == "agent_exited"
    assert metrics["agent"] == "copy_base" and metrics["exit_code"] == 0
    end = read(out / "run_end.json")
    assert end["reason"] == "agent_exited" and end["exit_code"] == 0 and not end["stopped_by_harness"]
    # the agent ran as the run's own unprivileged user: it owns what it wrote
    meta = read(out / "run_meta.json")
    assert (out / "workspace" / "output" / "v1").stat().st_uid == meta["agent_uid"] != 0
    assert (out / "report.html").exists()
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("run,frozenlake,copy_base,")
    # the submit script answered with the grader's JSON
    assert '"status": "scored"' in (out / "logs" / "agent.log").read_text()


def test_crash_is_a_code_error_runtime(tmp_path):
    out = fresh_run(tmp_path / "run")
    metrics = run(out, f"{AGENTS}.crash", 60)
    summary = read_jsonl(out / "summary.jsonl")
    assert [line["failure_type"] for line in summary] == ["code_error_runtime"]
    assert "RuntimeError: the crash agent fails on purpose" in summary[0]["error_tail"]
    assert metrics["failure_types"] == {"code_error_runtime": 1}
    assert metrics["exit_code"] == 1 and metrics["submissions"] == 0 and metrics["best_score"] is None


def test_idle_is_a_timeout_no_submission(tmp_path):
    out = fresh_run(tmp_path / "run")
    started = time.monotonic()
    metrics = run(out, f"{AGENTS}.idle", 6)
    took = time.monotonic() - started
    summary = read_jsonl(out / "summary.jsonl")
    assert [line["failure_type"] for line in summary] == ["timeout_no_submission"]
    assert metrics["end_reason"] == "budget" and metrics["submissions"] == 0
    assert 5.5 <= metrics["time_used_s"] <= 9 and metrics["time_used_ratio"] >= 0.9
    end = read(out / "run_end.json")
    assert end["stopped_by_harness"] and end["launches"] == 1
    assert took < 60


def test_the_submit_script_reports_rejections_and_the_time_left(tmp_path):
    out = fresh_run(tmp_path / "run")
    # a half-written model (its config cut short), then the status
    agent = "mkdir -p output/v1 && printf '{' > output/v1/config.json; ./submit output/v1; ./submit --status"
    metrics = run(out, agent, 60)
    log = _log(out)
    assert '"status": "rejected"' in log and "config.json is not valid JSON" in log
    status = json.loads(log[log.index('{\n  "seconds_left"') :])
    assert 0 < status["seconds_left"] <= 60
    assert status["grader"]["submissions"] == 1 and status["grader"]["closed"] is False
    summary = read_jsonl(out / "summary.jsonl")
    assert summary[0]["status"] == "rejected" and summary[0]["failure_type"] == "code_error_runtime"
    assert metrics["valid_submission_rate"] == 0.0


# ----- the budget -----
def test_the_deadline_kills_a_tree_that_ignores_sigterm(tmp_path):
    out = fresh_run(tmp_path / "run")
    tag = f"agentgym-trap-{os.getpid()}-{time.time_ns()}"
    # parent and child both ignore SIGTERM; the child is in a session of its own
    (out / "workspace" / "code").mkdir(exist_ok=True)
    script = out / "workspace" / "code" / "trap.py"
    script.write_text(
        "import os, signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "if sys.argv[1] == 'parent':\n"
        "    subprocess.Popen([sys.executable, __file__, 'child', sys.argv[2]], start_new_session=True)\n"
        "print(sys.argv[1], 'ignores SIGTERM', flush=True)\n"
        "time.sleep(600)\n"
    )
    started = time.monotonic()
    metrics = run(out, f"python code/trap.py parent {tag}", 6, grace_s=2.0)
    took = time.monotonic() - started
    log = (out / "logs" / "agent.log").read_text()
    assert "parent ignores SIGTERM" in log and "child ignores SIGTERM" in log
    assert processes_matching(tag) == []
    end = read(out / "run_end.json")
    assert end["reason"] == "budget" and end["stopped_by_harness"]
    assert end["exit_code"] != 0  # killed, not exited
    assert metrics["failure_types"] == {"timeout_no_submission": 1}
    assert took < 6 + 2 + 30  # budget + grace + setup, never the 600 s the tree wanted


def test_ctrl_c_closes_the_run_cleanly(tmp_path):
    out = fresh_run(tmp_path / "run")
    host = host_process(out, f"{AGENTS}.idle", 600)
    try:
        wait_for(lambda: "idling" in _log(out), 120, "the idle agent to start")
        os.killpg(host.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        output, _ = host.communicate(timeout=60)
    finally:
        kill_group(host)
    assert host.returncode == 0, output
    end = read(out / "run_end.json")
    assert end["reason"] == "interrupted" and end["time_used_s"] < 120
    assert read(out / "metrics.json")["end_reason"] == "interrupted"
    assert processes_matching("agentgym.engineer.agents.idle") == []


def _log(out: Path) -> str:
    path = out / "logs" / "agent.log"
    return path.read_text() if path.exists() else ""


# ----- resuming -----
def test_resume_after_the_host_died_keeps_budget_baseline_and_submissions(tmp_path):
    out = fresh_run(tmp_path / "run")
    tag = "sleep 613"
    agent = f"{AGENTS}.copy_base && echo submitted && {tag}"
    budget = 45.0
    baseline_before = read(out / "grader" / "baseline.json")
    host = host_process(out, agent, budget)
    try:
        wait_for(lambda: "submitted" in _log(out), 120, "the first submission")
        time.sleep(2)
        kill_group(host)  # the host dies: SIGKILL, no clean-up of its own
        host.wait(timeout=30)
    finally:
        kill_group(host)
    wait_for(lambda: not processes_matching(tag), 10, "the sandbox to die with its host")
    assert not (out / "run_end.json").exists()
    first = read(out / "run_meta.json")
    used = first["time_used_s"]
    assert 2 <= used < budget
    assert len(read_jsonl(out / "grader" / "submissions.jsonl")) == 1

    started = time.monotonic()
    metrics = run(out, agent, budget)  # the same settings: it resumes
    took = time.monotonic() - started
    meta = read(out / "run_meta.json")
    end = read(out / "run_end.json")
    assert end["launches"] == 2 and end["reason"] == "budget"
    assert meta["segments"][0] == first["segments"][0]
    assert budget - 0.5 <= end["time_used_s"] <= budget + 3
    assert took < (budget - used) + 30
    submissions = read_jsonl(out / "grader" / "submissions.jsonl")
    assert [s["submission"] for s in submissions] == [1, 2]
    assert submissions[1]["cached_from"] == 1  # the same model again: the score is reused
    assert read(out / "grader" / "baseline.json") == baseline_before  # not recomputed
    assert metrics["submissions"] == 2 and metrics["copy_model_count"] == 2
    log = _log(out)
    assert "launch 1 at" in log and "launch 2 at" in log


def test_an_ended_run_is_not_run_again(tmp_path):
    out = fresh_run(tmp_path / "run")
    first = run(out, f"{AGENTS}.crash", 30)
    end = (out / "run_end.json").read_text()
    messages: list[str] = []
    again = run(out, f"{AGENTS}.crash", 30, log=messages.append)
    assert again["already_ended"] is True
    assert any("already ended" in m for m in messages)
    assert (out / "run_end.json").read_text() == end
    assert _log(out).count("launch 1 at") == 1 and "launch 2" not in _log(out)
    assert {k: v for k, v in again.items() if k != "already_ended"} == first


def test_two_hosts_cannot_drive_one_run(tmp_path):
    out = fresh_run(tmp_path / "run")
    host = host_process(out, f"{AGENTS}.idle", 600)
    try:
        wait_for(lambda: "idling" in _log(out), 120, "the idle agent to start")
        with pytest.raises(UsageError, match="in use by another"):
            run(out, f"{AGENTS}.idle", 600)
    finally:
        kill_group(host, signal.SIGINT)
        host.wait(timeout=60)
        kill_group(host)


# ----- the scripted engineer -----
@pytest.mark.slow
def test_sft_grpo_improves_on_the_tiny_models_baseline(tmp_path):
    """The scripted engineer on the quickstart's setting (tiny model, 3x3 FrozenLake): SFT then GRPO, every
    checkpoint submitted; its best submission beats the untrained model."""
    from agentgym.engineer.run import run_engineer

    out = tmp_path / "sft-grpo"
    started = time.monotonic()
    metrics = run_engineer(
        "frozenlake",
        "tiny",
        parse_budget("1h"),
        f"{AGENTS}.sft_grpo --steps 6 --save-every 2",
        out,
        env_kwargs={"size": 3},
        heldout_episodes=32,
        log=lambda message: print(message, file=sys.stderr),
    )
    took = time.monotonic() - started
    print(json.dumps({"took_s": round(took), **metrics}, indent=2), file=sys.stderr)
    assert metrics["baseline"] is not None and metrics["best_score"] is not None
    assert metrics["best_score"] > metrics["baseline"] + 0.2
    assert metrics["submissions"] >= 2 and metrics["end_reason"] == "agent_exited"
    summary = read_jsonl(out / "summary.jsonl")
    assert {line["training_type"] for line in summary} >= {"sft", "sft+rl"}


def test_the_command_line_runs_reports_and_submits_to_the_leaderboard(tmp_path, capsys):
    from agentgym.cli import main

    out = fresh_run(tmp_path / "run")
    boards = tmp_path / "leaderboards"
    argv = cli(out, f"{AGENTS}.copy_base", "2m", "--driver-model", "none", "--submit", "--leaderboard-dir")
    assert main([*argv[3:], str(boards)]) == 0
    printed = capsys.readouterr().out
    results = json.loads(printed[: printed.rindex("}") + 1])  # the results, then the leaderboard line
    assert results["agent"] == "copy_base" and results["failure_types"] == {"copy_model_fallback": 1}
    entries = list((boards / "engineer_runs").glob("*.json"))
    assert len(entries) == 1
    entry = read(entries[0])
    assert entry["task"] == "frozenlake" and entry["agent"] == "copy_base" and entry["driver_model"] == "none"
    assert any("engineer" in p.name for p in boards.iterdir() if p.suffix in (".md", ".html"))

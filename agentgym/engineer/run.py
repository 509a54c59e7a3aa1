"""One engineer run: an agent improves a base model in an isolated workspace within a wall-clock budget.

``run_engineer`` (and ``agentgym engineer``) does, in order:

1. checks its inputs (task, base model, budget, the agent command as the sandbox sees it), one-line
   :class:`~agentgym.errors.UsageError` on bad ones;
2. lays out the run folder (``workspace.py``): the workspace, the base model, the train split;
3. measures the baseline (the base model on the held-out split; cached in ``grader/``) and refuses a budget
   that could not fit about two such evaluations;
4. starts the grading server (a Unix socket in the workspace; also TCP on 127.0.0.1 with ``allow_network``);
5. runs the agent command with ``/bin/sh -c`` in ``/workspace`` under bubblewrap (``isolation.py``), its
   output in ``logs/agent.log``, with ``AGENTGYM_DEADLINE`` (unix time), ``AGENTGYM_GRADER`` (the
   socket), ``AGENTGYM_GRADER_URL`` (with the network on) and ``AGENTGYM_WORKSPACE`` set;
6. ends the run when the agent exits, at the deadline (SIGTERM to the agent's whole tree, SIGKILL after a
   grace period) or on Ctrl-C: submissions close, a running evaluation finishes and is recorded, then
   ``run_end.json``, the reports (``summary.jsonl``, ``metrics.json``, ``report.html``) and the
   ``results.csv`` beside the run folder are written.

Resuming: if the host process dies (killed, machine lost), the agent's tree dies with it. Running the same
command again with the same ``--out`` continues the run: the agent command starts again with the budget
that was left (the time used is recorded every second in ``run_meta.json``), in the same workspace, with the
baseline and the submissions so far kept. A run that ended (``run_end.json`` exists) is not run again.

Running a real coding agent
---------------------------
Any command works as the agent: it starts in ``/workspace``, where ``instructions.md`` tells it everything
(the budget, how to submit, the rules). A real agent needs its LLM's API, so give ``--allow-network`` and
pass its key with ``--pass-env NAME`` (the sandbox starts from an empty environment). Its program must be
visible inside: installed under ``/usr`` or the Python prefix, or shown with ``--expose DIR`` (e.g. a
Node.js install, or a uv tool folder) and called by its full path. ``HOME`` is the run's private ``/tmp``,
so the agent's own config starts empty: pass what it needs by variables. Turn the agent's own sandbox and
approval prompts off: agentgym's sandbox is the boundary, and nested sandboxes (Claude Code's bubblewrap,
Docker runtimes) cannot start inside it, since it refuses new namespaces. For example::

    # Claude Code: -p is its non-interactive mode; its permission prompts off (its own bash sandbox is off
    # unless enabled in its settings: leave it off)
    agentgym engineer --task frozenlake --base-model tiny --budget 2h --out runs/claude-frozenlake \\
        --allow-network --pass-env ANTHROPIC_API_KEY --expose /opt/node --driver-model claude-sonnet-4-5 \\
        --agent '/opt/node/bin/claude -p "$(cat instructions.md description.md)" \\
                 --dangerously-skip-permissions --output-format stream-json --verbose'

    # Codex CLI: exec is its non-interactive mode; --dangerously-bypass-approvals-and-sandbox (alias --yolo)
    # turns off its Landlock/seccomp sandbox and the approvals
    agentgym engineer ... --allow-network --pass-env CODEX_API_KEY --driver-model gpt-5 \\
        --agent 'codex exec --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox \\
                 "$(cat instructions.md description.md)"'

    # OpenHands (V1 CLI): --headless runs a task without the UI, always approving; --override-with-envs
    # makes it read LLM_MODEL / LLM_API_KEY / LLM_BASE_URL; it acts in the current folder, not in Docker
    # (installed with `uv tool install openhands`; $HOME expands on the host, the quoted rest inside)
    agentgym engineer ... --allow-network --pass-env LLM_API_KEY --pass-env LLM_MODEL \\
        --expose "$HOME/.local/share/uv" --driver-model "$LLM_MODEL" \\
        --agent "$HOME/.local/share/uv/tools/openhands/bin/openhands"' --headless --override-with-envs \\
                 -t "$(cat instructions.md description.md)"'

``$(cat ...)`` in single quotes runs inside the sandbox, in ``/workspace``. The agent's transcript goes to
``logs/agent.log``; ``--driver-model`` labels the LLM in the reports and the leaderboard.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agentgym.engineer import isolation
from agentgym.engineer.grader import Grader
from agentgym.engineer.isolation import AgentProcess, Sandbox
from agentgym.engineer.reports import update_results_csv, write_reports
from agentgym.engineer.server import GradingServer
from agentgym.engineer.tasks import Task, get_task
from agentgym.engineer.workspace import (
    AGENT_MOUNT,
    BASE_MOUNT,
    HARNESS_FILES,
    SOCKET_MOUNT,
    TRAIN_MOUNT,
    RunPaths,
    build_workspace,
    check_base_model_spec,
    new_agent_ids,
    read_json,
    write_agent_meta,
    write_meta,
)
from agentgym.errors import UsageError
from agentgym.eval.run_files import write_json_atomic

GRACE_S = 10.0  # SIGTERM to SIGKILL at the deadline
HEARTBEAT_S = 1.0  # how often the time used is recorded (what a dead host can lose)
BASELINE_SHARE = 0.5  # a baseline evaluation longer than this share of the budget is refused
PROBE_TIMEOUT_S = 60.0
# settings a resumed run must share with the run it continues
RESUME_KEYS = (
    "task",
    "base_model",
    "env_kwargs",
    "budget_s",
    "agent",
    "allow_network",
    "heldout_episodes",
    "policy_overrides",
)


def parse_budget(text: str) -> float:
    """Seconds of a budget like ``90s``, ``30m``, ``2h``, ``1h30m`` or a bare number of seconds."""
    value = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        seconds = float(value)
    else:
        match = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", value)
        if not value or match is None:
            raise UsageError(f"--budget {text!r}: write it like 90s, 30m, 2h or 1h30m")
        hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if seconds <= 0:
        raise UsageError(f"--budget {text!r}: the budget must be positive")
    return seconds


def agent_label(command: str) -> str:
    """A short name of an agent command: the module of ``python -m M`` (its last part), else the program."""
    try:
        words = [w for w in shlex.split(command) if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", w)]
    except ValueError:
        words = command.split()
    if "-m" in words and words.index("-m") + 1 < len(words):
        return words[words.index("-m") + 1].rsplit(".", 1)[-1]
    return os.path.basename(words[0]) if words else "agent"


def _program(command: str) -> str:
    """The program an agent command runs first (after any VAR=value words); UsageError if it does not
    parse as shell words."""
    if not command.strip():
        raise UsageError("--agent is empty: give the command that runs the agent")
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise UsageError(f"--agent {command!r} does not parse as a shell command: {exc}") from None
    words = [w for w in words if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", w)]
    if not words:
        raise UsageError(f"--agent {command!r} runs no program")
    return words[0]


class _RunLock:
    """An exclusive lock on the run folder while a host process drives it."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(root / "run.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise UsageError(
                f"{root} is in use by another `agentgym engineer`; wait for it or use another --out"
            ) from None

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def task_variant(
    task: Task,
    env_kwargs: Mapping[str, Any] | None = None,
    heldout_episodes: int | None = None,
    policy_overrides: Mapping[str, Any] | None = None,
) -> Task:
    """The task as this run plays it: its environment's keyword arguments changed on both splits (a smaller
    FrozenLake for a demo), another number of held-out episodes, other generation settings of the grader;
    the description the agent reads, the grader and its cache key all see the change."""
    import dataclasses

    return dataclasses.replace(
        task,
        env_kwargs={**task.env_kwargs, **(env_kwargs or {})},
        train_env_kwargs={**task.train_env_kwargs, **(env_kwargs or {})},
        heldout_episodes=heldout_episodes or task.heldout_episodes,
        eval_policy_kwargs={**task.eval_policy_kwargs, **(policy_overrides or {})},
    )


def _time_used(meta: Mapping[str, Any]) -> float:
    return sum(max(0.0, s["end"] - s["start"]) for s in meta.get("segments", []))


class _Interrupted(Exception):
    pass


def run_engineer(
    task: str,
    base_model: str,
    budget_s: float,
    agent_command: str,
    out: str | Path,
    *,
    allow_network: bool = False,
    workers: int = 1,
    heldout_episodes: int | None = None,
    driver_model: str | None = None,
    agent_name: str | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    policy_overrides: Mapping[str, Any] | None = None,
    expose: Sequence[str | Path] = (),
    pass_env: Sequence[str] = (),
    data_root: str | Path | None = None,
    grace_s: float = GRACE_S,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) one engineer run into ``out`` and return its results: the run's metrics and a
    summary (see the module docstring). Bad input raises :class:`~agentgym.errors.UsageError`.

    ``env_kwargs`` changes the task's environment on both splits (e.g. FrozenLake ``{"size": 3}``) and
    ``policy_overrides`` the grader's generation settings (e.g. fewer ``max_new_tokens`` in tests): both
    change what the scores mean, so they are recorded in ``run_meta.json``. ``expose``: host paths shown
    read-only inside (an agent CLI installed elsewhere); ``pass_env``: host variables passed in (API keys).
    ``grace_s``: seconds between SIGTERM and SIGKILL at the deadline."""
    say = log or (lambda message: print(f"agentgym engineer: {message}", file=sys.stderr, flush=True))
    paths = RunPaths(out)
    if budget_s <= 0:
        raise UsageError(f"the budget must be positive, got {budget_s}s")
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if heldout_episodes is not None and heldout_episodes < 1:
        raise UsageError(f"--heldout-episodes must be at least 1, got {heldout_episodes}")
    if grace_s < 0:
        raise UsageError(f"the grace period must not be negative, got {grace_s}")
    _program(agent_command)
    for name in pass_env:
        if name not in os.environ:
            raise UsageError(f"--pass-env {name}: no such variable in this environment")
    for path in expose:
        if not Path(path).exists():
            raise UsageError(f"--expose {path}: no such file or folder")
    if isolation.bwrap_binary() is None:
        raise UsageError("agentgym engineer needs bubblewrap (Debian/Ubuntu: apt-get install bubblewrap)")
    task_obj = task_variant(
        get_task(task, data_root=data_root), env_kwargs, heldout_episodes, policy_overrides
    )

    lock = _RunLock(paths.root)
    try:
        if paths.run_end.exists():
            say(f"the run in {paths.root} has already ended (run_end.json); it is not run again")
            results = _finish_reports(paths)
            results["already_ended"] = True
            return results
        wanted = {
            "task": task_obj.name,
            "base_model": base_model,
            "env_kwargs": dict(env_kwargs or {}),
            "budget_s": float(budget_s),
            "agent": agent_command,
            "allow_network": bool(allow_network),
            "heldout_episodes": heldout_episodes or task_obj.heldout_episodes,
            "policy_overrides": dict(policy_overrides or {}),
        }
        meta = _load_or_create_meta(paths, wanted, driver_model, agent_name or agent_label(agent_command))
        meta["workers"] = workers
        if not paths.base_model.joinpath("config.json").is_file():
            check_base_model_spec(base_model)
        say(f"preparing {paths.root} (task {task_obj.name}, base model {base_model})")
        build_workspace(task_obj, base_model, paths, meta)
        sandbox = _sandbox(paths, task_obj, meta, expose, pass_env)
        _check_agent_command(sandbox, agent_command, paths)

        mounts = {**paths.mounts(), **{k: Path(v) for k, v in meta.get("train_mounts", {}).items()}}
        grader = Grader(
            task_obj,
            paths.base_model,
            paths.grader,
            workspace=paths.workspace,
            workspace_mount=AGENT_MOUNT,
            mounts=mounts,
            workers=workers,
            episodes=task_obj.heldout_episodes,
            started_at=meta.get("start_time"),
        )
        say("measuring the baseline (the base model on the held-out split; cached)")
        baseline = grader.baseline_record()
        meta["baseline"] = baseline["score"]
        meta["baseline_eval_s"] = baseline.get("eval_s")
        write_meta(paths, meta)
        say(f"baseline {baseline['score']:.4f} ({baseline.get('eval_s', 0):.1f}s to evaluate)")
        if not meta["segments"] and float(baseline.get("eval_s") or 0) > BASELINE_SHARE * meta["budget_s"]:
            raise UsageError(
                f"the baseline evaluation took {baseline['eval_s']:.0f}s, more than half of the "
                f"{meta['budget_s']:.0f}s budget, and every submission's evaluation takes about as long: "
                f"give a --budget of at least {baseline['eval_s'] / BASELINE_SHARE:.0f}s or fewer "
                "--heldout-episodes"
            )
        return _run_agent(paths, meta, grader, sandbox, agent_command, grace_s, say)
    finally:
        lock.release()


def _load_or_create_meta(
    paths: RunPaths, wanted: dict[str, Any], driver_model: str | None, agent_name: str
) -> dict[str, Any]:
    meta = read_json(paths.run_meta)
    if meta is None:
        uid, gid = new_agent_ids()
        return {
            **wanted,
            "agent_name": agent_name,
            "driver_model": driver_model,
            "created_at": time.time(),
            "start_time": None,
            "deadline": None,
            "time_used_s": 0.0,
            "segments": [],
            "agent_uid": uid,
            "agent_gid": gid,
        }
    # the workspace and the baseline were made for these: they must match
    fixed = ("task", "base_model", "env_kwargs") if not meta.get("segments") else RESUME_KEYS
    different = [k for k in fixed if meta.get(k) != wanted[k]]
    if different:
        was = ", ".join(f"{k}={meta.get(k)!r}" for k in different)
        raise UsageError(
            f"{paths.root} holds a run with {was}; rerun with the same settings to resume it, "
            "or give another --out"
        )
    if not meta.get("segments"):  # a run the agent never started takes the new budget and agent
        meta.update(wanted)
        meta["agent_name"] = agent_name
        meta["driver_model"] = driver_model
    return meta


def _sandbox(
    paths: RunPaths, task: Task, meta: dict[str, Any], expose: Sequence[str | Path], pass_env: Sequence[str]
) -> Sandbox:
    read_only = {BASE_MOUNT: paths.base_model, TRAIN_MOUNT: paths.train_data}
    read_only.update({k: Path(v) for k, v in meta.get("train_mounts", {}).items()})
    for name in HARNESS_FILES:  # shown over themselves: the agent cannot change what the harness wrote
        read_only[f"{AGENT_MOUNT}/{name}"] = paths.workspace / name
    env = {
        "AGENTGYM_WORKSPACE": AGENT_MOUNT,
        "AGENTGYM_GRADER": SOCKET_MOUNT,
        "AGENTGYM_GRADER_SOCKET": SOCKET_MOUNT,
        "AGENTGYM_TASK": task.name,
        "AGENTGYM_BASE_MODEL": BASE_MOUNT,
        "AGENTGYM_TRAIN_DATA": TRAIN_MOUNT,
        "AGENTGYM_OUTPUT": f"{AGENT_MOUNT}/output",
    }
    env.update({name: os.environ[name] for name in pass_env})
    return Sandbox(
        workspace=paths.workspace,
        tmp_dir=paths.tmp,
        uid=meta["agent_uid"],
        gid=meta["agent_gid"],
        read_only=read_only,
        env=env,
        allow_network=meta["allow_network"],
        masked=isolation.masked_files(task.hidden_paths()),
        expose=[Path(p) for p in expose],
    )


def _check_agent_command(sandbox: Sandbox, command: str, paths: RunPaths) -> None:
    """Look the agent's program up inside the sandbox (this also proves the sandbox starts)."""
    program = _program(command)
    probe = sandbox.command(["/bin/sh", "-c", 'command -v "$1"', "sh", program], paths.sandbox_files)
    try:
        result = subprocess.run(probe, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, env={})
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the sandbox did not start within {PROBE_TIMEOUT_S:.0f}s") from None
    if result.returncode == 0:
        return
    if "bwrap" in result.stderr:
        raise RuntimeError(f"the sandbox does not start here: {result.stderr.strip()}")
    raise UsageError(
        f"--agent: {program!r} is not a program inside the sandbox (it shows /usr, the Python prefix and "
        "/workspace; use --expose DIR for a program installed elsewhere, and a path relative to the "
        "workspace for a script of your own)"
    )


def _run_agent(
    paths: RunPaths,
    meta: dict[str, Any],
    grader: Grader,
    sandbox: Sandbox,
    command: str,
    grace_s: float,
    say: Callable[[str], None],
) -> dict[str, Any]:
    left = meta["budget_s"] - _time_used(meta)
    if left <= 0:
        say("the budget was used up before the host stopped; closing the run")
        return _close(paths, meta, grader, None, "budget", None, False, say)
    now = time.time()
    if meta["start_time"] is None:
        meta["start_time"] = now
        grader.started_at = now
    meta["deadline"] = now + left
    meta["segments"].append({"start": now, "end": now})
    sandbox.env = {**sandbox.env, "AGENTGYM_DEADLINE": f"{meta['deadline']:.3f}"}
    server = GradingServer(
        grader,
        port=0 if meta["allow_network"] else None,
        unix_socket=paths.socket,
        deadline_unix=meta["deadline"],
    )
    server.start()
    if server.url is not None:
        sandbox.env = {**sandbox.env, "AGENTGYM_GRADER_URL": server.url}
    write_agent_meta(paths, meta)
    write_meta(paths, meta)
    launch = len(meta["segments"])
    with paths.agent_log.open("a", encoding="utf-8") as f:
        f.write(
            f"=== agentgym engineer: launch {launch} at {time.strftime('%Y-%m-%d %H:%M:%S')}, "
            f"{left:.0f}s of budget left ===\n"
        )
    say(f"agent started ({left:.0f}s left); its output goes to {paths.agent_log}")
    try:
        agent = AgentProcess(sandbox, command, paths.agent_log, paths.sandbox_files)
    except BaseException:
        server.stop()
        raise
    reason, exit_code, stopped = "agent_exited", None, False
    previous = _catch_sigint()
    try:
        end_at = time.monotonic() + left
        while True:
            exit_code = agent.poll()
            if exit_code is not None:
                break
            if time.monotonic() >= end_at:
                reason = "budget"
                break
            time.sleep(min(HEARTBEAT_S, max(0.05, end_at - time.monotonic())))
            meta["segments"][-1]["end"] = time.time()
            meta["time_used_s"] = round(_time_used(meta), 3)
            write_meta(paths, meta)
    except (KeyboardInterrupt, _Interrupted):
        reason = "interrupted"
        say("interrupted: closing the run")
    finally:
        _restore_sigint(previous)
        if agent.poll() is None:
            stopped = True
            exit_code = agent.stop(grace_s)
        else:
            exit_code = agent.stop(0)
        meta["segments"][-1]["end"] = time.time()
        meta["time_used_s"] = round(_time_used(meta), 3)
        write_meta(paths, meta)
    return _close(paths, meta, grader, server, reason, exit_code, stopped, say)


def _catch_sigint() -> Any:
    """Ctrl-C ends the run cleanly (the main thread only may set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise _Interrupted

    return signal.signal(signal.SIGINT, interrupt)


def _restore_sigint(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGINT, previous)


def _close(
    paths: RunPaths,
    meta: dict[str, Any],
    grader: Grader,
    server: GradingServer | None,
    reason: str,
    exit_code: int | None,
    stopped: bool,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Close submissions, let a running evaluation finish, write run_end.json and the reports."""
    if server is not None:
        if not grader.wait_idle(0):
            say("waiting for the evaluation in progress to finish")
        server.close_submissions(wait=True)
        server.stop()
    else:
        grader.close()
    end = {
        "reason": reason,
        "exit_code": exit_code,
        "stopped_by_harness": stopped,
        "end_time": time.time(),
        "time_used_s": round(_time_used(meta), 3),
        "budget_s": meta["budget_s"],
        "launches": len(meta["segments"]),
    }
    write_json_atomic(paths.run_end, end)
    say(f"run ended ({reason}); writing the reports")
    return _finish_reports(paths)


def _finish_reports(paths: RunPaths) -> dict[str, Any]:
    """The reports of an ended run, (re)written; the results.csv beside it updated."""
    metrics = write_reports(paths.root)
    update_results_csv(paths.root.parent)
    return {"run_dir": str(paths.root), **(metrics or {})}

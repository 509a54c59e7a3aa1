"""The reports of an engineer run: ``summary.jsonl`` (per attempt), ``metrics.json`` (per run),
``report.html``, ``results.csv`` across runs and the run's leaderboard entry.

Inputs, in the run folder: ``run_meta.json`` (the runner's: ``task``, ``base_model``, ``agent``,
``agent_name``, ``driver_model``, ``budget_s``, ``start_time`` or ``started_at`` (unix), and ``segments``
``[{start, end}, ...]`` when the run was resumed), ``grader/submissions.jsonl`` and ``grader/baseline.json``
(the grader's, see ``agentgym.engineer.grader``), ``run_end.json`` (``reason``: agent_exited / budget /
interrupted, or ``timed_out``; ``exit_code`` or ``agent_exit_code``; ``time_used_s`` or ``duration_s``;
``end_time`` or ``ended_at``; ``stopped_by_harness`` or ``killed_at_deadline``; optional ``error_tail``)
and ``logs/agent.log`` (its tail is the error text of a crashed agent).

Time. Every time below is budget time: seconds of the run's clock since its start, counting only the
time the agent was running (the ``segments``; without them, wall-clock time since the start), so a run
resumed after a crash of the host is not charged for the gap. A submission's time is when its answer was
ready (``done_time``), as RD-Agent's ``autorl_bench`` stamps a score when it is written.

Attempts (``summary.jsonl``): one line per submission, in order, plus one line with status
``no_submission`` when the run ended abnormally after its last submission (timed out or the agent failed:
the work in progress never reached the grader), or had no submission at all. Fields: ``iteration``,
``submission``, ``time_s`` (budget time of the answer), ``duration_s`` (budget time since the previous
attempt's answer, or since the start: the agent's time for this attempt, its evaluation included),
``eval_s``, ``status``, ``reason``, ``score``, ``improvement`` (score - baseline), ``best``,
``training_type``, ``same_as_base``, ``failure_type``.

Failure types. RD-Agent's ``autorl_bench`` names six and lets the driving agent label its own iterations
(``core/skill.md``); it defines none of them in code. Here each is decided from what the harness observed,
in this order, and an attempt that improved on the baseline has none (``null``):

- ``copy_model_fallback``: the submitted weights are the base model's (``same_as_base``: equal tensors,
  whatever the path, sharding or metadata). The reference's meaning: the agent submitted a copy of the
  base model instead of a trained one; its metric counts paths equal to the base model's path only.
- ``timeout_no_submission``: the budget ran out before the attempt produced a scored model: a submission
  rejected as "budget over", or the run killed at the deadline with work in progress not submitted (the
  ``no_submission`` line), including a run that never submitted. The reference's meaning: time ran out
  with nothing submitted.
- ``code_error_runtime``: the attempt's code failed at run time: a submission rejected (path missing or
  outside the workspace, a model that does not load, e.g. half-written) or whose evaluation raised, or
  an agent that exited with a non-zero status after its last submission (or without any). The reference's
  meaning: the training code crashed.
- ``rollout_logic_wrong``: the model loads and is scored, but its format-valid rate fell below half the
  base model's: it was trained on rollouts whose prompts or answer format do not match the task's (the
  reference's meaning: the rollout / interaction logic of training is wrong, so the model learns the
  wrong behaviour).
- ``training_diverged``: scored, format intact, but significantly worse than the base model: the upper
  end of the score's Wilson 95% interval is below the baseline. The reference's meaning: training
  destabilised and degraded the model.
- ``unknown``: no improvement and none of the above (e.g. a scored model no better than the base within
  noise), or an agent that exited cleanly without ever submitting.

Process metrics (``metrics.json``), with RD-Agent's definitions (``core/metrics.py``) beside ours:

- ``valid_submission_rate``: scored / all submissions. Reference: submissions with score > 0 / all (it has
  no status; a failed evaluation scores 0). Deliberate difference: a model that loads and scores 0.0 is a
  valid submission here, a rejected one is not.
- ``first_valid_idx`` / ``first_valid_delay``: the 1-based number of the first scored submission / its
  time. Reference: the same with "score > 0".
- ``time_to_first_improvement``: time of the first submission with score > baseline. Same as reference.
- ``time_to_best``: time of the first submission that reached the best score. Reference: the first
  maximum over all submissions (failed ones count as 0).
- ``monotonic_ratio``: among scored submissions in order, the share of consecutive pairs where the score
  rose (None with fewer than two). Reference: the same over all submissions, failed ones as 0.
- ``copy_model_count``: submissions whose weights equal the base model's. Reference: submissions whose
  resolved path is the base model's path (a copy elsewhere is not counted there).
- ``time_used_ratio``: time used / budget. Same as reference.
- ``last_submit_gap``: time used - time of the last submission's answer (any status). Reference: end
  time - last submit time.
- plus ``baseline``, ``best_score``, ``improvement`` (best - baseline), ``submissions``,
  ``valid_submissions``, ``score_trajectory`` (per submission, None when not scored), ``failure_types``
  (counts), ``training_types`` (counts over scored submissions), ``end_reason``, ``exit_code``.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import html
import io
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentgym.engineer.grader import BASELINE, SUBMISSIONS, SubmissionLog
from agentgym.eval.leaderboard import machine, submit_engineer_entry
from agentgym.eval.run_files import write_json_atomic

FAILURE_TYPES = (
    "code_error_runtime",
    "rollout_logic_wrong",
    "timeout_no_submission",
    "copy_model_fallback",
    "training_diverged",
    "unknown",
)
FORMAT_COLLAPSE = 0.5  # rollout_logic_wrong: format-valid rate below this share of the baseline's
ERROR_TAIL_LINES = 20
RESULTS_COLUMNS = (
    "run",
    "task",
    "agent",
    "driver_model",
    "base_model",
    "budget_s",
    "started_at",
    "time_used_s",
    "end_reason",
    "exit_code",
    "baseline",
    "best_score",
    "improvement",
    "submissions",
    "valid_submissions",
    "valid_submission_rate",
    "copy_model_count",
    "time_to_best",
    "time_used_ratio",
    "failure_types",
)


# ----- reading a run -----
def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


class RunView:
    """What the reports read of a run folder, with the runner's and the brief's key names both accepted."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.meta = _read_json(self.run_dir / "run_meta.json")
        self.end = _read_json(self.run_dir / "run_end.json")
        self.baseline_record = _read_json(self.run_dir / "grader" / BASELINE)
        self.submissions = SubmissionLog(self.run_dir / "grader" / SUBMISSIONS).load()
        self.started_at = _first(self.meta, "started_at", "start_time")
        segments = self.meta.get("segments") or []
        self.segments = [
            (float(s["start"]), float(s["end"])) for s in segments if "start" in s and "end" in s
        ]
        self.ended_at = _first(self.end, "ended_at", "end_time")
        self.budget_s = _first(self.meta, "budget_s") or _first(self.end, "budget_s")

    @property
    def baseline(self) -> float | None:
        value = self.baseline_record.get("score")
        if value is None:
            value = self.meta.get("baseline")
        if value is None:
            value = next((r.get("baseline") for r in self.submissions if r.get("baseline") is not None), None)
        return None if value is None else float(value)

    @property
    def time_used_s(self) -> float | None:
        value = _first(self.end, "duration_s", "time_used_s")
        if value is None and self.segments:
            value = sum(end - start for start, end in self.segments)
        if value is None and self.started_at is not None and self.ended_at is not None:
            value = self.ended_at - self.started_at
        return value

    @property
    def exit_code(self) -> int | None:
        value = self.end.get("agent_exit_code", self.end.get("exit_code"))
        return None if value is None else int(value)

    @property
    def timed_out(self) -> bool:
        if "timed_out" in self.end:
            return bool(self.end["timed_out"])
        return self.end.get("reason") == "budget"

    @property
    def end_reason(self) -> str | None:
        if "reason" in self.end:
            return str(self.end["reason"])
        if not self.end:
            return None
        return "budget" if self.timed_out else "agent_exited"

    def budget_time(self, unix: float) -> float | None:
        """Seconds of the run's clock at unix time ``unix`` (see the module doc); an answer that came
        after the run's end (an evaluation finished after the deadline) counts at the end."""
        if self.segments:
            value = sum(max(0.0, min(unix, end) - start) for start, end in self.segments)
        elif self.started_at is None:
            return None
        else:
            value = max(0.0, unix - self.started_at)
        used = self.time_used_s
        return min(value, used) if used is not None else value

    def error_tail(self) -> str | None:
        if self.end.get("error_tail"):
            return str(self.end["error_tail"])
        log = self.run_dir / "logs" / "agent.log"
        try:
            with log.open("rb") as f:
                f.seek(max(0, log.stat().st_size - 16_384))
                lines = f.read().decode("utf-8", errors="replace").splitlines()
        except OSError:
            return None
        tail = "\n".join(lines[-ERROR_TAIL_LINES:]).strip()
        return tail or None

    @property
    def agent(self) -> str:
        name = self.meta.get("agent_name")
        if name:
            return str(name)
        command = str(self.meta.get("agent") or "unknown").split()
        return Path(command[0]).name if command else "unknown"


def _first(record: dict[str, Any], *keys: str) -> float | None:
    for key in keys:
        if record.get(key) is not None:
            return float(record[key])
    return None


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# ----- failure types -----
def failure_type(record: dict[str, Any], baseline: float | None, baseline_format: float | None) -> str | None:
    """The failure type of one submission (see the module doc); None when it improved on the baseline."""
    status = record.get("status")
    if status != "scored":
        reason = str(record.get("reason") or "")
        return "timeout_no_submission" if reason.startswith("budget over") else "code_error_runtime"
    if record.get("same_as_base"):
        return "copy_model_fallback"
    score = record.get("score")
    if score is None or baseline is None:
        return "unknown"
    if score > baseline:
        return None
    fmt = record.get("format_valid_rate")
    if fmt is not None and baseline_format is not None and fmt < FORMAT_COLLAPSE * baseline_format:
        return "rollout_logic_wrong"
    upper = (record.get("score_ci95") or [None, score])[1]
    if upper is not None and upper < baseline:
        return "training_diverged"
    return "unknown"


def _trailing_attempt(view: RunView) -> str | None:
    """The failure type of the work after the last submission, when the run ended abnormally (or never
    submitted); None when there is no such attempt."""
    if not view.end:
        return None  # the run has not ended: nothing to say about its last attempt yet
    if view.timed_out:
        return "timeout_no_submission"
    code = view.exit_code
    if code not in (None, 0):
        return "code_error_runtime"
    return None if view.submissions else "unknown"


# ----- the reports -----
def attempts(view: RunView) -> list[dict[str, Any]]:
    """The lines of ``summary.jsonl``."""
    baseline = view.baseline
    baseline_format = view.baseline_record.get("format_valid_rate")
    lines: list[dict[str, Any]] = []
    previous = 0.0
    best: float | None = None
    for i, record in enumerate(view.submissions, start=1):
        done = view.budget_time(float(record.get("done_time") or record.get("time") or 0.0))
        score = record.get("score")
        if record.get("status") == "scored" and score is not None:
            best = score if best is None else max(best, score)
        lines.append(
            {
                "iteration": i,
                "submission": record.get("submission", i),
                "time_s": _r(done),
                "duration_s": None if done is None else _r(done - previous),
                "eval_s": record.get("eval_s"),
                "status": record.get("status"),
                "reason": record.get("reason"),
                "score": score,
                "improvement": None if score is None or baseline is None else round(score - baseline, 6),
                "best": best,
                "training_type": record.get("training_type") or "unknown",
                "same_as_base": record.get("same_as_base"),
                "failure_type": failure_type(record, baseline, baseline_format),
            }
        )
        previous = done if done is not None else previous
    trailing = _trailing_attempt(view)
    if trailing is not None:
        used = view.time_used_s
        lines.append(
            {
                "iteration": len(lines) + 1,
                "submission": None,
                "time_s": _r(used),
                "duration_s": None if used is None else _r(used - previous),
                "eval_s": None,
                "status": "no_submission",
                "reason": _trailing_reason(view),
                "score": None,
                "improvement": None,
                "best": best,
                "training_type": "unknown",
                "same_as_base": None,
                "failure_type": trailing,
                "exit_code": view.exit_code,
                "error_tail": view.error_tail() if view.exit_code not in (None, 0) else None,
            }
        )
    return lines


def _trailing_reason(view: RunView) -> str:
    if view.timed_out:
        return "the budget ran out before this attempt was submitted"
    if view.exit_code not in (None, 0):
        return f"the agent exited with status {view.exit_code} before submitting"
    return "the agent exited without submitting"


def compute_metrics(view: RunView, lines: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``metrics.json`` of a run (see the module doc)."""
    lines = attempts(view) if lines is None else lines
    baseline = view.baseline
    subs = [line for line in lines if line["submission"] is not None]
    scored = [line for line in subs if line["status"] == "scored"]
    best = max((line["score"] for line in scored), default=None)
    first_valid = scored[0] if scored else None
    improving = next((line for line in scored if baseline is not None and line["score"] > baseline), None)
    best_line = next((line for line in scored if line["score"] == best), None)
    rises = sum(b["score"] > a["score"] for a, b in zip(scored, scored[1:], strict=False))
    used = view.time_used_s
    return {
        "task": view.meta.get("task"),
        "agent": view.agent,
        "driver_model": view.meta.get("driver_model"),
        "base_model": view.meta.get("base_model"),
        "budget_s": view.budget_s,
        "baseline": baseline,
        "best_score": best,
        "improvement": None if best is None or baseline is None else round(best - baseline, 6),
        "submissions": len(subs),
        "valid_submissions": len(scored),
        "valid_submission_rate": len(scored) / len(subs) if subs else None,
        "first_valid_idx": subs.index(first_valid) + 1 if first_valid is not None else None,
        "first_valid_delay": first_valid["time_s"] if first_valid is not None else None,
        "time_to_first_improvement": improving["time_s"] if improving is not None else None,
        "time_to_best": best_line["time_s"] if best_line is not None else None,
        "monotonic_ratio": rises / (len(scored) - 1) if len(scored) >= 2 else None,
        "copy_model_count": sum(bool(line.get("same_as_base")) for line in subs),
        "time_used_s": _r(used),
        "time_used_ratio": used / view.budget_s if used is not None and view.budget_s else None,
        "last_submit_gap": _r(used - subs[-1]["time_s"])
        if subs and used is not None and subs[-1]["time_s"] is not None
        else None,
        "score_trajectory": [line["score"] if line["status"] == "scored" else None for line in subs],
        "failure_types": dict(
            sorted(Counter(line["failure_type"] for line in lines if line["failure_type"]).items())
        ),
        "training_types": dict(sorted(Counter(line["training_type"] for line in scored).items())),
        "end_reason": view.end_reason,
        "exit_code": view.exit_code,
    }


def write_reports(run_dir: str | Path) -> dict[str, Any]:
    """Write ``summary.jsonl``, ``metrics.json`` and ``report.html`` into ``run_dir``; return the metrics."""
    run_dir = Path(run_dir)
    view = RunView(run_dir)
    lines = attempts(view)
    metrics = compute_metrics(view, lines)
    tmp = run_dir / "summary.jsonl.tmp"
    tmp.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, run_dir / "summary.jsonl")
    write_json_atomic(run_dir / "metrics.json", metrics)
    page = run_dir / "report.html.tmp"
    page.write_text(render_report(view, lines, metrics), encoding="utf-8")
    os.replace(page, run_dir / "report.html")
    return metrics


# ----- report.html -----
def trajectory_png(
    lines: Sequence[dict[str, Any]],
    baseline: float | None,
    budget_s: float | None,
    time_used_s: float | None = None,
) -> bytes:
    """The score trajectory: each submission at its budget time (minutes), scored ones joined, the best so
    far as a step line (to the run's end), rejected / failed ones as red crosses along the bottom, copies
    of the base model circled, the baseline dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 3.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    subs = [line for line in lines if line["submission"] is not None and line["time_s"] is not None]
    scored = [line for line in subs if line["status"] == "scored"]
    failed = [line for line in subs if line["status"] != "scored"]
    if scored:
        xs = [line["time_s"] / 60 for line in scored]
        ax.plot(xs, [line["score"] for line in scored], "o-", color="#1f77b4", label="submission score")
        best, running = [], float("-inf")
        for line in scored:
            running = max(running, line["score"])
            best.append(running)
        if time_used_s is not None and time_used_s / 60 > xs[-1]:
            xs, best = [*xs, time_used_s / 60], [*best, best[-1]]
        ax.step(xs, best, where="post", color="#2ca02c", label="best so far")
        copies = [line for line in scored if line.get("same_as_base")]
        if copies:
            ax.scatter(
                [c["time_s"] / 60 for c in copies],
                [c["score"] for c in copies],
                s=160,
                facecolors="none",
                edgecolors="#ff7f0e",
                label="copy of the base model",
            )
    if failed:
        ax.scatter(
            [line["time_s"] / 60 for line in failed],
            [0.03] * len(failed),
            marker="x",
            color="#d62728",
            label="rejected / error",
            transform=ax.get_xaxis_transform(),  # x in minutes, y along the bottom of the axes
        )
    if baseline is not None:
        ax.axhline(baseline, linestyle="--", color="#555555", label=f"baseline {baseline:.3f}")
    if budget_s:
        ax.set_xlim(0, budget_s / 60)
    ax.set_xlabel("budget time (minutes)")
    ax.set_ylabel("held-out score")
    ax.set_title("score trajectory")
    ax.grid(alpha=0.3)
    if not subs:
        ax.text(0.5, 0.5, "no submissions", ha="center", va="center", transform=ax.transAxes)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "-"
    return str(value)


def render_report(view: RunView, lines: Sequence[dict[str, Any]], metrics: dict[str, Any]) -> str:
    """``report.html``: one self-contained page (the chart is an embedded PNG; no scripts, no links out)."""
    try:
        png = trajectory_png(lines, view.baseline, view.budget_s, view.time_used_s)
        chart = f'<img alt="score trajectory" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
    except ImportError:
        chart = "<p>(matplotlib is not installed: <code>pip install matplotlib</code> for the chart)</p>"
    e = html.escape
    title = f"agentgym engineer: {metrics.get('task')} / {metrics.get('agent')}"
    head = [
        ("task", metrics.get("task")),
        ("agent", metrics.get("agent")),
        ("agent command", view.meta.get("agent")),
        ("driver model", metrics.get("driver_model")),
        ("base model", metrics.get("base_model")),
        ("budget", f"{view.budget_s:.0f} s" if view.budget_s else None),
        ("started", _iso(view.started_at)),
        ("end", metrics.get("end_reason")),
    ]
    out = [
        "<!doctype html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>',
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "font-size:13px;vertical-align:top}th{background:#f4f4f4;text-align:left}"
        ".big{font-size:20px}pre{white-space:pre-wrap;font-size:12px;margin:0}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="big">baseline {_cell(metrics["baseline"])} &rarr; best {_cell(metrics["best_score"])} '
        f"(improvement {_cell(metrics['improvement'])})</p>",
        "<table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(_cell(v))}</td></tr>" for k, v in head) + "</table>",
        chart,
        "<h2>Attempts</h2>",
    ]
    columns = (
        "iteration",
        "time_s",
        "duration_s",
        "eval_s",
        "status",
        "score",
        "improvement",
        "best",
        "training_type",
        "same_as_base",
        "failure_type",
        "reason",
    )
    out.append("<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in columns) + "</tr>")
    for line in lines:
        cells = "".join(f"<td>{e(_cell(line.get(c)))}</td>" for c in columns)
        out.append(f"<tr>{cells}</tr>")
        if line.get("error_tail"):
            out.append(f'<tr><td colspan="{len(columns)}"><pre>{e(line["error_tail"])}</pre></td></tr>')
    out.append("</table>")
    out.append("<h2>Process metrics</h2><table>")
    for key, value in metrics.items():
        if key not in ("task", "agent", "driver_model", "base_model"):
            out.append(f"<tr><th>{e(key)}</th><td>{e(_cell(value))}</td></tr>")
    out += ["</table>", "</body></html>"]
    return "\n".join(out) + "\n"


def _iso(unix: float | None) -> str | None:
    if unix is None:
        return None
    return dt.datetime.fromtimestamp(unix, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----- across runs -----
def run_dirs(root: Path) -> list[Path]:
    """The run folders directly under ``root`` (those with a ``run_meta.json``), by name."""
    return sorted(p.parent for p in Path(root).glob("*/run_meta.json"))


def results_row(run_dir: Path) -> dict[str, Any]:
    view = RunView(run_dir)
    m = compute_metrics(view)
    return {
        "run": run_dir.name,
        "task": m["task"],
        "agent": m["agent"],
        "driver_model": m["driver_model"],
        "base_model": m["base_model"],
        "budget_s": view.budget_s,
        "started_at": _iso(view.started_at),
        "time_used_s": m["time_used_s"],
        "end_reason": m["end_reason"],
        "exit_code": m["exit_code"],
        "baseline": m["baseline"],
        "best_score": m["best_score"],
        "improvement": m["improvement"],
        "submissions": m["submissions"],
        "valid_submissions": m["valid_submissions"],
        "valid_submission_rate": m["valid_submission_rate"],
        "copy_model_count": m["copy_model_count"],
        "time_to_best": m["time_to_best"],
        "time_used_ratio": m["time_used_ratio"],
        "failure_types": ";".join(f"{k}:{v}" for k, v in m["failure_types"].items()),
    }


def update_results_csv(root: str | Path) -> Path:
    """(Re)write ``root/results.csv``: one row per run folder under ``root``."""
    root = Path(root)
    path = root / "results.csv"
    tmp = root / "results.csv.tmp"
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=RESULTS_COLUMNS)
        writer.writeheader()
        for run_dir in run_dirs(root):
            writer.writerow({k: "" if v is None else v for k, v in results_row(run_dir).items()})
    os.replace(tmp, path)
    return path


# ----- leaderboard -----
def leaderboard_entry(run_dir: str | Path, *, notes: str = "") -> dict[str, Any]:
    """The leaderboard record of an ended run: one per (agent, driver model, task, base model, budget)."""
    view = RunView(Path(run_dir))
    m = compute_metrics(view)
    if view.meta.get("task") is None:
        raise ValueError(f"{run_dir} has no run_meta.json with a task: not an engineer run folder")
    base = Path(str(view.meta.get("base_model") or "unknown").rstrip("/")).name
    key = {
        "agent": m["agent"],
        "driver_model": m["driver_model"],
        "task": m["task"],
        "base_model": base,
        "budget_s": view.budget_s,
    }
    best_type = next(
        (
            line["training_type"]
            for line in attempts(view)
            if line["status"] == "scored" and line["score"] == m["best_score"]
        ),
        None,
    )
    return {
        **key,
        "config_hash": hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12],
        "heldout_episodes": view.baseline_record.get("episodes"),
        "metrics": {
            k: m[k]
            for k in (
                "baseline",
                "best_score",
                "improvement",
                "submissions",
                "valid_submissions",
                "valid_submission_rate",
                "first_valid_delay",
                "time_to_first_improvement",
                "time_to_best",
                "monotonic_ratio",
                "copy_model_count",
                "time_used_ratio",
                "last_submit_gap",
                "failure_types",
            )
        }
        | {"best_training_type": best_type},
        "date": _iso(view.started_at) or _iso(view.ended_at),
        "machine": machine(),
        "notes": notes,
    }


def submit_run(run_dir: str | Path, leaderboard_dir: str | Path = "leaderboards", *, notes: str = "") -> Path:
    """Store the run's entry in ``leaderboard_dir`` (``engineer_runs/``; the same key replaces its older
    entry) and return its path; ``agentgym leaderboard`` renders the engineer board from it."""
    return submit_engineer_entry(leaderboard_entry(run_dir, notes=notes), leaderboard_dir)

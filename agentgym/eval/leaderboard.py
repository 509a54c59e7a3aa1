"""Leaderboards: one JSON file per evaluated run, rendered to Markdown (one board per environment) and
to a static HTML page with the success and format curves.

Layout of a leaderboard folder (``leaderboards/`` in the repository):

    runs/<env>__<policy>__<config hash>.json   one run: env, policy, model, config hash, seeds, metrics,
                                              date, machine (re-submitting the same config replaces it)
    README.md                                 the index: every board
    <env>.md                                  the board of one environment, best success first
    index.html                                all boards with their curves (inline SVG, no scripts)
    engineer_runs/<task>__<agent>__<hash>.json  one ``agentgym engineer`` run per (agent, driver model,
                                              task, base model, budget); rendered as ``engineer.md`` and
                                              a section of ``index.html`` when there is one

``agentgym eval --submit`` adds a run; ``agentgym leaderboard`` re-renders (``--add OUT`` submits the
``summary.json`` of earlier ``agentgym eval --out OUT`` runs first). Both render every run stored in
``runs/``, so adding a run keeps the others; the rendered files are a pure function of the run files (no
clock, no machine-dependent order), so they can be checked against a fresh rendering.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import html
import json
import os
import platform
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentgym.errors import UsageError, check_writable_dir

RUNS = "runs"
ENGINEER_RUNS = "engineer_runs"
METRIC_KEYS = (
    "episodes",
    "success_rate",
    "success_ci95",
    "mean_return",
    "format_valid_rate",
    "format_valid_rate_per_turn",
    "action_valid_rate",
    "mean_turns",
    "success_by_turn",
    "turn_states",
)
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


# ----- runs -----


def _portable(value: Any) -> Any:
    """Local file paths become their base names, so a config hashes the same on every machine."""
    if isinstance(value, dict):
        return {k: _portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_portable(v) for v in value]
    if isinstance(value, str) and os.sep in value and Path(value).exists():
        return Path(value).name
    return value


def model_name(policy: str, policy_kwargs: dict[str, Any]) -> str | None:
    """The model behind a policy spec: a GGUF file's stem, a model path's last part or an API model name."""
    kind, _, rest = policy.partition(":")
    if kind in ("hf", "checkpoint") and rest:
        gguf = policy_kwargs.get("gguf_file")
        return Path(gguf).stem if gguf else Path(rest.rstrip("/")).name
    if kind == "openai" and rest:
        return rest.partition("@")[0]
    return None


def portable_policy(policy: str) -> str:
    """The spec without machine-local parts: a model path keeps only its last part."""
    kind, _, rest = policy.partition(":")
    if kind in ("hf", "checkpoint") and rest:
        return f"{kind}:{Path(rest.rstrip('/')).name}"
    return policy


def config_hash(summary: dict[str, Any]) -> str:
    """A short hash of what defines the run: env and its kwargs, policy and its kwargs, seeds, format."""
    config = {
        "env": summary["env"],
        "env_kwargs": _portable(summary.get("env_kwargs", {})),
        "policy": portable_policy(summary["policy"]),
        "policy_kwargs": _portable(summary.get("policy_kwargs", {})),
        "seed": summary.get("seed", 0),
        "episodes": summary["episodes"] + summary.get("aborted", 0),  # the seeds asked for
        "response_format": summary.get("response_format"),
    }
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def machine() -> dict[str, Any]:
    """What the run ran on (no host names)."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text(errors="replace"))
        if found:
            info["cpu"] = found.group(1).strip()
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def _diagnostics_digest(summary: dict[str, Any]) -> dict[str, Any]:
    d = summary.get("diagnostics")
    if not d:
        return {}
    first = d["mi"].get("first_turn", {})
    traj = d["mi"].get("trajectory", {})
    return {
        "mi_first_turn": first.get("mi"),
        "retrieval_acc_first_turn": first.get("retrieval_acc"),
        "mi_trajectory": traj.get("mi"),
        "valid_thinking_rate": first.get("valid_thinking_rate"),
        "entropy": d.get("entropy"),
        "wrong_control_mass_spike": (d.get("control_tokens") or {}).get("wrong_control_mass_spike"),
    }


def run_entry(summary: dict[str, Any], *, date: str | None = None, notes: str = "") -> dict[str, Any]:
    """The leaderboard record of an ``agentgym eval`` summary."""
    policy_kwargs = summary.get("policy_kwargs", {})
    metrics = {k: summary[k] for k in METRIC_KEYS if k in summary}
    metrics.update(_diagnostics_digest(summary))
    if "format_variants" in summary:
        metrics["format_variants"] = {
            name: {
                k: v[k] for k in ("success_rate", "format_valid_rate", "success_drop", "format_valid_drop")
            }
            for name, v in summary["format_variants"]["variants"].items()
        }
    seed = summary.get("seed", 0)
    return {
        "env": summary["env"],
        "policy": portable_policy(summary["policy"]),
        "model": model_name(summary["policy"], policy_kwargs),
        "config_hash": config_hash(summary),
        "seeds": {
            "first": seed,
            "last": seed + summary["episodes"] + summary.get("aborted", 0) - 1,  # aborted ones included
            "rule": "episode i uses seed first + i",
        },
        "env_kwargs": _portable(summary.get("env_kwargs", {})),
        "policy_kwargs": _portable(policy_kwargs),
        "response_format": summary.get("response_format"),
        "metrics": metrics,
        "date": date or dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "elapsed_s": summary.get("elapsed_s"),
        "agentgym_version": summary.get("agentgym_version"),
        "notes": notes,
    }


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "run"


def env_slug(env_id: str) -> str:
    return _slug(env_id.removeprefix("agentgym/"))


def submit_run(summary: dict[str, Any], directory: str | Path = "leaderboards", *, notes: str = "") -> Path:
    """Store a run as ``runs/<env>__<policy>__<hash>.json``; the same config replaces its older file."""
    entry = run_entry(summary, notes=notes)
    policy_slug = _slug(entry["model"] or entry["policy"])[:40]
    path = Path(directory) / RUNS / f"{env_slug(entry['env'])}__{policy_slug}__{entry['config_hash']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(entry, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


# What a summary must hold to become a run, and what a run file must hold to be rendered.
SUMMARY_KEYS = ("env", "policy", "episodes", "success_rate", "mean_return")
RUN_KEYS = ("env", "policy", "config_hash", "date", "metrics")


def read_json_file(path: Path, what: str, keys: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON object in ``path``, which must hold ``keys``; :class:`UsageError` (naming the file and
    what is wrong with it) when it cannot be read, is not a JSON object or lacks a key."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:  # not JSON, or not UTF-8
        raise UsageError(f"{path} is not {what}: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not {what}: it holds a JSON {type(data).__name__}, not an object")
    missing = [k for k in keys if k not in data]
    if missing:
        raise UsageError(f"{path} is not {what}: it has no {', '.join(missing)}")
    return data


def load_runs(directory: str | Path = "leaderboards") -> list[dict[str, Any]]:
    runs = []
    for path in sorted((Path(directory) / RUNS).glob("*.json")):
        what = "a leaderboard run file (fix it or delete it)"
        entry = read_json_file(path, what, RUN_KEYS)
        if not isinstance(entry["metrics"], dict) or "success_rate" not in entry["metrics"]:
            raise UsageError(f"{path} is not {what}: its metrics have no success_rate")
        entry["_file"] = f"{RUNS}/{path.name}"
        runs.append(entry)
    return runs


def submit_engineer_entry(entry: dict[str, Any], directory: str | Path = "leaderboards") -> Path:
    """Store an engineer run's entry (``agentgym.engineer.reports.leaderboard_entry``) as
    ``engineer_runs/<task>__<agent>__<hash>.json``; the same key replaces its older file."""
    name = f"{_slug(entry['task'])}__{_slug(entry['agent'])[:40]}__{entry['config_hash']}.json"
    path = Path(directory) / ENGINEER_RUNS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(entry, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_engineer_runs(directory: str | Path = "leaderboards") -> list[dict[str, Any]]:
    entries = []
    for path in sorted((Path(directory) / ENGINEER_RUNS).glob("*.json")):
        entry = json.loads(path.read_text(encoding="utf-8"))
        entry["_file"] = f"{ENGINEER_RUNS}/{path.name}"
        entries.append(entry)
    return entries


def engineer_boards(entries: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Engineer runs grouped by task, largest improvement first (then best score; ties in a fixed order)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        grouped.setdefault(entry["task"], []).append(entry)
    for task_runs in grouped.values():
        task_runs.sort(
            key=lambda r: (
                -(r["metrics"].get("improvement") if r["metrics"].get("improvement") is not None else -1e9),
                -(r["metrics"].get("best_score") if r["metrics"].get("best_score") is not None else -1e9),
                r["agent"],
                r["config_hash"],
            )
        )
    return dict(sorted(grouped.items()))


def env_settings(run: dict[str, Any]) -> str:
    """A run's environment settings (its ``env_kwargs``) as canonical JSON: runs are ranked only against
    runs of the same settings (a 3x3 lake is not the task a 4x4 one is)."""
    return json.dumps(run.get("env_kwargs") or {}, sort_keys=True)


def boards(runs: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Runs grouped by environment; within one, by settings (the defaults first), then best success first
    (then mean return; ties in a fixed order)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        grouped.setdefault(run["env"], []).append(run)
    for env_runs in grouped.values():
        env_runs.sort(
            key=lambda r: (
                env_settings(r) != "{}",
                env_settings(r),
                -r["metrics"]["success_rate"],
                -r["metrics"]["mean_return"],
                r["policy"],
                r["config_hash"],
            )
        )
    return dict(sorted(grouped.items()))


def settings_sections(env_runs: Sequence[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """An environment's runs (as :func:`boards` orders them) split by settings: one ranking each."""
    sections: dict[str, list[dict[str, Any]]] = {}
    for run in env_runs:
        sections.setdefault(env_settings(run), []).append(run)
    return list(sections.items())


def _settings_title(settings: str) -> str:
    return "default settings" if settings == "{}" else f"settings {settings}"


# ----- rendering -----


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _policy_label(run: dict[str, Any]) -> str:
    kind = run["policy"].partition(":")[0]
    label = f"{kind}:{run['model']}" if run.get("model") else run["policy"]
    temperature = (run.get("policy_kwargs") or {}).get("temperature")
    # a sampled eval of a model is another row than its greedy one: the label says which
    return f"{label} (temperature {temperature})" if temperature else label


COLUMNS = (
    "#",
    "policy",
    "success (95% CI)",
    "return",
    "format-valid",
    "turns",
    "MI first turn",
    "entropy",
    "episodes",
    "format",
    "date",
    "config",
)


def _row(rank: int, run: dict[str, Any]) -> list[str]:
    m = run["metrics"]
    low, high = m.get("success_ci95", [None, None])
    return [
        str(rank),
        _policy_label(run),
        f"{m['success_rate']:.3f} [{_fmt(low, 2)}, {_fmt(high, 2)}]",
        _fmt(m.get("mean_return")),
        _fmt(m.get("format_valid_rate")),
        _fmt(m.get("mean_turns"), 2),
        _fmt(m.get("mi_first_turn")),
        _fmt(m.get("entropy")),
        str(m["episodes"]),
        str(run.get("response_format")),
        run["date"][:10],
        run["config_hash"],
    ]


def render_markdown(env_id: str, runs: Sequence[dict[str, Any]]) -> str:
    lines = [
        f"# {env_id}",
        "",
        "Rendered by `agentgym leaderboard` from `runs/`; best success first, ranked among runs of the same "
        "environment settings (`env_kwargs`). MI and entropy exist for model policies only (see DESIGN.md, "
        "Metrics).",
    ]
    for settings, section in settings_sections(runs):
        lines += [
            "",
            f"## {_settings_title(settings)}",
            "",
            "| " + " | ".join(COLUMNS) + " |",
            "|" + "---|" * len(COLUMNS),
        ]
        for rank, run in enumerate(section, start=1):
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in _row(rank, run)) + " |")
    lines += ["", "Machines:", ""]
    for run in runs:
        mach = run.get("machine", {})
        lines.append(
            f"- {_policy_label(run)} ({run['config_hash']}): {mach.get('cpu') or mach.get('platform')}, "
            f"{mach.get('cpus')} CPUs, GPU {mach.get('gpu') or 'none'}; {run.get('notes') or ''}".rstrip("; ")
        )
    return "\n".join(lines) + "\n"


def _svg_chart(title: str, series: Sequence[tuple[str, Sequence[float]]], y_label: str) -> str:
    """A small line chart (turn on x, a rate in [0, 1] on y) as inline SVG."""
    width, height, left, bottom, top, right = 420, 240, 44, 30, 24, 12
    longest = max((len(v) for _, v in series), default=0)
    span = max(longest - 1, 1)

    def x(t: int) -> float:
        return left + (width - left - right) * t / span

    def y(v: float) -> float:
        return top + (height - top - bottom) * (1 - v)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f'<text x="{width / 2}" y="15" text-anchor="middle" font-size="12">{html.escape(title)}</text>',
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            f'stroke="#ddd"/><text x="{left - 4}" y="{y(tick) + 4:.1f}" text-anchor="end" '
            f'font-size="10">{tick:.2f}</text>'
        )
    every = max(1, -(-longest // 10))  # at most about ten tick labels
    for t in range(0, longest, every):
        parts.append(
            f'<text x="{x(t):.1f}" y="{height - bottom + 14}" text-anchor="middle" font-size="10">'
            f"{t + 1}</text>"
        )
    parts.append(f'<text x="{width / 2}" y="{height - 2}" text-anchor="middle" font-size="10">turn</text>')
    parts.append(
        f'<text x="10" y="{top + (height - top - bottom) / 2}" font-size="10" text-anchor="middle" '
        f'transform="rotate(-90 10 {top + (height - top - bottom) / 2})">{html.escape(y_label)}</text>'
    )
    for k, (name, values) in enumerate(series):
        color = PALETTE[k % len(PALETTE)]
        points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in enumerate(values))
        if len(values) == 1:
            parts.append(f'<circle cx="{x(0):.1f}" cy="{y(values[0]):.1f}" r="3" fill="{color}"/>')
        elif values:
            dash = "" if k == 0 else f' stroke-dasharray="{3 + 2 * k} 3"'  # overlapping runs stay visible
            parts.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{points}">'
                f"<title>{html.escape(name)}</title></polyline>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _html_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A titled HTML table (``<h3>`` and ``<table>``), every cell escaped."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<h3>{html.escape(title)}</h3><table><tr>{head}</tr>{body}</table>"


def render_html(grouped: dict[str, list[dict[str, Any]]]) -> str:
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8"><title>agentgym leaderboard</title>',
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "font-size:13px}th{background:#f4f4f4}.charts{display:flex;flex-wrap:wrap;gap:1em}"
        ".legend span{display:inline-block;margin-right:1em;font-size:13px}</style></head><body>",
        "<h1>agentgym leaderboard</h1>",
        "<p>One stored JSON per run (<code>leaderboards/runs/</code>); rendered by "
        "<code>agentgym leaderboard</code>. Curves: cumulative success by turn and the format-valid rate of "
        "each turn.</p>",
    ]
    for env_id, env_runs in grouped.items():
        out.append(f'<h2 id="{env_slug(env_id)}">{html.escape(env_id)}</h2>')
        for settings, runs in settings_sections(env_runs):
            rows = [_row(rank, run) for rank, run in enumerate(runs, start=1)]
            out.append(_html_table(_settings_title(settings), COLUMNS, rows))
            legend = "".join(
                f'<span style="color:{PALETTE[k % len(PALETTE)]}">'
                f"&#9632; {html.escape(_policy_label(r))}</span>"
                for k, r in enumerate(runs)
            )
            success = [(_policy_label(r), r["metrics"].get("success_by_turn", [])) for r in runs]
            valid = [(_policy_label(r), r["metrics"].get("format_valid_rate_per_turn", [])) for r in runs]
            out.append(
                f'<div class="legend">{legend}</div><div class="charts">'
                f"{_svg_chart('success within t turns', success, 'success')}"
                f"{_svg_chart('format-valid rate at turn t', valid, 'format-valid')}</div>"
            )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


ENGINEER_COLUMNS = (
    "#",
    "agent",
    "driver model",
    "base model",
    "budget",
    "baseline",
    "best",
    "improvement",
    "submissions",
    "valid rate",
    "copies",
    "time to best (s)",
    "best's training",
    "date",
    "config",
)


def _engineer_row(rank: int, run: dict[str, Any]) -> list[str]:
    m = run["metrics"]
    budget = run.get("budget_s")
    return [
        str(rank),
        str(run["agent"]),
        str(run.get("driver_model") or "-"),
        str(run.get("base_model")),
        "-" if budget is None else f"{budget / 3600:.2f} h",
        _fmt(m.get("baseline")),
        _fmt(m.get("best_score")),
        _fmt(m.get("improvement")),
        str(m.get("submissions")),
        _fmt(m.get("valid_submission_rate"), 2),
        str(m.get("copy_model_count")),
        _fmt(m.get("time_to_best"), 0),
        str(m.get("best_training_type") or "-"),
        str(run.get("date") or "-")[:10],
        run["config_hash"],
    ]


def render_engineer_markdown(grouped: dict[str, list[dict[str, Any]]]) -> str:
    lines = [
        "# agentgym engineer",
        "",
        "Agents that engineer the post-training of a base model within a budget (`agentgym engineer`), one "
        "row per (agent, driver model, task, base model, budget); best improvement over the base model's "
        "held-out score first. Rendered by `agentgym leaderboard` from `engineer_runs/`.",
    ]
    for task, runs in grouped.items():
        lines += ["", f"## {task}", "", "| " + " | ".join(ENGINEER_COLUMNS) + " |"]
        lines.append("|" + "---|" * len(ENGINEER_COLUMNS))
        for rank, run in enumerate(runs, start=1):
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _engineer_row(rank, run)) + " |")
    return "\n".join(lines) + "\n"


def render_engineer_html(grouped: dict[str, list[dict[str, Any]]]) -> str:
    out = ['<h2 id="engineer">agentgym engineer</h2>']
    for task, runs in grouped.items():
        rows = [_engineer_row(rank, run) for rank, run in enumerate(runs, start=1)]
        out.append(_html_table(task, ENGINEER_COLUMNS, rows))
    return "\n".join(out)


def rendered(runs: Sequence[dict[str, Any]], engineer_runs: Sequence[dict[str, Any]] = ()) -> dict[str, str]:
    """File name -> text of every rendered file: ``README.md``, one ``<env>.md`` per environment and
    ``index.html`` (and ``engineer.md`` when there are engineer runs). Depends on the runs alone (not on
    their order), never on the clock or the machine."""
    grouped = boards(runs)
    files = {}
    index = [
        "# Leaderboards",
        "",
        "Rendered by `agentgym leaderboard` from the run files in `runs/` "
        "(one JSON per `agentgym eval --submit`). Open `index.html` for the curves.",
        "",
    ]
    for env_id, env_runs in grouped.items():
        name = f"{env_slug(env_id)}.md"
        files[name] = render_markdown(env_id, env_runs)
        settings, section = settings_sections(env_runs)[0]
        best = section[0]
        index.append(
            f"- [{env_id}]({name}): {len(env_runs)} runs; best with {_settings_title(settings)} "
            f"{_policy_label(best)} (success {best['metrics']['success_rate']:.3f})"
        )
    page = render_html(grouped)
    if engineer_runs:
        engineer = engineer_boards(engineer_runs)
        files["engineer.md"] = render_engineer_markdown(engineer)
        index.append(
            f"- [agentgym engineer](engineer.md): {len(engineer_runs)} runs over {len(engineer)} tasks"
        )
        page = page.replace("</body></html>", render_engineer_html(engineer) + "\n</body></html>")
    files["README.md"] = "\n".join(index) + "\n"
    files["index.html"] = page
    return files


_BOARD_ROW_HASH = re.compile(r"^\| \d+ \|.*\| ([0-9a-f]{12}) \|$", re.MULTILINE)


def _rows_without_run(directory: Path, runs: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """Config hashes on the boards now in ``directory`` that no stored run has: rows a rendering drops.
    ``runs`` holds the eval runs and the engineer runs."""
    stored = {run["config_hash"] for run in runs}
    missing = {}
    for board in sorted(directory.glob("*.md")):
        if board.name == "README.md":
            continue
        lost = [h for h in _BOARD_ROW_HASH.findall(board.read_text(encoding="utf-8")) if h not in stored]
        if lost:
            missing[board.name] = lost
    return missing


def render(directory: str | Path = "leaderboards") -> list[Path]:
    """Write ``README.md``, one ``<env>.md`` per environment and ``index.html`` from all the stored runs.

    Rows of the boards now there whose run file is gone are dropped, with a warning: that is a deleted run,
    or a copy of the folder without its ``runs/``."""
    directory = Path(directory)
    runs = load_runs(directory)
    engineer_runs = load_engineer_runs(directory)
    for board, hashes in _rows_without_run(directory, [*runs, *engineer_runs]).items():
        warnings.warn(
            f"{directory / board}: dropping {len(hashes)} row(s) with no run file in {directory / RUNS} "
            f"(config {', '.join(hashes)})",
            stacklevel=2,
        )
    written = []
    for name, text in rendered(runs, engineer_runs).items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


# ----- command line -----


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    summaries = []
    for out in args.add:  # every one is read before any is added
        summary_file = Path(out) / "summary.json"
        if not summary_file.is_file():
            raise UsageError(f"{summary_file} does not exist; run `agentgym eval --out {out}` first")
        what = "the summary of an `agentgym eval --out` run"
        summaries.append(read_json_file(summary_file, what, SUMMARY_KEYS))
    if summaries:
        check_writable_dir(Path(args.dir) / RUNS, "--dir")
    for summary in summaries:
        print(f"added {submit_run(summary, args.dir, notes=args.notes)}")
    if not load_runs(args.dir) and not load_engineer_runs(args.dir):
        raise UsageError(f"no runs in {Path(args.dir) / RUNS}; add one with `agentgym eval --submit`")
    check_writable_dir(args.dir, "--dir")
    for path in render(args.dir):
        print(f"wrote {path}")
    return 0


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("leaderboard", help="render leaderboards/ to Markdown and HTML")
    parser.add_argument("--dir", default="leaderboards", help="the leaderboard folder (runs/ inside)")
    parser.add_argument(
        "--add",
        nargs="*",
        default=[],
        metavar="OUT",
        help="first add the summary.json of these `agentgym eval --out` folders",
    )
    parser.add_argument("--notes", default="", help="a note stored with the runs added by --add")
    parser.set_defaults(func=_cmd_leaderboard)

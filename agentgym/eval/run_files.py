"""The files of an eval run directory, written so that a run killed at any moment can resume.

- ``run.json``: what the run is (env, policy, seed, kwargs). A directory holds one run: resuming with a
  different one is refused rather than mixing episodes of two runs.
- ``trajectories.jsonl``: one line per finished episode (:func:`episode_record`), appended, flushed and
  fsynced (:class:`TrajectoryLog`), so a kill loses at most the episodes in flight; a torn last line is
  cut off when the log is read back.
- ``summary.json``: rewritten whole and atomically (write a temporary file, then rename).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agentgym.rollout import Episode


class TrajectoryLog:
    """An append-only JSONL file of episode records that survives being killed mid-write."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[dict[str, Any]]:
        """Every complete record; a torn or corrupt tail is cut off the file so appends stay clean."""
        if not self.path.exists():
            return []
        records, good_bytes = [], 0
        with self.path.open("rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    break
                good_bytes += len(line)
        if good_bytes != self.path.stat().st_size:
            with self.path.open("r+b") as f:
                f.truncate(good_bytes)
        return records

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


def episode_record(episode: Episode) -> dict[str, Any]:
    """The ``trajectories.jsonl`` line of an episode, with the exact sampled token ids of model policies
    (``response_ids``, one list per turn) so diagnostics score what was generated, not a re-tokenization."""
    record = episode.to_record()
    if any(t.response_ids is not None for t in episode.turns):
        record["response_ids"] = [t.response_ids for t in episode.turns]
    return record


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON; readers see the old file or the new one, never a partial one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_summary(out: str | Path, summary: dict[str, Any]) -> None:
    """(Re)write ``OUT/summary.json`` atomically."""
    write_json_atomic(Path(out) / "summary.json", summary)


def write_trajectories(out: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """(Re)write ``OUT/trajectories.jsonl`` whole, atomically, one record per line."""
    path = Path(out) / "trajectories.jsonl"
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def run_identity(
    env_id: str, policy_spec: str, seed: int, env_kwargs: dict[str, Any], policy_kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The content of ``run.json``: what makes two runs the same run."""
    return {
        "env": env_id,
        "policy": policy_spec,
        "seed": seed,
        "env_kwargs": env_kwargs,
        "policy_kwargs": policy_kwargs,
    }


def claim_run_dir(out: str | Path, run: dict[str, Any]) -> Path:
    """Create ``out`` for ``run`` (see :func:`run_identity`), or check that it already holds that run."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run_file = out / "run.json"
    if run_file.exists():
        previous = json.loads(run_file.read_text())
        if previous != run:
            raise ValueError(f"{out} holds a different run ({previous}); use another --out to evaluate {run}")
    else:
        write_json_atomic(run_file, run)
    return out

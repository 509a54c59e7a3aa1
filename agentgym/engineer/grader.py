"""The grader of an engineer run: the base model's baseline, and every submitted model scored on the task's
held-out split, each submission recorded.

A submission goes through these steps, and stops at the first that fails (``status`` rejected, with the
reason):

1. **Path.** ``model_path`` is read as the agent sees the file system (:class:`WorkspaceView`): relative
   to the workspace, absolute under its mount point (``/workspace``) or under another mounted folder (the
   base model), or absolute on the host under one of those folders. Symbolic links are followed as the
   agent's sandbox would follow them, and a path that leads anywhere else is rejected: nothing outside
   the workspace and its mounts can be submitted, a symlink included. A folder without ``config.json``
   that holds ``checkpoint-N`` folders (an ``agentgym train`` run) stands for its newest checkpoint.
2. **Copy.** The model's files (the folder's regular files, not its sub-folders nor optimizer state) are
   copied into the grader's folder before anything reads them, each opened without following a link and
   checked, by the path the kernel reports for the open file, to lie inside an allowed folder; so the
   agent can neither swap the weights during an evaluation nor point a file at something it cannot read.
3. **Load check.** ``config.json`` must load, every ``*.safetensors`` file must be whole (its header
   parses and its size is exactly what the header says: a file cut short by a kill mid-save is caught),
   every shard an index names must be there, and the tokenizer must load.
4. **Evaluation** through ``agentgym.eval.runner.evaluate`` with the ``hf:`` policy, greedy, on the
   held-out split, in ``evals/<model hash>/`` (resumable; ``workers`` processes). The same files
   submitted again are not evaluated again: the earlier score is reused (``cached_from``). An exception
   during the evaluation gives status ``error``.

One evaluation at a time: :meth:`Grader.evaluate` holds a lock for steps 2 to 4, so concurrent submissions
queue and each gets its own answer. After :meth:`Grader.close` (the budget is over) a new submission, or
one still waiting for its turn, is rejected with "budget over"; an evaluation already running finishes
and is recorded.

``submissions.jsonl`` holds one line per submission, accepted or not, appended, flushed and fsynced (a
line torn by a kill is cut off when the file is read back):
``submission`` (1, 2, ...), ``time`` (unix, arrival), ``elapsed_s`` (arrival - run start), ``wait_s``
(queued behind other evaluations), ``eval_s``, ``done_time`` (unix, answer ready), ``model_path`` (as the
agent gave it), ``resolved_path`` (host), ``status`` (scored / rejected / error), ``reason``, ``score``,
``score_ci95`` (Wilson), ``successes``, ``episodes``, ``format_valid_rate``, ``baseline``,
``improvement`` (score - baseline), ``best`` (best score so far), ``model_hash`` (every copied file),
``weights_hash`` (tensor names, dtypes, shapes and bytes: independent of sharding and file metadata),
``same_as_base`` (weights identical to the base model's: a copy, whatever its path), ``training_type``
and ``cached_from``.

``training_type`` comes from the model folder: ``training.json`` with ``{"training_type": ...}`` written
by the agent, else the ``config.yaml`` that ``agentgym train`` writes into its run folder (beside
``checkpoint-N``): ``sft`` (only the SFT warm start: checkpoint-0 after it, or no RL steps), ``grpo`` /
``ppo`` / ``drgrpo`` (RL only), ``sft+rl`` (an SFT warm start or interleaved SFT, then RL), ``none``
(checkpoint-0 of a run without SFT: the starting model); else ``unknown``.

The baseline (the base model evaluated the same way) is computed once and cached in ``baseline.json``,
keyed by the task, the evaluation settings and the base model's content hash: a rerun or a resumed run
reuses it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from agentgym.engineer.tasks import Task, get_task
from agentgym.errors import UsageError
from agentgym.eval.metrics import is_aborted, wilson_interval
from agentgym.eval.run_files import TrajectoryLog, latest_by_seed, write_json_atomic
from agentgym.eval.runner import evaluate as run_eval

SUBMISSIONS = "submissions.jsonl"
BASELINE = "baseline.json"
MAX_SYMLINKS = 40
MAX_PATH_CHARS = 4096
# training state that is not part of the model: never copied, never hashed
SKIPPED_FILES = re.compile(
    r"^(trainer_state\.pt|optimizer\.pt|scheduler\.pt|rng_state.*\.pth|training_args\.bin)$"
)
WEIGHT_FILE = re.compile(r".*\.(safetensors|bin|pt|pth|gguf)$")
# pickles run code when loaded, and the grader runs outside the sandbox: submissions are safetensors only
PICKLED = re.compile(r".*\.(bin|pt|pth|pkl|pickle|ckpt)$|.*\.bin\.index\.json$")
HASH_CHUNK = 1 << 22
BUDGET_OVER = "budget over: the run's deadline has passed, submissions are closed"


class Rejected(Exception):
    """A submission that cannot be evaluated; the message is the reason the agent reads."""


# ----- the agent's view of the file system -----
class WorkspaceView:
    """The file system as the agent sees it: absolute prefixes of its sandbox -> host folders.

    ``mounts`` maps each sandbox path to the host folder shown there; the workspace is shown at
    ``workspace_mount``. :meth:`resolve` follows a path component by component, reading symbolic links on
    the host and interpreting their targets in the sandbox, so a link to ``/workspace/output/v1`` works and
    a link to ``/etc`` or ``../..`` is outside. An absolute host path under one of the folders is accepted
    too (an agent run without a sandbox sees host paths)."""

    def __init__(self, workspace: Path, workspace_mount: str = "/workspace", mounts: Mapping[str, Path] = {}):
        self.workspace = Path(workspace)
        pairs = {PurePosixPath(workspace_mount): self.workspace}
        pairs.update({PurePosixPath(k): Path(v) for k, v in mounts.items()})
        for prefix in pairs:
            if not prefix.is_absolute():
                raise ValueError(f"a sandbox mount point must be absolute, got {str(prefix)!r}")
        # longest prefix first, so a mount inside the workspace wins over the workspace
        self.mounts = dict(sorted(pairs.items(), key=lambda kv: -len(kv[0].parts)))
        self.allowed = [Path(os.path.realpath(h)) for h in self.mounts.values()]

    def to_host(self, path: PurePosixPath) -> Path | None:
        for prefix, host in self.mounts.items():
            if path == prefix or path.is_relative_to(prefix):
                return host.joinpath(*path.parts[len(prefix.parts) :])
        return None

    def from_host(self, path: PurePosixPath) -> PurePosixPath | None:
        """The sandbox path of an absolute host path under a mounted folder (as given or its real path)."""
        for prefix, host in self.mounts.items():
            for base in (PurePosixPath(host), PurePosixPath(os.path.realpath(host))):
                if path == base or path.is_relative_to(base):
                    return prefix.joinpath(*path.parts[len(base.parts) :])
        return None

    def _is_ancestor(self, path: PurePosixPath) -> bool:
        return any(prefix.is_relative_to(path) and prefix != path for prefix in self.mounts)

    def sandbox_path(self, given: str) -> PurePosixPath:
        """The absolute sandbox path of what the agent sent (not yet resolved)."""
        if not isinstance(given, str) or not given.strip():
            raise Rejected("model_path must be a non-empty string")
        if "\x00" in given or len(given) > MAX_PATH_CHARS:
            raise Rejected("model_path is not a valid path")
        path = PurePosixPath(given)
        workspace_mount = next(p for p, h in self.mounts.items() if h == self.workspace)
        if not path.is_absolute():
            return workspace_mount / path
        if self.to_host(path) is not None or self._is_ancestor(path):
            return path
        mapped = self.from_host(path)
        if mapped is None:
            raise Rejected(
                f"{given} is outside the workspace: submit a model folder inside {workspace_mount}"
            )
        return mapped

    def resolve(self, given: str) -> tuple[PurePosixPath, Path]:
        """(sandbox path, host path) of ``given`` with every symbolic link followed; :class:`Rejected` if it
        leads outside the workspace and its mounts or does not exist."""
        pending = list(self.sandbox_path(given).parts[1:])
        current = PurePosixPath("/")
        hops = 0
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                current = current.parent
                continue
            candidate = current / part
            if (
                candidate in self.mounts
            ):  # a mount point is the folder shown there, even if a link on the host
                current = candidate
                continue
            host = self.to_host(candidate)
            if host is None:
                if self._is_ancestor(candidate):
                    current = candidate
                    continue
                raise Rejected(f"{given} leads outside the workspace (to {candidate})")
            if host.is_symlink():
                hops += 1
                if hops > MAX_SYMLINKS:
                    raise Rejected(f"{given}: too many levels of symbolic links")
                target = PurePosixPath(os.readlink(host))
                if target.is_absolute():
                    if self.to_host(target) is None and not self._is_ancestor(target):
                        mapped = self.from_host(target)
                        if mapped is None:
                            raise Rejected(f"{given} is a symbolic link that leads outside the workspace")
                        target = mapped
                    current = PurePosixPath("/")
                    pending = list(target.parts[1:]) + pending
                else:
                    pending = list(target.parts) + pending
                continue
            current = candidate
        host = self.to_host(current)
        if host is None:
            raise Rejected(f"{given} is outside the workspace")
        if not host.exists():
            raise Rejected(f"{given} does not exist")
        return current, host

    def open_file(self, host: Path) -> int:
        """A read-only descriptor of the regular file ``host`` (a resolved path, never a link), checked by
        the path the kernel gives for the open file to lie inside an allowed folder."""
        try:
            fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise Rejected(f"cannot open {host.name}: {exc.strerror}") from None
        try:
            real = (
                Path(os.readlink(f"/proc/self/fd/{fd}")) if Path("/proc/self/fd").is_dir() else host.resolve()
            )
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise Rejected(f"{host.name} is not a regular file")
            if not any(real == root or real.is_relative_to(root) for root in self.allowed):
                raise Rejected(f"{host.name} lies outside the workspace")
        except BaseException:
            os.close(fd)
            raise
        return fd


# ----- model files -----
def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def safetensors_header(path: Path) -> dict[str, Any]:
    """The header of a ``.safetensors`` file; ``ValueError`` if the file is not whole: the header does
    not parse, or the file is not exactly as long as the header's offsets say (a truncated write)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path.name} is truncated (no header)")
        (length,) = struct.unpack("<Q", head)
        if length > min(size - 8, 100_000_000):
            raise ValueError(f"{path.name} is truncated or not a safetensors file (header of {length} bytes)")
        try:
            header = json.loads(f.read(length))
        except ValueError:
            raise ValueError(f"{path.name} has a header that does not parse") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path.name} has a malformed header")
    end = 0
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, stop = (int(x) for x in spec["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path.name}: tensor {name!r} has no data offsets") from None
        if not 0 <= begin <= stop:
            raise ValueError(f"{path.name}: tensor {name!r} has bad data offsets")
        end = max(end, stop)
    if size != 8 + length + end:
        raise ValueError(
            f"{path.name} is {size} bytes but its header describes {8 + length + end}: the file is "
            "truncated (written while the model was being saved?) or corrupt"
        )
    return header


def weights_hash(model_dir: Path) -> str:
    """A hash of the model's weights: for ``.safetensors`` every tensor's name, dtype, shape and bytes, in
    name order (the same whatever the sharding, the tensor order in the files or their metadata); for other
    weight files (``.bin``, ...) their bytes. Equal hashes mean identical weights."""
    digest = hashlib.sha256()
    tensors: list[tuple[str, Path, dict[str, Any], int]] = []
    for path in sorted(model_dir.iterdir()):
        if not path.is_file() or not WEIGHT_FILE.match(path.name) or SKIPPED_FILES.match(path.name):
            continue
        if path.suffix == ".safetensors":
            header = safetensors_header(path)
            start = 8 + struct.unpack("<Q", path.open("rb").read(8))[0]
            tensors += [(name, path, spec, start) for name, spec in header.items() if name != "__metadata__"]
        else:
            digest.update(f"file {path.name} {_sha256_file(path)}\n".encode())
    for name, path, spec, start in sorted(tensors, key=lambda t: t[0]):
        begin, stop = spec["data_offsets"]
        digest.update(f"tensor {name} {spec.get('dtype')} {spec.get('shape')}\n".encode())
        with path.open("rb") as f:
            f.seek(start + begin)
            left = stop - begin
            while left > 0:
                chunk = f.read(min(HASH_CHUNK, left))
                if not chunk:
                    raise ValueError(f"{path.name} is truncated")
                digest.update(chunk)
                left -= len(chunk)
    return digest.hexdigest()


def model_hash(model_dir: Path) -> str:
    """A hash of every file the evaluation reads (weights, config, tokenizer): equal hashes, equal scores."""
    digest = hashlib.sha256()
    for path in sorted(model_dir.iterdir()):
        if path.is_file() and not SKIPPED_FILES.match(path.name):
            digest.update(f"{path.name} {_sha256_file(path)}\n".encode())
    return digest.hexdigest()


def check_model(model_dir: Path, pickles: Sequence[str] = ()) -> None:
    """Raise :class:`Rejected` with the reason if the model in ``model_dir`` cannot load: no or a broken
    ``config.json``, no ``.safetensors`` weights (``pickles``: the pickled weight files the submission had
    instead, left out), a truncated ``.safetensors`` file, a shard missing from its index, or a tokenizer
    that does not load. Reads headers only, never the weights."""
    config = model_dir / "config.json"
    if not config.is_file():
        raise Rejected("the model does not load: config.json is missing (is the model still being saved?)")
    try:
        if not isinstance(json.loads(config.read_text(encoding="utf-8")), dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        raise Rejected(f"the model does not load: config.json is not valid JSON ({exc})") from None
    files = {p.name for p in model_dir.iterdir() if p.is_file()}
    for index in sorted(n for n in files if n.endswith(".safetensors.index.json")):
        try:
            shards = set(json.loads((model_dir / index).read_text(encoding="utf-8"))["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError):
            raise Rejected(f"the model does not load: {index} is not a valid shard index") from None
        missing = sorted(shards - files)
        if missing:
            raise Rejected(f"the model does not load: {index} names missing shards {', '.join(missing[:5])}")
    weights = sorted(n for n in files if n.endswith(".safetensors"))
    if not weights and pickles:
        raise Rejected(
            f"only safetensors weights are accepted, and the model has {', '.join(sorted(pickles)[:3])} "
            "(a pickle, which can run code when loaded): save it with save_pretrained(path) "
            "(safe_serialization is the default)"
        )
    if not weights:
        raise Rejected("the model does not load: no weight files (*.safetensors)")
    for name in weights:
        try:
            safetensors_header(model_dir / name)
        except ValueError as exc:
            raise Rejected(f"the model does not load: {exc}") from None
    try:
        from transformers import AutoConfig, AutoTokenizer

        AutoConfig.from_pretrained(model_dir)
        AutoTokenizer.from_pretrained(model_dir)
    except Exception as exc:  # noqa: BLE001 - any failure to load is the submission's, reported as such
        raise Rejected(f"the model does not load: {_one_line(exc)}") from None


def _one_line(exc: BaseException, limit: int = 400) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[-1] if lines else ''}".rstrip(": ")
    return text[:limit]


_TRAINING_TYPE = re.compile(r"^[a-z0-9+_\-]{1,32}$")


def training_type(files: Mapping[str, bytes], checkpoint_step: int | None) -> str:
    """The training type of a model from small files of its folder and run folder (see the module doc):
    ``files`` maps ``training.json`` / ``config.yaml`` to their bytes; ``checkpoint_step`` is N of a
    ``checkpoint-N`` folder."""
    declared = files.get("training.json")
    if declared is not None:
        try:
            value = str(json.loads(declared).get("training_type", "")).strip().lower()
            if _TRAINING_TYPE.match(value):
                return value
        except (ValueError, AttributeError):
            pass
    raw = files.get("config.yaml")
    if raw is None:
        return "unknown"
    try:
        import yaml

        config = yaml.safe_load(raw)
        algorithm = str(config["algorithm"]["name"])
        sft = int((config.get("sft") or {}).get("episodes") or 0) > 0
        interleave = bool((config.get("interleave") or {}).get("enabled"))
        steps = int((config.get("trainer") or {}).get("steps") or 0)
    except Exception:  # noqa: BLE001 - not an agentgym train config
        return "unknown"
    rl = (checkpoint_step if checkpoint_step is not None else steps) > 0
    if not rl:
        return "sft" if sft else "none"
    return "sft+rl" if sft or interleave else algorithm


# ----- the log -----
class SubmissionLog:
    """``submissions.jsonl``: one JSON object per line, appended, flushed and fsynced; a last line torn by
    a kill is cut off when read back, any other unreadable line skipped."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        records, good = [], 0
        data = self.path.read_bytes()
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            good += len(line)
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        if good != len(data):
            with self.path.open("r+b") as f:
                f.truncate(good)
        return records

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


# ----- the grader -----
def _portable(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Env kwargs for a cache key: a file path becomes its content hash, so the key does not depend on
    where the data lives."""
    out: dict[str, Any] = {}
    for key, value in sorted(kwargs.items()):
        if isinstance(value, str) and os.sep in value and Path(value).is_file():
            out[key] = f"sha256:{_sha256_file(Path(value))}"
        else:
            out[key] = value
    return out


def read_completed(out: Path, seeds: list[int]) -> list[dict[str, Any]]:
    """The completed (not aborted) episode records of an eval folder for ``seeds``."""
    stored = latest_by_seed(TrajectoryLog(out / "trajectories.jsonl").load())
    return [stored[s] for s in seeds if s in stored and not is_aborted(stored[s])]


class Grader:
    """Scores submitted models of one engineer run on the task's held-out split (see the module doc).

    ``task``: a :class:`Task` or its name. ``base_model``: the base model's folder (its weights are the
    baseline and the reference of ``same_as_base``). ``grader_dir``: where the grader writes (never shown
    to the agent). ``workspace`` / ``workspace_mount`` / ``mounts``: the agent's view of the file system
    (:class:`WorkspaceView`). ``workers``: eval processes. ``episodes``: held-out episodes (default the
    task's). ``started_at``: the run's start (unix), for ``elapsed_s``. ``policy_overrides`` /
    ``env_overrides``: changes to the task's evaluation settings (small tests; they enter the cache key).
    ``keep_models``: keep the copy of each evaluated model under ``models/``."""

    def __init__(
        self,
        task: Task | str,
        base_model: str | Path,
        grader_dir: str | Path,
        *,
        workspace: str | Path | None = None,
        workspace_mount: str = "/workspace",
        mounts: Mapping[str, Path] | None = None,
        workers: int = 1,
        episodes: int | None = None,
        started_at: float | None = None,
        batch_size: int | None = None,
        progress: bool = False,
        keep_models: bool = False,
        policy_overrides: Mapping[str, Any] | None = None,
        env_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.task = get_task(task) if isinstance(task, str) else task
        if not self.task.resolved:
            self.task = self.task.resolve()
        self.base_model = Path(base_model)
        if not (self.base_model / "config.json").is_file():
            raise UsageError(f"the base model {base_model} is not a local model folder (no config.json)")
        if workers < 1:
            raise UsageError("workers must be at least 1")
        self.grader_dir = Path(grader_dir)
        self.grader_dir.mkdir(parents=True, exist_ok=True)
        self.view = WorkspaceView(
            Path(workspace or self.grader_dir / "workspace"), workspace_mount, mounts or {}
        )
        self.workers = workers
        self.episodes = episodes or self.task.heldout_episodes
        if self.episodes < 1:
            raise UsageError("episodes must be at least 1")
        self.started_at = time.time() if started_at is None else float(started_at)
        self.batch_size, self.progress, self.keep_models = batch_size, progress, keep_models
        self.policy_kwargs = {**self.task.eval_policy_kwargs, **(policy_overrides or {})}
        self.env_overrides = dict(env_overrides or {})
        self.log = SubmissionLog(self.grader_dir / SUBMISSIONS)
        self.records = self.log.load()
        self.evaluations = 0  # evaluations actually run by this object (cache hits do not count)
        self.closed = False
        self.deadline_unix: float | None = None  # when set, submissions close by themselves then
        self.queued = 0  # submissions waiting for the running evaluation
        self.evaluating = False
        self._eval_lock = threading.RLock()  # one evaluation at a time (the baseline's included)
        self._log_lock = threading.Lock()  # numbering and appending
        self._env_kwargs: dict[str, Any] | None = None
        self._base_hashes: tuple[str, str] | None = None
        self._baseline: dict[str, Any] | None = None
        self._settings: dict[str, Any] | None = None

    # ----- settings -----
    def env_kwargs(self) -> dict[str, Any]:
        if self._env_kwargs is None:
            self._env_kwargs = {**self.task.heldout_env_kwargs(self.grader_dir), **self.env_overrides}
        return self._env_kwargs

    def base_hashes(self) -> tuple[str, str]:
        """(model hash, weights hash) of the base model."""
        if self._base_hashes is None:
            self._base_hashes = (model_hash(self.base_model), weights_hash(self.base_model))
        return self._base_hashes

    def eval_settings(self) -> dict[str, Any]:
        """What defines an evaluation besides the model: the cache key of scores."""
        if self._settings is None:
            self._settings = self._make_settings()
        return self._settings

    def _make_settings(self) -> dict[str, Any]:
        return {
            "task": self.task.name,
            "env_id": self.task.env_id,
            "env_kwargs": _portable(self.env_kwargs()),
            "seed": self.task.heldout_seed,
            "episodes": self.episodes,
            "policy_kwargs": self.policy_kwargs,
            "score": self.task.score,
        }

    # ----- evaluating one model folder -----
    def _evaluate_folder(self, model_dir: Path, out: Path) -> dict[str, Any]:
        self.evaluations += 1
        seeds = [self.task.heldout_seed + i for i in range(self.episodes)]
        started = time.perf_counter()
        self.evaluating = True
        try:
            summary = run_eval(
                self.task.env_id,
                f"hf:{model_dir}",
                self.episodes,
                seed=self.task.heldout_seed,
                workers=self.workers,
                out=out,
                env_kwargs=self.env_kwargs(),
                policy_kwargs=dict(self.policy_kwargs),
                batch_size=self.batch_size,
                progress=self.progress,
                diagnostics=False,
            )
        finally:
            self.evaluating = False
        records = read_completed(out, seeds)
        score, hits = self.task.score_of(summary, records)
        low, high = wilson_interval(hits, len(records))
        return {
            "score": score,
            "score_ci95": [low, high],
            "successes": hits,
            "episodes": len(records),
            "aborted": summary.get("aborted", 0),
            "format_valid_rate": summary.get("format_valid_rate"),
            "eval_s": round(time.perf_counter() - started, 3),
        }

    def baseline(self) -> float:
        """The base model's score, evaluated once: cached in ``baseline.json`` under a key of the task, the
        evaluation settings and the base model's content hash."""
        return float(self.baseline_record()["score"])

    def baseline_record(self) -> dict[str, Any]:
        if self._baseline is not None:
            return self._baseline
        with self._eval_lock:
            key = {**self.eval_settings(), "base_model_hash": self.base_hashes()[0]}
            path = self.grader_dir / BASELINE
            if path.exists():
                try:
                    cached = json.loads(path.read_text(encoding="utf-8"))
                    if cached.get("key") == key:
                        self._baseline = cached
                        return cached
                except ValueError:
                    pass  # a broken cache is recomputed
            digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
            result = self._evaluate_folder(self.base_model, self.grader_dir / "baseline" / digest)
            record = {
                "key": key,
                **result,
                "base_model": str(self.base_model),
                "weights_hash": self.base_hashes()[1],
                "time": time.time(),
            }
            write_json_atomic(path, record)
            self._baseline = record
            return record

    # ----- submissions -----
    def close(self) -> None:
        """Submissions close (the budget is over): new ones, and queued ones, are rejected from now on."""
        self.closed = True

    def is_closed(self) -> bool:
        """Closed by :meth:`close`, or ``deadline_unix`` has passed (then closed for good)."""
        if not self.closed and self.deadline_unix is not None and time.time() >= self.deadline_unix:
            self.closed = True
        return self.closed

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait for the running evaluation, if any, to finish; False on timeout."""
        if not self._eval_lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        self._eval_lock.release()
        return True

    def best(self) -> float | None:
        scores = [r["score"] for r in self.records if r.get("status") == "scored"]
        return max(scores) if scores else None

    def reject(self, model_path: Any, reason: str, *, arrived: float | None = None) -> dict[str, Any]:
        """Record a submission rejected before evaluation (a bad request, the budget over)."""
        arrived = time.time() if arrived is None else arrived
        return self._record(
            {"model_path": model_path if isinstance(model_path, str) else repr(model_path)},
            arrived,
            status="rejected",
            reason=reason,
        )

    def evaluate(self, model_path: str | Path, *, arrived: float | None = None) -> dict[str, Any]:
        """Score the model at ``model_path`` (as the agent sees it) and record the submission; the record
        (see the module doc) is returned, never an exception for a bad submission."""
        arrived = time.time() if arrived is None else arrived
        given = str(model_path)
        base = {"model_path": given}
        if self.is_closed():
            return self._record(base, arrived, status="rejected", reason=BUDGET_OVER)
        try:
            sandbox, host = self.view.resolve(given)
            base["resolved_path"] = str(host)
            sandbox, host = self._model_folder(sandbox, host)
            base["resolved_path"] = str(host)
        except Rejected as exc:
            return self._record(base, arrived, status="rejected", reason=str(exc))
        with self._log_lock:
            self.queued += 1
        with self._eval_lock:
            with self._log_lock:
                self.queued -= 1
            waited = time.time() - arrived
            if self.is_closed():
                return self._record(
                    base, arrived, status="rejected", reason=BUDGET_OVER + " (while it waited for its turn)"
                )
            started = time.perf_counter()
            try:
                return self._score(base, sandbox, host, arrived, waited)
            except Rejected as exc:
                eval_s = round(time.perf_counter() - started, 3)
                return self._record(
                    base, arrived, status="rejected", reason=str(exc), wait_s=waited, eval_s=eval_s
                )
            except Exception as exc:  # noqa: BLE001 - recorded: one submission never takes the grader down
                eval_s = round(time.perf_counter() - started, 3)
                reason = f"grading failed: {_one_line(exc)}"
                return self._record(
                    base, arrived, status="error", reason=reason, wait_s=waited, eval_s=eval_s
                )

    def _model_folder(self, sandbox: PurePosixPath, host: Path) -> tuple[PurePosixPath, Path]:
        """The model folder a submitted path stands for: itself, or the newest ``checkpoint-N`` of an
        ``agentgym train`` run folder."""
        if not host.is_dir():
            raise Rejected(
                f"{sandbox} is not a folder: submit the folder that holds config.json and the weights"
            )
        if (host / "config.json").exists():
            return sandbox, host
        steps = [
            int(p.name.split("-")[1])
            for p in host.glob("checkpoint-*")
            if re.fullmatch(r"checkpoint-\d+", p.name)
        ]
        if steps:
            return self.view.resolve(str(sandbox / f"checkpoint-{max(steps)}"))
        raise Rejected(
            f"the model does not load: config.json is missing in {sandbox} (is the model still being saved?)"
        )

    def _stage(
        self, sandbox: PurePosixPath, host: Path, number_hint: str
    ) -> tuple[Path, dict[str, bytes], list[str]]:
        """Copy the model's files into ``staging/``; also return the small files that tell its training
        type (``training.json`` here, ``config.yaml`` here or in the run folder above) and the names of
        the pickled files left out."""
        tmp = self.grader_dir / "staging" / f"incoming-{number_hint}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        small: dict[str, bytes] = {}
        pickles: list[str] = []
        try:
            for entry in sorted(os.scandir(host), key=lambda e: e.name):
                if SKIPPED_FILES.match(entry.name):
                    continue
                if PICKLED.match(entry.name):
                    pickles.append(entry.name)
                    continue
                _, file_host = self.view.resolve(str(sandbox / entry.name))
                if file_host.is_dir():
                    continue  # sub-folders (adapter/, critic/) are not part of the model
                fd = self.view.open_file(file_host)
                with os.fdopen(fd, "rb") as src, (tmp / entry.name).open("wb") as dst:
                    shutil.copyfileobj(src, dst, HASH_CHUNK)
                if entry.name in ("training.json", "config.yaml"):
                    small[entry.name] = (tmp / entry.name).read_bytes()[:1_000_000]
            if "config.yaml" not in small and re.fullmatch(r"checkpoint-\d+", sandbox.name):
                with contextlib.suppress(Rejected, OSError):
                    _, above = self.view.resolve(str(sandbox.parent / "config.yaml"))
                    fd = self.view.open_file(above)
                    with os.fdopen(fd, "rb") as f:
                        small["config.yaml"] = f.read(1_000_000)
        except OSError as exc:  # the agent removed or changed the folder while it was copied
            shutil.rmtree(tmp, ignore_errors=True)
            raise Rejected(f"{sandbox} could not be read: {exc.strerror or exc}") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return tmp, small, pickles

    def _score(
        self, base: dict[str, Any], sandbox: PurePosixPath, host: Path, arrived: float, waited: float
    ) -> dict[str, Any]:
        started = time.perf_counter()
        staged, small, pickles = self._stage(sandbox, host, f"{os.getpid()}-{threading.get_ident()}")
        try:
            step = int(sandbox.name.split("-")[1]) if re.fullmatch(r"checkpoint-\d+", sandbox.name) else None
            base["training_type"] = training_type(small, step)
            check_model(staged, pickles)
            base["model_hash"] = model_hash(staged)
            base["weights_hash"] = weights_hash(staged)
            base["same_as_base"] = base["weights_hash"] == self.base_hashes()[1]
            self.baseline_record()  # computed before the first submission is scored
            earlier = next(
                (
                    r
                    for r in self.records
                    if r.get("status") == "scored"
                    and r.get("model_hash") == base["model_hash"]
                    and r.get("settings") == self._settings_digest()
                ),
                None,
            )
            if earlier is not None:
                result = {
                    k: earlier.get(k)
                    for k in ("score", "score_ci95", "successes", "episodes", "format_valid_rate")
                }
                result["cached_from"] = earlier["submission"]
                result["eval_s"] = round(time.perf_counter() - started, 3)
                return self._record(base, arrived, status="scored", wait_s=waited, **result)
            final = self.grader_dir / "models" / base["model_hash"][:16]
            if final.exists():
                shutil.rmtree(final)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, final)
            staged = final
            try:
                result = self._evaluate_folder(final, self.grader_dir / "evals" / base["model_hash"][:16])
            except Exception as exc:  # noqa: BLE001 - the submission's failure, recorded, never fatal
                reason = f"evaluation failed: {_one_line(exc)}"
                eval_s = round(time.perf_counter() - started, 3)
                return self._record(
                    base, arrived, status="error", reason=reason, wait_s=waited, eval_s=eval_s
                )
            result["eval_s"] = round(time.perf_counter() - started, 3)
            return self._record(base, arrived, status="scored", wait_s=waited, **result)
        finally:
            if not self.keep_models or staged.name.startswith("incoming-"):
                shutil.rmtree(staged, ignore_errors=True)

    def _settings_digest(self) -> str:
        return hashlib.sha256(json.dumps(self.eval_settings(), sort_keys=True).encode()).hexdigest()[:16]

    def _record(self, base: dict[str, Any], arrived: float, *, status: str, **fields: Any) -> dict[str, Any]:
        with self._log_lock:
            done = time.time()
            baseline = self._baseline["score"] if self._baseline is not None else None
            score = fields.pop("score", None)
            record: dict[str, Any] = {
                "submission": len(self.records) + 1,
                "time": round(arrived, 3),
                "elapsed_s": round(arrived - self.started_at, 3),
                "wait_s": round(fields.pop("wait_s", 0.0), 3),
                "eval_s": fields.pop("eval_s", 0.0),
                "done_time": round(done, 3),
                "model_path": base.get("model_path"),
                "resolved_path": base.get("resolved_path"),
                "status": status,
                "reason": fields.pop("reason", None),
                "score": score,
                "baseline": baseline,
                "improvement": None if score is None or baseline is None else round(score - baseline, 6),
                "best": None,
                "model_hash": base.get("model_hash"),
                "weights_hash": base.get("weights_hash"),
                "same_as_base": base.get("same_as_base"),
                "training_type": base.get("training_type"),
                "settings": self._settings_digest() if status == "scored" else None,
                **fields,
            }
            scores = [r["score"] for r in self.records if r.get("status") == "scored"]
            if status == "scored" and score is not None:
                scores.append(score)
            record["best"] = max(scores) if scores else None
            self.log.append(record)
            self.records.append(record)
            return record

    def status(self) -> dict[str, Any]:
        return {
            "task": self.task.name,
            "baseline": self._baseline["score"] if self._baseline is not None else None,
            "best": self.best(),
            "submissions": len(self.records),
            "evaluating": self.evaluating,
            "queued": self.queued,
        }

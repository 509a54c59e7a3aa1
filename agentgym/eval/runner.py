"""``agentgym eval``: play N seeded episodes of a policy on an environment and write the results.

Episode i uses seed ``seed + i``. Each finished episode is appended to ``OUT/trajectories.jsonl`` as one
line, flushed and fsynced, so a run killed at any moment loses at most the episodes in flight. Rerunning
with the same ``OUT`` reads that file (dropping a torn last line), skips the seeds already played and
plays only the rest. ``OUT/summary.json`` is rewritten at the end from every stored episode.

With ``workers > 1`` the seeds are dealt round-robin to that many processes, each with its own
environments and its own copy of the policy; they stream episodes back to this process, the only writer.

Besides the episode metrics, every summary carries the share of turns in each format state
(``turn_states``) and the cumulative success by turn (``success_by_turn``). For ``hf:`` and
``checkpoint:`` policies it also carries ``diagnostics``: mutual information (template collapse),
token entropy and control-token spikes, computed with the policy's model on the stored episodes
(``agentgym.eval.diagnostics``; ``diagnostics=False`` skips the cost).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue
import time
import traceback
from pathlib import Path
from typing import Any

import gymnasium as gym
from tqdm.auto import tqdm

import agentgym
from agentgym.eval.format_stability import trained_format_name, turn_state_shares
from agentgym.eval.metrics import summarize
from agentgym.policies import HFPolicy, Policy, make_policy
from agentgym.rollout import Episode, run_episodes


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


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_summary(out: str | Path, summary: dict[str, Any]) -> None:
    """(Re)write ``OUT/summary.json`` atomically."""
    _write_json_atomic(Path(out) / "summary.json", summary)


def default_batch_size(policy_spec: str) -> int:
    """Models gain from batched generation; scripted policies do not, and each slot costs an env."""
    return 1 if policy_spec in ("random", "oracle") else 8


def _make_env_factory(env_id: str, env_kwargs: dict[str, Any]):
    def make() -> gym.Env:
        return gym.make(env_id, **env_kwargs)

    return make


def episode_record(episode: Episode) -> dict[str, Any]:
    """The ``trajectories.jsonl`` line of an episode, with the exact sampled token ids of model policies
    (``response_ids``, one list per turn) so diagnostics score what was generated, not a re-tokenization."""
    record = episode.to_record()
    if any(t.response_ids is not None for t in episode.turns):
        record["response_ids"] = [t.response_ids for t in episode.turns]
    return record


def _worker(env_id, env_kwargs, policy_spec, policy_kwargs, seeds, batch_size, results) -> None:
    """Process entry point: play ``seeds`` and stream each record to the parent through ``results``."""
    parent = os.getppid()
    try:
        policy = make_policy(policy_spec, **policy_kwargs)

        def send(episode: Episode) -> None:
            if os.getppid() != parent:  # the parent died: stop rather than play on for nobody
                os._exit(1)
            results.put(("episode", episode_record(episode)))

        run_episodes(_make_env_factory(env_id, env_kwargs), env_id, seeds, policy, batch_size, send)
        policy.close()
        results.put(("done", None))
    except BaseException:  # noqa: BLE001 - the parent reports it
        results.put(("error", traceback.format_exc()))


def _run_in_workers(env_id, env_kwargs, policy_spec, policy_kwargs, seeds, batch_size, workers, on_record):
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    shards = [seeds[k::workers] for k in range(workers)]
    procs = [
        ctx.Process(
            target=_worker,
            args=(env_id, env_kwargs, policy_spec, policy_kwargs, shard, batch_size, results),
            daemon=True,
        )
        for shard in shards
        if shard
    ]
    for p in procs:
        p.start()
    running = len(procs)
    try:
        while running:
            try:
                kind, payload = results.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"an eval worker died with exit code {dead[0].exitcode}") from None
                continue
            if kind == "episode":
                on_record(payload)
            elif kind == "done":
                running -= 1
            else:
                raise RuntimeError(f"an eval worker failed:\n{payload}")
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join(timeout=5)


def evaluate(
    env_id: str,
    policy: str | Policy,
    episodes: int,
    *,
    seed: int = 0,
    workers: int = 1,
    out: str | Path | None = None,
    env_kwargs: dict[str, Any] | None = None,
    policy_kwargs: dict[str, Any] | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    diagnostics: bool = True,
    diagnostics_samples: int = 64,
) -> dict[str, Any]:
    """Evaluate ``policy`` on ``episodes`` seeded episodes of ``env_id``; return the summary dict.

    ``diagnostics`` adds MI, entropy and control-token spikes for model policies (``hf:``,
    ``checkpoint:``); ``diagnostics_samples`` caps the (prompt, reasoning) pairs of each MI estimate.
    """
    if episodes < 1:
        raise ValueError("episodes must be at least 1")
    if workers < 1:
        raise ValueError("workers must be at least 1")
    if env_id not in gym.registry:
        known = ", ".join(agentgym.ENVS)
        raise ValueError(f"unknown environment {env_id!r}; agentgym environments: {known}")
    env_kwargs, policy_kwargs = dict(env_kwargs or {}), dict(policy_kwargs or {})
    policy_spec = policy if isinstance(policy, str) else policy.spec
    if workers > 1 and not isinstance(policy, str):
        raise ValueError("workers > 1 needs a policy spec string, so each worker can build its own policy")
    batch_size = batch_size or default_batch_size(policy_spec)
    seeds = [seed + i for i in range(episodes)]

    run = {
        "env": env_id,
        "policy": policy_spec,
        "seed": seed,
        "env_kwargs": env_kwargs,
        "policy_kwargs": policy_kwargs,
    }
    log = None
    stored: dict[int, dict[str, Any]] = {}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        run_file = out / "run.json"
        if run_file.exists():
            previous = json.loads(run_file.read_text())
            if previous != run:
                raise ValueError(
                    f"{out} holds a different run ({previous}); use another --out to evaluate {run}"
                )
        else:
            _write_json_atomic(run_file, run)
        log = TrajectoryLog(out / "trajectories.jsonl")
        stored = {r["seed"]: r for r in log.load()}
    wanted = set(seeds)
    todo = [s for s in seeds if s not in stored]

    bar = tqdm(
        total=episodes,
        initial=episodes - len(todo),
        desc=f"{env_id} {policy_spec}",
        disable=not progress,
        unit="ep",
    )
    played = {s: stored[s] for s in seeds if s in stored}

    def on_record(record: dict[str, Any]) -> None:
        record["policy"] = policy_spec
        if log is not None:
            log.append(record)
        played[record["seed"]] = record
        bar.update(1)
        bar.set_postfix(success=f"{sum(r['success'] for r in played.values()) / len(played):.2f}")

    started = time.perf_counter()
    own: Policy | None = None if isinstance(policy, str) else policy
    try:
        try:
            if todo and workers == 1:
                if own is None:
                    own = make_policy(policy_spec, **policy_kwargs)
                run_episodes(
                    _make_env_factory(env_id, env_kwargs),
                    env_id,
                    todo,
                    own,
                    batch_size,
                    lambda ep: on_record(episode_record(ep)),
                )
            elif todo:
                _run_in_workers(
                    env_id, env_kwargs, policy_spec, policy_kwargs, todo, batch_size, workers, on_record
                )
        finally:
            bar.close()
        elapsed = time.perf_counter() - started

        records = [played[s] for s in sorted(played) if s in wanted]
        summary = build_summary(
            records,
            env_id=env_id,
            policy_spec=policy_spec,
            seed=seed,
            env_kwargs=env_kwargs,
            policy_kwargs=policy_kwargs,
            workers=workers,
            elapsed=elapsed,
            played_now=len(todo),
        )
        if diagnostics and wants_diagnostics(policy_spec, own):
            if own is None:
                own = make_policy(policy_spec, **policy_kwargs)
            summary["diagnostics"] = model_diagnostics(
                own, records, summary["response_format"], max_samples=diagnostics_samples, seed=seed
            )
    finally:
        if isinstance(policy, str) and own is not None:
            own.close()
    if out is not None:
        _write_json_atomic(out / "summary.json", summary)
    return summary


def build_summary(
    records: list[dict[str, Any]],
    *,
    env_id: str,
    policy_spec: str,
    seed: int,
    env_kwargs: dict[str, Any],
    policy_kwargs: dict[str, Any],
    workers: int,
    elapsed: float,
    played_now: int,
) -> dict[str, Any]:
    """``summary.json`` without model diagnostics (shared by ``evaluate`` and the pytest plugin)."""
    summary = {
        "env": env_id,
        "policy": policy_spec,
        **summarize(records),
        "seed": seed,
        "env_kwargs": env_kwargs,
        "policy_kwargs": policy_kwargs,
        "workers": workers,
        "elapsed_s": round(elapsed, 3),
        "episodes_played_now": played_now,
        "agentgym_version": agentgym.__version__,
    }
    summary.update(episode_reports(records, env_id, env_kwargs))
    return summary


def success_by_turn(records: list[dict[str, Any]]) -> list[float]:
    """Entry t is the share of episodes won within t + 1 turns (the success curve of the leaderboard)."""
    longest = max((r["turns"] for r in records), default=0)
    n = len(records)
    return (
        [sum(bool(r["success"]) and r["turns"] <= t + 1 for r in records) / n for t in range(longest)]
        if n
        else []
    )


def episode_reports(records: list[dict[str, Any]], env_id: str, env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Summary entries every policy gets: the response format, turn states and the success curve."""
    fmt = trained_format_name(env_id, env_kwargs)
    return {
        "response_format": fmt,
        "turn_states": turn_state_shares(records, fmt),
        "success_by_turn": success_by_turn(records),
    }


def wants_diagnostics(policy_spec: str, policy: Policy | None) -> bool:
    """Model diagnostics need the policy's model: ``hf:`` and ``checkpoint:`` policies."""
    return isinstance(policy, HFPolicy) or policy_spec.split(":", 1)[0] in ("hf", "checkpoint")


def turn_samples(policy: HFPolicy, record: dict[str, Any]) -> list[Any]:
    """The turns of a stored episode as (prompt ids, response ids) for the policy's model."""
    from agentgym.eval.diagnostics import TurnSample

    messages, samples = record["messages"], []
    stored = record.get("response_ids") or []
    turn = 0
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = policy.encode_chats([messages[:k]])[0]
        if turn < len(stored) and stored[turn] is not None:
            response = list(stored[turn])
        else:  # an episode stored without ids: re-tokenize its text (close, not token-exact)
            response = policy.tokenizer.encode(message["content"], add_special_tokens=False)
            response.append(policy.tokenizer.eos_token_id)
        samples.append(TurnSample(list(prompt), response))
        turn += 1
    return samples


def model_diagnostics(
    policy: Policy,
    records: list[dict[str, Any]],
    response_format: str,
    *,
    max_samples: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """MI, entropy and control-token spikes of stored episodes, scored with the policy's model."""
    from agentgym.eval.diagnostics import score_batch

    if not isinstance(policy, HFPolicy):
        raise ValueError(f"diagnostics need an hf: or checkpoint: policy, got {policy.spec!r}")
    started = time.perf_counter()
    episodes = [turn_samples(policy, r) for r in records]
    report = score_batch(
        policy.model,
        policy.tokenizer,
        episodes,
        response_format=response_format,
        max_samples=max_samples,
        max_scored_turns=4 * max_samples,
        seed=seed,
    )
    report["elapsed_s"] = round(time.perf_counter() - started, 3)
    return report

"""``agentgym eval``: play N seeded episodes of a policy on an environment and write the results.

Episode i uses seed ``seed + i``. Each finished episode is appended to ``OUT/trajectories.jsonl`` as one
line, flushed and fsynced, so a run killed at any moment loses at most the episodes in flight. Rerunning
with the same ``OUT`` reads that file (dropping a torn last line, skipping a corrupt one with a warning),
skips the seeds already played and plays only the rest, and the episodes the environment aborted
(``info["aborted"]``) again: the new record supersedes the aborted one. ``OUT/summary.json`` is
rewritten at the end from the latest record of each seed; its metrics are over the completed episodes
(``episodes``), the aborted ones are counted apart (``aborted``). While it runs, the eval holds a lock
on ``OUT`` (``OUT/eval.lock``): a second eval on the same ``OUT`` fails at once, naming the holder's pid.

Sampled ``hf:``/``checkpoint:`` policies draw each episode's tokens from a seed of (policy seed, episode
seed, turn), so batching, workers and resumption do not change a run's episodes
(``agentgym.policies.HFPolicy``); a sampled ``openai:`` policy sends that seed with each request. A policy
that cannot answer (a server still unreachable after its retries) aborts only that episode, which a rerun
plays again.

With ``workers > 1`` the seeds are dealt round-robin to that many processes, each with its own
environments and its own copy of the policy; they stream episodes back to this process, the only writer
(``agentgym.eval.worker_pool``; the files are ``agentgym.eval.run_files``). An ``executor`` plays them
elsewhere instead, e.g. on a Ray cluster (``agentgym.integrations.ray.RayExecutor``, ``agentgym eval
--ray``), and streams the records back the same way; an episode lost with the process playing it is
stored as aborted and played again by a rerun.

Besides the episode metrics, every summary carries the share of turns in each format state
(``turn_states``) and the cumulative success by turn (``success_by_turn``). For ``hf:`` and
``checkpoint:`` policies it also carries ``diagnostics``: mutual information (template collapse),
token entropy and control-token spikes, computed with the policy's model on the stored episodes
(``agentgym.eval.summary`` builds the summary, ``agentgym.eval.diagnostics`` the model diagnostics;
``diagnostics=False`` skips their cost).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from agentgym.errors import UsageError, check_writable_dir
from agentgym.eval.diagnostics import model_diagnostics, wants_diagnostics
from agentgym.eval.metrics import is_aborted
from agentgym.eval.run_files import (
    RunDirLock,
    TrajectoryLog,
    claim_run_dir,
    latest_by_seed,
    run_identity,
    write_summary,
)
from agentgym.eval.summary import build_summary
from agentgym.eval.worker_pool import Executor, play_here, play_in_workers
from agentgym.policies import Policy, check_policy, make_policy
from agentgym.registry import check_env


def default_batch_size(policy_spec: str) -> int:
    """Models gain from batched generation; scripted policies do not, and each slot costs an env."""
    return 1 if policy_spec in ("random", "oracle") else 8


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
    diagnostics_share: float | None = 0.25,
    executor: Executor | None = None,
) -> dict[str, Any]:
    """Evaluate ``policy`` on ``episodes`` seeded episodes of ``env_id``; return the summary dict.

    ``diagnostics`` adds MI, entropy and control-token spikes for model policies (``hf:``,
    ``checkpoint:``); ``diagnostics_samples`` caps the (prompt, reasoning) pairs of each MI estimate and
    ``diagnostics_share`` their scoring to that share of the tokens the episodes took to play (about that
    share of the evaluation's time; None: no bound).
    ``executor`` plays the episodes instead of this process or its workers (``workers`` is then unused);
    it needs a policy spec string, which it builds where it plays.
    """
    # every input is checked before anything is loaded, played or written
    for name, value, least in [("episodes", episodes, 1), ("workers", workers, 1), ("seed", seed, 0)]:
        if value < least:  # Gymnasium takes seeds >= 0
            raise UsageError(f"{name} must be at least {least}, got {value}")
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"batch_size must be at least 1 (or unset), got {batch_size}")
    if diagnostics and diagnostics_samples < 1:
        raise UsageError(
            f"diagnostics_samples must be at least 1 (or diagnostics off), got {diagnostics_samples}"
        )
    if diagnostics and diagnostics_share is not None and not diagnostics_share > 0:
        raise UsageError(f"diagnostics_share must be above 0 (or unset), got {diagnostics_share}")
    env_kwargs, policy_kwargs = dict(env_kwargs or {}), dict(policy_kwargs or {})
    check_env(env_id, env_kwargs)
    if isinstance(policy, str):
        check_policy(policy, policy_kwargs)
    policy_spec = policy if isinstance(policy, str) else policy.spec
    if workers > 1 and not isinstance(policy, str):
        raise ValueError("workers > 1 needs a policy spec string, so each worker can build its own policy")
    if executor is not None and not isinstance(policy, str):
        raise ValueError("an executor needs a policy spec string, so it can build the policy where it plays")
    if out is not None:
        check_writable_dir(out, "the output directory")
    batch_size = batch_size or default_batch_size(policy_spec)
    seeds = [seed + i for i in range(episodes)]

    # the lock comes before anything in OUT is read or written
    with RunDirLock(out) if out is not None else contextlib.nullcontext():
        log = None
        stored: dict[int, dict[str, Any]] = {}
        if out is not None:
            out = claim_run_dir(out, run_identity(env_id, policy_spec, seed, env_kwargs, policy_kwargs))
            log = TrajectoryLog(out / "trajectories.jsonl")
            stored = latest_by_seed(log.load())
        # an aborted episode is played again; its new record supersedes the stored one
        todo = [s for s in seeds if s not in stored or is_aborted(stored[s])]

        bar = tqdm(
            total=len(seeds),
            initial=len(seeds) - len(todo),
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
            completed = [r for r in played.values() if not is_aborted(r)]
            if completed:
                bar.set_postfix(success=f"{sum(r['success'] for r in completed) / len(completed):.2f}")

        started = time.perf_counter()
        own: Policy | None = None if isinstance(policy, str) else policy
        try:
            try:
                if todo and executor is not None:
                    executor.play(env_id, env_kwargs, policy_spec, policy_kwargs, todo, batch_size, on_record)
                elif todo and workers == 1:
                    if own is None:
                        own = make_policy(policy_spec, **policy_kwargs)
                    play_here(env_id, env_kwargs, todo, own, batch_size, on_record)
                elif todo:
                    play_in_workers(
                        env_id, env_kwargs, policy_spec, policy_kwargs, todo, batch_size, workers, on_record
                    )
            finally:
                bar.close()
            elapsed = time.perf_counter() - started

            records = [played[s] for s in seeds if s in played]
            summary = build_summary(
                records,
                env_id=env_id,
                policy_spec=policy_spec,
                seed=seed,
                env_kwargs=env_kwargs,
                policy_kwargs=policy_kwargs,
                workers=executor.workers if executor is not None else workers,
                elapsed=elapsed,
                played_now=len(todo),
                corrupt_lines=len(log.corrupt_lines) if log is not None else 0,
            )
            if executor is not None:
                summary["executor"] = executor.describe()
            if diagnostics and wants_diagnostics(policy_spec, own):
                if own is None:
                    own = make_policy(policy_spec, **policy_kwargs)
                completed = [r for r in records if not is_aborted(r)]
                summary["diagnostics"] = model_diagnostics(
                    own,
                    completed,
                    summary["response_format"],
                    max_samples=diagnostics_samples,
                    seed=seed,
                    progress=progress,
                    cost_share=diagnostics_share,
                )
        finally:
            if isinstance(policy, str) and own is not None:
                own.close()
        if out is not None and log is not None:
            log.compact()  # replayed aborted episodes: keep one line per seed
            write_summary(out, summary)
        return summary

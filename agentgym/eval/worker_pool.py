"""Playing seeded episodes: in this process, dealt round-robin to worker processes, or handed to an
:class:`Executor` (another way to play them, e.g. ``agentgym.integrations.ray.RayExecutor``).

Each worker process builds its own environments and its own copy of the policy (from its spec string)
and streams every finished episode back to the parent as a ``trajectories.jsonl`` record; the parent is
the only process that writes files. An executor keeps the same contract: records come back to the
caller's ``on_record``, which writes them.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import traceback
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import gymnasium as gym

from agentgym.errors import UsageError
from agentgym.eval.run_files import episode_record
from agentgym.policies import Policy, make_policy
from agentgym.registry import make_env
from agentgym.rollout import Episode, run_episodes

OnRecord = Callable[[dict[str, Any]], None]


class Executor(Protocol):
    """Plays seeds somewhere else (a cluster, a service) for ``agentgym.eval.runner.evaluate``.

    It lives above the eval package (it may import from it, not the other way round) and is handed in by
    the caller, so the runner never imports it.
    """

    workers: int  # how many episode players the last ``play`` used (reported in the summary)

    def play(
        self,
        env_id: str,
        env_kwargs: dict[str, Any],
        policy_spec: str,
        policy_kwargs: dict[str, Any],
        seeds: Sequence[int],
        batch_size: int,
        on_record: OnRecord,
    ) -> None:
        """Play one episode per seed, ``batch_size`` at a time per player; call ``on_record`` here, in
        the caller's process, with each episode's record as it arrives. An episode lost with its player
        comes back as an aborted record (``agentgym.eval.run_files.lost_episode_record``); an error in
        the environment or policy code is raised."""
        ...

    def describe(self) -> dict[str, Any]:
        """What ran the episodes, for ``summary.json`` (JSON-safe)."""
        ...


def make_env_factory(env_id: str, env_kwargs: dict[str, Any]) -> Callable[[], gym.Env]:
    def make() -> gym.Env:
        return make_env(env_id, **env_kwargs)

    return make


def play_here(
    env_id: str,
    env_kwargs: dict[str, Any],
    seeds: Sequence[int],
    policy: Policy,
    batch_size: int,
    on_record: OnRecord,
) -> None:
    """Play ``seeds`` in this process; ``on_record`` gets each episode's record as it finishes."""
    run_episodes(
        make_env_factory(env_id, env_kwargs),
        env_id,
        list(seeds),
        policy,
        batch_size,
        lambda episode: on_record(episode_record(episode)),
    )


def _worker(
    env_id: str,
    env_kwargs: dict[str, Any],
    policy_spec: str,
    policy_kwargs: dict[str, Any],
    seeds: list[int],
    batch_size: int,
    results: Any,
) -> None:
    """Process entry point: play ``seeds`` and stream each record to the parent through ``results``."""
    parent = os.getppid()
    try:
        policy = make_policy(policy_spec, **policy_kwargs)

        def send(episode: Episode) -> None:
            if os.getppid() != parent:  # the parent died: stop rather than play on for nobody
                os._exit(1)
            results.put(("episode", episode_record(episode)))

        run_episodes(make_env_factory(env_id, env_kwargs), env_id, seeds, policy, batch_size, send)
        policy.close()
        results.put(("done", None))
    except UsageError as exc:  # bad input, not a bug: the parent raises it again, as one line
        results.put(("usage", str(exc)))
    except BaseException:  # noqa: BLE001 - the parent reports it
        results.put(("error", traceback.format_exc()))


def play_in_workers(
    env_id: str,
    env_kwargs: dict[str, Any],
    policy_spec: str,
    policy_kwargs: dict[str, Any],
    seeds: Sequence[int],
    batch_size: int,
    workers: int,
    on_record: OnRecord,
) -> None:
    """Play ``seeds`` in ``workers`` processes (seed k goes to worker k mod ``workers``); ``on_record``
    runs here, in the parent, for each record. A worker's error is raised here with its traceback."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    shards = [list(seeds[k::workers]) for k in range(workers)]
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
            elif kind == "usage":
                raise UsageError(payload)
            else:
                raise RuntimeError(f"an eval worker failed:\n{payload}")
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join(timeout=5)

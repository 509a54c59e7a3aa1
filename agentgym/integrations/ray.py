"""``agentgym eval --ray [ADDRESS]``: an eval's episodes played on a Ray cluster.

:class:`RayExecutor` is an executor for ``agentgym.eval.runner.evaluate`` (``executor=``): the runner keeps
everything that touches the run directory (the lock, resuming, the progress bar, ``summary.json``), and
the executor plays the seeds it is given and hands each finished episode's record back to it at once, so
the files, the numbers and resuming are those of a local run.

How the episodes are played:

- The seeds are cut into chunks, a few per player so that fast players take more. A chunk is played like
  a local worker plays its share (``agentgym.rollout.run_episodes``, ``batch_size`` episodes at a time,
  refilled as they finish) by a streaming Ray task: it yields each episode's record as the episode ends,
  and the driver writes it before the chunk is over.
- Light environments with a scripted or served policy (``random``, ``oracle``, ``openai:``) are played
  by plain tasks, one CPU each, wherever Ray finds one.
- Model policies (``hf:``, ``checkpoint:``) and the environments that need a browser, a sandbox or a game
  engine (WebShop, CodeExec, TextWorld, ALFWorld) are played by actors, one per player, that keep the
  policy and their environments from chunk to chunk: a model loads once per actor (one GPU each on a
  cluster that has GPUs, else one CPU), a browser starts once per environment slot. An environment's
  actors also ask for one unit of a custom resource named for what it needs (:data:`ENV_RESOURCE`:
  ``browser``, ``sandbox``, ``textworld``) when some node declares it (``ray start --resources
  '{"browser": 4}'``), so they go only to nodes that have it installed.
- Sampled model policies draw an episode's tokens from a seed of (policy seed, episode seed, turn), and
  the random policy seeds itself from the chat, so how the seeds are chunked or where they run does not
  change an episode.
- A chunk whose process is lost (the actor or worker died, its node went away) has its unfinished
  episodes recorded as aborted (``agentgym.eval.run_files.lost_episode_record``): the summary counts them
  apart and a rerun plays them again, as it does episodes the environment aborted. A dead actor is
  replaced. An error raised by the environment or policy code is raised here with its traceback, as with
  local workers.

``ADDRESS``: none starts a local Ray, or attaches to the one that ``ray start`` left on this machine (or
``RAY_ADDRESS``); ``auto`` attaches to a running cluster; ``host:port`` (the head's GCS port) or
``ray://host:port`` (Ray Client, ``pip install "ray[client]"``; it cannot stream, so a chunk's records
come when the chunk ends, and chunks are smaller) attach to that one. An address where no Ray answers is
a :class:`~agentgym.errors.UsageError` within ``connect_timeout`` seconds, not a hang. Token
authentication is Ray's own: a cluster whose ``ray start`` found a token (``~/.ray/auth_token``) wants
``RAY_AUTH_MODE=token`` and that token wherever ``agentgym eval`` runs.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import queue
import socket
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import gymnasium as gym
import ray
from ray import ObjectRefGenerator
from ray.util.client import ray as ray_client

from agentgym.errors import UsageError
from agentgym.eval.run_files import episode_record, lost_episode_record
from agentgym.eval.worker_pool import OnRecord
from agentgym.policies import make_policy
from agentgym.rollout import run_episodes

# environments played by actors that keep them across chunks -> the custom resource their actors ask for
# when a node declares it
ENV_RESOURCE = {
    "agentgym/WebShop-v0": "browser",
    "agentgym/CodeExec-v0": "sandbox",
    "agentgym/TextWorld-v0": "textworld",
    "agentgym/ALFWorld-v0": "textworld",
}
MODEL_POLICIES = ("hf:", "checkpoint:")  # loaded once per actor
CHUNKS_PER_WORKER = 4  # chunks per player: enough to balance uneven players, few enough to batch well
CHUNKS_PER_WORKER_UNSTREAMED = 16  # through Ray Client a chunk's records come at its end: smaller chunks

# the start of an HTTP/2 connection (the preface, then an empty SETTINGS frame): a gRPC server, as Ray's
# GCS and Ray Client servers are, answers with a SETTINGS frame of its own
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_HTTP2_SETTINGS = 0x4


class _Borrowed(gym.Wrapper):
    """An environment lent to ``run_episodes``: closing it gives it back to its owner for the next chunk."""

    def __init__(self, env: gym.Env, idle: list[gym.Env]) -> None:
        super().__init__(env)
        self._idle = idle

    def close(self) -> None:
        self._idle.append(self.env)


class EpisodePlayer:
    """Plays chunks of seeds with one policy and a stock of environments reused from chunk to chunk.

    Every environment and policy call runs on one thread of its own, the same for the player's whole
    life: browser drivers (Playwright's) only work from the thread that started them, and the thread lets
    :meth:`stream` yield each record while the batch goes on. Used as a Ray actor (kept across chunks) and
    inside a Ray task (one chunk).
    """

    def __init__(
        self, env_id: str, env_kwargs: dict[str, Any], policy_spec: str, policy_kwargs: dict[str, Any]
    ) -> None:
        self.env_id, self.env_kwargs = env_id, env_kwargs
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentgym-player")
        self._idle: list[gym.Env] = []
        self.policy = self._thread.submit(make_policy, policy_spec, **policy_kwargs).result()

    def _lend(self) -> gym.Env:
        env = self._idle.pop() if self._idle else gym.make(self.env_id, **self.env_kwargs)
        return _Borrowed(env, self._idle)

    def stream(self, seeds: list[int], batch_size: int) -> Iterator[dict[str, Any]]:
        """Play ``seeds``; yield each episode's record as it finishes."""
        records: queue.Queue[dict[str, Any] | None] = queue.Queue()

        def play() -> None:
            run_episodes(
                self._lend,
                self.env_id,
                seeds,
                self.policy,
                batch_size,
                lambda episode: records.put(episode_record(episode)),
            )

        playing = self._thread.submit(play)
        playing.add_done_callback(lambda _: records.put(None))
        while (record := records.get()) is not None:
            yield record
        playing.result()  # an error of the environment or the policy is raised here

    def play_all(self, seeds: list[int], batch_size: int) -> list[dict[str, Any]]:
        """Play ``seeds``; return every record at the end (for Ray Client, which cannot stream)."""
        return list(self.stream(seeds, batch_size))

    def close(self) -> None:
        def close_all() -> None:
            while self._idle:
                self._idle.pop().close()
            self.policy.close()

        self._thread.submit(close_all).result()
        self._thread.shutdown()


def play_chunk(
    env_id: str,
    env_kwargs: dict[str, Any],
    policy_spec: str,
    policy_kwargs: dict[str, Any],
    seeds: list[int],
    batch_size: int,
) -> Iterator[dict[str, Any]]:
    """One chunk played by a fresh :class:`EpisodePlayer` (the body of a Ray task)."""
    player = EpisodePlayer(env_id, env_kwargs, policy_spec, policy_kwargs)
    try:
        yield from player.stream(seeds, batch_size)
    finally:
        player.close()


def play_whole_chunk(
    env_id: str,
    env_kwargs: dict[str, Any],
    policy_spec: str,
    policy_kwargs: dict[str, Any],
    seeds: list[int],
    batch_size: int,
) -> list[dict[str, Any]]:
    """:func:`play_chunk` with every record returned at the end (for Ray Client, which cannot stream)."""
    return list(play_chunk(env_id, env_kwargs, policy_spec, policy_kwargs, seeds, batch_size))


# Lost processes are not retried by Ray: their episodes are recorded aborted, and a rerun replays them.
_play_task = ray.remote(max_retries=0)(play_chunk)
_play_whole_task = ray.remote(max_retries=0)(play_whole_chunk)
_PlayerActor = ray.remote(max_restarts=0, max_task_retries=0)(EpisodePlayer)


def chunk_seeds(
    seeds: Sequence[int], workers: int, batch_size: int, per_worker: int = CHUNKS_PER_WORKER
) -> list[list[int]]:
    """Consecutive chunks of ``seeds``: about ``per_worker`` per worker, but at least a batch (or each
    worker's whole share, when that is smaller than a batch)."""
    n = len(seeds)
    size = max(min(batch_size, math.ceil(n / workers)), math.ceil(n / (workers * per_worker)), 1)
    return [list(seeds[i : i + size]) for i in range(0, n, size)]


def _lost(exc: BaseException) -> bool:
    """Whether a Ray error means the process playing a chunk was lost (its episodes are recorded aborted)
    rather than that the code failed or the request can never run (raised)."""
    errors = ray.exceptions
    if isinstance(exc, errors.RayActorError):
        return not exc.actor_init_failed
    fatal = (
        errors.RayTaskError,
        errors.TaskUnschedulableError,
        errors.ActorUnschedulableError,
        errors.RuntimeEnvSetupError,
    )
    return isinstance(exc, errors.RayError) and not isinstance(exc, fatal)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else 'no message'}"


def _host_port(address: str) -> tuple[str, int]:
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port.isdigit():
        raise UsageError(
            f"--ray takes no value (a local Ray), auto, host:port or ray://host:port; got {address!r}"
        )
    return host.strip("[]"), int(port)


def check_answers(address: str, timeout: float) -> None:
    """Raise :class:`UsageError` unless a gRPC server (Ray's GCS or Ray Client server) answers at
    ``address`` (``host:port``) within ``timeout`` seconds: Ray itself would retry for minutes."""
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(_HTTP2_HELLO)
            reply = sock.recv(9)
    except OSError as exc:
        raise UsageError(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one with `ray start --head` "
            "or give the address that it printed"
        ) from None
    if len(reply) < 9 or reply[3] != _HTTP2_SETTINGS:
        raise UsageError(f"{address} answers, but not as a Ray cluster (no gRPC server there)")


def resolve_address(address: str | None) -> str | None:
    """The ``host:port`` or ``ray://host:port`` that ``ray.init(address)`` would connect to, or None when
    it would start a local Ray. ``auto`` and no address look where Ray does (``RAY_ADDRESS``, then the
    cluster ``ray start`` left on this machine)."""
    if address in (None, "auto"):
        try:
            from ray._private.services import canonicalize_bootstrap_address
        except ImportError:  # Ray moved it: let ray.init find the cluster, unchecked
            return None
        try:
            return canonicalize_bootstrap_address(address)  # type: ignore[arg-type]
        except ConnectionError:
            raise UsageError(
                "--ray auto found no running Ray cluster on this machine (nor RAY_ADDRESS); start one with "
                "`ray start --head`, give its address, or leave --ray without a value to start a local Ray"
            ) from None
    if address == "local":
        return None
    return address


@dataclass
class _Chunk:
    seeds: list[int]
    worker: int  # which actor plays it (tasks: the slot it holds)
    received: set[int] = field(default_factory=set)


class RayExecutor:
    """Plays an eval's seeds on a Ray cluster (see the module docstring); pass it to ``evaluate``.

    ``address``: as ``agentgym eval --ray [ADDRESS]`` (None: a local Ray). ``workers``: at most this many
    chunks played at once (default: as many as the cluster has CPUs, or GPUs for a model policy on a
    cluster with GPUs). ``actors``: play in actors (True) or tasks (False) whatever the environment and
    policy (default: decide from them). Connecting happens here, within ``connect_timeout`` seconds; if
    this process is connected to Ray already, that connection is used (the address is still checked).
    :meth:`close` (or leaving the ``with`` block) disconnects, and stops the local Ray if this executor
    started it.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        workers: int | None = None,
        actors: bool | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        if workers is not None and workers < 1:
            raise UsageError("workers must be at least 1")
        self.address, self.max_workers, self.actors = address, workers, actors
        self.workers = 0  # players used by the last play()
        self.players = ""  # "tasks" or "actors", for the summary
        self._connected_here = False
        target = resolve_address(address)
        if target is not None:
            if target.startswith("ray://") and importlib.util.find_spec("grpc") is None:
                raise UsageError(f'{target} is a Ray Client address, which needs: pip install "ray[client]"')
            check_answers(target.removeprefix("ray://"), connect_timeout)
        if ray.is_initialized():  # the caller connected already
            return
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, ValueError, ray.exceptions.AuthenticationError) as exc:
            hint = ""
            if target is not None and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
                # `ray start` turns token authentication on when it finds a token (~/.ray/auth_token), and
                # Ray sends the token to an address given explicitly only when told to
                hint = (
                    "; if the cluster uses token authentication, set RAY_AUTH_MODE=token here, with its "
                    "token in ~/.ray/auth_token or RAY_AUTH_TOKEN"
                )
            raise UsageError(f"could not connect to Ray at {address}: {exc}{hint}") from None
        self._connected_here = True

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._connected_here and ray.is_initialized():
            ray.shutdown()
        self._connected_here = False

    def describe(self) -> dict[str, Any]:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        return {
            "kind": "ray",
            "address": self.address or "local",
            "nodes": len(nodes),
            "workers": self.workers,
            "players": self.players,
        }

    def _placement(
        self, env_id: str, policy_spec: str, policy_kwargs: dict[str, Any]
    ) -> tuple[bool, dict[str, Any], int]:
        """(play in actors?, the Ray options of each player, how many can run at once)."""
        model = policy_spec.startswith(MODEL_POLICIES)
        total = ray.cluster_resources()
        options: dict[str, Any] = {"num_cpus": 1}
        capacity = int(total.get("CPU", 0))
        resource = ENV_RESOURCE.get(env_id)
        if resource is not None and total.get(resource, 0) >= 1:
            options["resources"] = {resource: 1}
            capacity = min(capacity, int(total[resource]))
        on_cpu = str(policy_kwargs.get("device", "cuda")).startswith("cpu")
        if model and total.get("GPU", 0) >= 1 and not on_cpu:
            options["num_gpus"] = 1
            capacity = min(capacity, int(total["GPU"]))
        if capacity < 1:
            raise UsageError(f"the Ray cluster has no room for a player of {env_id} ({options}): {total}")
        use_actors = (model or resource is not None) if self.actors is None else self.actors
        return use_actors, options, capacity

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
        """Play ``seeds`` on the cluster; ``on_record`` runs here for each record as it arrives."""
        use_actors, options, capacity = self._placement(env_id, policy_spec, policy_kwargs)
        workers = min(self.max_workers or capacity, capacity)
        streamed = not ray_client.is_connected()  # Ray Client cannot stream a task's results
        per_worker = CHUNKS_PER_WORKER if streamed else CHUNKS_PER_WORKER_UNSTREAMED
        chunks = deque(chunk_seeds(seeds, workers, batch_size, per_worker))
        self.workers = workers = min(workers, len(chunks))
        self.players = "actors" if use_actors else "tasks"
        args = (env_id, env_kwargs, policy_spec, policy_kwargs)

        def new_actor() -> Any:
            return _PlayerActor.options(**options).remote(*args)

        actors: list[Any] = [new_actor() for _ in range(workers)] if use_actors else []
        replacements_left = 2 * workers  # a dead actor is replaced, this many times in all
        free = deque(range(workers))
        running: dict[Any, _Chunk] = {}
        finished = False

        def lose(chunk: _Chunk, reason: str) -> None:
            for seed in chunk.seeds:
                if seed not in chunk.received:
                    on_record(lost_episode_record(env_id, seed, f"lost on Ray: {reason}"))

        try:
            while chunks or running:
                while chunks and free:
                    chunk = _Chunk(chunks.popleft(), free.popleft())
                    if use_actors and streamed:
                        method = actors[chunk.worker].stream.options(num_returns="streaming")
                        ref = method.remote(chunk.seeds, batch_size)
                    elif use_actors:
                        ref = actors[chunk.worker].play_all.remote(chunk.seeds, batch_size)
                    elif streamed:
                        task = _play_task.options(num_returns="streaming", **options)
                        ref = task.remote(*args, chunk.seeds, batch_size)
                    else:
                        ref = _play_whole_task.options(**options).remote(*args, chunk.seeds, batch_size)
                    running[ref] = chunk
                if not running:  # every actor is gone and none may be replaced
                    while chunks:
                        lose(_Chunk(chunks.popleft(), -1), "no Ray actor left to play them")
                    break
                ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
                for ref in ready:
                    chunk = running[ref]
                    try:  # the next record of a streamed chunk, or all of an unstreamed one
                        records = [ray.get(next(cast(ObjectRefGenerator, ref)))] if streamed else ray.get(ref)
                    except StopIteration:
                        del running[ref]
                        free.append(chunk.worker)
                        continue
                    except ray.exceptions.RayError as exc:
                        del running[ref]
                        if not _lost(exc):
                            raise RuntimeError(f"an eval chunk failed on the Ray cluster:\n{exc}") from None
                        lose(chunk, _first_line(exc))
                        if use_actors:  # a lost actor is gone for good (max_restarts=0): replace it
                            ray.kill(actors[chunk.worker])
                            if replacements_left > 0:
                                replacements_left -= 1
                                actors[chunk.worker] = new_actor()
                                free.append(chunk.worker)
                        else:
                            free.append(chunk.worker)
                        continue
                    if not streamed:  # the chunk is over
                        del running[ref]
                        free.append(chunk.worker)
                    for record in records:
                        chunk.received.add(record["seed"])
                        on_record(record)
            finished = True
        finally:
            for ref in running:
                try:
                    ray.cancel(ref, force=not use_actors)
                except Exception:  # noqa: BLE001 - best effort: the task may have ended meanwhile
                    pass
            if finished and actors:  # let them close their environments (browsers) before they go
                try:
                    ray.get([actor.close.remote() for actor in actors], timeout=60)
                except ray.exceptions.RayError:
                    pass
            for actor in actors:
                ray.kill(actor)

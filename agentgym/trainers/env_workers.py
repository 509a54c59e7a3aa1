"""Trainer rollouts with the environments in worker processes (or Ray actors), stepped asynchronously.

In-process rollouts (``rollout.env_workers=0``, ``transcripts.play``) alternate: generate one batch of
turns, then step every env one after another, then generate again; a slow env step (a WebShop page load,
an ALFWorld command) holds every other episode's next turn. Here each env lives in a worker, its steps
are sent as requests, and the trainer keeps generating: every episode whose observation has arrived joins
the next generation batch (continuous batching by episode), so generation waits for an env only when no
episode at all is ready.

- Workers: ``workers`` processes (``multiprocessing``, spawned), or Ray actors with ``backend="ray"`` (a
  local Ray, or the cluster ``RAY_ADDRESS`` names). Each hosts the envs of slots ``w, w + workers, ...``
  and steps them one request at a time, so ``workers`` env steps run at once. The envs outlive a rollout:
  a browser starts once per env, not once per RL step.
- Batches: when nothing is ready, generation waits for the first answer; then answers keep joining the
  batch while each arrives within ``gather_ms`` of the previous one (fast envs answer together and make
  one batch, a slow one is not waited for).
- Transcripts: chats are built by ``agentgym.rollout``'s own slot code and tokenized by the policy's
  ``TranscriptBook``, as in-process; each episode samples from its own seeds of (the policy's seed, env
  seed, member, turn) (``transcripts.trajectory_seed``), so its tokens do not depend on batching or timing,
  and equal those of in-process rollouts with ``seed_per_trajectory`` (or greedy decoding) up to the float
  rounding that batch shapes cause. A vLLM engine samples with its own seed per call (not per episode).
- Groups: the ``group_size`` episodes of ``seeds[g]`` all reset their env with that seed; their members
  are 0 .. group_size - 1, and the result is ordered by (group, member).
- A worker that dies (killed, out of memory, a crash in native code): its envs are lost, so every episode
  it hosted is started again from its reset on a fresh worker, with a logged warning; the per-episode
  seeds make the replay sample what the lost run would have. An episode lost more than ``max_restarts``
  times fails the rollout with a RuntimeError. An exception raised by the env's own code is not retried:
  it fails the rollout with the worker's traceback.
- A worker that hangs: an env reset or step that has not answered within ``step_timeout_s`` (default 300 s;
  None: no limit) counts as a dead worker: it is killed and replaced, and its episodes are replayed (so a
  rollout never waits for ever on a stuck browser or a deadlocked env).
- Shutdown: :meth:`EnvWorkers.close` closes every env and ends the workers; a worker also exits by itself
  when the trainer's process is gone, so none is left behind.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import os
import pickle
import queue
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any, cast

import gymnasium as gym

import agentgym  # noqa: F401  (registers the envs in the workers too)
from agentgym.rollout import _Slot
from agentgym.types import Generation

if TYPE_CHECKING:
    from agentgym.trainers.transcripts import TokenExactPolicy, Transcript

log = logging.getLogger(__name__)

BACKENDS = ("process", "ray")
Trace = Callable[[str, Any], None]  # (event, detail): the order of what the rollout did, for tests


class EnvHost:
    """The envs of one worker, by slot, made on first use and kept across rollouts."""

    def __init__(self, env_id: str, env_kwargs: dict[str, Any]) -> None:
        self.env_id, self.env_kwargs = env_id, env_kwargs
        self.envs: dict[int, gym.Env] = {}

    def _env(self, slot: int) -> Any:
        if slot not in self.envs:
            self.envs[slot] = gym.make(self.env_id, **self.env_kwargs)
        return self.envs[slot]

    def handle(self, kind: str, slot: int, arg: Any) -> tuple:
        """``reset`` (arg: the seed) -> (obs, info, response format); ``step`` (arg: the response text) ->
        (obs, reward, terminated, truncated, info)."""
        env = self._env(slot)
        if kind == "reset":
            obs, info = env.reset(seed=arg)
            return obs, info, env.unwrapped.format
        if kind == "step":
            return tuple(env.step(arg))
        raise ValueError(f"unknown env request {kind!r}")

    def close(self) -> None:
        while self.envs:
            _, env = self.envs.popitem()
            try:
                env.close()
            except Exception:  # noqa: BLE001 - closing the others matters more
                log.warning("closing an env failed:\n%s", traceback.format_exc())


# ----- the process backend -----


def _process_worker(
    env_id: str, env_kwargs: dict[str, Any], requests: Connection, results: Connection, parent: int
) -> None:
    """Worker process: answer requests until told to close, or until the trainer's process is gone.
    Answers are sent by a thread of their own, so a trainer busy generating never blocks the env steps."""
    host = EnvHost(env_id, env_kwargs)
    outbox: queue.Queue[bytes | None] = queue.Queue()

    def send_all() -> None:
        try:
            while (message := outbox.get()) is not None:
                results.send_bytes(message)
        except OSError:  # the trainer is gone
            pass

    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    try:
        while True:
            if not requests.poll(0.5):
                if os.getppid() != parent:  # orphaned: the trainer died without closing us
                    return
                continue
            try:
                request = requests.recv()
            except EOFError:
                return
            if request[0] == "close":
                return
            kind, ticket, slot, arg = request
            try:
                answer = pickle.dumps((kind, ticket, host.handle(kind, slot, arg)))
            except Exception:  # noqa: BLE001 - the trainer raises it with this traceback
                answer = pickle.dumps(("error", ticket, traceback.format_exc()))
            outbox.put(answer)
    finally:
        host.close()
        outbox.put(None)
        sender.join(timeout=10)


@dataclass
class _Process:
    process: Any  # multiprocessing's SpawnProcess
    requests: Connection  # the trainer writes
    results: Connection  # the trainer reads
    dead: bool = False


class ProcessWorkers:
    """Env workers as spawned processes, each with a request pipe and an answer pipe of its own (no lock
    shared between processes, so a killed worker cannot leave one held)."""

    def __init__(self, env_id: str, env_kwargs: dict[str, Any], count: int) -> None:
        self.env_id, self.env_kwargs = env_id, env_kwargs
        self._ctx = mp.get_context("spawn")
        self.workers: list[_Process] = []
        for _ in range(count):
            self.workers.append(self._start())

    def _start(self) -> _Process:
        requests_read, requests_write = self._ctx.Pipe(duplex=False)
        results_read, results_write = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(
            target=_process_worker,
            args=(self.env_id, self.env_kwargs, requests_read, results_write, os.getpid()),
            daemon=True,
            name="agentgym-env-worker",
        )
        process.start()
        requests_read.close()  # the child's ends: closed here so that EOF is seen when the child dies
        results_write.close()
        return _Process(process, requests_write, results_read)

    def send(self, worker: int, request: tuple) -> None:
        w = self.workers[worker]
        if w.dead:
            return  # its death is reported by receive(); the request is replayed after the restart
        try:
            w.requests.send(request)
        except OSError:
            pass  # it died meanwhile: receive() reports it

    def receive(self, timeout: float | None) -> list[tuple]:
        """Answers that arrived within ``timeout`` seconds (None: wait for at least one), and a
        ``("died", worker, why)`` event for each worker found dead."""
        live = [w for w in self.workers if not w.dead]
        handles: list[Any] = [w.results for w in live] + [w.process.sentinel for w in live]
        ready = set(wait(handles, timeout))
        events: list[tuple] = []
        for index, w in enumerate(self.workers):
            if w.dead or not (w.results in ready or w.process.sentinel in ready):
                continue
            try:
                while w.results.poll():
                    events.append(pickle.loads(w.results.recv_bytes()))
            except (EOFError, OSError):
                pass
            if w.process.sentinel in ready or not w.process.is_alive():
                w.process.join(timeout=5)
                w.dead = True
                events.append(("died", index, f"exit code {w.process.exitcode}"))
        return events

    def restart(self, worker: int) -> None:
        old = self.workers[worker]
        self._stop(old, grace=0)
        self.workers[worker] = self._start()

    def pids(self) -> list[int]:
        return [w.process.pid for w in self.workers]

    def _stop(self, w: _Process, grace: float) -> None:
        if grace and w.process.is_alive():
            try:
                w.requests.send(("close",))
            except OSError:
                pass
            w.process.join(timeout=grace)
        if w.process.is_alive():
            w.process.terminate()
            w.process.join(timeout=5)
        if w.process.is_alive():
            w.process.kill()
            w.process.join()
        w.requests.close()
        w.results.close()
        w.dead = True

    def close(self) -> None:
        for w in self.workers:  # ask all first, so their envs close at the same time
            if not w.dead and w.process.is_alive():
                try:
                    w.requests.send(("close",))
                except OSError:
                    pass
        for w in self.workers:
            self._stop(w, grace=30)


# ----- the Ray backend -----


class RayEnvHost:
    """The Ray actor around an :class:`EnvHost`. Every env call runs on one thread of its own, the same
    for the actor's life: browser drivers (Playwright's) work only from the thread that started them."""

    def __init__(self, env_id: str, env_kwargs: dict[str, Any]) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentgym-env")
        self.host = EnvHost(env_id, env_kwargs)

    def handle(self, kind: str, slot: int, arg: Any) -> tuple:
        return self._thread.submit(self.host.handle, kind, slot, arg).result()

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        self._thread.submit(self.host.close).result()
        self._thread.shutdown()


class RayWorkers:
    """Env workers as Ray actors: a local Ray started here, or the cluster ``RAY_ADDRESS`` names (or the
    one ``ray start`` left on this machine). Each actor asks for at most one CPU, less when the cluster
    has fewer CPUs than actors, so that they all start."""

    def __init__(self, env_id: str, env_kwargs: dict[str, Any], count: int) -> None:
        import ray

        self.ray: Any = ray
        self._started_ray = not ray.is_initialized()
        if self._started_ray:
            ray.init(
                address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, logging_level=logging.WARNING
            )
        cpus = min(1.0, float(ray.cluster_resources().get("CPU", 1.0)) / count)
        self._actor: Any = ray.remote(RayEnvHost).options(num_cpus=cpus, max_restarts=0)
        self.env_id, self.env_kwargs = env_id, env_kwargs
        self.actors: list[Any] = [self._actor.remote(env_id, env_kwargs) for _ in range(count)]
        self._calls: dict[Any, tuple[int, int, str]] = {}  # object ref -> (worker, ticket, kind)
        self._dead: set[int] = set()

    def send(self, worker: int, request: tuple) -> None:
        if worker in self._dead:
            return
        kind, ticket, slot, arg = request
        self._calls[self.actors[worker].handle.remote(kind, slot, arg)] = (worker, ticket, kind)

    def receive(self, timeout: float | None) -> list[tuple]:
        ray = self.ray
        if not self._calls:
            if timeout:
                time.sleep(timeout)
            return []
        refs = list(self._calls)
        ready, rest = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready and rest:
            ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        events: list[tuple] = []
        for ref in ready:
            worker, ticket, kind = self._calls.pop(ref)
            try:
                answer = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                if worker not in self._dead:
                    self._dead.add(worker)
                    events.append(("died", worker, f"Ray actor lost: {type(exc).__name__}"))
                continue
            except ray.exceptions.RayTaskError as exc:
                events.append(("error", ticket, str(exc)))
                continue
            events.append((kind, ticket, answer))
        return events

    def restart(self, worker: int) -> None:
        self.ray.kill(self.actors[worker], no_restart=True)
        self._calls = {ref: call for ref, call in self._calls.items() if call[0] != worker}
        self.actors[worker] = self._actor.remote(self.env_id, self.env_kwargs)
        self._dead.discard(worker)

    def pids(self) -> list[int]:
        return list(self.ray.get([a.pid.remote() for a in self.actors]))

    def close(self) -> None:
        ray = self.ray
        closing = [a.close.remote() for i, a in enumerate(self.actors) if i not in self._dead]
        try:
            ray.get(closing, timeout=60)
        except Exception:  # noqa: BLE001 - the actors are killed below anyway
            log.warning("closing the env actors failed:\n%s", traceback.format_exc())
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors, self._calls = [], {}
        if self._started_ray:
            ray.shutdown()


# ----- the rollout -----


class _EnvView:
    """What ``agentgym.rollout``'s slot sees of an env that lives in a worker: calling it hands back the
    answer the worker already sent, so the chat is built by the same code as in-process."""

    def __init__(self) -> None:
        self.answer: tuple | None = None
        self.format: Any = None  # the env's response format, sent with each reset

    @property
    def unwrapped(self) -> _EnvView:
        return self

    def _take(self) -> tuple:
        answer, self.answer = self.answer, None
        if answer is None:
            raise RuntimeError("an env answer was read twice")
        return answer

    def reset(self, seed: int | None = None) -> tuple[str, dict[str, Any]]:
        obs, info, self.format = self._take()
        return obs, info

    def step(self, action: str) -> tuple:
        return self._take()

    def close(self) -> None:
        pass


@dataclass
class _Trajectory:
    group: int
    member: int
    seed: int
    slot: int = -1
    ticket: int = -1  # the request whose answer it waits for
    sent_at: float = 0.0  # when that request went out (time.monotonic)
    view: _EnvView = field(default_factory=_EnvView)
    player: _Slot | None = None
    generation: Generation | None = None
    restarts: int = 0

    @property
    def key(self) -> tuple[int, int]:
        return self.group, self.member


@dataclass
class RolloutStats:
    """Where the last rollout's time went."""

    rollout_s: float = 0.0
    generate_s: float = 0.0  # inside the policy's generate
    env_wait_s: float = 0.0  # generation idle: every live episode was waiting for its env
    generate_calls: int = 0
    generated_episode_turns: int = 0
    restarts: int = 0

    def as_dict(self) -> dict[str, float]:
        mean_batch = self.generated_episode_turns / max(1, self.generate_calls)
        return {**self.__dict__, "mean_generate_batch": mean_batch}


class EnvWorkers:
    """``workers`` env workers for one env id; :meth:`play` runs a rollout on them. Close when done (or
    use as a context manager)."""

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any] | None = None,
        workers: int = 2,
        *,
        backend: str = "process",
        gather_ms: float = 10.0,
        max_restarts: int = 2,
        step_timeout_s: float | None = 300.0,
    ) -> None:
        if workers < 1:
            raise ValueError(f"env workers must be at least 1, got {workers}")
        if backend not in BACKENDS:
            raise ValueError(f"env workers backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if gather_ms < 0:
            raise ValueError(f"gather_ms must be >= 0, got {gather_ms}")
        if step_timeout_s is not None and step_timeout_s <= 0:
            raise ValueError(f"step_timeout_s must be > 0 or None, got {step_timeout_s}")
        self.env_id, self.count = env_id, workers
        self.gather_s, self.max_restarts = gather_ms / 1000, max_restarts
        self.step_timeout_s = step_timeout_s
        env_kwargs = dict(env_kwargs or {})
        if backend == "ray":
            try:
                import ray  # noqa: F401
            except ImportError:
                raise ValueError("the ray env workers backend needs Ray: pip install ray") from None
            self.backend: ProcessWorkers | RayWorkers = RayWorkers(env_id, env_kwargs, workers)
        else:
            self.backend = ProcessWorkers(env_id, env_kwargs, workers)
        self._tickets = itertools.count()
        self.stats = RolloutStats()

    def __enter__(self) -> EnvWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pids(self) -> list[int]:
        """The workers' process ids (for tests and monitoring)."""
        return self.backend.pids()

    def close(self) -> None:
        self.backend.close()

    def worker_of(self, slot: int) -> int:
        return slot % self.count

    def play(
        self,
        seeds: Sequence[int],
        group_size: int,
        policy: TokenExactPolicy,
        *,
        batch_size: int | None = None,
        trace: Trace | None = None,
    ) -> list[Transcript]:
        """``group_size`` episodes of each seed as transcripts, ordered by (group, member); at most
        ``batch_size`` (None: all) episodes are live at once, one env slot each."""
        if len(set(seeds)) != len(seeds):
            raise ValueError("the seeds of one rollout batch must be distinct (one group per seed)")
        if group_size < 1:
            raise ValueError(f"group_size must be at least 1, got {group_size}")
        started = time.perf_counter()
        self.stats = stats = RolloutStats()
        note: Trace = trace or (lambda event, detail: None)
        pending = deque(
            _Trajectory(group, member, seed)
            for group, seed in enumerate(seeds)
            for member in range(group_size)
        )
        total = len(pending)
        free = deque(range(min(batch_size or total, total)))
        waiting: dict[int, _Trajectory] = {}  # ticket -> the episode waiting for that answer
        playing: dict[int, _Trajectory] = {}  # slot -> the episode on it
        ready: list[_Trajectory] = []
        finished: list[Transcript] = []

        def request(t: _Trajectory, kind: str, arg: Any) -> None:
            t.ticket = next(self._tickets)
            waiting[t.ticket] = t
            t.sent_at = time.monotonic()
            self.backend.send(self.worker_of(t.slot), (kind, t.ticket, t.slot, arg))
            note(f"{kind}_sent", t.key)

        def start(t: _Trajectory) -> None:
            t.view, t.player, t.generation = _EnvView(), None, None
            request(t, "reset", t.seed)

        def answered(t: _Trajectory, kind: str, answer: tuple) -> None:
            t.view.answer = answer
            if kind == "reset":
                t.player = _Slot(cast(gym.Env, t.view), self.env_id)
                t.player.start(t.seed)
                policy.book.begin(t.player.episode.messages, seed=t.seed, member=t.member)
                note("observation", t.key)
                ready.append(t)
                return
            assert t.player is not None and t.generation is not None
            over = t.player.advance(t.generation)
            note("observation", t.key)
            if not over:
                ready.append(t)
                return
            transcript = policy.book.finish(t.player.episode)
            transcript.group, transcript.member = t.group, t.member
            finished.append(transcript)
            del playing[t.slot]
            free.append(t.slot)

        def lost(worker: int, why: str) -> None:
            victims = sorted((t for t in playing.values() if self.worker_of(t.slot) == worker), key=_key)
            log.warning(
                "env worker %d (%s) lost (%s); restarting it, its %d episode(s) start again from their reset",
                worker,
                self.env_id,
                why,
                len(victims),
            )
            self.backend.restart(worker)
            for t in victims:
                t.restarts += 1
                stats.restarts += 1
                if t.restarts > self.max_restarts:
                    raise RuntimeError(
                        f"the env worker of episode {t.member} of seed {t.seed} ({self.env_id}) was lost "
                        f"{t.restarts} times; giving up (last: {why})"
                    )
                waiting.pop(t.ticket, None)
                if t in ready:
                    ready.remove(t)
                if t.player is not None:
                    policy.book.forget(t.player.episode.messages)
                note("restart", t.key)
                start(t)

        while len(finished) < total:
            while free and pending:
                t = pending.popleft()
                t.slot = free.popleft()
                playing[t.slot] = t
                start(t)
            if not waiting:
                raise RuntimeError("env workers: no episode is waiting for its env, none can go on")
            wait_started = time.perf_counter()
            deadline = None
            if self.step_timeout_s is not None:
                deadline = min(t.sent_at for t in waiting.values()) + self.step_timeout_s
            events = self._collect(outstanding=len(waiting), deadline=deadline)
            stats.env_wait_s += time.perf_counter() - wait_started
            if not events and deadline is not None and time.monotonic() >= deadline:
                oldest = min(waiting.values(), key=lambda t: t.sent_at)
                lost(
                    self.worker_of(oldest.slot),
                    f"hung: an env call got no answer in {self.step_timeout_s:g} s",
                )
                continue
            for event in events:
                if event[0] == "died":
                    lost(event[1], event[2])
                elif event[0] == "error":
                    failed = waiting.get(event[1])
                    where = f"seed {failed.seed}, episode {failed.member}" if failed else "an env"
                    raise RuntimeError(f"an env raised in its worker ({self.env_id}, {where}):\n{event[2]}")
                elif (answered_by := waiting.pop(event[1], None)) is not None:  # else: from a lost worker
                    answered(answered_by, event[0], event[2])
            if not ready:
                continue
            batch, ready = sorted(ready, key=_key), []
            generated = time.perf_counter()
            generations = _generate(policy, [_messages(t) for t in batch])
            stats.generate_s += time.perf_counter() - generated
            stats.generate_calls += 1
            stats.generated_episode_turns += len(batch)
            note("generate", [t.key for t in batch])
            for t, generation in zip(batch, generations, strict=True):
                t.generation = generation
                request(t, "step", generation.text)
        stats.rollout_s = time.perf_counter() - started
        policy.forget()  # the KV cache kept between turns: stale after the next update
        finished.sort(key=lambda tr: (tr.group, tr.member))
        return finished

    def _collect(self, outstanding: int, deadline: float | None = None) -> list[tuple]:
        """What the workers have answered, waiting for a first answer if none is in yet (until ``deadline``,
        a ``time.monotonic`` value; None: for ever); then more while each comes within ``gather_s`` of the
        one before (up to ``outstanding`` answers). Empty when the deadline passed first."""
        patience = None if deadline is None else max(0.0, deadline - time.monotonic())
        events = self.backend.receive(0) or self.backend.receive(patience)
        while events and self.gather_s > 0 and len(events) < outstanding:
            more = self.backend.receive(self.gather_s)
            if not more:
                break
            events += more
        return events


def _key(t: _Trajectory) -> tuple[int, int]:
    return t.key


def _messages(t: _Trajectory) -> Any:
    assert t.player is not None, "an episode is ready only once its reset has been answered"
    return t.player.episode.messages


def _generate(policy: TokenExactPolicy, chats: list[Any]) -> list[Generation]:
    """One batch of turns, as ``TokenExactPolicy.act`` makes them, each from its episode's own seeds."""
    prompts = policy.book.prompts(chats)
    if policy.engine is not None:
        generations = policy.engine.generate(prompts, policy.temperature, policy.max_new_tokens)
    else:
        generations = policy.generate(prompts, policy.trajectory_seeds(chats))
    policy.book.record(chats, generations)
    return generations

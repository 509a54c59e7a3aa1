"""Trainer rollouts with the envs in worker processes (``agentgym.trainers.env_workers``): the same
transcripts as in-process rollouts, GRPO groups on one env seed, a slow env step that does not hold the
other episodes (checked by the order of events, not by timing), a killed worker replaced and its episodes
replayed, env errors raised with their traceback, and no process left behind."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import psutil
import pytest
from trainer_fixtures import FROZENLAKE, tiny_config

from agentgym.envs.frozenlake import FrozenLakeEnv
from agentgym.trainers.env_workers import EnvWorkers

REPO = Path(__file__).resolve().parents[1]
# workers spawn fresh interpreters: they find this env by importing this module (on their sys.path)
HELD = f"{__name__}:agentgym-test/HeldLake-v0"


class HeldLake(FrozenLakeEnv):
    """FrozenLake whose first step of seed ``hold_seed`` waits until ``release_file`` exists (at most
    ``hold_s`` seconds, so that a rollout that never releases it fails its test instead of hanging), and
    whose steps of seed ``fail_seed`` raise."""

    def __init__(
        self, hold_seed: int = -1, release_file: str = "", hold_s: float = 60.0, fail_seed: int = -1, **kw
    ):
        super().__init__(**kw)
        self.hold_seed, self.release_file, self.hold_s = hold_seed, release_file, hold_s
        self.fail_seed = fail_seed

    def step(self, action):
        if self.np_random_seed == self.fail_seed:
            raise ValueError("HeldLake was told to fail on this seed")
        if self.np_random_seed == self.hold_seed and self.turn == 0:
            deadline = time.monotonic() + self.hold_s
            while not Path(self.release_file).exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        return super().step(action)


if "agentgym-test/HeldLake-v0" not in gym.registry:
    gym.register("agentgym-test/HeldLake-v0", entry_point=HeldLake)


def _policy(tiny_lm, temperature: float, seed_per_trajectory: bool = True):
    from agentgym.trainers.transcripts import TokenExactPolicy

    model, tokenizer = tiny_lm
    policy = TokenExactPolicy(
        model,
        tokenizer,
        temperature=temperature,
        max_new_tokens=10,
        device="cpu",
        seed_per_trajectory=seed_per_trajectory,
    )
    policy.reseed(4321)
    return policy


def _in_process(tiny_lm, seeds, group_size, temperature=1.0, seed_per_trajectory=True, env=FROZENLAKE):
    from agentgym.trainers.transcripts import play

    policy = _policy(tiny_lm, temperature, seed_per_trajectory)
    transcripts = play(env, seeds, group_size, policy, batch_size=4)
    return sorted(transcripts, key=lambda t: (t.group, t.member))


def assert_same_transcripts(expected, got):
    assert [(t.group, t.member, t.seed) for t in got] == [(t.group, t.member, t.seed) for t in expected]
    for a, b in zip(expected, got, strict=True):
        assert b.ids == a.ids and b.mask == a.mask and b.turn_ends == a.turn_ends
        assert (b.rewards, b.success, b.format_ok) == (a.rewards, a.success, a.format_ok)
        # the same tokens, sampled in batches of other shapes: equal log-probs up to float rounding
        assert b.sampler_logprobs == pytest.approx(a.sampler_logprobs, abs=1e-5)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # ended, not yet reaped
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pids, timeout: float = 60.0) -> list[int]:
    """The pids still running after ``timeout`` seconds (a bound for liveness, not a speed check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(_gone(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if not _gone(p)]


@pytest.mark.parametrize(
    "temperature, seed_per_trajectory",
    [(1.0, True), (0.0, False)],  # sampled with per-episode seeds; greedy on today's default path
    ids=["sampled", "greedy"],
)
def test_worker_rollouts_equal_in_process_rollouts(tiny_lm, temperature, seed_per_trajectory):
    seeds, group_size = [5, 6, 7], 3
    expected = _in_process(tiny_lm, seeds, group_size, temperature, seed_per_trajectory)
    with EnvWorkers(FROZENLAKE, {}, 2) as workers:
        got = workers.play(seeds, group_size, _policy(tiny_lm, temperature), batch_size=4)
        pids = workers.pids()
    assert_same_transcripts(expected, got)
    assert not _wait_gone(pids)  # close() ended every worker
    # GRPO groups: every member of group g played seeds[g] from the same first observation
    for g, seed in enumerate(seeds):
        group = [t for t in got if t.group == g]
        assert [t.member for t in group] == list(range(group_size))
        assert {t.seed for t in group} == {seed}
        prompts = {tuple(t.ids[: t.mask.index(1)]) for t in group}
        assert len(prompts) == 1
    if temperature > 0:  # members sample apart (their seeds include the member), as GRPO needs
        assert len({tuple(t.ids) for t in got if t.group == 0}) > 1


def test_a_slow_env_step_does_not_hold_the_other_episodes(tiny_lm, tmp_path):
    release = tmp_path / "release"
    held_seed, others = 100, [101, 102, 103, 104, 105]
    events: list[tuple[str, object]] = []
    held = (0, 0)  # (group, member) of the held episode

    def trace(event, detail):
        events.append((event, detail))
        if event != "generate" or ("step_sent", held) not in events:
            return
        # a batch generated while the held episode's first step is in its worker, without it
        since = events[events.index(("step_sent", held)) :]
        if sum(e == "generate" and held not in d for e, d in since) >= 3:
            release.touch()

    kwargs = {"hold_seed": held_seed, "release_file": str(release)}
    with EnvWorkers(HELD, kwargs, 2, gather_ms=0) as workers:  # slot 0 (held) and slot 1 in two workers
        got = workers.play([held_seed, *others], 1, _policy(tiny_lm, 1.0), batch_size=2, trace=trace)
    sent = events.index(("step_sent", held))
    answered = events.index(("observation", held), sent)
    between = [d for e, d in events[sent:answered] if e == "generate"]
    assert len(between) >= 3 and all(held not in d for d in between), events
    assert release.exists()
    assert sorted(t.seed for t in got) == [held_seed, *others]


def test_a_killed_worker_is_replaced_and_its_episodes_replayed(tiny_lm, caplog):
    seeds, group_size = [5, 6], 3
    expected = _in_process(tiny_lm, seeds, group_size)
    killed: list[int] = []
    with EnvWorkers(FROZENLAKE, {}, 2) as workers:
        first = workers.pids()

        def trace(event, detail):
            if event == "generate" and not killed:  # mid-episode: every live episode has played a turn
                killed.append(first[0])
                os.kill(first[0], signal.SIGKILL)

        with caplog.at_level(logging.WARNING, logger="agentgym.trainers.env_workers"):
            got = workers.play(seeds, group_size, _policy(tiny_lm, 1.0), batch_size=4, trace=trace)
        replaced = workers.pids()
        assert workers.stats.restarts >= 1
    assert_same_transcripts(expected, got)  # the replays sampled what the lost episodes would have
    assert "env worker 0" in caplog.text and "lost (exit code" in caplog.text
    assert replaced[0] != first[0] and replaced[1] == first[1]
    assert not _wait_gone(first + replaced)


def test_a_worker_that_keeps_dying_fails_the_rollout_clearly(tiny_lm):
    with EnvWorkers(FROZENLAKE, {}, 2, max_restarts=1) as workers:

        def trace(event, detail):
            if event == "generate":
                os.kill(workers.pids()[0], signal.SIGKILL)

        with pytest.raises(RuntimeError, match="was lost 2 times; giving up"):
            workers.play([5, 6], 2, _policy(tiny_lm, 1.0), batch_size=4, trace=trace)
        pids = workers.pids()
    assert not _wait_gone(pids)


def test_a_hung_env_is_restarted_and_its_episode_replayed(tiny_lm, tmp_path):
    """An env step that does not answer within step_timeout_s counts as a lost worker: it is replaced and
    the episode replays (here the replay is not held), sampling what it would have."""
    release = tmp_path / "release"
    expected = _in_process(tiny_lm, [100, 101], 1)
    kwargs = {"hold_seed": 100, "release_file": str(release)}

    def trace(event, detail):
        if event == "restart":
            release.touch()

    with EnvWorkers(HELD, kwargs, 2, gather_ms=0, step_timeout_s=1.0) as workers:
        got = workers.play([100, 101], 1, _policy(tiny_lm, 1.0), batch_size=2, trace=trace)
        assert workers.stats.restarts == 1
    assert release.exists()
    assert_same_transcripts(expected, got)


def test_an_env_that_always_hangs_fails_the_rollout_clearly(tiny_lm, tmp_path):
    kwargs = {"hold_seed": 100, "release_file": str(tmp_path / "never")}
    with EnvWorkers(HELD, kwargs, 1, step_timeout_s=0.5, max_restarts=1) as workers:
        with pytest.raises(RuntimeError, match=r"was lost 2 times; giving up \(last: hung"):
            workers.play([100], 1, _policy(tiny_lm, 1.0))
        pids = workers.pids()
    assert not _wait_gone(pids)


def test_an_env_error_is_raised_with_the_workers_traceback(tiny_lm):
    with EnvWorkers(HELD, {"fail_seed": 6}, 2) as workers:
        with pytest.raises(RuntimeError, match=r"(?s)seed 6.*HeldLake was told to fail"):
            workers.play([5, 6], 1, _policy(tiny_lm, 1.0), batch_size=2)
    with EnvWorkers("agentgym/NoSuchEnv-v0", {}, 1) as workers:
        with pytest.raises(RuntimeError, match="NoSuchEnv"):
            workers.play([1], 1, _policy(tiny_lm, 1.0))


def test_workers_exit_when_the_trainer_process_is_killed(tmp_path):
    script = (
        "import time\n"
        "from agentgym.trainers.env_workers import EnvWorkers\n"
        "workers = EnvWorkers('agentgym/FrozenLake-v0', {}, 2)\n"
        "print(*workers.pids(), flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    trainer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert trainer.stdout is not None
        pids = [int(p) for p in trainer.stdout.readline().split()]
        assert len(pids) == 2 and not any(_gone(p) for p in pids)
    finally:
        trainer.kill()  # SIGKILL: no atexit, no close()
        trainer.wait()
    assert not _wait_gone(pids), "env workers outlived the process that started them"


def test_trainer_rollouts_with_env_workers(tmp_path):
    """rollout.env_workers=2 in the trainer: the same transcripts as in-process rollouts with
    seed_per_trajectory, a full RL step, and no worker left after close()."""
    from agentgym.trainers.trainer import Trainer

    here = Trainer(tiny_config(tmp_path / "here", rollout={"seed_per_trajectory": True, "batch_size": 4}))
    try:
        expected, expected_table, _ = here.rollouts(0)
    finally:
        here.close()
    workers = Trainer(tiny_config(tmp_path / "workers", rollout={"env_workers": 2, "batch_size": 4}))
    try:
        got, table, _ = workers.rollouts(0)
        assert workers.env_workers is not None
        pids = workers.env_workers.pids()
        assert_same_transcripts(sorted(expected, key=lambda t: (t.group, t.member)), got)
        assert (table == expected_table).all()
        metrics = workers.rl_step()
        assert metrics["step"] == 1 and metrics["rollout_tokens"] > 0
    finally:
        workers.close()
    assert not _wait_gone(pids)


def test_config_keys_are_checked(tmp_path):
    with pytest.raises(ValueError, match="env_workers"):
        tiny_config(tmp_path, rollout={"env_workers": -1})
    with pytest.raises(ValueError, match="env_workers_backend must be one of process, ray"):
        tiny_config(tmp_path, rollout={"env_workers": 2, "env_workers_backend": "threads"})
    with pytest.raises(ValueError, match="env_step_timeout_s must be above 0"):
        tiny_config(tmp_path, rollout={"env_workers": 2, "env_step_timeout_s": 0})
    assert tiny_config(tmp_path, rollout={"env_step_timeout_s": None}).rollout.env_step_timeout_s is None


@pytest.mark.slow
def test_ray_actors_give_the_same_transcripts(tiny_lm):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install ray)")
    expected = _in_process(tiny_lm, [5, 6], 2)
    ray.init(address="local", num_cpus=2, include_dashboard=False)  # a Ray of its own, not a cluster's
    try:
        with EnvWorkers(FROZENLAKE, {}, 2, backend="ray") as workers:
            first, killed = workers.pids(), []

            def trace(event, detail):
                if event == "generate" and not killed:
                    killed.append(first[1])
                    os.kill(first[1], signal.SIGKILL)

            got = workers.play([5, 6], 2, _policy(tiny_lm, 1.0), batch_size=4, trace=trace)
            assert workers.stats.restarts >= 1
        assert_same_transcripts(expected, got)
    finally:
        ray.shutdown()

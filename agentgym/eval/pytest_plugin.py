"""A pytest plugin that runs an agentgym evaluation as tests, one episode per test, across xdist workers.

    pytest EVAL_DIR --agentgym-env agentgym/Sokoban-v0 --agentgym-policy oracle \\
        --agentgym-episodes 100 [--agentgym-seed 0] [--agentgym-out runs/sokoban] -n auto

Episode i plays seed ``seed + i``, exactly as ``agentgym eval``. Each worker builds the policy once and
plays the episodes it is handed; the records travel back to the controller (xdist's ``workeroutput``),
which appends them to ``OUT/trajectories.jsonl`` (in seed order; they supersede stored records of the
same seeds, and the log is read back and compacted exactly as ``agentgym eval`` does it) and writes
``OUT/summary.json`` with the same code as ``agentgym eval``, so both routes give the same numbers for the
same seeds (model diagnostics of ``hf:``/``checkpoint:`` policies included, on the controller;
``--agentgym-no-diagnostics`` skips them). Sampled model policies seed each episode's sampling from its
own seed and turn, so scheduling does not change their episodes either. The controller holds the lock
on ``OUT`` for the whole session, like ``agentgym eval``.

An episode test passes when the episode was played (won or not); it fails only when something raised,
and it is skipped, with the reason, when the environment aborted the episode (``info["aborted"]``): the
summary counts it under ``aborted`` and leaves it out of the metrics.
``EVAL_DIR`` is collected as usual, so your own tests can sit beside the episodes and use the fixtures
``agentgym_env`` (a fresh environment from the options) and ``agentgym_policy`` (the worker's policy);
``--agentgym-only`` deselects every test that is not an episode.

Without ``--agentgym-env`` the plugin does nothing (its fixtures skip): it is loaded by every pytest run
of an environment where agentgym is installed (the ``pytest11`` entry point). That is why it imports
agentgym (gymnasium, numpy, the eval modules) inside the hooks that need it, not at module level.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

_STATE = pytest.StashKey["_EvalState"]()
_RECORDS_KEY = "agentgym_records"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("agentgym", "agentgym evaluation (one episode per test)")
    group.addoption("--agentgym-env", default=None, help="environment id, e.g. agentgym/Sokoban-v0")
    group.addoption("--agentgym-policy", default=None, help="policy spec (random, oracle, hf:..., ...)")
    group.addoption("--agentgym-episodes", type=int, default=10, help="episodes to play (default 10)")
    group.addoption("--agentgym-seed", type=int, default=0, help="episode i uses seed SEED + i")
    group.addoption("--agentgym-out", default=None, help="write trajectories.jsonl and summary.json here")
    group.addoption("--agentgym-env-kwargs", default="{}", help="JSON keyword arguments of gymnasium.make")
    group.addoption("--agentgym-policy-kwargs", default="{}", help="JSON keyword arguments of the policy")
    group.addoption(
        "--agentgym-no-diagnostics",
        action="store_true",
        help="skip MI / entropy / control-token diagnostics of model policies",
    )
    group.addoption("--agentgym-only", action="store_true", help="run only the episode tests")


@dataclass
class _EvalState:
    env_id: str
    policy_spec: str
    episodes: int
    seed: int
    out: Path | None
    env_kwargs: dict[str, Any]
    policy_kwargs: dict[str, Any]
    diagnostics: bool
    records: list[dict[str, Any]] = field(default_factory=list)
    workers_seen: int = 0
    summary: dict[str, Any] | None = None
    started: float = field(default_factory=time.perf_counter)
    _policy: Any = None
    _lock: Any = None  # the controller's RunDirLock on ``out``

    def policy(self) -> Any:
        if self._policy is None:
            from agentgym.policies import make_policy

            self._policy = make_policy(self.policy_spec, **self.policy_kwargs)
        return self._policy

    def close(self) -> None:
        if self._policy is not None:
            self._policy.close()
            self._policy = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def make_env(self) -> Any:
        import gymnasium as gym

        import agentgym  # noqa: F401 - registers the environments

        return gym.make(self.env_id, **self.env_kwargs)


def _state(config: pytest.Config) -> _EvalState | None:
    return config.stash.get(_STATE, None)


def _json_option(config: pytest.Config, name: str) -> dict[str, Any]:
    text = config.getoption(name)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise pytest.UsageError(f"--{name.replace('_', '-')} is not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise pytest.UsageError(f"--{name.replace('_', '-')} must be a JSON object")
    return value


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    env_id = config.getoption("agentgym_env", None)
    if env_id is None:
        return
    import gymnasium as gym

    import agentgym

    policy = config.getoption("agentgym_policy")
    if not policy:
        raise pytest.UsageError("--agentgym-env needs --agentgym-policy")
    if env_id not in gym.registry:
        raise pytest.UsageError(
            f"unknown environment {env_id!r}; agentgym environments: {', '.join(agentgym.ENVS)}"
        )
    episodes = config.getoption("agentgym_episodes")
    if episodes < 1:
        raise pytest.UsageError("--agentgym-episodes must be at least 1")
    out = config.getoption("agentgym_out")
    state = _EvalState(
        env_id=env_id,
        policy_spec=policy,
        episodes=episodes,
        seed=config.getoption("agentgym_seed"),
        out=Path(out).resolve() if out else None,
        env_kwargs=_json_option(config, "agentgym_env_kwargs"),
        policy_kwargs=_json_option(config, "agentgym_policy_kwargs"),
        diagnostics=not config.getoption("agentgym_no_diagnostics"),
    )
    if state.out is not None and not _is_worker(config):
        _claim_out_dir(state, state.out)
    config.stash[_STATE] = state
    config.addinivalue_line("markers", "agentgym_episode: one episode of an agentgym evaluation")


def _claim_out_dir(state: _EvalState, out: Path) -> None:
    # the same lock and run.json as `agentgym eval`, so neither route writes into the other's run
    from agentgym.eval.run_files import RunDirBusy, RunDirLock, claim_run_dir, run_identity

    run = run_identity(state.env_id, state.policy_spec, state.seed, state.env_kwargs, state.policy_kwargs)
    try:
        state._lock = RunDirLock(out)
    except RunDirBusy as exc:
        raise pytest.UsageError(str(exc)) from None
    try:
        claim_run_dir(out, run)
    except ValueError:
        state.close()
        raise pytest.UsageError(f"{out} holds a different run; use another --agentgym-out") from None


class AgentgymEpisode(pytest.Item):
    """One seeded episode of the evaluation."""

    def __init__(self, *, seed: int, state: _EvalState, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seed, self.state = seed, state
        self.add_marker("agentgym_episode")

    def runtest(self) -> None:
        from agentgym.eval.run_files import episode_record
        from agentgym.rollout import run_episodes

        state = self.state
        (episode,) = run_episodes(state.make_env, state.env_id, [self.seed], state.policy(), batch_size=1)
        record = episode_record(episode)
        record["policy"] = state.policy_spec
        state.records.append(record)
        if record["aborted"]:
            pytest.skip(f"the environment aborted the episode: {record['abort_reason']}")
        self.user_properties.append(("agentgym_success", record["success"]))
        self.user_properties.append(("agentgym_return", record["return"]))

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"agentgym episode {self.state.env_id} seed {self.seed}"

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        return f"episode with seed {self.seed} raised:\n{excinfo.getrepr(style='short')}"


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    state = _state(config)
    if state is None:
        return
    if config.getoption("agentgym_only") and items:
        config.hook.pytest_deselected(items=list(items))
        items.clear()
    for i in range(state.episodes):
        seed = state.seed + i
        items.append(
            AgentgymEpisode.from_parent(
                session,
                name=f"seed={seed}",
                seed=seed,
                state=state,
                nodeid=f"agentgym::{state.env_id}::seed={seed}",
            )
        )


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """Controller: collect the records a finished xdist worker sends back."""
    state = _state(node.config)
    if state is None:
        return
    output = getattr(node, "workeroutput", None) or {}
    state.records.extend(json.loads(output.get(_RECORDS_KEY, "[]")))
    state.workers_seen += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    state = _state(config)
    if state is None:
        return
    try:
        if _is_worker(config):
            config.workeroutput[_RECORDS_KEY] = json.dumps(state.records)  # type: ignore[attr-defined]
            return
        _finish(state)
    finally:
        state.close()


def _finish(state: _EvalState) -> None:
    """Controller: the summary of every episode played, written like ``agentgym eval`` writes it."""
    from agentgym.eval.diagnostics import model_diagnostics, wants_diagnostics
    from agentgym.eval.metrics import is_aborted
    from agentgym.eval.run_files import TrajectoryLog, latest_by_seed, write_summary
    from agentgym.eval.summary import build_summary

    by_seed = latest_by_seed(state.records)
    records = [by_seed[s] for s in sorted(by_seed)]
    state.records = records
    if not records:
        return
    log = None
    if state.out is not None:
        log = TrajectoryLog(state.out / "trajectories.jsonl")
        log.load()  # cuts a torn tail before the appends; counts (and warns of) corrupt lines
        for record in records:
            log.append(record)
    summary = build_summary(
        records,
        env_id=state.env_id,
        policy_spec=state.policy_spec,
        seed=state.seed,
        env_kwargs=state.env_kwargs,
        policy_kwargs=state.policy_kwargs,
        workers=max(1, state.workers_seen),
        elapsed=time.perf_counter() - state.started,
        played_now=len(records),
        corrupt_lines=len(log.corrupt_lines) if log is not None else 0,
    )
    summary["route"] = "pytest"
    if state.diagnostics and wants_diagnostics(state.policy_spec, None):
        completed = [r for r in records if not is_aborted(r)]
        summary["diagnostics"] = model_diagnostics(
            state.policy(), completed, summary["response_format"], seed=state.seed
        )
    state.summary = summary
    if state.out is not None and log is not None:
        log.compact()
        write_summary(state.out, summary)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = _state(config)
    if state is None or state.summary is None or _is_worker(config):
        return
    summary = state.summary
    low, high = summary["success_ci95"]
    terminalreporter.write_sep("-", "agentgym evaluation")
    terminalreporter.write_line(
        f"{summary['env']} {summary['policy']}: {summary['episodes']} episodes "
        f"({summary['aborted']} more aborted), success "
        f"{summary['success_rate']:.3f} [{low:.3f}, {high:.3f}], return {summary['mean_return']:.3f}, "
        f"format-valid {summary['format_valid_rate']:.3f}"
    )
    if state.out is not None:
        terminalreporter.write_line(f"wrote {state.out}/trajectories.jsonl and {state.out}/summary.json")


@pytest.fixture
def agentgym_env(request: pytest.FixtureRequest) -> Any:
    """A fresh environment built from ``--agentgym-env`` / ``--agentgym-env-kwargs`` (closed afterwards)."""
    state = _state(request.config)
    if state is None:
        pytest.skip("needs --agentgym-env and --agentgym-policy")
    env = state.make_env()
    yield env
    env.close()


@pytest.fixture
def agentgym_policy(request: pytest.FixtureRequest) -> Any:
    """The policy of ``--agentgym-policy``, built once per worker process."""
    state = _state(request.config)
    if state is None:
        pytest.skip("needs --agentgym-env and --agentgym-policy")
    return state.policy()

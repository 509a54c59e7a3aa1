"""The environment contract (docs/design.md, section 3), checked on every registered environment.

Each environment has a row in ``CASES``: the keyword arguments that make it quick to test and the pytest
marks it needs (a browser, the shared data). A registered environment without a row fails
``test_every_env_has_a_case``, so no environment escapes these checks.
"""

from __future__ import annotations

import gymnasium as gym
import pytest
from conftest import play_oracle, run_scratch_dir, shared_data_dir
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agentgym

_DATA = shared_data_dir()


def _gsm8k_kwargs() -> dict:
    return {"data_path": str(_DATA / "gsm8k" / "test.jsonl")} if _DATA else {}


def _textworld_kwargs() -> dict:
    # A pool of four small generated games, cached for this test run only (its xdist workers share it).
    cache = run_scratch_dir() / "textworld-cache"
    return {
        "world_size": 2,
        "nb_objects": 4,
        "quest_length": 3,
        "game_seeds": [1, 2, 3, 4],
        "cache_dir": str(cache),
    }


def _alfworld_kwargs() -> dict:
    # The shared samples: one real ALFRED trial and TextWorld's ALFRED-style fixture.
    return {"data_dir": str(_DATA / "alfworld")} if _DATA else {}


# env id -> (make kwargs, marks, skip reason or None)
CASES: dict[str, tuple[dict, list, str | None]] = {
    "agentgym/Sokoban-v0": ({}, [], None),
    "agentgym/FrozenLake-v0": ({}, [], None),
    "agentgym/GSM8K-v0": (_gsm8k_kwargs(), [pytest.mark.data], None if _DATA else "../shared/data is absent"),
    "agentgym/CodeExec-v0": ({}, [], None),
    "agentgym/TextWorld-v0": (_textworld_kwargs(), [], None),
    "agentgym/ALFWorld-v0": (
        _alfworld_kwargs(),
        [pytest.mark.data],
        None if _DATA else "../shared/data is absent",
    ),
    "agentgym/WebShop-v0": (
        {},
        [pytest.mark.browser],
        None
        if __import__("agentgym.envs.webshop.chromium", fromlist=["x"]).find_chromium()
        else "no Chromium found (apt-get install chromium, or set AGENTGYM_CHROMIUM)",
    ),
}


def _params():
    for env_id, (kwargs, marks, skip) in CASES.items():
        marks = list(marks) + ([pytest.mark.skip(reason=skip)] if skip else [])
        yield pytest.param(env_id, kwargs, marks=marks, id=env_id.split("/")[1])


def test_every_env_has_a_case():
    assert set(agentgym.ENVS) <= set(CASES), f"add a CASES row for {set(agentgym.ENVS) - set(CASES)}"


@pytest.mark.parametrize("env_id,kwargs", _params())
def test_check_env_and_spaces(env_id, kwargs):
    env = gym.make(env_id, **kwargs)
    try:
        assert isinstance(env.observation_space, gym.spaces.Text)
        assert isinstance(env.action_space, gym.spaces.Text)
        check_env(env.unwrapped, skip_render_check=True)
        obs, info = env.reset(seed=0)
        assert isinstance(obs, str) and obs
        assert isinstance(info["instructions"], str) and info["instructions"]
        for key in ("success", "format_ok", "action_valid", "action_effective"):
            assert key in info
    finally:
        env.close()


@pytest.mark.parametrize("env_id,kwargs", _params())
def test_same_seed_same_state(env_id, kwargs):
    a, b = gym.make(env_id, **kwargs), gym.make(env_id, **kwargs)
    try:
        observations = {a.reset(seed=seed)[0] for seed in range(5)}
        for seed in range(5):
            assert a.reset(seed=seed)[0] == b.reset(seed=seed)[0]
        assert len(observations) > 1, "different seeds should give different episodes"
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("env_id,kwargs", _params())
def test_oracle_wins(env_id, kwargs):
    env = gym.make(env_id, **kwargs)
    try:
        for seed in range(10):
            won, *_ = play_oracle(env, seed=seed)
            assert won, f"oracle lost seed {seed}"
            assert env.unwrapped.terminal, "a win must end the episode (terminated, not truncated)"
    finally:
        env.close()


@pytest.mark.parametrize("env_id,kwargs", _params())
def test_step_info_keys(env_id, kwargs):
    # action_effective (RAGEN's action_is_effective): every command of the step changed the state; a
    # perfect agent's first step does, and an effective step is always a valid one
    env = gym.make(env_id, **kwargs)
    try:
        env.reset(seed=0)
        *_, info = env.step(env.unwrapped.oracle_action())
        for key in ("success", "format_ok", "action_valid", "action_effective"):
            assert isinstance(info[key], bool), (key, info[key])
        assert info["format_ok"] and info["action_valid"] and info["action_effective"]
    finally:
        env.close()


_bad_responses = st.one_of(
    st.just(""),
    st.just("   \n "),
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    st.just("<think>x</think><answer>" + "Up" * 20_000 + "</answer>"),
    st.just("<answer></answer>"),
    st.just("<think>unclosed<answer>Up</answer>"),
    st.just('<tool_call>{"name": 1}</tool_call>'),
)


@pytest.mark.parametrize("env_id,kwargs", _params())
def test_bad_input_never_raises_and_keeps_state(env_id, kwargs):
    env = gym.make(env_id, **kwargs)

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(response=_bad_responses)
    def check(response):
        first_obs, _ = env.reset(seed=3)
        state = env.unwrapped._render_state()
        parsed = env.unwrapped.format.parse(response, env.unwrapped.tools) if response.strip() else None
        obs, reward, terminated, truncated, info = env.step(response)
        assert isinstance(obs, str)
        if parsed is None or not parsed.ok:
            assert info["format_ok"] is False
            assert info["action_valid"] is False and info["action_effective"] is False
            assert reward == pytest.approx(env.unwrapped.format_penalty)
            assert env.unwrapped._render_state() == state
            assert not terminated
            assert "Invalid response" in obs

    try:
        check()
    finally:
        env.close()


@pytest.mark.parametrize("env_id,kwargs", _params())
def test_vector_env(env_id, kwargs):
    envs = gym.vector.SyncVectorEnv([lambda: gym.make(env_id, **kwargs) for _ in range(2)])
    try:
        observations, infos = envs.reset(seed=[1, 2])
        assert len(observations) == 2 and all(isinstance(o, str) for o in observations)
        actions = tuple(env.unwrapped.oracle_action() for env in envs.envs)
        observations, rewards, terminated, truncated, infos = envs.step(actions)
        assert len(rewards) == 2
        assert infos["format_ok"].all()
    finally:
        envs.close()

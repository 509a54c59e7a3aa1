"""Every observation of every environment is a member of its observation space: the base class escapes
characters outside ``CHARSET`` and caps the length, whatever a task renders."""

from __future__ import annotations

import pytest

from agentgym.env import CHARSET, MAX_OBSERVATION_CHARS, observation_text, text_space
from agentgym.envs.frozenlake import FrozenLakeEnv

RAW = "a\x00b" + b"\xff\x80".decode("utf-8", errors="surrogateescape") + "\ud800c\U0001f600d\ufffd\u00e9\n\t"


def test_characters_outside_the_charset_become_visible_escapes():
    assert not text_space(100).contains(RAW)
    obs = observation_text(RAW)
    assert obs == "a\\x00b\\udcff\\udc80\\ud800c\\U0001f600d\ufffd\u00e9\n\t"
    assert text_space(100).contains(obs)
    assert observation_text(obs) == obs  # escapes are plain ASCII: nothing left to escape
    plain = "".join(CHARSET[i] for i in range(0, len(CHARSET), 97))
    assert observation_text(plain) == plain  # every character of the charset stays as it is


@pytest.mark.parametrize("length", [101, 150, 5_000])
def test_long_text_keeps_its_ends_and_says_how_much_was_cut(length):
    text = "".join(chr(ord("a") + i % 26) for i in range(length))
    obs = observation_text(text, 100)
    assert len(obs) <= 100 and text_space(100).contains(obs)
    head, rest = obs.split("\n[... ", 1)
    count, tail = rest.split(" characters cut ...]\n", 1)
    assert text.startswith(head) and text.endswith(tail) and head and tail
    assert len(head) + int(count) + len(tail) == length  # the count is exact
    assert observation_text(text[:100], 100) == text[:100]


class RawLake(FrozenLakeEnv):
    """A task that renders raw text into its state, as program output or a web page can be."""

    raw = ""

    def _render_state(self) -> str:
        return super()._render_state() + self.raw


@pytest.mark.parametrize("raw", [RAW, "\x00" * (MAX_OBSERVATION_CHARS // 3)])
def test_the_base_class_keeps_every_observation_in_the_space(raw):
    env = RawLake()
    env.raw = raw
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    obs, *_ = env.step("no format at all")
    assert env.observation_space.contains(obs) and obs.startswith("Invalid response")
    obs, *_ = env.step(env.oracle_action())
    assert env.observation_space.contains(obs)

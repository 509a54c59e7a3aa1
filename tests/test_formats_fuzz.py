"""No reply makes a format raise: fuzzed text and adversarial payloads, every format, every environment.

The payloads reach the limits of the parsing machinery itself: a JSON integer longer than Python's
4,300-digit conversion limit, JSON and Python literals nested past the recursion limit, a hexadecimal
literal whose decimal form is too long to print. Each is put where an argument goes in a well-formed
reply of the format, so the reply gets past the format's own syntax checks.
"""

from __future__ import annotations

import importlib

import gymnasium as gym
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agentgym
from agentgym.env import MAX_RESPONSE_CHARS
from agentgym.formats import FORMATS, Parsed, Tool, get_format

PAYLOADS = {
    "json-int-over-4300-digits": "9" * 5000,
    "nested-lists": "[" * 5000 + "]" * 5000,
    "nested-objects": '{"a":' * 3000 + "1" + "}" * 3000,
    "hex-int-too-long-to-print": "0x" + "f" * 6000,
    "nested-parentheses": "(" * 3000 + "1" + ")" * 3000,
    "float-overflow": "1e999999",
}

UNREADABLE = ("json-int-over-4300-digits", "nested-lists", "hex-int-too-long-to-print")


def env_tools() -> dict[str, tuple[Tool, ...]]:
    """Each registered environment's tools, read from its class (no environment is built)."""
    tools = {}
    for env_id, (entry_point, _) in agentgym.ENVS.items():
        module, _, name = entry_point.partition(":")
        tools[env_id] = tuple(getattr(importlib.import_module(module), name).tools)
    return tools


TOOLS = env_tools()


def adversarial_replies(format_name: str) -> list[tuple[str, str]]:
    """(payload name, reply): a well-formed Sokoban reply with the payload in the argument's place."""
    fmt = get_format(format_name)
    well_formed = fmt.render(["Up"], TOOLS["agentgym/Sokoban-v0"], think="fine")
    replies = []
    for payload_name, payload in PAYLOADS.items():
        for quoted in ('"Up"', "'Up'", "Up"):
            if quoted in well_formed:
                replies.append((payload_name, well_formed.replace(quoted, payload, 1)))
                break
    return replies


@pytest.mark.parametrize("format_name", sorted(FORMATS))
def test_adversarial_payloads_are_parse_failures_not_exceptions(format_name):
    fmt = get_format(format_name)
    replies = adversarial_replies(format_name)
    assert len(replies) == len(PAYLOADS)
    for env_id, tools in TOOLS.items():
        for payload_name, reply in replies:
            parsed = fmt.parse(reply, tools)
            assert isinstance(parsed, Parsed), (env_id, payload_name)
            # in the structured formats these payloads are values no tool takes; in the answer
            # formats they are plain text, which parses (and is then an unknown command)
            structured = not format_name.startswith("answer")
            if structured and payload_name in UNREADABLE:
                assert not parsed.ok, (env_id, payload_name, parsed)


@pytest.mark.parametrize("format_name", sorted(FORMATS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.one_of(
        st.text(max_size=300),
        st.lists(
            st.sampled_from(
                [
                    "<think>",
                    "</think>",
                    "<answer>",
                    "</answer>",
                    "<tool_call>",
                    "</tool_call>",
                    "{",
                    "}",
                    "[",
                    "]",
                    "(",
                    ")",
                    '"',
                    "'",
                    ":",
                    ",",
                    "=",
                    "||",
                    "move",
                    "direction",
                    "name",
                    "arguments",
                    "Up",
                    "0x",
                    "9" * 50,
                    "\\",
                    " ",
                    "\n",
                ]
            ),
            max_size=60,
        ).map("".join),
    ),
    env_id=st.sampled_from(sorted(TOOLS)),
)
def test_fuzzed_replies_never_raise(format_name, text, env_id):
    parsed = get_format(format_name).parse(text, TOOLS[env_id])
    assert isinstance(parsed, Parsed)
    assert parsed.ok or parsed.error


@pytest.mark.parametrize("env_id", ["agentgym/Sokoban-v0", "agentgym/FrozenLake-v0"])
@pytest.mark.parametrize("format_name", sorted(FORMATS))
def test_adversarial_steps_keep_the_state_and_say_why(env_id, format_name):
    env = gym.make(env_id, response_format=format_name, render_mode="ansi")
    obs, _ = env.reset(seed=3)
    state = env.unwrapped.render()
    for payload_name, reply in adversarial_replies(format_name):
        assert len(reply) <= MAX_RESPONSE_CHARS
        if env.unwrapped.turn >= env.unwrapped.max_turns - 1:
            env.reset(seed=3)
        obs, reward, terminated, truncated, info = env.step(reply)
        if info["format_ok"]:  # e.g. a float that parses: then it is an unknown direction
            assert not info["action_valid"], payload_name
        else:
            assert reward == pytest.approx(-0.1), payload_name
            assert info["error"], payload_name
        assert env.unwrapped.render() == state, payload_name
        assert not terminated
    env.close()

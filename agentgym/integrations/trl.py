"""Any agentgym environment as a TRL ``environment_factory``, for ``trl.GRPOTrainer``.

What TRL (1.16) does with the class :func:`environment_factory` returns:
- it builds instances by calling the class with no arguments, one per rollout, and reuses them across
  batches;
- before a rollout it calls ``reset(**row)`` with the fields of the dataset row and appends the text
  ``reset`` returns to the row's last user message;
- every public method other than ``reset`` and ``get_reward`` is a tool offered to the model, described
  by its name, type hints and Google-style docstring; each tool call the model makes calls the method with
  the call's arguments, and the returned text becomes the tool message the model reads next;
- ``get_reward()`` scores the finished rollout (an extra reward source of weight 1, logged as
  ``rewards/<class name>``).

Here each tool the environment declares (``env.tools``) becomes one method with a ``str`` parameter per
argument. A call writes its command in the environment's own response format and steps the environment
with it, so the environment parses, checks and rewards the action exactly as it would an LLM reply: one
call is one turn (environments that take several actions per turn may need a larger ``max_turns``).
``get_reward`` is the episode's return. ``reset`` reads the row's ``seed`` (and ``options``), so the
``num_generations`` rollouts of one GRPO group start from the same state.

Usage::

    from trl import GRPOConfig, GRPOTrainer
    from agentgym.integrations.trl import environment_factory, seed_dataset

    trainer = GRPOTrainer(
        model="Qwen/Qwen3-0.6B",
        train_dataset=seed_dataset(range(1000)),
        environment_factory=environment_factory("agentgym/Sokoban-v0", max_turns=10),
        args=GRPOConfig(max_completion_length=1024),
    )
    trainer.train()
"""

from __future__ import annotations

import importlib
import inspect
import keyword
import numbers
import re
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import gymnasium as gym

from agentgym.env import AgentEnv
from agentgym.formats import Tool

EPISODE_OVER = "The episode is over; no more actions are accepted."
RESERVED = {"reset", "get_reward"}  # the methods TRL does not offer as tools


class TRLEnv:
    """Base of the classes :func:`environment_factory` builds: one agentgym environment, reset by a
    dataset row and stepped by tool calls. Subclasses set ``env_id`` and ``env_kwargs``."""

    env_id: str = ""
    env_kwargs: dict[str, Any] = {}

    def __init__(self) -> None:
        self.env = gym.make(self.env_id, **self.env_kwargs)
        self.agent: AgentEnv = self.env.unwrapped  # type: ignore[assignment]  # checked by the factory
        weakref.finalize(self, self.env.close)  # no public close(): TRL would offer it as a tool
        self.seed: int | None = None  # the seed of the current episode
        self.reward = 0.0
        self.success = False
        self.done = True  # no episode until reset

    def reset(self, seed: int | None = None, options: dict | None = None, **row: Any) -> str:
        """Start an episode from the row's ``seed`` (other row fields, such as ``prompt``, are ignored).
        Returns the task and the first observation, which TRL appends to the user message."""
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
                raise TypeError(f"the row's seed must be an integer or None, got {seed!r}")
            seed = int(seed)
        observation, _ = self.env.reset(seed=seed, options=options)
        self.seed, self.reward, self.success, self.done = seed, 0.0, False, False
        # the task without the response format's description: the model acts through tool calls
        return f"{self.agent._task_instructions()}\n\n{observation}"

    def get_reward(self) -> float:
        """The episode's return: the sum of the environment's rewards so far."""
        return self.reward

    def _act(self, tool: Tool, arguments: dict[str, Any]) -> str:
        """Step the environment with one tool call; the observation it returns is the tool message."""
        if self.done:
            return EPISODE_OVER
        bad = [name for name, value in arguments.items() if not isinstance(value, (str, int, float))]
        if bad:
            return f"Invalid call of {tool.name}: {', '.join(bad)} must be text. Nothing happened."
        command = tool.to_command(arguments)
        response = self.agent.format.render([command], self.agent.tools)
        observation, reward, terminated, truncated, info = self.env.step(response)
        self.reward += float(reward)
        self.success = bool(info.get("success", False))
        self.done = terminated or truncated
        if self.done:
            observation += f"\nThe episode is over: {'success' if self.success else 'not solved'}."
        return observation


def _tool_method(tool: Tool) -> Callable[..., str]:
    """A method named after ``tool`` with one ``str`` parameter per argument and a Google-style
    docstring: what ``transformers.utils.get_json_schema`` turns into the tool's JSON schema."""
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)] + [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str)
        for name in tool.params
    ]
    signature = inspect.Signature(parameters, return_annotation=str)

    def method(self: TRLEnv, *args: Any, **kwargs: Any) -> str:
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError as exc:  # a missing or unknown argument: tell the model, do not crash the rollout
            return f"Invalid call of {tool.name}: {exc}; it takes {list(tool.params)}. Nothing happened."
        bound.arguments.pop("self")
        return self._act(tool, dict(bound.arguments))

    args = "\n".join(f"    {name}: {' '.join(text.split())}" for name, text in tool.params.items())
    method.__name__ = method.__qualname__ = tool.name
    method.__signature__ = signature  # type: ignore[attr-defined]
    method.__annotations__ = {**dict.fromkeys(tool.params, str), "return": str}
    method.__doc__ = (
        f"{' '.join(tool.description.split())}\n\n"
        + (f"Args:\n{args}\n\n" if tool.params else "")
        + "Returns:\n    What you observe after the action."
    )
    return method


def _env_class(env_id: str) -> type[AgentEnv]:
    """The class ``gymnasium.make(env_id)`` builds, read from its registration (nothing is built)."""
    entry = gym.spec(env_id).entry_point
    if isinstance(entry, str):
        module, _, name = entry.partition(":")
        entry = getattr(importlib.import_module(module), name)
    if not (isinstance(entry, type) and issubclass(entry, AgentEnv)):
        raise TypeError(f"{env_id} is not an agentgym environment: it declares no tools to offer TRL")
    return entry


def _check_tools(env_id: str, tools: Sequence[Tool]) -> None:
    names = [tool.name for tool in tools]
    if len(set(names)) != len(names):
        raise ValueError(f"{env_id}: tool names repeat: {names}")
    for tool in tools:
        if not tool.name.isidentifier() or keyword.iskeyword(tool.name) or tool.name.startswith("_"):
            raise ValueError(f"{env_id}: tool name {tool.name!r} cannot be a public Python method")
        if tool.name in RESERVED:
            raise ValueError(f"{env_id}: tool name {tool.name!r} clashes with TRL's {sorted(RESERVED)}")


def environment_factory(env_id: str, **env_kwargs: Any) -> type[TRLEnv]:
    """A class for ``GRPOTrainer(environment_factory=...)``: each instance wraps
    ``gymnasium.make(env_id, **env_kwargs)`` and has one tool method per tool of the environment."""
    tools = _env_class(env_id).tools
    _check_tools(env_id, tools)
    name = "".join(part[:1].upper() + part[1:] for part in re.split(r"[^0-9A-Za-z]+", env_id.split("/")[-1]))
    namespace: dict[str, Any] = {tool.name: _tool_method(tool) for tool in tools}
    namespace.update(env_id=env_id, env_kwargs=dict(env_kwargs), __doc__=f"{env_id} for TRL's GRPOTrainer.")
    return type(name or "AgentGymEnv", (TRLEnv,), namespace)


def seed_dataset(seeds: Iterable[int]) -> Any:
    """A ``datasets.Dataset`` with one row per seed: ``prompt`` (an empty user message, which ``reset``
    fills with the task and first observation) and ``seed``."""
    from datasets import Dataset

    seeds = [int(seed) for seed in seeds]
    return Dataset.from_dict({"prompt": [[{"role": "user", "content": ""}] for _ in seeds], "seed": seeds})


def success_reward(environments: Sequence[TRLEnv], **kwargs: Any) -> list[float]:
    """A TRL reward function: 1.0 for a rollout whose episode was won, else 0.0. ``get_reward`` already
    gives TRL the return; pass this in ``reward_funcs`` to log the success rate too (or to train on it)."""
    return [float(env.success) for env in environments]

"""The multi-turn rollout loop: environments talk to a policy through chat messages.

A chat starts with the environment's instructions as the system message. Each turn the observation
becomes a user message in RAGEN's turn-prompt style ("Turn k:" + observation + a format reminder),
the policy answers, and the answer goes back to the environment verbatim.

Many episodes run at once: ``run_episodes`` keeps ``batch_size`` environments busy and asks the policy
for all of their next responses in one batched call; a slot that finishes an episode takes the next
seed (continuous batching). Each finished episode is handed to ``on_episode`` at once, so callers can
write it to disk before the others finish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import gymnasium as gym

from agentgym.formats import ResponseFormat
from agentgym.types import Chat, Generation, Message


def turn_message(turn: int, observation: str, fmt: ResponseFormat) -> Message:
    """The user message that shows the observation of turn ``turn`` (1-based)."""
    return {"role": "user", "content": f"Turn {turn}:\n{observation}\n{fmt.reminder}"}


@dataclass
class Turn:
    """One policy response and what the environment made of it.

    ``response_ids``/``response_logprobs`` hold the exact sampled tokens and their log-probabilities
    when the policy is a trainable model; text-only policies leave them None. ``finish_reason`` is the
    policy's (``"length"``: the reply was cut at the token cap), None when it does not say.
    """

    response: str
    reward: float
    format_ok: bool
    action_valid: bool
    observation: str
    response_ids: list[int] | None = None
    response_logprobs: list[float] | None = None
    finish_reason: str | None = None


@dataclass
class Episode:
    env_id: str
    seed: int
    messages: Chat
    turns: list[Turn] = field(default_factory=list)
    success: bool = False
    terminated: bool = False
    final_info: dict[str, Any] = field(default_factory=dict)

    @property
    def episode_return(self) -> float:
        return float(sum(t.reward for t in self.turns))

    def to_record(self) -> dict[str, Any]:
        """The JSON line written to ``trajectories.jsonl``."""
        return {
            "env": self.env_id,
            "seed": self.seed,
            "success": self.success,
            "return": self.episode_return,
            "turns": len(self.turns),
            "rewards": [t.reward for t in self.turns],
            "format_ok": [t.format_ok for t in self.turns],
            "action_valid": [t.action_valid for t in self.turns],
            "finish_reason": [t.finish_reason for t in self.turns],
            "terminated": self.terminated,
            "messages": self.messages,
            "final_info": _jsonable(self.final_info),
        }

    def turn_records(self) -> list[dict[str, Any]]:
        return [asdict(t) for t in self.turns]


def _jsonable(value: Any) -> Any:
    """A JSON-safe copy of an info dict (numpy scalars become numbers, unknown objects strings)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


class _Slot:
    """One environment and the episode it is playing."""

    def __init__(self, env: gym.Env, env_id: str) -> None:
        self.env: Any = env  # an agentgym env: its ``unwrapped`` has the response ``format``
        self.env_id = env_id
        self.episode: Episode  # set by start()

    def start(self, seed: int) -> None:
        obs, info = self.env.reset(seed=seed)
        fmt = self.env.unwrapped.format
        messages = [{"role": "system", "content": info["instructions"]}, turn_message(1, obs, fmt)]
        self.episode = Episode(env_id=self.env_id, seed=seed, messages=messages)

    def advance(self, generation: Generation) -> bool:
        """Feed one response to the environment; True when the episode is over. A response that carries
        an error (the policy could not answer) ends the episode as aborted, the environment not stepped."""
        episode = self.episode
        if generation.error is not None:
            episode.final_info = {"aborted": True, "error": f"the policy failed: {generation.error}"}
            return True
        obs, reward, terminated, truncated, info = self.env.step(generation.text)
        episode.turns.append(
            Turn(
                response=generation.text,
                reward=float(reward),
                format_ok=bool(info["format_ok"]),
                action_valid=bool(info["action_valid"]),
                observation=obs,
                response_ids=generation.token_ids,
                response_logprobs=generation.logprobs,
                finish_reason=generation.finish_reason,
            )
        )
        episode.messages.append({"role": "assistant", "content": generation.text})
        done = terminated or truncated
        if done:
            episode.success = bool(info["success"])
            episode.terminated = bool(terminated)
            episode.final_info = {k: v for k, v in info.items() if k != "instructions"}
        else:
            episode.messages.append(turn_message(len(episode.turns) + 1, obs, self.env.unwrapped.format))
        return done


def run_episodes(
    make_env: Callable[[], gym.Env],
    env_id: str,
    seeds: Iterable[int],
    policy: Any,
    batch_size: int = 1,
    on_episode: Callable[[Episode], None] | None = None,
) -> list[Episode]:
    """Play one episode per seed with ``policy``, ``batch_size`` at a time; return them in finishing order."""
    pending = list(seeds)[::-1]
    slots = [_Slot(make_env(), env_id) for _ in range(max(1, min(batch_size, len(pending))))]
    finished: list[Episode] = []
    try:
        active = []
        for slot in slots:
            if pending:
                slot.start(pending.pop())
                active.append(slot)
        while active:
            generations = policy.act([s.episode.messages for s in active], [s.env for s in active])
            still_active = []
            for slot, generation in zip(active, generations, strict=True):
                if not slot.advance(generation):
                    still_active.append(slot)
                    continue
                finished.append(slot.episode)
                if on_episode is not None:
                    on_episode(slot.episode)
                if pending:
                    slot.start(pending.pop())
                    still_active.append(slot)
            active = still_active
    finally:
        for slot in slots:
            slot.env.close()
        forget = getattr(policy, "forget", None)  # a Policy's state kept between turns
        if forget is not None:
            forget()
    return finished

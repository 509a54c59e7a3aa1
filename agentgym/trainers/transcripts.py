"""Token-exact transcripts of multi-turn episodes, the data RL and SFT train on: what the model is trained
on is exactly what it saw and sampled.

Each episode keeps one growing list of token ids:
    prompt      the chat template applied to [system, first user message] with the generation prompt
    response    the ids the sampler drew, end-of-turn included, with their log-probs   -> trained
    observation the template's text between that response and the next generation prompt (the end of the
                assistant message, the next user message, the next generation prompt), tokenized alone
                and appended                                                           -> not trained
The transcript is never re-tokenized as a whole, so no token of a response is ever re-split, and the
next turn is generated from exactly these ids.

The episodes themselves run through ``agentgym.rollout.run_episodes`` (continuous batching over the
envs), or with the envs in worker processes through ``agentgym.trainers.env_workers``; the policies here
only keep each chat's token list beside it. Groups are ``group_size`` episodes of one env seed; an
episode's ``member`` is its index in its group.

Sampling seeds. By default one torch seed that advances per ``generate`` call drives a whole batch, so
what an episode samples depends on which episodes share its batches. With ``seed_per_trajectory`` each
episode samples from seeds of (the policy's seed, its env seed, its member, its turn) alone
(:func:`trajectory_seed`): the same tokens whatever the batching, which the env workers need, since there
the batches depend on which env answers first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from agentgym.policies import HFPolicy, Policy, prepare_tokenizer
from agentgym.registry import make_env
from agentgym.rollout import Episode, run_episodes
from agentgym.types import Chat, Generation

# Stands in for an assistant message while rendering the template, to find what the template puts after
# a message's content. Made of characters no chat template adds by itself.
_SENTINEL = "\u2063\u2064agentgym-message-end\u2064\u2063"


@dataclass
class Transcript:
    """One episode as token ids, with the mask of generated tokens and the sampler's log-probs."""

    ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)  # 1 on tokens the policy generated (trained), else 0
    sampler_logprobs: list[float] = field(default_factory=list)  # the sampler's log-prob on generated tokens
    turn_ends: list[int] = field(default_factory=list)  # index of each turn's last generated token
    seed: int = 0
    group: int = 0
    member: int = 0  # index of the episode in its group (the episodes of one env seed)
    rewards: list[float] = field(default_factory=list)
    success: bool = False
    format_ok: list[bool] = field(default_factory=list)

    @property
    def episode_return(self) -> float:
        return float(sum(self.rewards))

    @property
    def generated_tokens(self) -> int:
        return sum(self.mask)

    def extend(self, ids: Sequence[int], trained: bool, logprobs: Sequence[float] | None = None) -> None:
        self.ids.extend(ids)
        self.mask.extend([int(trained)] * len(ids))
        self.sampler_logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))


def observation_ids(tokenizer: Any, chat: Chat, response_ended: bool) -> list[int]:
    """The ids that follow a response in ``chat`` = [..., assistant, user]: the rest of the assistant
    message, the new user message and the generation prompt, rendered by the chat template and tokenized
    on their own. ``response_ended``: the sampled ids already end with the end-of-turn token."""
    if len(chat) < 2 or chat[-2]["role"] != "assistant" or chat[-1]["role"] != "user":
        raise ValueError("observation_ids expects a chat that ends with an assistant then a user message")
    probe = [*chat[:-2], {"role": "assistant", "content": _SENTINEL}, chat[-1]]
    text = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    tail = text[text.rindex(_SENTINEL) + len(_SENTINEL) :]
    eos = tokenizer.eos_token
    if response_ended and eos and tail.startswith(eos):
        tail = tail[len(eos) :]  # the sampled end-of-turn token already closes the message
    return tokenizer.encode(tail, add_special_tokens=False)


def trajectory_seed(base: int, env_seed: int, member: int, turn: int) -> int:
    """The sampling seed of one turn of one episode: a 64-bit mix of (the policy's seed, the env seed, the
    episode's index in its group, the turn) by numpy's SeedSequence. The member keeps the episodes of a
    group apart, which share the env seed and would otherwise sample alike."""
    entropy = [base % 2**64, env_seed % 2**64, member % 2**64, turn % 2**64]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])


class TranscriptBook:
    """Keeps a transcript beside each live chat of ``run_episodes``; chats are matched by identity,
    since the rollout loop appends to the same message list for the whole episode."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._live: dict[int, tuple[Chat, Transcript, int]] = {}  # id(chat) -> (chat, transcript, messages)
        self._started: Counter[int] = Counter()  # episodes begun per env seed since new_rollout()

    def new_rollout(self) -> None:
        """Count group members from 0 again (a new batch of groups)."""
        self._started.clear()

    def begin(self, chat: Chat, seed: int = 0, member: int | None = None) -> Transcript:
        """Start the transcript of a new episode from its first messages. ``member`` None: the next
        index among the episodes of env seed ``seed`` begun since :meth:`new_rollout`."""
        if member is None:
            member = self._started[seed]
        self._started[seed] += 1
        transcript = Transcript(seed=seed, member=member)
        first = self.tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        transcript.extend(first, trained=False)
        self._live[id(chat)] = (chat, transcript, len(chat))
        return transcript

    def begin_new(self, chats: Sequence[Chat], envs: Sequence[Any]) -> None:
        """Begin each chat not seen yet with the seed its env was reset with (members in order)."""
        for chat, env in zip(chats, envs, strict=True):
            if not self.knows(chat):
                self.begin(chat, seed=int(env.unwrapped.np_random_seed))

    def knows(self, chat: Chat) -> bool:
        entry = self._live.get(id(chat))
        return entry is not None and entry[0] is chat

    def transcript(self, chat: Chat) -> Transcript:
        """The live transcript of ``chat`` (begun, not finished)."""
        return self._live[id(chat)][1]

    def forget(self, chat: Chat) -> None:
        """Drop a live episode without finishing it (its environment was lost)."""
        self._live.pop(id(chat), None)

    def prompts(self, chats: Sequence[Chat]) -> list[list[int]]:
        """The ids each chat's next response is generated from (new observations appended)."""
        out = []
        for chat in chats:
            if not self.knows(chat):
                transcript = self.begin(chat, member=0)  # no env seed known: finish() sets the seed
            else:
                _, transcript, seen = self._live[id(chat)]
                if len(chat) == seen:
                    out.append(transcript.ids)  # nothing new since the last call (or since begin)
                    continue
                if len(chat) != seen + 2:
                    raise RuntimeError(
                        f"a chat grew from {seen} to {len(chat)} messages; expected one reply "
                        "and one observation"
                    )
                ended = bool(transcript.ids) and transcript.ids[-1] == self.tokenizer.eos_token_id
                transcript.extend(observation_ids(self.tokenizer, chat, ended), trained=False)
                self._live[id(chat)] = (chat, transcript, len(chat))
            out.append(transcript.ids)
        return out

    def record(self, chats: Sequence[Chat], generations: Sequence[Generation]) -> None:
        for chat, generation in zip(chats, generations, strict=True):
            transcript = self._live[id(chat)][1]
            if generation.token_ids is None:
                raise ValueError("a token-exact transcript needs the sampled token ids of every response")
            transcript.extend(generation.token_ids, trained=True, logprobs=generation.logprobs)
            transcript.turn_ends.append(len(transcript.ids) - 1)

    def finish(self, episode: Episode) -> Transcript:
        """The transcript of a finished episode (forgotten here), with the episode's outcome filled in."""
        chat, transcript, _ = self._live.pop(id(episode.messages))
        assert chat is episode.messages
        transcript.seed = episode.seed
        transcript.rewards = [t.reward for t in episode.turns]
        transcript.success = episode.success
        transcript.format_ok = [t.format_ok for t in episode.turns]
        return transcript


class TokenExactPolicy(HFPolicy):
    """An ``HFPolicy`` that generates each turn from the episode's own token list (see the module doc).

    ``seed_per_trajectory``: each episode samples from :meth:`trajectory_seeds` (needs the envs in
    :meth:`act`, for their seeds); the base of those seeds is the last :meth:`reseed` value."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        engine: Any | None = None,
        seed_per_trajectory: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, tokenizer, **kwargs)
        self.book = TranscriptBook(self.tokenizer)
        self.engine = engine  # an optional faster sampler with the same generate(prompts) (e.g. vLLM)
        self.seed_per_trajectory = seed_per_trajectory

    def trajectory_seeds(self, chats: Sequence[Chat]) -> list[int]:
        """The sampling seed of each live chat's next turn (:func:`trajectory_seed`)."""
        out = []
        for chat in chats:
            t = self.book.transcript(chat)
            out.append(trajectory_seed(self._seed, t.seed, t.member, len(t.turn_ends) + 1))
        return out

    def act(self, chats: Sequence[Chat], envs: Sequence[Any] = ()) -> list[Generation]:
        seeded = self.seed_per_trajectory and len(envs) == len(chats)
        if len(envs) == len(chats):
            self.book.begin_new(chats, envs)
        prompts = self.book.prompts(chats)
        if self.engine is not None:
            generations = self.engine.generate(
                prompts, self.temperature, self.max_new_tokens, seed=self._seed
            )
            self._seed += 1
        else:
            generations = self.generate(prompts, self.trajectory_seeds(chats) if seeded else None)
        self.book.record(chats, generations)
        return generations


class ExpertTokenPolicy(Policy):
    """The environment's oracle, written as tokens: the expert response tokenized alone plus the
    end-of-turn token, so SFT data has the same layout and masking as RL rollouts."""

    spec = "oracle"

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = prepare_tokenizer(tokenizer)
        self.book = TranscriptBook(self.tokenizer)

    def act(self, chats: Sequence[Chat], envs: Sequence[Any]) -> list[Generation]:
        self.book.begin_new(chats, envs)
        self.book.prompts(chats)
        generations = []
        for env in envs:
            text = env.unwrapped.oracle_action()
            ids = self.tokenizer.encode(text, add_special_tokens=False) + [self.tokenizer.eos_token_id]
            generations.append(Generation(text, ids, [0.0] * len(ids)))
        self.book.record(chats, generations)
        return generations


def play(
    env_id: str,
    seeds: Sequence[int],
    group_size: int,
    policy: TokenExactPolicy | ExpertTokenPolicy,
    *,
    env_kwargs: dict[str, Any] | None = None,
    batch_size: int | None = None,
    on_transcript: Callable[[Transcript], None] | None = None,
) -> list[Transcript]:
    """``group_size`` episodes of each seed, as transcripts ordered by (group, finishing order).

    Group ``g`` is the episodes of ``seeds[g]``: they share the env seed, so they start in the same state.
    """
    env_kwargs = dict(env_kwargs or {})
    group_of = {seed: g for g, seed in enumerate(seeds)}
    if len(group_of) != len(seeds):
        raise ValueError("the seeds of one rollout batch must be distinct (one group per seed)")
    all_seeds = [s for s in seeds for _ in range(group_size)]
    transcripts: list[Transcript] = []
    policy.book.new_rollout()  # members count from 0 in each group of this batch

    def finished(episode: Episode) -> None:
        transcript = policy.book.finish(episode)
        transcript.group = group_of[episode.seed]
        transcripts.append(transcript)
        if on_transcript is not None:
            on_transcript(transcript)

    run_episodes(
        lambda: make_env(env_id, **env_kwargs),
        env_id,
        all_seeds,
        policy,
        batch_size=batch_size or len(all_seeds),
        on_episode=finished,
    )
    transcripts.sort(key=lambda t: t.group)  # stable: finishing order within a group
    return transcripts


# ----- batches for the model -----


@dataclass
class TokenBatch:
    """Right-padded transcripts. Per-token tensors are (batch, time - 1 - start), aligned with the targets
    ``input_ids[:, 1 + start:]``: column j is about predicting token ``start + j + 1``. ``start`` skips the
    leading columns where no row has a trainable target (the prompt part all rows share the length of),
    so the output layer and the softmax run only where a loss can be."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    loss_mask: torch.Tensor
    sampler_logprobs: torch.Tensor
    rewards: torch.Tensor  # rewards placed on trainable target tokens (for GAE)
    start: int = 0

    @property
    def targets(self) -> torch.Tensor:
        return self.input_ids[:, 1 + self.start :]

    def to(self, device: str | torch.device) -> TokenBatch:
        tensors = {f: getattr(self, f).to(device) for f in self.__dataclass_fields__ if f != "start"}
        return TokenBatch(**tensors, start=self.start)


def make_batch(transcripts: Sequence[Transcript], pad_id: int, reward_placement: str = "last") -> TokenBatch:
    """Right-pad ``transcripts`` into one batch; position ids count real tokens only.

    Right, not left: every query then sees at least its row's first token, where a left pad is a query
    that sees nothing. With left pads, SmolLM2's bf16 update on an H200 got NaN gradients through SDPA
    attention from a finite forward (eager attention: finite; ``benchmarks/gpu_check.py``).

    ``reward_placement``: ``last`` puts the episode return on its last generated token (terminal reward);
    ``turn`` puts each turn's reward on that turn's last generated token.
    """
    width = max(len(t.ids) for t in transcripts)
    n = len(transcripts)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.float32)
    sampler = torch.zeros((n, width), dtype=torch.float32)
    rewards = torch.zeros((n, width), dtype=torch.float32)
    for row, t in enumerate(transcripts):
        length = len(t.ids)
        input_ids[row, :length] = torch.tensor(t.ids)
        attention[row, :length] = 1
        mask[row, :length] = torch.tensor(t.mask, dtype=torch.float32)
        sampler[row, :length] = torch.tensor(t.sampler_logprobs, dtype=torch.float32)
        if reward_placement == "last":
            if t.turn_ends:
                rewards[row, t.turn_ends[-1]] = t.episode_return
        elif reward_placement == "turn":
            for end, reward in zip(t.turn_ends, t.rewards, strict=False):
                rewards[row, end] += reward
        else:
            raise ValueError(f"reward_placement must be 'last' or 'turn', got {reward_placement!r}")
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    trainable = mask[:, 1:].any(dim=0).nonzero()
    start = int(trainable[0]) if len(trainable) else 0
    return TokenBatch(
        input_ids,
        attention,
        position_ids,
        mask[:, 1 + start :],
        sampler[:, 1 + start :],
        rewards[:, 1 + start :],
        start,
    )


def model_logits(model: Any, batch: TokenBatch) -> torch.Tensor:
    """The model's output at positions ``start .. time - 2`` (those that predict ``batch.targets``):
    (batch, time - 1 - start, vocab or 1). Causal LMs compute only those rows of the output layer."""
    width = batch.input_ids.shape[1]
    extra = {"logits_to_keep": width - batch.start} if batch.start and _keeps_logits(model) else {}
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
        **extra,
    )
    logits = out.logits
    return logits[:, -(width - batch.start) : -1] if not extra else logits[:, :-1]


def _keeps_logits(model: Any) -> bool:
    import inspect

    forward = getattr(model, "forward", None)
    if forward is None:
        return False
    try:
        return "logits_to_keep" in inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return False

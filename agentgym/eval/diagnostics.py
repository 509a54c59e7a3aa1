"""Model diagnostics of a batch of rollouts: MI (template collapse), entropy, control-token spikes.

The entry point for trainers and for ``agentgym eval`` is :func:`score_batch`. It takes the turns of a
batch of episodes as token ids (each turn's chat-template prompt and the exact sampled response ids) and
scores them with the policy model:

- **MI**, on (x, z) pairs chosen as RAGEN-2 does: ``first_turn`` (each episode's first turn) and
  ``trajectory`` (draw an episode uniformly, then one of its turns uniformly; with replacement). x is the
  prompt plus the reply's tokens up to and including ``<think>``; z is the tokens strictly between
  ``<think>`` and ``</think>``. Replies without a non-empty think block are left out (their share is
  ``valid_thinking_rate``). Every z is scored under every distinct x (``agentgym.eval.scoring``, prompt
  prefixes shared); metrics per token (``mi``...) and per sequence (``mi_seq``...). ``reasoning_entropy``
  is the token entropy of each z under its own x, from the same pass.
- **Entropy**: the policy's token-level entropy over the vocabulary on every generated token (the
  reply under its own prompt, end-of-turn included), averaged over tokens.
- **Control tokens**: the wrong control mass on the same pass (``agentgym.eval.control_tokens``).
- **Tool-call probe** (tool-call formats only, :func:`tool_call_probe`): the probabilities of what
  comes right after the tool-call opener, the JSON opener ``{"`` (``p_lbrace``), end-of-turn
  (``p_eos``) or the opener again (``p_repeat_open``), with the opener written after each turn's prompt
  and where the sampled reply wrote it.

Pass an :class:`~agentgym.eval.mi.MutualInformationEMA` per sampling mode (``ema=``) to get the EMA z-score
across calls. :func:`flatten` turns the nested result into ``{"mi/first_turn/mi": ...}`` for loggers.

For stored ``trajectories.jsonl`` records, :func:`model_diagnostics` turns each episode into token ids
with the policy's tokenizer (:func:`turn_samples`) and scores them with the policy's model.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from agentgym.eval.control_tokens import (
    TOOL_PROBE_NAMES,
    control_token_ids,
    prefix_texts,
    tool_probe_sequences,
    wrong_control_mass,
)
from agentgym.eval.metrics import control_spike_report
from agentgym.eval.mi import MutualInformationEMA, mutual_information
from agentgym.eval.scoring import PairScore, cross_score, score_pairs
from agentgym.formats import ResponseFormat, ToolCallFormat, get_format
from agentgym.policies import HFPolicy, Policy, shared_prefix_length

MI_MODES = ("first_turn", "trajectory")


@dataclass
class TurnSample:
    """One assistant turn as the model saw and wrote it."""

    prompt_ids: list[int]  # the chat-template prompt (generation prompt included)
    response_ids: list[int]  # the exact sampled ids, end-of-turn included


def turns_from_token_transcript(
    ids: Sequence[int], mask: Sequence[int], turn_ends: Sequence[int]
) -> list[TurnSample]:
    """The turns of a token-exact transcript (one id list for the whole episode, ``mask`` 1 on generated
    tokens, ``turn_ends[t]`` the index of turn t's last generated token): turn t's prompt is every id
    before its first generated token, its response the generated run ending at ``turn_ends[t]``."""
    turns = []
    for end in turn_ends:
        start = end
        while start > 0 and mask[start - 1]:
            start -= 1
        turns.append(TurnSample(list(ids[:start]), list(ids[start : end + 1])))
    return turns


def split_reasoning(
    tokenizer: Any, response_ids: Sequence[int], think_tag: str = "think"
) -> tuple[list[int], list[int]] | None:
    """(opener, reasoning): the reply's tokens up to and including ``<think>`` and the tokens strictly
    between ``<think>`` and ``</think>``; None when the reply has no complete think block. A token that
    straddles a tag goes with the tag, so the reasoning holds only content tokens."""
    texts = prefix_texts(tokenizer, response_ids)
    opening, closing = f"<{think_tag}>", f"</{think_tag}>"
    start = next((t for t, text in enumerate(texts) if opening in text), None)
    if start is None:
        return None
    content_from = texts[start].index(opening) + len(opening)
    close_at = next((t for t in range(start, len(texts)) if closing in texts[t][content_from:]), None)
    if close_at is None:
        return None
    close_char = texts[close_at].index(closing, content_from)
    end = start
    while end < close_at and len(texts[end + 1]) <= close_char:
        end += 1
    return list(response_ids[:start]), list(response_ids[start:end])


def sample_turns(
    turn_counts: Sequence[int], mode: str, num_samples: int | None = None, seed: int = 0
) -> list[tuple[int, int]]:
    """(episode, turn) pairs: ``first_turn`` (every episode's first turn), ``turn`` (every turn, or a
    uniform subset of ``num_samples``) or ``trajectory`` (``num_samples`` draws, default the number of
    turns: an episode uniformly, then one of its turns uniformly, with replacement)."""
    rng = np.random.default_rng(seed)
    alive = [e for e, n in enumerate(turn_counts) if n > 0]
    if mode == "first_turn":
        pairs = [(e, 0) for e in alive]
        if num_samples is not None and num_samples < len(pairs):
            pairs = [pairs[k] for k in sorted(rng.choice(len(pairs), num_samples, replace=False))]
        return pairs
    if mode == "turn":
        pairs = [(e, t) for e in alive for t in range(turn_counts[e])]
        if num_samples is not None and num_samples < len(pairs):
            pairs = [pairs[k] for k in sorted(rng.choice(len(pairs), num_samples, replace=False))]
        return pairs
    if mode == "trajectory":
        if not alive:
            return []
        draws = num_samples if num_samples is not None else sum(turn_counts)
        pairs = []
        for _ in range(draws):
            e = alive[int(rng.integers(len(alive)))]
            pairs.append((e, int(rng.integers(turn_counts[e]))))
        return pairs
    raise ValueError(f"mode must be first_turn, turn or trajectory, got {mode!r}")


def mi_from_turns(
    model: Any,
    tokenizer: Any,
    turns: Sequence[TurnSample],
    *,
    think_tag: str = "think",
    ema: MutualInformationEMA | None = None,
    naive: bool = False,
    **scoring_kwargs: Any,
) -> dict[str, Any]:
    """MI metrics of (prompt, reasoning) pairs taken from ``turns`` (each turn is its own sample)."""
    contexts: list[list[int]] = []
    column_of: dict[tuple[int, ...], int] = {}
    reasonings, owner = [], []
    for turn in turns:
        split = split_reasoning(tokenizer, turn.response_ids, think_tag)
        if split is None or not split[1]:
            continue
        opener, reasoning = split
        context = tuple(turn.prompt_ids) + tuple(opener)
        if context not in column_of:  # identical prompts are one column
            column_of[context] = len(contexts)
            contexts.append(list(context))
        reasonings.append(reasoning)
        owner.append(column_of[context])
    result: dict[str, Any] = {
        "valid_thinking_rate": len(reasonings) / len(turns) if turns else 0.0,
        "n_samples": len(reasonings),
        "n_prompts": len(contexts),
    }
    if len(contexts) < 2:
        result["note"] = "MI needs at least two distinct prompts with a think block"
        return result
    scoring_kwargs.setdefault("pad_id", tokenizer.pad_token_id or 0)
    scores = cross_score(model, contexts, reasonings, owner, naive=naive, **scoring_kwargs)
    per_token = (
        ema.update(scores.logp_mean, owner)
        if ema is not None
        else mutual_information(scores.logp_mean, owner)
    )
    per_sequence = mutual_information(scores.logp_sum, owner)
    result.update(per_token)
    for key in ("mi", "conditional_entropy", "marginal_entropy", "retrieval_acc", "mi_zscore"):
        result[f"{key}_seq"] = per_sequence[key]
    if scores.own_entropy is not None:
        result["reasoning_entropy"] = float(np.average(scores.own_entropy, weights=scores.lengths))
    result["mean_reasoning_tokens"] = float(scores.lengths.mean())
    return result


def played_tokens(episodes: Sequence[Sequence[TurnSample]]) -> int:
    """The tokens playing these episodes ran through the model: every turn's prompt past the head all
    prompts share (a batch encodes that once) and its reply."""
    prompts = [t.prompt_ids for e in episodes for t in e]
    head = shared_prefix_length(prompts) if len(prompts) > 1 else 0
    return sum(len(t.prompt_ids) - head + len(t.response_ids) for e in episodes for t in e)


def mi_tokens(tokenizer: Any, turns: Sequence[TurnSample], think_tag: str, head: int = 0) -> int:
    """The tokens :func:`mi_from_turns` runs through the model for these turns: each distinct context
    past the shared ``head``, and every distinct reasoning under every context."""
    contexts: set[tuple[int, ...]] = set()
    reasonings: set[tuple[int, ...]] = set()
    for turn in turns:
        split = split_reasoning(tokenizer, turn.response_ids, think_tag)
        if split is not None and split[1]:
            contexts.add(tuple(turn.prompt_ids) + tuple(split[0]))
            reasonings.add(tuple(split[1]))
    return sum(len(c) - head for c in contexts) + len(contexts) * sum(len(z) for z in reasonings)


def score_batch(
    model: Any,
    tokenizer: Any,
    episodes: Sequence[Sequence[TurnSample]],
    *,
    response_format: ResponseFormat | str = "answer",
    modes: Sequence[str] = MI_MODES,
    max_samples: int | None = 64,
    max_scored_turns: int | None = 256,
    seed: int = 0,
    ema: Mapping[str, MutualInformationEMA] | None = None,
    control_tokens: bool = True,
    own_pass: bool = True,
    tool_probe: bool = True,
    cost_share: float | None = None,
    **scoring_kwargs: Any,
) -> dict[str, Any]:
    """MI (per mode), generated-token entropy, control-token spikes and (tool-call formats) the tool-call
    probe of a batch of episodes.

    ``cost_share`` bounds the scoring to that share of the tokens the episodes themselves ran through the
    model (:func:`played_tokens`), split evenly between the parts (each MI mode, the own pass, the probe):
    an MI mode draws fewer samples, the own pass and the probe take fewer turns, until their tokens fit
    (at least two samples, one episode, one turn). Scoring a token costs about what encoding a prompt
    token did, and less than generating one, so 0.25 keeps the diagnostics within about a quarter of
    the evaluation's time. What each part drew is in the result (``samples_drawn``, ``turns``).

    ``episodes[e][t]`` is turn t of episode e. ``max_samples`` caps the (x, z) pairs of each MI mode (the
    cost grows as its square); ``max_scored_turns`` caps the turns scored for entropy and control tokens
    (whole episodes, a uniform subset fixed by ``seed``); ``own_pass=False`` skips that pass (a trainer
    that already logs its entropy only needs MI). Returns ``{"mi": {mode: {...}}, "entropy": float,
    "entropy_tokens": int, "control_tokens": {...}, "tool_probe": {...}}`` (``tool_probe`` for tool-call
    formats, on up to ``max_scored_turns`` turns; ``tool_probe=False`` skips it).
    """
    fmt = get_format(response_format)
    think_tag = fmt.think_tag
    counts = [len(e) for e in episodes]
    probing = tool_probe and isinstance(fmt, ToolCallFormat)
    part_budget = None
    result: dict[str, Any] = {"mi": {}}
    if cost_share is not None:
        played = played_tokens(episodes)
        part_budget = cost_share * played / (len(modes) + int(own_pass) + int(probing))
        result["budget"] = {"cost_share": cost_share, "played_tokens": played, "tokens_per_part": part_budget}
    head = shared_prefix_length([t.prompt_ids for e in episodes for t in e]) if sum(counts) > 1 else 0
    for mode in modes:
        picked = sample_turns(counts, mode, max_samples, seed)
        while part_budget is not None and len(picked) > 2:
            turns = [episodes[e][t] for e, t in picked]
            if mi_tokens(tokenizer, turns, think_tag, head) <= part_budget:
                break
            picked = sample_turns(counts, mode, max(2, int(0.8 * len(picked))), seed)
        result["mi"][mode] = mi_from_turns(
            model,
            tokenizer,
            [episodes[e][t] for e, t in picked],
            think_tag=think_tag,
            ema=None if ema is None else ema.get(mode),
            **scoring_kwargs,
        )
        result["mi"][mode]["samples_drawn"] = len(picked)

    if probing:
        picked = sample_turns(counts, "turn", max_scored_turns, seed)
        while part_budget is not None and len(picked) > 1:
            if sum(len(episodes[e][t].prompt_ids) - head for e, t in picked) <= part_budget:
                break
            picked = sample_turns(counts, "turn", int(0.8 * len(picked)), seed)
        result["tool_probe"] = tool_call_probe(
            model, tokenizer, [episodes[e][t] for e, t in picked], fmt, **scoring_kwargs
        )
    if not own_pass:
        return result
    # Entropy and control-token mass: each reply under its own prompt.
    probes = sorted(control_token_ids(tokenizer, fmt)) if control_tokens else None
    scoring_kwargs.setdefault("pad_id", tokenizer.pad_token_id or 0)
    per_turn = own_prompt_scores(
        model, episodes, max_scored_turns, seed, probes, max_tokens=part_budget, **scoring_kwargs
    )
    result["turns"] = len(per_turn)
    entropies = [score.entropy for _, score in per_turn if score.entropy is not None]
    total = int(sum(len(h) for h in entropies))
    result["entropy"] = float(np.concatenate(entropies).mean()) if total else None
    result["entropy_tokens"] = total
    if probes is not None:
        masses = [
            wrong_control_mass(tokenizer, fmt, turn.response_ids, score.probe_probs, probes)
            for turn, score in per_turn
        ]
        result["control_tokens"] = control_spike_report(masses)
    return result


def tool_call_probe(
    model: Any,
    tokenizer: Any,
    turns: Sequence[TurnSample],
    response_format: ResponseFormat | str = "tool_call",
    **scoring_kwargs: Any,
) -> dict[str, Any]:
    """The tool-use collapse probe: how the policy continues a tool-call opener.

    The probability of each continuation (the JSON opener ``{"``, end-of-turn, the opener again) is the
    product of its tokens' probabilities at temperature 1, as token sequences of the model's own
    tokenizer (``agentgym.eval.control_tokens.tool_probe_sequences`` says where the context stops when
    the opener shares a token with what follows). It is read at two places:

    - after each turn's prompt (a chat-template prompt ending in the generation prompt) with the opener
      written as the reply's first text: ``p_lbrace``, ``p_eos``, ``p_repeat_open``, ``p_rest`` (all
      else), means over ``n_prompts`` turns. Defined for every turn, also when the policy no longer
      writes the opener by itself;
    - ``in_reply``: where the sampled reply itself first wrote the opener, after whatever came before
      it (a think block), on the reply's own tokens up to the token boundary where the opener's head
      ends: the same means over the ``n_turns`` turns where that boundary exists (a token that straddles
      it leaves the turn out), and ``opened_rate``, their share of all turns.

    ``opener_tail`` is the end of the opener scored inside each continuation (empty when the opener ends
    on a token boundary).

    The tool-use collapse paper's code (Tool-RL-Box, verl's ``dp_actor.py``, behind its
    ``trainer_test`` flag) reads the same three probabilities from one softmax, where Qwen's ``{"``,
    ``<|im_end|>`` and ``<tool_call>`` are single tokens, at the first place in each training response
    where an assistant turn opens with ``<|im_start|>assistant\n<tool_call>\n``, and averages over the
    responses where it finds one (the first turn's opener is in the prompt there, so it reads later
    turns). ``in_reply`` is that reading for replies that may think first; the forced opener is the
    same reading on every turn.
    """
    probe = tool_probe_sequences(tokenizer, response_format)
    continuations, names = [], []
    for name in TOOL_PROBE_NAMES:
        for ids in probe.continuations[name]:
            continuations.append(ids)
            names.append(name)
    forced = [list(t.prompt_ids) + probe.head for t in turns]
    in_reply = []
    head_text = tokenizer.decode(probe.head)
    for t in turns:
        at = _end_of_first(tokenizer, t.response_ids, head_text, probe.opener) if probe.head else None
        if at is not None:
            in_reply.append(list(t.prompt_ids) + list(t.response_ids[:at]))
    contexts = forced + in_reply
    pairs = [(i, j) for j in range(len(contexts)) for i in range(len(continuations))]
    scoring_kwargs.setdefault("pad_id", tokenizer.pad_token_id or 0)
    scores = score_pairs(model, contexts, continuations, pairs, **scoring_kwargs) if contexts else {}
    probs = np.zeros((len(contexts), len(TOOL_PROBE_NAMES)))
    for (i, j), score in scores.items():
        probs[j, TOOL_PROBE_NAMES.index(names[i])] += np.exp(score.total)

    def means(rows: np.ndarray) -> dict[str, float | None]:
        if not len(rows):
            return {f"p_{name}": None for name in (*TOOL_PROBE_NAMES, "rest")}
        out: dict[str, float | None] = {
            f"p_{name}": float(rows[:, k].mean()) for k, name in enumerate(TOOL_PROBE_NAMES)
        }
        out["p_rest"] = float(max(0.0, 1.0 - rows.sum(axis=1).mean()))
        return out

    return {
        **means(probs[: len(forced)]),
        "n_prompts": len(forced),
        "opener_tail": probe.tail,
        "in_reply": {
            **means(probs[len(forced) :]),
            "n_turns": len(in_reply),
            "opened_rate": len(in_reply) / len(turns) if turns else None,
        },
    }


def _end_of_first(tokenizer: Any, ids: Sequence[int], head_text: str, opener: str) -> int | None:
    """The first t such that the text of ``ids[:t]`` ends with ``head_text`` at the start of an opener
    written in full, or None. Matched on text, since a reply's tokens need not split the opener as it
    does alone (after ``</think>`` a byte-level BPE writes ``><`` as one token)."""
    text = tokenizer.decode(list(ids))
    start = text.find(opener)
    if start < 0:
        return None
    for t in range(1, len(ids) + 1):
        prefix = tokenizer.decode(list(ids[:t]))
        if len(prefix) >= start + len(head_text):
            return t if prefix == text[:start] + head_text else None
    return None


def _is_token_exact(episode: Sequence[TurnSample]) -> bool:
    """Each turn's prompt extends the previous turn's prompt + response (a token-exact transcript)."""
    for before, after in zip(episode, episode[1:], strict=False):
        seen = len(before.prompt_ids) + len(before.response_ids)
        if (
            after.prompt_ids[: len(before.prompt_ids)] != before.prompt_ids
            or after.prompt_ids[len(before.prompt_ids) : seen] != before.response_ids
        ):
            return False
    return True


def own_prompt_scores(
    model: Any,
    episodes: Sequence[Sequence[TurnSample]],
    max_turns: int | None,
    seed: int,
    probe_ids: Sequence[int] | None,
    max_tokens: float | None = None,
    **scoring_kwargs: Any,
) -> list[tuple[TurnSample, PairScore]]:
    """Every reply of a uniform subset of episodes (about ``max_turns`` turns and at most ``max_tokens``
    scored tokens in all, at least one episode) scored under its own prompt, with token entropies and
    probe probabilities. A token-exact episode is scored in one pass (its last turn's whole sequence:
    every earlier reply sits inside it); others turn by turn."""
    order = np.random.default_rng(seed).permutation(len(episodes))
    chosen: list[list[TurnSample]] = []
    budget = max_turns if max_turns is not None else sum(len(e) for e in episodes)
    tokens_left = max_tokens if max_tokens is not None else float("inf")
    firsts = [e[0].prompt_ids for e in episodes if e]
    shared = shared_prefix_length(firsts) if len(firsts) > 1 else 0  # encoded once by the scorer
    for e in order:
        episode = [t for t in episodes[e] if t.response_ids]
        if not episode:
            continue
        if _is_token_exact(episode):
            cost = len(episode[-1].prompt_ids) + len(episode[-1].response_ids) - shared
        else:
            cost = sum(len(t.prompt_ids) + len(t.response_ids) - shared for t in episode)
        if not chosen or (len(episode) <= budget and cost <= tokens_left):
            chosen.append(episode)
            budget -= len(episode)
            tokens_left -= cost
    contexts, continuations, spans = [], [], []  # spans: (turn, pair index, start offset in continuation)
    for episode in chosen:
        if len(episode) > 1 and _is_token_exact(episode):
            head = episode[0].prompt_ids
            last = episode[-1]
            contexts.append(head)
            continuations.append(last.prompt_ids[len(head) :] + last.response_ids)
            for turn in episode:
                spans.append((turn, len(contexts) - 1, len(turn.prompt_ids) - len(head)))
        else:
            for turn in episode:
                contexts.append(turn.prompt_ids)
                continuations.append(turn.response_ids)
                spans.append((turn, len(contexts) - 1, 0))
    pairs = [(k, k) for k in range(len(contexts))]
    scores = score_pairs(
        model, contexts, continuations, pairs, with_entropy=True, probe_ids=probe_ids, **scoring_kwargs
    )
    out = []
    for turn, k, start in spans:
        whole = scores[(k, k)]
        end = start + len(turn.response_ids)
        out.append(
            (
                turn,
                PairScore(
                    whole.logprobs[start:end],
                    None if whole.entropy is None else whole.entropy[start:end],
                    None if whole.probe_probs is None else whole.probe_probs[start:end],
                ),
            )
        )
    return out


def flatten(metrics: Mapping[str, Any], prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """``{"mi": {"first_turn": {"mi": 0.3}}}`` -> ``{"mi/first_turn/mi": 0.3}`` (for metric loggers)."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, name, sep))
        else:
            flat[name] = value
    return flat


# ----- stored episodes, scored with a policy's model -----


def wants_diagnostics(policy_spec: str, policy: Policy | None) -> bool:
    """Model diagnostics need the policy's model: ``hf:`` and ``checkpoint:`` policies."""
    return isinstance(policy, HFPolicy) or policy_spec.split(":", 1)[0] in ("hf", "checkpoint")


def turn_samples(policy: HFPolicy, record: dict[str, Any]) -> list[TurnSample]:
    """The turns of a stored episode as (prompt ids, response ids) for the policy's model."""
    messages, samples = record["messages"], []
    stored = record.get("response_ids") or []
    turn = 0
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = policy.encode_chats([messages[:k]])[0]
        if turn < len(stored) and stored[turn] is not None:
            response = list(stored[turn])
        else:  # an episode stored without ids: re-tokenize its text (close, not token-exact)
            response = policy.tokenizer.encode(message["content"], add_special_tokens=False)
            response.append(policy.tokenizer.eos_token_id)
        samples.append(TurnSample(list(prompt), response))
        turn += 1
    return samples


def model_diagnostics(
    policy: Policy,
    records: list[dict[str, Any]],
    response_format: str,
    *,
    max_samples: int = 64,
    seed: int = 0,
    progress: bool = False,
    cost_share: float | None = 0.25,
) -> dict[str, Any]:
    """MI, entropy and control-token spikes of stored episodes, scored with the policy's model, within
    ``cost_share`` of the tokens the episodes took to play (see :func:`score_batch`; None: no bound).
    ``progress`` shows a bar of the (continuation, context) pairs scored."""
    if not isinstance(policy, HFPolicy):
        raise ValueError(f"diagnostics need an hf: or checkpoint: policy, got {policy.spec!r}")
    started = time.perf_counter()
    episodes = [turn_samples(policy, r) for r in records]
    with tqdm(desc="diagnostics", unit="pair", disable=not progress, total=0) as bar:
        report = score_batch(
            policy.model,
            policy.tokenizer,
            episodes,
            response_format=response_format,
            max_samples=max_samples,
            max_scored_turns=4 * max_samples,
            seed=seed,
            progress=bar,
            cost_share=cost_share,
        )
    report["elapsed_s"] = round(time.perf_counter() - started, 3)
    return report

"""Policies: map a batch of chats to a batch of responses.

Specs (``make_policy``):
    random                     a well-formatted response with a uniformly random command
    oracle                     the environment's ``oracle_action()``
    hf:<name or path>          a transformers causal LM (CPU or GPU), batched generation
    openai:<model>@<base_url>  any OpenAI-compatible chat server (vLLM, SGLang, hosted APIs)
    checkpoint:<run dir>       the newest ``checkpoint-N`` of an ``agentgym train`` run (an hf: model)
"""

from __future__ import annotations

import json
import os
import re
import warnings
import zlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agentgym.errors import UsageError, check_kwargs
from agentgym.models import cache_argument, kv_layers, make_kv_cache, output_cache, stack_kv
from agentgym.types import Chat, Generation

# The reply length cap of every model policy (hf:, checkpoint:, openai:), so that the same eval does not
# change with the backend. A reply cut there is recorded with finish_reason "length".
DEFAULT_MAX_NEW_TOKENS = 256
# a batch whose prompts share at least this many leading tokens encodes them once (HFPolicy.generate)
MIN_SHARED_PREFIX = 16


class Policy(ABC):
    spec: str = ""

    @abstractmethod
    def act(self, chats: Sequence[Chat], envs: Sequence[Any]) -> list[Generation]:
        """Responses for ``chats``; ``envs[i]`` is the environment that ``chats[i]`` talks to."""

    def forget(self) -> None:
        """Drop what the policy keeps between calls to speed up an episode's next turn (``run_episodes``
        calls it when its episodes are over)."""
        return None

    def close(self) -> None:
        """Free what the policy holds (models, clients)."""
        return None


class RandomPolicy(Policy):
    """Uniformly random commands. The generator is seeded from the chat itself, so an episode's random
    play depends only on its seed, not on batching, workers or resumption."""

    spec = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def act(self, chats: Sequence[Chat], envs: Sequence[Any]) -> list[Generation]:
        out = []
        for chat, env in zip(chats, envs, strict=True):
            digest = zlib.crc32(json.dumps(chat, sort_keys=True).encode())
            rng = np.random.default_rng([self.seed, digest])
            out.append(Generation(env.unwrapped.random_action(rng)))
        return out


class OraclePolicy(Policy):
    """The environment's own perfect play: BFS plans, gold answers, reference solutions, walkthroughs."""

    spec = "oracle"

    def act(self, chats: Sequence[Chat], envs: Sequence[Any]) -> list[Generation]:
        return [Generation(env.unwrapped.oracle_action()) for env in envs]


# A ChatML-like template for tokenizers that come without one (base models, tokenizers trained locally).
DEFAULT_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Left padding, a pad token (eos when there is none) and a chat template."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return tokenizer


DTYPES = ("float32", "bfloat16", "float16")


class HFPolicy(Policy):
    """A transformers causal LM. Sampling is plain temperature sampling (no top-k / top-p), so the
    returned log-probs are exactly those of the sampling distribution; ``temperature=0`` is greedy
    decoding, whose log-probs are taken at temperature 1.

    Seeding. When :meth:`act` is given the environments (as the rollout loop does), each chat samples
    from its own generator, seeded from (``seed``, the episode's seed, the turn): an episode's tokens then
    depend on its seed alone, not on which episodes share its batch, how many workers play, or where a
    run was resumed, as with greedy decoding (up to the float rounding that batch shapes cause, which
    greedy decoding shares). Two episodes of the same env seed therefore sample alike; a different
    ``seed`` samples differently. Without the environments (a direct ``generate``, the trainers'
    rollouts), one torch seed that advances per call drives the whole batch.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any | None = None,
        *,
        temperature: float = 0.0,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        device: str | None = None,
        dtype: str | None = None,
        seed: int = 0,
        gguf_file: str | None = None,
        spec: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype not in (None, *DTYPES):
            raise UsageError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if isinstance(model, (str, os.PathLike)):
            self.spec = f"hf:{model}"
            torch_dtype = (
                getattr(torch, dtype) if dtype else (torch.bfloat16 if self.device == "cuda" else None)
            )
            extra = {"gguf_file": gguf_file} if gguf_file else {}
            try:
                tokenizer = tokenizer or AutoTokenizer.from_pretrained(model, **extra)
                model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype, **extra)
            except OSError as exc:  # not a model folder, no such hub name, offline: the message says which
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise UsageError(f"cannot load the model {str(model)!r}: {first}") from exc
        if tokenizer is None:
            raise ValueError("a model object needs its tokenizer")
        self.model = model.to(self.device).eval()
        self.tokenizer = prepare_tokenizer(tokenizer)
        self.temperature, self.max_new_tokens = temperature, max_new_tokens
        self.spec = spec or self.spec  # how results name this policy; default hf:<path> for a loaded model
        self.seed = seed  # the run's sampling seed, with the episode seed and turn (see the class doc)
        self._seed = seed
        self._kept: _KeptCache | None = None  # the last generate's KV cache, for the next turns

    def reseed(self, seed: int) -> None:
        """Sample the next ``generate`` calls from torch seeds ``seed``, ``seed + 1``, ..."""
        self._seed = seed

    def encode_chats(self, chats: Sequence[Chat]) -> list[list[int]]:
        return [
            self.tokenizer.apply_chat_template(
                chat, add_generation_prompt=True, tokenize=True, return_dict=False
            )
            for chat in chats
        ]

    def act(self, chats: Sequence[Chat], envs: Sequence[Any] = ()) -> list[Generation]:
        return self.generate(self.encode_chats(chats), self.sampling_seeds(chats, envs))

    def sampling_seeds(self, chats: Sequence[Chat], envs: Sequence[Any]) -> list[int] | None:
        """One sampling seed per chat (see :func:`episode_sampling_seeds`)."""
        return episode_sampling_seeds(self.seed, chats, envs)

    def generate(self, prompts: Sequence[list[int]], seeds: Sequence[int] | None = None) -> list[Generation]:
        """Sample a response for each prompt (token ids); batched, KV cache, eval mode.

        ``seeds``: one per prompt, so that each row samples from its own generator and its tokens do not
        depend on the other rows; without them one torch seed that advances per call drives the batch.

        No piece of prompt is encoded twice (:meth:`_prefill`): a prompt that continues a sequence of the
        previous call (an episode's next turn: its last prompt, reply and the new observation) reuses that
        sequence's KV cache, the head all other prompts share (an env's instructions: about 200 of
        FrozenLake's 260 first-turn tokens) is encoded once, and so is a prompt the batch repeats (a rollout
        group's first turn). The kept cache is dropped by :meth:`forget` and when the weights change."""
        import torch

        pad_id = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts], device=self.device)
        attention_mask = torch.tensor(
            [[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device
        )
        sampler = None
        if self.temperature > 0:
            if seeds is not None and len(seeds) != len(prompts):
                raise ValueError(f"{len(prompts)} prompts but {len(seeds)} sampling seeds")
            if seeds is None:  # one generator for the batch, its seed advancing per call
                seeds, self._seed = [self._seed], self._seed + 1
            sampler = _InverseCDFSampler(seeds, self.temperature)
            # generate's greedy pick over the sampler's output is the sampler's draw
            options: dict[str, Any] = {"do_sample": False, "logits_processor": [sampler]}
        else:
            options = {"do_sample": False}
        with torch.no_grad():
            version = self._weights_version()  # the weights this call reads (and the cache it keeps)
            cache = self._prefill(prompts, width, version)
            if cache is not None:  # generate feeds only the last column, which the cache does not hold
                options[cache_argument(self.model)] = cache
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=self.max_new_tokens,
                pad_token_id=pad_id,
                eos_token_id=self.tokenizer.eos_token_id,
                return_dict_in_generate=True,
                output_scores=sampler is None,
                use_cache=True,
                # with a static cache on a GPU transformers compiles the forward, and every call's new
                # batch shape recompiles it: rollouts 14x slower on an H200 (benchmarks/gpu_check.py)
                disable_compile=True,
                **options,
            )
            new_ids = out.sequences[:, width:]
            self._keep(prompts, width, new_ids, cache if cache is not None else output_cache(out), version)
            # the logits each token was drawn from, after the model's own processors (logits / temperature
            # when sampling, kept by the sampler); one step at a time, so that no (rows, steps,
            # vocabulary) tensor is made
            scores = sampler.scores if sampler is not None else out.scores
            chosen = torch.stack(
                [
                    step.float().log_softmax(-1).gather(-1, new_ids[:, t : t + 1]).squeeze(-1)
                    for t, step in enumerate(scores)
                ],
                dim=1,
            )
        generations = []
        eos = self.tokenizer.eos_token_id
        for row in range(len(prompts)):
            ids = new_ids[row].tolist()
            length = ids.index(eos) + 1 if eos in ids else len(ids)  # keep the end-of-turn token
            text = self.tokenizer.decode(ids[:length], skip_special_tokens=True)
            finish = "stop" if eos in ids else "length"  # no end-of-turn token: cut at max_new_tokens
            generations.append(
                Generation(text, ids[:length], chosen[row, :length].tolist(), finish_reason=finish)
            )
        return generations

    def forget(self) -> None:
        """Drop the KV cache kept from the last :meth:`generate` (its memory)."""
        self._kept = None

    def _weights_version(self) -> Any:
        """A fingerprint of the weights: a sum over every 1009th number of each parameter (fused
        optimizers update in place without bumping the tensors' version counters). Under FSDP a
        parameter is a DTensor: its local shard is read, this rank's cache being its own."""
        import torch

        def local(p: Any) -> Any:
            return p.to_local() if hasattr(p, "to_local") else p

        return torch.stack(
            [local(p.detach()).reshape(-1)[::1009].float().sum() for p in self.model.parameters()]
        )

    def _keep(self, prompts: Sequence[list[int]], width: int, new_ids: Any, cache: Any, version: Any) -> None:
        """Keep ``cache`` (every row's prompt and reply, left-padded to ``width``) for the next call."""
        layers = kv_layers(cache)
        if layers is None:
            self._kept = None
            return
        fed = layers[0][0].shape[2] - width  # generate never feeds the last token it draws
        replies = new_ids[:, :fed].tolist()
        rows = [
            (np.asarray(list(p) + reply), width - len(p)) for p, reply in zip(prompts, replies, strict=True)
        ]
        self._kept = _KeptCache(layers, rows, version)

    def _prefill(self, prompts: Sequence[list[int]], width: int, version: Any) -> Any | None:
        """The KV cache of each prompt but its last token, left-padded to ``width - 1`` columns, each piece
        encoded once: what a row of the kept cache already holds (the longest common prefix), else the
        head the prompts share, then what is left of each distinct prompt, in one batched forward.
        None when the model's cache is not a plain per-layer key/value cache."""
        import torch

        if width < 2:
            return None
        kept = self._kept
        if kept is not None and not torch.equal(kept.version, version):
            kept = None  # the weights changed since: its keys and values are stale
        self._kept = None  # its memory goes once this call has taken what it needs
        # known[i]: (layers, row, first column, tokens) of what row i's prompt already has
        known: list[tuple[Any, int, int, int]] = []
        for prompt in prompts:
            best: tuple[Any, int, int, int] = (None, 0, 0, 0)
            prompt_array = np.asarray(prompt)
            for row, (tokens, start) in enumerate(kept.rows if kept else []):
                length = common_prefix_length(tokens, prompt_array, len(prompt) - 1)
                if length > best[3]:
                    best = (kept.layers if kept else None, row, start, length)
            known.append(best)
        shared = shared_prefix_length(prompts) if len(prompts) > 1 else 0
        short = [i for i, k in enumerate(known) if k[3] < shared]
        if shared >= MIN_SHARED_PREFIX and len(short) > 1:
            head = self.model(
                input_ids=torch.tensor([prompts[0][:shared]], device=self.device),
                use_cache=True,
                logits_to_keep=1,
            )
            head_layers = kv_layers(output_cache(head))
            if head_layers is None:
                return None
            for i in short:
                known[i] = (head_layers, 0, 0, shared)
        # the rest of each distinct prompt, one forward: [left pads | known | new | right pads]
        first_of: dict[tuple[int, ...], int] = {}
        for i, prompt in enumerate(prompts):
            if known[i][3] < len(prompt) - 1:
                first_of.setdefault(tuple(prompt), i)
        extended: dict[int, tuple[Any, int, int, int]] = {}
        if first_of:
            reps = list(first_of.values())
            cached = max(known[i][3] for i in reps)
            new = max(len(prompts[i]) - 1 - known[i][3] for i in reps)
            pad_id = self.tokenizer.pad_token_id
            ids, mask, positions = [], [], []
            for i in reps:
                have, todo = known[i][3], len(prompts[i]) - 1 - known[i][3]
                ids.append(list(prompts[i][have : have + todo]) + [pad_id] * (new - todo))
                mask.append([0] * (cached - have) + [1] * (have + todo) + [0] * (new - todo))
                positions.append(list(range(have, have + new)))
            options: dict[str, Any] = {}
            if cached:
                options[cache_argument(self.model)] = make_kv_cache(
                    stack_kv([known[i] for i in reps], cached)
                )
            out = self.model(
                input_ids=torch.tensor(ids, device=self.device),
                attention_mask=torch.tensor(mask, device=self.device),
                position_ids=torch.tensor(positions, device=self.device),
                use_cache=True,
                logits_to_keep=1,
                **options,
            )
            layers = kv_layers(output_cache(out))
            if layers is None:
                return None
            for r, i in enumerate(reps):
                extended[i] = (layers, r, cached - known[i][3], len(prompts[i]) - 1)
        parts = []
        for i, prompt in enumerate(prompts):
            rep = first_of.get(tuple(prompt))
            parts.append(extended[rep] if rep is not None else known[i][:3] + (len(prompt) - 1,))
        # preallocated for what generate adds: its last prompt column and up to max_new_tokens - 1 drawn
        return make_kv_cache(stack_kv(parts, width - 1), self.model.config, width + self.max_new_tokens)

    def close(self) -> None:
        self.model = None


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all ``prompts`` share, leaving every prompt at least one token of its own
    (the last prompt token is fed with the generation, so that its logits predict the first new token)."""
    shortest = min(len(p) for p in prompts)
    first = prompts[0]
    for k in range(max(shortest - 1, 0)):
        if any(p[k] != first[k] for p in prompts):
            return k
    return max(shortest - 1, 0)


def common_prefix_length(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray, limit: int) -> int:
    """How many leading tokens ``a`` and ``b`` share, at most ``limit``."""
    n = min(len(a), len(b), limit)
    if n <= 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


@dataclass
class _KeptCache:
    """A batch's KV cache after ``generate``: per layer (keys, values) of shape (rows, heads, columns,
    head size); row i holds ``rows[i][0]`` (prompt and reply tokens) from column ``rows[i][1]``."""

    layers: list[tuple[Any, Any]]
    rows: list[tuple[np.ndarray, int]]
    version: Any  # HFPolicy._weights_version when it was made


def episode_sampling_seeds(run_seed: int, chats: Sequence[Chat], envs: Sequence[Any]) -> list[int] | None:
    """One sampling seed per chat, from (``run_seed``, its episode's seed, its turn); None when the
    environments are not given or one has no known seed (Gymnasium's ``np_random_seed`` is the seed
    of its last ``reset``, -1 when unknown)."""
    if len(envs) != len(chats):
        return None
    seeds = []
    for chat, env in zip(chats, envs, strict=True):
        episode_seed = getattr(env.unwrapped, "np_random_seed", None)
        if not isinstance(episode_seed, int) or episode_seed < 0:
            return None
        turn = 1 + sum(m["role"] == "assistant" for m in chat)
        seeds.append(sampling_seed(run_seed, episode_seed, turn))
    return seeds


def sampling_seed(run_seed: int, episode_seed: int, turn: int) -> int:
    """A 64-bit seed of (run seed, episode seed, turn), well mixed (numpy's SeedSequence)."""
    entropy = [run_seed % 2**64, episode_seed % 2**64, turn % 2**64]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])


class _InverseCDFSampler:
    """A logits processor that draws each row's next token from softmax(scores / temperature) by inverse
    transform sampling: one uniform number per row and token, looked up in the row's cumulative
    distribution. It keeps the scaled scores (the log-probs are taken from them) and returns scores that
    are -inf but at the drawn token, so that ``generate``'s greedy pick is the draw.

    ``seeds``: one per row, each row drawing from its own generator, which advances once per token
    whatever the other rows do; or a single seed, one generator for the whole batch. One number per row
    is what makes it cheap: multinomial (an exponential number per vocabulary entry) or the Gumbel-max
    trick (a uniform one) cost 60 and 17 ms a token for 64 rows of SmolLM2's 49,152-token vocabulary on
    one CPU thread, this about 8 (benchmarks/vllm_cpu.py)."""

    def __init__(self, seeds: Sequence[int], temperature: float) -> None:
        self.seeds, self.temperature = list(seeds), temperature
        self.generators: list[Any] = []  # made on the first call, on the device of the scores
        self.scores: list[Any] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        device = scores.device
        if not self.generators:
            self.generators = [torch.Generator(device=device).manual_seed(s) for s in self.seeds]
        scaled = scores / self.temperature
        self.scores.append(scaled)
        if len(self.generators) == 1:
            uniform = torch.rand(len(scores), generator=self.generators[0], device=device)
        else:
            uniform = torch.cat([torch.rand(1, generator=g, device=device) for g in self.generators])
        drawn = inverse_cdf_draw(scaled.float().softmax(-1), uniform)
        return torch.full_like(scaled, float("-inf")).scatter_(1, drawn[:, None], 0.0)


def inverse_cdf_draw(probs: Any, uniform: Any) -> Any:
    """Per row of ``probs`` (rows, vocabulary), the token whose cumulative-probability interval holds
    ``uniform`` (rows, in [0, 1)) times the row's total: a draw from the row's distribution. Summed in
    float64, so that rounding does not shift the intervals of rare tokens; a token of probability 0 is
    never drawn, even for the largest uniform number."""
    import torch

    cumulative = probs.double().cumsum(-1)
    total = cumulative[:, -1:]
    target = torch.minimum(uniform.double()[:, None] * total, total.nextafter(torch.zeros_like(total)))
    drawn = torch.searchsorted(cumulative, target, right=True)[:, 0]
    return drawn.clamp_(max=probs.shape[-1] - 1)


class OpenAIPolicy(Policy):
    """Any OpenAI-compatible chat-completions server; requests of a batch run concurrently.

    Replies are capped at ``max_new_tokens`` (``max_tokens``, the API's name, is the same setting), as for
    ``hf:``. Each reply's ``finish_reason`` is kept (``"length"``: cut at the cap). When sampling
    (``temperature > 0``) and the environments are given, each request carries a seed of (``seed``, the
    episode's seed, the turn), the same derivation as ``hf:``, so a server that honours seeds (vLLM does)
    replays a run. A request that fails is retried ``retries`` times with exponential backoff (the SDK's);
    if it still fails, the reply carries the error and the episode ends as aborted (a rerun on the same
    ``--out`` plays it again) while the rest of the eval goes on.
    """

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        temperature: float = 0.0,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        max_tokens: int | None = None,
        seed: int = 0,
        api_key: str | None = None,
        concurrency: int = 16,
        timeout: float = 120.0,
        retries: int = 3,
    ) -> None:
        from openai import OpenAI

        self.spec = f"openai:{model}@{base_url}"
        self.model, self.temperature = model, temperature
        self.max_tokens = max_tokens if max_tokens is not None else max_new_tokens
        self.seed = seed
        self.client = OpenAI(
            base_url=base_url,
            api_key=api_key or os.environ.get("OPENAI_API_KEY", "EMPTY"),
            timeout=timeout,
            max_retries=retries,
        )
        self.pool = ThreadPoolExecutor(max_workers=concurrency)

    def _one(self, chat: Chat, seed: int | None) -> Generation:
        import openai

        messages: Any = chat  # the SDK types each role's message; a Chat is exactly such a list
        extra: dict[str, Any] = {"seed": seed % 2**63} if seed is not None else {}  # servers take int64
        try:
            reply = self.client.chat.completions.create(
                model=self.model,
                messages=messages,
                temperature=self.temperature,
                max_tokens=self.max_tokens,
                **extra,
            )
        except openai.APIError as exc:  # the SDK has retried it already
            return Generation("", error=f"{type(exc).__name__}: {exc}")
        choice = reply.choices[0]
        return Generation(choice.message.content or "", finish_reason=choice.finish_reason)

    def act(self, chats: Sequence[Chat], envs: Sequence[Any] = ()) -> list[Generation]:
        seeds = episode_sampling_seeds(self.seed, chats, envs) if self.temperature > 0 else None
        return list(self.pool.map(self._one, chats, seeds or [None] * len(chats)))

    def close(self) -> None:
        self.pool.shutdown(wait=False)
        self.client.close()


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The ``checkpoint-N`` folder with the largest N in an ``agentgym train`` run directory."""
    run_dir = Path(run_dir)
    checkpoints = [p for p in run_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    if not checkpoints:
        raise FileNotFoundError(f"no checkpoint-N folder in {run_dir}")
    return max(checkpoints, key=lambda p: int(p.name.split("-")[-1]))


# a Hugging Face model name: "name" or "owner/name" (what is not a local path must be one of these)
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def check_model_source(source: str, what: str) -> None:
    """Raise :class:`UsageError` unless ``source`` is an existing local path or has the shape of a Hugging
    Face model name (whether the hub has it is known only when it is loaded)."""
    if Path(source).exists() or (_HUB_NAME.match(source) and ".." not in source):
        return
    raise UsageError(
        f"{what} {source!r} does not exist, and it is not a Hugging Face model name (name or owner/name); "
        "give a local model directory or a hub name such as HuggingFaceTB/SmolLM2-135M-Instruct"
    )


def check_policy(spec: str, kwargs: dict[str, Any]) -> None:
    """Raise :class:`UsageError` for a policy spec or keyword arguments that :func:`make_policy` would
    reject, before anything is loaded: an unknown spec, a model path or run directory that does not
    exist, a keyword the policy does not take or of the wrong type."""
    kind, _, rest = spec.partition(":")
    if spec == "random":
        check_kwargs(RandomPolicy, kwargs, "the random policy")
    elif spec == "oracle":
        return  # it takes none, and warns about the ones it is given
    elif kind in ("hf", "checkpoint") and rest:
        check_kwargs(HFPolicy, kwargs, f"the {kind}: policy", fixed=("model", "tokenizer", "spec"))
        if kind == "hf":
            check_model_source(rest, "the hf: model")
        else:
            try:
                latest_checkpoint(rest)
            except FileNotFoundError as exc:
                raise UsageError(
                    f"{exc}; checkpoint: takes the trainer.output_dir of an agentgym train run"
                ) from None
    elif kind == "openai" and rest:
        model, at, base_url = rest.partition("@")
        if not at or not model or not base_url:
            raise UsageError(f"an openai policy is openai:<model>@<base_url>, got {spec!r}")
        check_kwargs(OpenAIPolicy, kwargs, "the openai: policy", fixed=("model", "base_url"))
    else:
        raise UsageError(
            f"unknown policy {spec!r}; use random, oracle, hf:<name or path>, openai:<model>@<base_url> "
            "or checkpoint:<run dir>"
        )


def make_policy(spec: str, **kwargs: Any) -> Policy:
    """A policy from its spec string (see the module docstring); ``kwargs`` go to its constructor."""
    check_policy(spec, kwargs)
    kind, _, rest = spec.partition(":")
    if spec == "random":
        return RandomPolicy(**kwargs)
    if spec == "oracle":
        if kwargs:
            warnings.warn(f"the oracle policy ignores {sorted(kwargs)}", stacklevel=2)
        return OraclePolicy()
    if kind == "hf" and rest:
        return HFPolicy(rest, **kwargs)
    if kind == "checkpoint" and rest:
        return HFPolicy(str(latest_checkpoint(rest)), spec=spec, **kwargs)
    if kind == "openai" and rest:
        model, at, base_url = rest.partition("@")
        if not at or not model or not base_url:
            raise ValueError(f"an openai policy is openai:<model>@<base_url>, got {spec!r}")
        return OpenAIPolicy(model, base_url, **kwargs)
    raise ValueError(
        f"unknown policy {spec!r}; use random, oracle, hf:<name or path>, openai:<model>@<base_url> "
        "or checkpoint:<run dir>"
    )

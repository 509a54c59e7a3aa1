"""Tiny causal LMs built from a config, with a byte-level BPE tokenizer trained locally: no downloads.

They power the test suite and the CPU quickstart. The tokenizer is trained on text the environments
themselves produce (instructions, observations and oracle answers), so a few thousand merges are enough
for short sequences.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from agentgym.env import AgentEnv
from agentgym.policies import DEFAULT_CHAT_TEMPLATE
from agentgym.registry import make_env

EOS = "<|endoftext|>"
PAD = "<|pad|>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024, separate_pad: bool = True) -> Any:
    """A ``PreTrainedTokenizerFast`` (byte-level BPE) trained on ``texts``, with a chat template.

    ``separate_pad=False`` makes pad == eos, as many released models do (SmolLM2, Llama 3).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [EOS, *ROLE_TOKENS] + ([PAD] if separate_pad else [])
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS,
        pad_token=PAD if separate_pad else EOS,
        additional_special_tokens=ROLE_TOKENS,
    )
    wrapped.chat_template = DEFAULT_CHAT_TEMPLATE
    wrapped.padding_side = "left"
    return wrapped


def env_corpus(
    env_ids: Sequence[str], seeds: int = 50, env_kwargs: dict[str, dict] | None = None
) -> list[str]:
    """Instructions, observations and oracle answers of ``seeds`` episodes of each environment."""
    texts: list[str] = []
    for env_id in env_ids:
        env = make_env(env_id, **(env_kwargs or {}).get(env_id, {}))
        agent = env.unwrapped
        if not isinstance(agent, AgentEnv):
            raise TypeError(f"{env_id} is not an agentgym environment: it has no oracle to learn text from")
        for seed in range(seeds):
            obs, info = env.reset(seed=seed)
            texts += [info["instructions"], obs]
            done = False
            while not done:
                action = agent.oracle_action()
                obs, _, terminated, truncated, _ = env.step(action)
                texts += [action, obs]
                done = terminated or truncated
        env.close()
    return texts


def build_tiny_model(
    tokenizer: Any,
    arch: str = "llama",
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    max_positions: int = 4096,
    seed: int = 0,
) -> Any:
    """A randomly initialised causal LM sized for ``tokenizer``: ``llama`` (RoPE, GQA) or ``gpt2``."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, PretrainedConfig

    torch.manual_seed(seed)
    common = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.eos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if arch == "llama":
        config: PretrainedConfig = LlamaConfig(
            hidden_size=hidden_size,
            intermediate_size=hidden_size * 2,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=max(1, heads // 2),
            max_position_embeddings=max_positions,
            tie_word_embeddings=True,
            **common,
        )
    elif arch == "gpt2":
        config = GPT2Config(
            n_embd=hidden_size, n_layer=layers, n_head=heads, n_positions=max_positions, **common
        )
    else:
        raise ValueError(f"arch must be 'llama' or 'gpt2', got {arch!r}")
    return AutoModelForCausalLM.from_config(config)

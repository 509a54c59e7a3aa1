"""Helpers of the trainer tests: tiny configs and models built here (no downloads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

FROZENLAKE = "agentgym/FrozenLake-v0"


def tiny_config(output_dir: Path, **sections: Any):
    """A resolved training config for a tiny model on FrozenLake; ``sections`` override, e.g.
    ``algorithm={"name": "ppo"}``."""
    from agentgym.trainers.config import load_config

    base = {
        "model": {
            "tiny": {"vocab_size": 512, "corpus_seeds": 12, "hidden_size": 32, "layers": 1, "heads": 2}
        },
        "rollout": {"prompts_per_step": 2, "group_size": 3, "max_new_tokens": 12},
        "algorithm": {"lr": 1e-3, "micro_batch_size": 4},
        "trainer": {
            "output_dir": str(output_dir),
            "steps": 2,
            "save_every": 1,
            "eval_episodes": 0,
            "progress": False,
            "plots": False,
            "threads": 1,
        },
    }
    for key, value in sections.items():
        base.setdefault(key, {}).update(value)
    return load_config(base=base)


def pad_eos_gpt2():
    """(model, tokenizer): a GPT-2-style model whose tokenizer has pad == eos, dropout off."""
    from agentgym.tiny_models import build_tiny_model, env_corpus, train_tokenizer
    from agentgym.trainers.trainer import disable_dropout

    tokenizer = train_tokenizer(env_corpus([FROZENLAKE], seeds=12), vocab_size=512, separate_pad=False)
    model = build_tiny_model(tokenizer, arch="gpt2", hidden_size=32, layers=2, heads=2)
    disable_dropout(model)
    return model, tokenizer

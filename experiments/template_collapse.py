"""Template collapse, shown: entropy stays high while mutual information falls.

    python experiments/template_collapse.py            # about 10 minutes on one CPU core
    python experiments/template_collapse.py --quick    # a smaller run, for a smoke test

Part 1 (constructed). A tiny Llama-style model (built from a config, tokenizer trained here, nothing
downloaded) is fine-tuned on FrozenLake first turns in two phases:

    phase A, "grounded":  <think>the lake: <the rows of this board>; filler words</think><answer>move</answer>
    phase B, "template":  <think>the lake: <the rows of a random board>; filler words</think>
                          <answer>move</answer>

Both phases write the same kind of reasoning with the same randomness (random filler words, a board
description), so the policy's token entropy stays high throughout. In phase A the reasoning depends on the
prompt; in phase B it no longer does: the model writes a plausible board that is not the one it was shown.
Every ``--every`` steps the script samples reasoning from the model for N prompts and logs MI, retrieval
accuracy and entropy (``agentgym.eval.diagnostics``). The plot shows MI rising in phase A and falling to
about 0 in phase B while entropy does not fall: entropy alone would not see the collapse.

Part 2 (``--trainer``, a real RL run). GRPO on FrozenLake with the tiny model of ``configs/quickstart.yaml``,
once with SNR-aware filtering (linear top-p 0.9, zero-spread groups dropped) and once without, logging MI and
entropy of every rollout batch (before filtering) every ``--trainer-every`` steps. The trainer is driven
through its public ``Trainer`` class; the diagnostics are computed here from its token-exact transcripts.

Outputs: ``experiments/results/template_collapse.{json,png}`` (and ``template_collapse_rl.{json,png}``; the RL
run folders, checkpoints included, go to ``runs/``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import agentgym  # noqa: F401 - registers the environments
from agentgym.eval.diagnostics import TurnSample, score_batch
from agentgym.policies import HFPolicy
from agentgym.rollout import turn_message
from agentgym.tiny_models import build_tiny_model, env_corpus, train_tokenizer

ENV = "agentgym/FrozenLake-v0"
FILLER = (
    "hmm",
    "ok",
    "let",
    "me",
    "see",
    "check",
    "careful",
    "then",
    "so",
    "well",
    "maybe",
    "right",
    "now",
    "first",
    "look",
    "again",
    "fine",
    "yes",
    "think",
    "plan",
)
RESULTS = Path(__file__).resolve().parent / "results"


def board_rows(observation: str) -> list[str]:
    """The map lines of a FrozenLake observation (the rows made of map symbols)."""
    return [line for line in observation.splitlines() if line and set(line) <= set("P_OGX√")]


def random_board(rng: np.random.Generator, size: int) -> list[str]:
    cells = rng.choice(["_", "_", "_", "O"], size=(size, size))
    cells[0, 0], cells[-1, -1] = "P", "G"
    return ["".join(row) for row in cells]


def reasoning(rows: list[str], rng: np.random.Generator) -> str:
    words = " ".join(rng.choice(FILLER, size=int(rng.integers(3, 7))))
    return f"the lake: {' / '.join(rows)}; {words}"


def reply(rows: list[str], rng: np.random.Generator) -> str:
    move = rng.choice(["Down", "Right"])
    return f"<think>{reasoning(rows, rng)}</think><answer>{move}</answer>"


def first_turns(seeds: range, size: int) -> list[tuple[list[dict], list[str]]]:
    """(chat, board rows) of the first turn of each seed."""
    env = gym.make(ENV, size=size)
    out = []
    for seed in seeds:
        obs, info = env.reset(seed=seed)
        chat = [
            {"role": "system", "content": info["instructions"]},
            turn_message(1, obs, env.unwrapped.format),
        ]
        out.append((chat, board_rows(obs)))
    env.close()
    return out


def encode_example(tokenizer, chat: list[dict], text: str) -> tuple[list[int], list[int]]:
    prompt = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=False)
    response = tokenizer.encode(text) + [tokenizer.eos_token_id]
    return list(prompt) + response, [0] * len(prompt) + [1] * len(response)


def sft_step(model, optimizer, tokenizer, batch: list[tuple[list[int], list[int]]]) -> float:
    width = max(len(ids) for ids, _ in batch)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([s + [pad] * (width - len(s)) for s, _ in batch])
    mask = torch.tensor([m + [0] * (width - len(m)) for _, m in batch], dtype=torch.float32)
    attention = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s, _ in batch])
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1]
    logp = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
    loss = -(logp * mask[:, 1:]).sum() / mask[:, 1:].sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss)


def measure(model, tokenizer, probes, samples_per_prompt: int, seed: int) -> dict:
    """Sample replies for the probe prompts and score MI (first turn) and entropy on them."""
    policy = HFPolicy(model, tokenizer, temperature=1.0, max_new_tokens=64, seed=seed, device="cpu")
    prompts = [
        p for p in policy.encode_chats([chat for chat, _ in probes]) for _ in range(samples_per_prompt)
    ]
    generations = policy.generate(prompts)
    model.train()
    episodes = [[TurnSample(list(p), g.token_ids)] for p, g in zip(prompts, generations, strict=True)]
    report = score_batch(
        model,
        tokenizer,
        episodes,
        modes=("first_turn",),
        max_samples=None,
        max_scored_turns=None,
        control_tokens=False,
    )
    mi = report["mi"]["first_turn"]
    return {
        "mi": mi.get("mi"),
        "mi_seq": mi.get("mi_seq"),
        "retrieval_acc": mi.get("retrieval_acc"),
        "retrieval_chance": mi.get("retrieval_chance"),
        "mi_upper_bound": mi.get("mi_upper_bound"),
        "reasoning_entropy": mi.get("reasoning_entropy"),
        "conditional_entropy": mi.get("conditional_entropy"),
        "valid_thinking_rate": mi.get("valid_thinking_rate"),
        "entropy": report["entropy"],
    }


def constructed(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train = first_turns(range(1000, 1000 + args.train_prompts), args.size)
    probes = first_turns(range(args.probe_prompts), args.size)
    corpus = env_corpus([ENV], seeds=30) + [reply(rows, rng) for _, rows in train[:200]]
    tokenizer = train_tokenizer(corpus, vocab_size=768)
    model = build_tiny_model(
        tokenizer, arch="llama", hidden_size=args.hidden, layers=args.layers, heads=4, seed=args.seed
    )
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    history = []
    started = time.perf_counter()
    total = args.phase_steps * 2
    for step in range(total + 1):
        phase = "grounded" if step < args.phase_steps else "template"
        if step % args.every == 0:
            point = {
                "step": step,
                "phase": phase,
                **measure(model, tokenizer, probes, args.samples, seed=step),
            }
            history.append(point)
            shown = {k: "-" if v is None else f"{v:.3f}" for k, v in point.items() if not isinstance(v, str)}
            print(
                f"step {step:4d} {phase:8s} MI {shown['mi']} (max {shown['mi_upper_bound']}) "
                f"retrieval {shown['retrieval_acc']} entropy {shown['entropy']} reasoning entropy "
                f"{shown['reasoning_entropy']} valid think {shown['valid_thinking_rate']}  "
                f"[{time.perf_counter() - started:.0f}s]",
                flush=True,
            )
        if step == total:
            break
        batch = []
        for _ in range(args.batch_size):
            chat, rows = train[int(rng.integers(len(train)))]
            shown = rows if phase == "grounded" else random_board(rng, args.size)
            batch.append(encode_example(tokenizer, chat, reply(shown, rng)))
        sft_step(model, optimizer, tokenizer, batch)
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    return {"config": config, "history": history, "elapsed_s": round(time.perf_counter() - started, 1)}


def plot_constructed(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = [{k: (np.nan if v is None else v) for k, v in p.items()} for p in result["history"]]
    steps = [p["step"] for p in h]
    switch = result["config"]["phase_steps"]
    fig, (ax_mi, ax_h) = plt.subplots(1, 2, figsize=(11, 4))
    ax_mi.plot(steps, [p["mi"] for p in h], "o-", label="MI (per token)")
    bound = max((p["mi_upper_bound"] for p in h if np.isfinite(p["mi_upper_bound"])), default=np.nan)
    ax_mi.axhline(bound, color="gray", ls=":", label="log N (upper bound)")
    ax_r = ax_mi.twinx()
    ax_r.plot(
        steps, [p["retrieval_acc"] for p in h], "s--", color="tab:green", alpha=0.6, label="retrieval acc"
    )
    ax_r.axhline(1 / result["config"]["probe_prompts"], color="tab:green", ls=":", alpha=0.5)
    ax_r.set_ylabel("retrieval accuracy")
    ax_r.set_ylim(0, 1.05)
    ax_mi.set_ylabel("mutual information (nats)")
    ax_h.plot(steps, [p["entropy"] for p in h], "o-", color="tab:red", label="token entropy (all generated)")
    ax_h.plot(
        steps,
        [p["reasoning_entropy"] for p in h],
        "^-",
        color="tab:orange",
        label="token entropy (reasoning)",
    )
    ax_h.set_ylabel("entropy (nats / token)")
    ax_h.set_ylim(0, 4)  # the random-init entropy of step 0 (about 6 nats) is off the chart
    for ax in (ax_mi, ax_h):
        ax.axvline(switch, color="k", ls="--", lw=1)
        ax.set_xlabel("SFT step (A: grounded | B: input-agnostic template)")
        ax.legend(loc="upper left", fontsize=8)
    ax_r.legend(loc="upper right", fontsize=8)
    fig.suptitle("Template collapse: MI falls while entropy stays high (tiny model, FrozenLake first turns)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----- part 2: a real RL run through the trainer -----


def rl_run(name: str, overrides: list[str], args: argparse.Namespace) -> list[dict]:
    """One ``agentgym train`` run (quickstart config + ``overrides``), with MI / entropy / control-token
    diagnostics of every ``trainer_every``-th rollout batch (before filtering) logged into metrics.jsonl."""
    from agentgym.trainers.config import load_config
    from agentgym.trainers.trainer import Trainer

    repo = Path(__file__).resolve().parents[1]
    run_dir = args.runs_dir / f"template-collapse-rl-{name}"
    config = load_config(
        repo / "configs" / "quickstart.yaml",
        [
            f"trainer.output_dir={run_dir}",
            f"trainer.steps={args.trainer_steps}",
            "trainer.eval_episodes=0",
            "trainer.progress=false",
            f"trainer.threads={args.threads}",
            f"trainer.seed={args.seed}",
            f"rollout.prompts_per_step={args.trainer_prompts}",
            f"rollout.group_size={args.trainer_group}",
            f"trainer.save_every={args.trainer_steps}",
            f"trainer.diagnostics_every={args.trainer_every}",
            *(["sft.episodes=16", "sft.epochs=1"] if args.quick else []),
            *overrides,
        ],
    )
    trainer = Trainer(config)
    try:
        trainer.run()
    finally:
        trainer.close()
    records = [
        json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()
    ]
    return [r for r in records if r.get("phase") == "rl"]


def plot_rl(runs: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("success", "success rate (rollouts)"),
        ("diag/mi/first_turn/mi", "MI, first turn (nats)"),
        ("diag/mi/trajectory/mi", "MI, trajectory (nats)"),
        ("diag/entropy", "token entropy (nats)"),
        ("kept_ratio", "kept ratio (SNR filter)"),
        ("diag/mi/first_turn/retrieval_acc", "retrieval accuracy"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (key, title) in zip(axes.flat, panels, strict=True):
        for name, records in runs.items():
            points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points, strict=True), "o-" if key.startswith("diag") else "-", label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("RL step")
        if ax.get_lines():
            ax.legend(fontsize=8)
    fig.suptitle("GRPO on FrozenLake, tiny model (quickstart): with and without SNR-aware filtering")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def trainer_part(args: argparse.Namespace) -> None:
    runs = {
        "snr-filter (top-p 0.9, no zero groups)": rl_run(
            "snr", ["filter.strategy=top_p", "filter.value=0.9", "filter.include_zero=false"], args
        ),
        "no filter": rl_run("nofilter", ["filter.value=1.0", "filter.include_zero=true"], args),
    }
    keep = ("step", "success", "return_mean", "kept_ratio", "entropy", "step_time_s")
    summary = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "runs": {
            name: [{k: v for k, v in r.items() if k in keep or k.startswith("diag/")} for r in records]
            for name, records in runs.items()
        },
    }
    (args.out / "template_collapse_rl.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_rl(runs, args.out / "template_collapse_rl.png")
    print(f"wrote {args.out / 'template_collapse_rl'}.json and .png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run for a smoke test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=4, help="FrozenLake map size")
    parser.add_argument("--phase-steps", type=int, default=300, help="SFT steps of each phase")
    parser.add_argument("--every", type=int, default=25, help="measure every this many steps")
    parser.add_argument("--train-prompts", type=int, default=512)
    parser.add_argument("--probe-prompts", type=int, default=16, help="N distinct prompts of the MI estimate")
    parser.add_argument("--samples", type=int, default=2, help="sampled replies per probe prompt")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--trainer", action="store_true", help="part 2: real GRPO runs with / without filtering"
    )
    parser.add_argument("--skip-constructed", action="store_true", help="run only part 2")
    parser.add_argument("--replot", action="store_true", help="redraw the plots from the stored JSON")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where the RL run folders go")
    parser.add_argument("--trainer-steps", type=int, default=20)
    parser.add_argument("--trainer-every", type=int, default=4, help="diagnostics every this many RL steps")
    parser.add_argument("--trainer-prompts", type=int, default=8)
    parser.add_argument("--trainer-group", type=int, default=8)
    args = parser.parse_args()
    if args.quick:
        args.phase_steps, args.every, args.probe_prompts, args.train_prompts = 40, 20, 8, 64
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        for name in ("template_collapse", "template_collapse_quick"):
            if (args.out / f"{name}.json").exists():
                plot_constructed(
                    json.loads((args.out / f"{name}.json").read_text()), args.out / f"{name}.png"
                )
        return
    if not args.skip_constructed:
        result = constructed(args)
        name = "template_collapse_quick" if args.quick else "template_collapse"
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        plot_constructed(result, args.out / f"{name}.png")
        print(f"wrote {args.out / name}.json and .png")
    if args.trainer:
        if args.quick:
            args.trainer_steps, args.trainer_every, args.trainer_prompts, args.trainer_group = 2, 1, 2, 4
        trainer_part(args)


if __name__ == "__main__":
    main()

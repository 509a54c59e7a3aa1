"""Trainer rollout time with the envs stepped in the trainer's process (``rollout.env_workers=0``) against
env workers stepped asynchronously (``rollout.env_workers=N``), on WebShop (a real Chromium: slow steps)
and on FrozenLake (steps of microseconds, where workers only add messages).

A rollout here is what one RL step of the trainer plays: P env seeds x G episodes, all live at once,
through the trainer's own code (``transcripts.play`` in-process, as ``Trainer.rollouts`` calls it each step,
envs made and closed each time; ``EnvWorkers.play`` with workers, envs kept). Each setting plays a first,
untimed rollout (browsers and workers start), then the timed ones. The settings take turns step by step
(in-process, 2 workers, 4 workers, in-process, ...), so that the load of the shared machine, which drifts
over minutes, weighs on all of them alike.

- WebShop: the tiny model cannot drive WebShop (its replies are malformed, which the env answers without
  touching the browser), so a script picks each action from the page: search the instruction, open the
  first result, its Description, back, Buy Now (five page loads per episode). The model still generates
  every turn from the real transcript (then its reply is replaced by the script's), so generation costs
  what it costs and env latency has something to overlap with. Two models: the trainer's default tiny
  model with 32 new tokens a turn (on this CPU, generation outweighs the browser), and a smaller one with
  8 (the browser outweighs generation, as with a real model on a GPU). Needs ``../shared/data/webshop``.
- FrozenLake: the trainer's default tiny model plays, sampled at temperature 1 with per-episode seeds, plus
  today's default batch-seeded sampling in-process for reference.

Every worker setting is checked to have produced the same transcripts (token ids) as in-process stepping.
``generate_s`` is the time spent in the model's generate; in-process, the rest of the rollout is the
env steps (and env construction); with workers, ``env_wait_s`` is the time generation sat idle.

    python benchmarks/trainer_env_workers.py [--steps 3] [--workers 2 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WEBSHOP, FROZENLAKE = "agentgym/WebShop-v0", "agentgym/FrozenLake-v0"
ASIN = re.compile(r"\[(?:clicked )?button\] ([A-Z0-9]{10}) \[(?:clicked )?button_\]")


def scripted_action(observation: str, turn: int) -> str:
    """The script's WebShop action for this page and turn (1-based), in the env's answer format."""
    actions = observation.split("Available actions:")[-1]
    available = set(re.findall(r"^(\S.*?\[.*\])$", actions, re.M))
    product = ASIN.search(observation)
    if "search[<your query>]" in available:
        instruction = observation.split("Instruction:\n", 1)[-1].split("\n", 1)[0]
        action = f"search[{instruction.lower()}]"
    elif turn == 2 and product:
        action = f"click[{product.group(1)}]"
    elif turn == 3 and "click[Description]" in available:
        action = "click[Description]"
    elif turn == 4 and "click[< Prev]" in available:
        action = "click[< Prev]"
    elif "click[Buy Now]" in available:
        action = "click[Buy Now]"
    else:
        action = sorted(a for a in available if a.startswith("click["))[0]
    return f"<think>turn {turn}</think><answer>{action}</answer>"


def policy_class(scripted: bool) -> type:
    """TokenExactPolicy that times its generate calls; ``scripted``: it answers with the WebShop script."""
    from agentgym.trainers.transcripts import TokenExactPolicy
    from agentgym.types import Generation

    class Timed(TokenExactPolicy):
        generate_s = 0.0

        def generate(self, prompts: Any, seeds: Any = None) -> list[Generation]:
            started = time.perf_counter()
            generations = super().generate(prompts, seeds)
            self.generate_s += time.perf_counter() - started
            if not scripted:
                return generations
            out = []
            for prompt in prompts:
                text = self.tokenizer.decode(prompt, skip_special_tokens=True)
                turns = list(re.finditer(r"Turn (\d+):\n", text))
                reply = scripted_action(text[turns[-1].end() :], int(turns[-1].group(1)))
                ids = self.tokenizer.encode(reply, add_special_tokens=False) + [self.tokenizer.eos_token_id]
                out.append(Generation(reply, ids, [0.0] * len(ids)))
            return out

    return Timed


@dataclass
class Setting:
    """One way of playing rollouts, timed over the steps."""

    label: str
    env_id: str
    env_kwargs: dict[str, Any]
    workers: int
    policy: Any
    size: tuple[int, int]  # (env seeds, episodes per seed)
    gather_ms: float
    pool: Any = None
    times: list[float] = field(default_factory=list)
    generate: list[float] = field(default_factory=list)
    stats: list[dict[str, float]] = field(default_factory=list)
    transcripts: list[Any] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)

    def rollout(self, step: int) -> None:
        import torch

        from agentgym.trainers.env_workers import EnvWorkers
        from agentgym.trainers.transcripts import play

        prompts, group = self.size
        seeds = [step * prompts + i for i in range(prompts)]
        if self.workers and self.pool is None:
            self.pool = EnvWorkers(self.env_id, self.env_kwargs, self.workers, gather_ms=self.gather_ms)
        self.policy.reseed(1000 * step)
        self.policy.generate_s = 0.0
        started = time.perf_counter()
        with torch.no_grad():
            if self.pool is None:
                out = play(self.env_id, seeds, group, self.policy, env_kwargs=self.env_kwargs)
            else:
                out = self.pool.play(seeds, group, self.policy)
        elapsed = time.perf_counter() - started
        if step == 0:
            return  # warm-up: browsers and workers start
        self.times.append(elapsed)
        self.generate.append(self.policy.generate_s)
        self.loads.append(os.getloadavg()[0])
        self.transcripts += sorted(out, key=lambda t: (t.group, t.member))
        if self.pool is not None:
            self.stats.append(self.pool.stats.as_dict())

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def result(self) -> dict[str, Any]:
        prompts, group = self.size
        mean = statistics.mean(self.times)
        out: dict[str, Any] = {
            "label": self.label,
            "env_workers": self.workers,
            "rollout_s_per_step": [round(t, 2) for t in self.times],
            "mean_rollout_s": round(mean, 2),
            "mean_generate_s": round(statistics.mean(self.generate), 2),
            "episodes_per_step": prompts * group,
            "env_steps_per_step": sum(len(t.turn_ends) for t in self.transcripts) / len(self.times),
            "load_average_1min_after_each_step": [round(x, 2) for x in self.loads],
        }
        if not self.workers:
            out["mean_env_s"] = round(mean - statistics.mean(self.generate), 2)  # env steps + env setup
        else:
            for key in ("env_wait_s", "generate_calls", "generate_batch", "restarts"):
                name = "mean_generate_batch" if key == "generate_batch" else key
                out[f"mean_{key}"] = round(statistics.mean(s[name] for s in self.stats), 2)
        return out


def same_tokens(a: Setting, b: Setting) -> bool:
    return [(t.group, t.member, t.ids) for t in a.transcripts] == [
        (t.group, t.member, t.ids) for t in b.transcripts
    ]


def compare(settings: list[Setting], steps: int, baseline: Setting) -> list[dict[str, Any]]:
    """Play the settings in turn, step by step; their results against ``baseline``."""
    try:
        for step in range(steps + 1):
            for s in settings:
                s.rollout(step)
                if step:
                    print(f"step {step} {s.env_id} {s.label}: {s.times[-1]:.2f} s", flush=True)
    finally:
        for s in settings:
            s.close()
    results = []
    for s in settings:
        r = s.result()
        if s is not baseline:
            ratio = r["mean_rollout_s"] / statistics.mean(baseline.times)
            r["rollout_time_ratio_vs_in_process"] = round(ratio, 2)
            if s.workers:
                r["same_transcripts_as_in_process"] = same_tokens(s, baseline)
        results.append(r)
        print(json.dumps(r), flush=True)
    return results


def load_range(report: dict[str, Any]) -> list[float]:
    """The lowest and highest 1-minute load average recorded after the timed steps."""
    loads = [
        x
        for section in report.values()
        if isinstance(section, dict)
        for runs in [section.get("runs", [])] + [v["runs"] for v in section.values() if isinstance(v, dict)]
        for run in runs
        for x in run["load_average_1min_after_each_step"]
    ]
    return [min(loads), max(loads)]


def tiny_tokenizer(webshop_data: str | None) -> Any:
    """A tokenizer trained on FrozenLake and (when playing it) WebShop text, so that WebShop pages cost
    about as many tokens as they would."""
    from agentgym.tiny_models import env_corpus, train_tokenizer

    env_ids = [FROZENLAKE] + ([WEBSHOP] if webshop_data else [])
    corpus = env_corpus(env_ids, seeds=5, env_kwargs={WEBSHOP: {"data_dir": webshop_data}})
    return train_tokenizer(corpus, vocab_size=1024)


def tiny_model(tokenizer: Any, hidden: int, layers: int, heads: int) -> tuple[Any, Any]:
    from agentgym.tiny_models import build_tiny_model

    return build_tiny_model(
        tokenizer, arch="llama", hidden_size=hidden, layers=layers, heads=heads
    ), tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed rollouts per setting (after a warm-up)")
    parser.add_argument("--webshop-size", type=int, nargs=2, default=[4, 4], help="seeds, group")
    parser.add_argument("--frozenlake-size", type=int, nargs=2, default=[8, 8], help="seeds, group")
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4], help="env worker counts to try")
    parser.add_argument("--gather-ms", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of the trainer process")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "webshop"))
    parser.add_argument("--skip-webshop", action="store_true")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "trainer_env_workers.json"))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    webshop_data = None if args.skip_webshop else args.data_dir
    if webshop_data and not Path(webshop_data).is_dir():
        raise SystemExit(f"{webshop_data} is absent: pass --data-dir or --skip-webshop")
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch_threads": args.threads,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "note": "2 cores shared with other jobs; the settings take turns step by step, so compare "
            "numbers within this file only",
        },
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
    }

    def settings(
        env_id: str, kwargs: dict[str, Any], model: Any, new_tokens: int, scripted: bool, size: Any
    ) -> list[Setting]:
        def policy(seed_per_trajectory: bool = True) -> Any:
            return policy_class(scripted)(
                *model,
                temperature=1.0,
                max_new_tokens=new_tokens,
                device="cpu",
                seed_per_trajectory=seed_per_trajectory,
            )

        made = [Setting("in-process", env_id, kwargs, 0, policy(), tuple(size), args.gather_ms)]
        for n in args.workers:
            made.append(Setting(f"{n} workers", env_id, kwargs, n, policy(), tuple(size), args.gather_ms))
        return made

    tokenizer = tiny_tokenizer(webshop_data)
    default_model = tiny_model(tokenizer, hidden=64, layers=2, heads=4)  # the trainer's model.tiny
    if webshop_data:
        kwargs = {"data_dir": webshop_data}
        small_model = tiny_model(tokenizer, hidden=32, layers=1, heads=2)
        report["webshop"] = {
            "policy": "scripted (search, first result, Description, < Prev, Buy Now); the model generates "
            "each turn from the real transcript for its cost only",
        }
        for name, model, tokens, note in [
            ("generation_heavy", default_model, 32, "trainer's default tiny model (hidden 64, 2 layers)"),
            ("generation_light", small_model, 8, "tiny model (hidden 32, 1 layer)"),
        ]:
            group = settings(WEBSHOP, kwargs, model, tokens, True, args.webshop_size)
            report["webshop"][name] = {
                "model": f"{note}, {tokens} new tokens a turn",
                "runs": compare(group, args.steps, group[0]),
            }

    group = settings(FROZENLAKE, {}, default_model, 32, False, args.frozenlake_size)
    today = Setting(
        "in-process, batch-seeded sampling (today's default)",
        FROZENLAKE,
        {},
        0,
        policy_class(False)(*default_model, temperature=1.0, max_new_tokens=32, device="cpu"),
        tuple(args.frozenlake_size),
        args.gather_ms,
    )
    report["frozenlake"] = {
        "model": "trainer's default tiny model (hidden 64, 2 layers), sampled, 32 new tokens a turn",
        "runs": compare([today, *group], args.steps, group[0]),
    }
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["machine"]["load_average_1min_range_during"] = load_range(report)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

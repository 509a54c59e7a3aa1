"""The training loop: a GRPO step that learns, checkpoints any evaluator loads, kill and resume, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from trainer_fixtures import tiny_config

from agentgym.trainers.transcripts import Transcript

REPO = Path(__file__).resolve().parents[1]


def _arm_probability(trainer, prompt: list[int], arm: int) -> float:
    ids = torch.tensor([prompt])
    with torch.no_grad():
        logits = trainer.model(input_ids=ids).logits[0, -1]
    return float(torch.softmax(logits, -1)[arm])


def test_one_grpo_step_raises_the_rewarded_arm(tmp_path):
    from agentgym.trainers.trainer import Trainer

    trainer = Trainer(tiny_config(tmp_path, algorithm={"name": "grpo", "lr": 1e-2}))
    tok = trainer.tokenizer
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Pick an arm: Left or Right."}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
    )
    left, right = tok.encode("Left")[0], tok.encode("Right")[0]
    transcripts = []
    for arm, reward in [(left, 1.0), (right, 0.0), (right, 0.0), (left, 1.0), (right, 0.0)]:
        t = Transcript(group=0, seed=0, rewards=[reward])
        t.extend(prompt, trained=False)
        t.extend([arm, tok.eos_token_id], trained=True, logprobs=[0.0, 0.0])
        t.turn_ends.append(len(t.ids) - 1)
        transcripts.append(t)
    before_left, before_right = (
        _arm_probability(trainer, prompt, left),
        _arm_probability(trainer, prompt, right),
    )
    update = trainer.update(transcripts)
    after_left, after_right = (
        _arm_probability(trainer, prompt, left),
        _arm_probability(trainer, prompt, right),
    )
    assert after_left > before_left * 1.05
    assert after_right < before_right
    assert update["clip_frac"] == 0 and update["ratio"] == pytest.approx(1.0)
    trainer.close()


def test_a_step_that_keeps_no_group_is_logged_and_skipped(tmp_path, monkeypatch):
    """The SNR filter may keep no group (its threshold out of reach): the step logs it and trains on
    nothing, and the run goes on."""
    from safetensors.torch import load_file

    from agentgym.trainers import trainer as trainer_module

    calls = []

    def keep_nothing(**kwargs):  # keyword arguments only, as the trainer must call it
        calls.append(kwargs)
        return []

    monkeypatch.setattr(trainer_module, "snr_filter", keep_nothing)
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match="kept no group"):
        trainer_module.train(tiny_config(run, trainer={"steps": 2}))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and len(calls) == 2
    for record in records:
        assert record["skipped"] == 1.0 and record["kept_groups"] == 0 and record["kept_ratio"] == 0
        assert "policy_loss" not in record and "grad_norm" not in record
    before, after = (
        load_file(run / "checkpoint-0" / "model.safetensors"),
        load_file(run / "checkpoint-2" / "model.safetensors"),
    )
    assert all(torch.equal(before[name], after[name]) for name in before)  # no update happened


@pytest.mark.parametrize("algorithm", ["ppo", "drgrpo"])
def test_rl_steps_write_metrics_and_loadable_checkpoints(tmp_path, algorithm):
    from agentgym.policies import make_policy
    from agentgym.trainers.trainer import train

    config = tiny_config(
        tmp_path / "run",
        algorithm={"name": algorithm, "kl_coef": 0.05},
        trainer={"steps": 1},
        sft={"episodes": 4, "batch_size": 4},
    )
    train(config)
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in records] == ["sft_warmup", "rl"]
    rl = records[-1]
    for key in (
        "success",
        "return_mean",
        "in_group_reward_std",
        "kept_ratio",
        "format_valid_rate",
        "rollout_tokens_per_s",
        "step_time_s",
    ):
        assert key in rl
    assert rl["skipped"] == 0  # no filtering: every group is trained on
    for key in ("entropy", "kl", "approx_kl", "clip_frac", "grad_norm", "train_tokens_per_s"):
        assert key in rl
    assert rl["kl"] == pytest.approx(0.0, abs=1e-6)  # the reference is the policy before this first step
    if algorithm == "ppo":
        assert rl["value_loss"] > 0 and rl["grad_norm"] > 0
    assert (run / "checkpoint-0").is_dir() and (run / "checkpoint-1").is_dir()
    if algorithm == "ppo":
        assert (run / "checkpoint-1" / "critic" / "config.json").exists()
    assert OmegaConf.load(run / "config.yaml").algorithm.name == algorithm
    for spec in (f"checkpoint:{run}", f"hf:{run}/checkpoint-1"):
        policy = make_policy(spec, max_new_tokens=4)
        assert policy.model.config.vocab_size == 512
        policy.close()


def test_lora_trains_an_adapter_and_saves_merged_weights(tmp_path):
    from agentgym.policies import make_policy
    from agentgym.trainers.trainer import train

    run = tmp_path / "run"
    train(tiny_config(run, model={"lora": {"enabled": True, "r": 4, "alpha": 8}}, trainer={"steps": 1}))
    assert (run / "checkpoint-1" / "adapter" / "adapter_config.json").exists()
    policy = make_policy(f"checkpoint:{run}", max_new_tokens=4)  # plain weights, no peft needed to load
    assert not any("lora" in name for name, _ in policy.model.named_parameters())
    policy.close()
    train(tiny_config(run, model={"lora": {"enabled": True, "r": 4, "alpha": 8}}, trainer={"steps": 2}))
    assert (run / "checkpoint-2" / "adapter" / "adapter_config.json").exists()


def test_interleaved_sft_runs_on_failed_tasks(tmp_path):
    from agentgym.trainers.trainer import train

    config = tiny_config(
        tmp_path / "run",
        trainer={"steps": 2, "save_every": 10},
        interleave={"enabled": True, "rl_steps": 1, "failure_window": 1, "sft_epochs": 1, "rounds": 1},
    )
    train(config)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    phases = [(r["step"], r["phase"]) for r in records]
    # RL step 1, then SFT on the tasks that failed (a random model fails all), RL step 2; one round only
    assert phases[0] == (1, "rl") and phases[-1] == (2, "rl")
    assert {p for p in phases[1:-1]} == {(1, "sft_interleave")}
    assert records[1]["tasks"] == 2
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == [
        "checkpoint-0",
        "checkpoint-1",
        "checkpoint-2",
    ]


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / "checkpoint-5" / "model.safetensors")


def test_kill_and_resume_continues_the_same_run(tmp_path):
    from agentgym.trainers.trainer import train

    sections = {
        "trainer": {"steps": 5, "save_every": 1},
        "rollout": {"temperature": 1.0},
        "algorithm": {"name": "grpo"},
    }
    reference = tmp_path / "reference"
    train(tiny_config(reference, **sections))

    killed = tmp_path / "killed"
    config = tiny_config(killed, **sections)
    config_file = tmp_path / "config.yaml"
    OmegaConf.save(config, config_file)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentgym.cli", "train", "--config", str(config_file)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 300
    while not (killed / "checkpoint-2").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "checkpoint-5").exists()

    train(tiny_config(killed, **sections))  # the same command again resumes
    ref_lines = [json.loads(x) for x in (reference / "metrics.jsonl").read_text().splitlines()]
    got_lines = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in got_lines] == [1, 2, 3, 4, 5]
    for ref, got in zip(ref_lines, got_lines, strict=True):
        assert got["return_mean"] == ref["return_mean"]
        assert got["rollout_tokens"] == ref["rollout_tokens"]
    ref_w, got_w = _final_weights(reference), _final_weights(killed)
    for name, tensor in ref_w.items():
        torch.testing.assert_close(got_w[name], tensor, atol=1e-6, rtol=1e-5)


@pytest.mark.slow
def test_quickstart_learns(tmp_path):
    """The README's main job: SFT warm start, then RL with SNR-aware filtering beats the post-SFT model."""
    from agentgym.trainers.config import load_config
    from agentgym.trainers.trainer import train

    summary = train(
        load_config(
            REPO / "configs" / "quickstart.yaml",
            [f"trainer.output_dir={tmp_path / 'run'}", "trainer.progress=false"],
        )
    )
    assert summary["final"]["success_rate"] > summary["before_rl"]["success_rate"] + 0.1
    assert (tmp_path / "run" / "plots" / "overview.png").exists()


@pytest.mark.slow
def test_torchrun_fsdp_two_processes_on_cpu(tmp_path):
    """The multi-GPU path (torchrun, FSDP2, cross-rank filtering and token counts, rank-0 checkpoints),
    run here on two CPU processes with the gloo backend."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = tmp_path / "run"
    # uneven work on purpose: 3 SFT episodes in batches of one per rank (2 steps on rank 0, 1 on rank 1),
    # and a filter that keeps only group 0, which rank 0 played: rank 1 must still join every collective
    config = tiny_config(
        run,
        algorithm={"name": "ppo", "kl_coef": 0.01},
        sft={"episodes": 3, "batch_size": 2},
        filter={"strategy": "top_k_abs", "value": 1, "include_zero": True},
        trainer={"steps": 2, "device": "cpu", "eval_episodes": 2, "eval_batch_size": 2},
    )
    config_file = tmp_path / "config.yaml"
    OmegaConf.save(config, config_file)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(port),
            "-m",
            "agentgym.cli",
            "train",
            "--config",
            str(config_file),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in records if r["phase"] == "rl"]
    assert [r["step"] for r in rl] == [1, 2]
    assert all(r["kept_groups"] == 1 and r["train_episodes"] == 3 for r in rl)  # group 0 only, counted once
    assert len([r for r in records if r["phase"] == "sft_warmup"]) == 2
    assert (run / "checkpoint-2" / "critic" / "model.safetensors").exists()
    assert json.loads((run / "summary.json").read_text())["final"]["episodes"] == 2


def test_diagnostics_are_logged_every_k_steps_before_filtering(tmp_path):
    from agentgym.trainers.trainer import train

    config = tiny_config(
        tmp_path / "diag",
        trainer={"steps": 3, "diagnostics_every": 2, "diagnostics_samples": 8, "plots": True},
        sft={"episodes": 8, "epochs": 2, "lr": 3e-3},
    )
    train(config)
    # a diag/... metric gets a plot of its own (its "/" names no folder)
    assert (tmp_path / "diag" / "plots" / "diag_entropy.png").exists()
    records = [json.loads(line) for line in (tmp_path / "diag" / "metrics.jsonl").read_text().splitlines()]
    rl = {r["step"]: r for r in records if r.get("phase") == "rl"}
    assert sorted(rl) == [1, 2, 3]
    assert "diag/cpu_s" in rl[1] and "diag/cpu_s" not in rl[2] and "diag/cpu_s" in rl[3]  # steps 0, 2 (last)
    assert any(k.startswith("diag/mi/first_turn/") for k in rl[1])
    assert rl[1]["diag/cpu_s"] > 0 and rl[1]["diag/entropy"] > 0 and rl[1]["diag/entropy_tokens"] > 0


def test_adamw_is_fused_in_one_process_and_steps_like_the_default():
    from agentgym.trainers.distributed import Runtime
    from agentgym.trainers.trainer import adamw

    torch.manual_seed(0)
    weights = [torch.randn(64, 32), torch.randn(32)]
    grads = [torch.randn_like(w) for w in weights]
    fused_params = [torch.nn.Parameter(w.clone()) for w in weights]
    plain_params = [torch.nn.Parameter(w.clone()) for w in weights]
    fused = adamw(fused_params, 1e-2, 0.1, Runtime())
    plain = torch.optim.AdamW(plain_params, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.999))
    assert fused.defaults["fused"] is True
    assert adamw([torch.nn.Parameter(torch.zeros(2))], 1e-2, 0.0, Runtime(world=2)).defaults["fused"] is None
    for _ in range(3):
        for params, optimizer in ((fused_params, fused), (plain_params, plain)):
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            optimizer.step()
    for a, b, start in zip(fused_params, plain_params, weights, strict=True):
        assert not torch.equal(a, start)  # the step moved the weights
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_non_finite_gradient_is_dropped_without_a_step():
    """One bad batch (a NaN or infinite gradient) must not turn the weights and the optimizer's moments
    into NaN: the step is skipped, the norm reported as it is, and the next finite gradient steps."""
    import math

    from agentgym.trainers.distributed import optimizer_step

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    for bad in (float("nan"), float("inf")):
        model(torch.ones(1, 3)).sum().backward()
        model.weight.grad[0, 0] = bad
        assert not math.isfinite(optimizer_step(model, optimizer, max_grad_norm=1.0))
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
        assert all(p.grad is None for p in model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    assert math.isfinite(optimizer_step(model, optimizer, max_grad_norm=1.0))
    assert not torch.equal(before[0], model.weight) and torch.isfinite(model.weight).all()


def test_eval_every_checkpoint_evaluates_each_saved_checkpoint_once(tmp_path):
    from agentgym.trainers.trainer import train

    run = tmp_path / "run"
    config = tiny_config(
        run, trainer={"steps": 3, "save_every": 2, "eval_episodes": 2, "eval_every_checkpoint": True}
    )
    summary = train(config)
    # checkpoint-0 before RL, checkpoint-2 as saved, checkpoint-3 the last: each evaluated, none twice
    evaluated = sorted(p.name for p in (run / "eval").iterdir())
    assert evaluated == ["checkpoint-0", "checkpoint-2", "checkpoint-3"]
    for name in ("checkpoint-2", "checkpoint-3"):
        assert summary[name]["episodes"] == 2
    assert summary["final"] == summary["checkpoint-3"]
    assert summary["final_checkpoint"].endswith("checkpoint-3")

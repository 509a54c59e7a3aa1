"""Supervised fine-tuning on expert (oracle) trajectories, with the same token layout and loss mask as
RL rollouts: only the expert's responses (end-of-turn included) are trained.

Used for the plain SFT warm start and inside interleaved SFT + RL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from agentgym.trainers.algorithms import token_logprobs
from agentgym.trainers.distributed import Runtime, optimizer_step
from agentgym.trainers.transcripts import ExpertTokenPolicy, Transcript, make_batch, model_logits, play


def expert_transcripts(
    env_id: str, seeds: Sequence[int], tokenizer: Any, env_kwargs: dict[str, Any] | None = None
) -> list[Transcript]:
    """One oracle episode per seed, as token transcripts."""
    if not seeds:
        return []
    return play(
        env_id,
        list(seeds),
        1,
        ExpertTokenPolicy(tokenizer),
        env_kwargs=env_kwargs,
        batch_size=min(len(seeds), 32),
    )


def micro_batches(
    transcripts: Sequence[Transcript],
    size: int,
    runtime: Runtime | None = None,
    filler: Transcript | None = None,
) -> list[list[Transcript]]:
    """Chunks of ``size`` transcripts of similar length (less padding); the grouping does not change the
    gradient, since every loss is normalized by the global token count.

    Under FSDP every rank must run as many forward/backward passes as the others (each one is a
    collective), so with a ``runtime`` the list is padded to the largest count of any rank with
    ``filler`` copies whose loss mask is all zero (they add nothing to the loss).
    """
    ordered = sorted(transcripts, key=lambda t: len(t.ids))
    chunks = [ordered[i : i + size] for i in range(0, len(ordered), size)]
    if runtime is not None and runtime.distributed:
        most = max(runtime.all_gather_objects(len(chunks)))
        if len(chunks) < most:
            if filler is None:
                raise RuntimeError(
                    "a rank with fewer micro-batches than the others needs a filler transcript"
                )
            chunks += [[masked_out(filler)] for _ in range(most - len(chunks))]
    return chunks


def masked_out(transcript: Transcript) -> Transcript:
    """A copy of ``transcript`` with nothing to train on."""
    return replace(
        transcript,
        mask=[0] * len(transcript.ids),
        ids=list(transcript.ids),
        sampler_logprobs=list(transcript.sampler_logprobs),
    )


def sft_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    transcripts: Sequence[Transcript],
    pad_id: int,
    runtime: Runtime,
    micro_batch_size: int = 8,
    max_grad_norm: float | None = 1.0,
    filler: Transcript | None = None,
) -> dict[str, float]:
    """One optimizer step of mean token NLL over the generated tokens of ``transcripts`` (all ranks)."""
    total = runtime.all_sum(sum(t.generated_tokens for t in transcripts))
    if total == 0:
        return {"sft_loss": 0.0, "grad_norm": 0.0, "sft_tokens": 0.0}
    model.train()
    loss_sum = 0.0
    for chunk in micro_batches(transcripts, micro_batch_size, runtime, filler):
        batch = make_batch(chunk, pad_id).to(runtime.device)
        with runtime.autocast():
            logp, _ = token_logprobs(model_logits(model, batch), batch.targets)
        nll = -(logp * batch.loss_mask).sum()
        (nll * runtime.world / total).backward()
        loss_sum += float(nll.detach())
    grad_norm = optimizer_step(model, optimizer, max_grad_norm)
    return {"sft_loss": runtime.all_sum(loss_sum) / total, "grad_norm": grad_norm, "sft_tokens": total}


def sft_epochs(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    transcripts: Sequence[Transcript],
    epochs: int,
    batch_size: int,
    pad_id: int,
    runtime: Runtime,
    seed: int = 0,
    micro_batch_size: int = 8,
    max_grad_norm: float | None = 1.0,
    filler: Transcript | None = None,
) -> list[dict[str, float]]:
    """``epochs`` passes over ``transcripts`` in shuffled batches of ``batch_size``; one log per step.
    Every rank runs the same number of steps (the most any rank needs); ``filler`` pads the short ones."""
    rng = np.random.default_rng(seed)
    logs = []
    steps_per_epoch = max(runtime.all_gather_objects(max(1, math.ceil(len(transcripts) / batch_size))))
    for epoch in range(epochs):
        order = rng.permutation(len(transcripts))
        for k in range(steps_per_epoch):
            chunk = [transcripts[i] for i in order[k * batch_size : (k + 1) * batch_size]]
            if chunk or runtime.distributed:
                logs.append(
                    {
                        "epoch": epoch,
                        **sft_step(
                            model, optimizer, chunk, pad_id, runtime, micro_batch_size, max_grad_norm, filler
                        ),
                    }
                )
    return logs

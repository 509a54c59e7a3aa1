"""Devices, precision and multi-process training (``torchrun``: one process per GPU, FSDP2).

A single process needs none of this beyond ``Runtime.local()``. Under ``torchrun`` (``WORLD_SIZE > 1``)
every rank plays its share of the prompts, the SNR filter sees every rank's returns, the loss is
normalized by the token count of all ranks, and FSDP shards parameters, gradients and optimizer state.
Checkpoints are gathered to full state dicts and written by rank 0 in Hugging Face format.
``optimizer_step`` is the one clipped optimizer step of RL and SFT (sharded or not).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import torch


@dataclass
class Runtime:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32  # compute dtype (autocast on CUDA when bfloat16 / float16)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @classmethod
    def start(cls, device: str = "auto", dtype: str = "auto") -> Runtime:
        """Join the ``torchrun`` process group when there is one; pick the device and compute dtype."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        cuda = torch.cuda.is_available() and device in ("auto", "cuda")
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("trainer.device=cuda but no CUDA GPU is visible")
        if cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            dev = torch.device("cuda", local)
        else:
            dev = torch.device("cpu")
        if world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
        if dtype == "auto":
            compute = torch.bfloat16 if cuda else torch.float32
        else:
            compute = getattr(torch, dtype)
        return cls(rank=rank, world=world, device=dev, dtype=compute)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision: parameters stay float32 (the optimizer's master copy), matmuls run in bf16."""
        if self.device.type == "cuda" and self.dtype != torch.float32:
            return torch.autocast("cuda", dtype=self.dtype)
        if self.device.type == "cpu" and self.dtype == torch.bfloat16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ----- collectives (identity in one process) -----
    def all_sum(self, value: float) -> float:
        if not self.distributed:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return float(t.item())

    def all_gather_objects(self, obj: Any) -> list[Any]:
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def shard_model(model: torch.nn.Module, runtime: Runtime) -> torch.nn.Module:
    """FSDP2: shard each transformer block, then the root. Identity in one process."""
    if not runtime.distributed:
        return model
    from torch.distributed.fsdp import fully_shard

    block_names = set(getattr(model, "_no_split_modules", None) or [])
    for module in model.modules():
        if type(module).__name__ in block_names:
            fully_shard(module)
    fully_shard(model)
    return model


@contextlib.contextmanager
def gathered_for_generation(model: Any, runtime: Runtime) -> Iterator[None]:
    """Keep FSDP parameters gathered for a whole ``generate`` call instead of once per decoded token."""
    if not runtime.distributed:
        yield
        return
    from torch.distributed.fsdp import FSDPModule

    model.set_reshard_after_forward(False)  # recurses into every sharded block
    try:
        yield
    finally:
        model.set_reshard_after_forward(True)
        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.reshard()


def full_state_dict(
    model: torch.nn.Module, runtime: Runtime, every_rank: bool = False
) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict; every rank must call it. By default rank 0 gets it on the CPU (for
    checkpoints); ``every_rank`` gives each rank the full tensors on its device (to refresh a per-rank
    rollout engine)."""
    if not runtime.distributed:
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=not every_rank)
    )
    return cast(dict[str, torch.Tensor], state)  # full_state_dict: every value is a tensor


def optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, runtime: Runtime) -> dict:
    if not runtime.distributed:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(
        model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def load_optimizer_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict, runtime: Runtime
) -> None:
    if not runtime.distributed:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(
        model, optimizer, state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    )


def optimizer_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, max_grad_norm: float | None
) -> float:
    """Clip the gradient to ``max_grad_norm`` (0 or None: no clip), step, zero the gradient; return the
    norm before clipping (over every rank's shard under FSDP). A gradient with a NaN or infinite entry
    is dropped without a step (the norm returned says so): one bad batch must not turn every weight
    and the optimizer's moments into NaN."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm or float("inf")) if params else 0.0
    # under FSDP the norm is a DTensor: full_tensor() is the global norm, the same on every rank
    value = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
    if math.isfinite(value):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return value

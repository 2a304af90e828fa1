"""Single-process by default, DDP under `torchrun` with no code change.

`torchrun --nproc_per_node N -m rt_engine.cli train gan --config FILE` sets RANK/WORLD_SIZE/LOCAL_RANK;
`setup_distributed` sees them and joins the process group (gloo on CPU, nccl on CUDA).
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    device: str

    @property
    def is_main(self) -> bool:
        """True on the process that writes checkpoints, logs and plots."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed() -> DistributedContext:
    """Join the torchrun process group if launched under torchrun, else a 1-process context."""
    import torch

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    else:
        device = "cpu"
    if world_size > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def wrap_model(module, context: DistributedContext):
    """DistributedDataParallel around `module` when running distributed, else `module` itself."""
    if not context.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [context.local_rank] if context.device.startswith("cuda") else None
    return DistributedDataParallel(module, device_ids=device_ids)


def cleanup_distributed(context: DistributedContext) -> None:
    import torch

    if context.enabled and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()

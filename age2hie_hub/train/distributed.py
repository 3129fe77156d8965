"""torchrun support: process-group set-up from torchrun's environment, rank queries, and small collectives.

``age2hie-train`` calls ``setup()`` first: under ``torchrun --nproc_per_node N`` it initialises NCCL (GPUs)
or gloo (CPU); run without torchrun it does nothing and everything below behaves as one process.
"""
from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def setup() -> bool:
    """Initialise the process group when launched by torchrun (WORLD_SIZE set). Returns True if distributed."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) < 2 or dist.is_initialized():
        return is_distributed()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend)
    log.info("distributed: rank %d/%d, backend %s", rank(), world_size(), backend)
    return True


def teardown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def mean_over_ranks(total: float, count: int, device: torch.device) -> float:
    """sum(total) / sum(count) over all ranks (e.g. the epoch's mean training loss)."""
    if not is_distributed():
        return total / count if count else float("nan")
    # gloo reduces CPU tensors; NCCL needs them on the rank's GPU.
    t = torch.tensor([total, float(count)], dtype=torch.float64,
                     device=device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return float(t[0] / t[1]) if t[1] else float("nan")

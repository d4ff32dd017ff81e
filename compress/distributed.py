"""Data-parallel fine-tuning under torchrun: which rank this is, the process group, each rank's batches.

`torchrun --nproc_per_node N -m edgeslim compress ...` starts N copies of the same command. Each runs
the torch steps (pruning is deterministic, so every rank prunes alike, and that is checked), trains on
its share of the batches with DistributedDataParallel (NCCL on GPUs, gloo on the CPU), and only rank 0
exports, quantizes, writes and prints. Without torchrun (no WORLD_SIZE, or 1) nothing here changes
anything: one rank, every batch, no process group.
"""
from __future__ import annotations

import datetime
import os

from edgeslim.core.errors import ConfigError, RankFailed

# A rank that waits longer than this for the others gives up with one sentence instead of hanging.
COLLECTIVE_TIMEOUT_S = 300


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_distributed() -> bool:
    return world_size() > 1


def is_writer() -> bool:
    """Rank 0 writes bundles, reports, checkpoints and caches; every other rank only trains."""
    return rank() == 0


def rank_device(device):
    """Each rank its own GPU (LOCAL_RANK) under torchrun; the CPU stays the CPU."""
    import torch

    if is_distributed() and device.type == "cuda":
        torch.cuda.set_device(local_rank())
        return torch.device("cuda", local_rank())
    return device


def ensure_group(device) -> None:
    """Join the job's process group once: NCCL where the ranks train on GPUs, gloo on the CPU."""
    import torch.distributed as dist

    if not is_distributed() or dist.is_initialized():
        return
    import atexit

    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    atexit.register(shutdown)


def backend() -> str | None:
    import torch.distributed as dist

    return dist.get_backend() if is_distributed() and dist.is_initialized() else None


def check_same_model(model, what: str) -> None:
    """Every rank must train the same architecture: DDP would fail later with a shape error otherwise."""
    import torch.distributed as dist

    if not is_distributed():
        return
    shapes = [tuple(p.shape) for p in model.parameters()]
    gathered = [None] * world_size()
    with collective(what):
        dist.all_gather_object(gathered, shapes)
    if any(other != shapes for other in gathered):
        differing = [index for index, other in enumerate(gathered) if other != gathered[0]]
        raise ConfigError(f"{what}: ranks {differing} hold a model of other shapes than rank 0 (pruning gave "
                          "different results on different ranks); fix the seed or prune before launching torchrun")


def groups_of_batches(batches: list) -> list[list]:
    """The batches in groups of one per rank: a step trains on one group, rank r on its r-th batch, so the
    ranks together see what one process sees with N times the batch. A remainder of fewer than N batches
    is left out (each rank must take the same number of steps)."""
    size = world_size()
    usable = len(batches) - len(batches) % size
    return [batches[start:start + size] for start in range(0, usable, size)]


def wrap(model, device):
    """The model as DistributedDataParallel where this is a torchrun job; as it is otherwise."""
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def mean_over_ranks(value: float, what: str) -> float:
    """A number each rank measured (its loss), averaged over the ranks, for the one line rank 0 prints."""
    if not is_distributed():
        return value
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([float(value)], dtype=torch.float64)
    with collective(what):
        dist.all_reduce(tensor)
    return float(tensor.item()) / world_size()


def barrier(what: str) -> None:
    if is_distributed():
        import torch.distributed as dist

        with collective(what):
            dist.barrier()


class collective:
    """Around a step that waits for the other ranks: a rank that stopped becomes one sentence (RankFailed)."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, kind, error, _traceback):
        if error is None or not is_distributed() or not _is_lost_peer(error):
            return False
        raise RankFailed(f"rank {rank()} of {world_size()}: another rank stopped during {self.what} "
                         f"({_first_line(error)}); the job stops, and torchrun's summary names the rank") from error


def _is_lost_peer(error: BaseException) -> bool:
    text = str(error)
    names = ("DistBackendError", "DistNetworkError", "DistError")
    return type(error).__name__ in names or any(mark in text for mark in (
        "Connection closed by peer", "Connection reset", "Broken pipe", "Timed out", "timed out", "NCCL"))


def _first_line(error: BaseException) -> str:
    """The reason in a few words: gloo's first sentence, without its source location."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if text.startswith("[") and "] " in text:  # gloo prefixes its source file and line
        text = text.split("] ", 1)[1]
    return text.split(". ")[0][:120].rstrip(". ")


def stop_on_sigterm() -> None:
    """torchrun stops the other ranks with SIGTERM when one fails: say so in one sentence and leave at once
    (torch's process-group teardown would abort and print more). Only under torchrun."""
    import signal
    import sys

    if not is_distributed():
        return

    def stop(_signal, _frame):
        sys.stderr.write(f"edgeslim: rank {rank()} of {world_size()}: stopped by torchrun because another rank "
                         "failed; torchrun's summary names it\n")
        sys.stderr.flush()
        os._exit(143)

    signal.signal(signal.SIGTERM, stop)


def shutdown() -> None:
    """Leave the process group at the end of a job (a clean exit, no warning from torch)."""
    if is_distributed():
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

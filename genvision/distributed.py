"""The process group as seen below the training layer: rank, world size, collectives, sharding by index.

Under `torchrun` / `accelerate launch` training gets its process group from Accelerate
(`training.common.make_accelerator`) and the evaluation commands start one with `init_from_env`; data and metrics
code reads it only through these functions, without importing Accelerate:

    indices = shard_range(count, batch_size)     # this rank's contiguous, batch-aligned block of [0, count)
    total = all_reduce_sum(local_sums)           # float64 sums of every rank
    rows = all_gather_rows(local_rows)           # every rank's rows, in rank order = the one-process order

A generator's sample depends only on (seed, index), so the union of the shards is the one-process set, batch for
batch (as NVlabs/edm's `fid.py` shards seeds). In a single process every function is the identity or a no-op.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import timedelta
from typing import Iterator

import torch
from torch import Tensor

from genvision.constants import PROCESS_GROUP_TIMEOUT_MINUTES


def is_initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size() -> int:
    """Processes in the group (1 without one)."""
    return torch.distributed.get_world_size() if is_initialized() else 1


def rank() -> int:
    """This process's global rank (0 without a group)."""
    return torch.distributed.get_rank() if is_initialized() else 0


def is_main() -> bool:
    """Rank 0: the one process that prints results and writes files."""
    return rank() == 0


def local_rank() -> int:
    """This process's rank on its machine (torchrun's LOCAL_RANK), 0 without a group."""
    return int(os.environ.get("LOCAL_RANK", "0")) if is_initialized() else 0


def launched() -> bool:
    """True under torchrun / accelerate launch with more than one process (before or after `init_from_env`)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(timeout_minutes: float = PROCESS_GROUP_TIMEOUT_MINUTES) -> bool:
    """Join the process group torchrun / accelerate launch describe in the environment (NCCL on CUDA, one GPU per
    local rank; gloo on the CPU). Returns True when this call started it; a no-op when there is nothing to join.

    `timeout_minutes` (--process-group-timeout) bounds every wait of the group: a collective or barrier that has not
    completed on every rank by then fails (NCCL's watchdog aborts the process; gloo raises)."""
    if not launched() or is_initialized():
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo",
                                         timeout=timedelta(minutes=timeout_minutes))
    return True


def shutdown(started: bool) -> None:
    """End the group `init_from_env` started (`started` is what it returned)."""
    if started and is_initialized():
        torch.distributed.destroy_process_group()


def collective_device() -> torch.device:
    """Where tensors must be for the group's collectives: this rank's GPU under NCCL, else the CPU (gloo)."""
    if is_initialized() and torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait until every rank gets here, at most the group's timeout (set when the group starts: `init_from_env`, or
    `training.common.make_accelerator`, from --process-group-timeout); past it the run fails rather than hangs."""
    if world_size() > 1:
        torch.distributed.barrier()


@contextmanager
def local_main_first() -> Iterator[None]:
    """Run the body on each machine's local rank 0 first, then on the other ranks (what Accelerate's
    `local_main_process_first` does): the first decodes, downloads and writes caches, the others then read them.

    The others wait in `barrier`, so the body's time on local rank 0 (a download, decoding a large dataset) is bounded
    by the process group's timeout, --process-group-timeout minutes (default 60; NCCL's own default of 10 would stop
    a first run on CelebA). torch's barrier takes no timeout of its own and `monitored_barrier` exists for gloo only,
    so the group's timeout is the one bound."""
    first = local_rank() == 0
    if not first:
        barrier()
    try:
        yield
    finally:
        if first:
            barrier()


def _all_reduce(tensor: Tensor, op) -> Tensor:
    if world_size() == 1:
        return tensor.clone()
    work = tensor.detach().to(collective_device(), copy=True)
    torch.distributed.all_reduce(work, op=op)
    return work.to(tensor.device)


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """The element-wise sum of `tensor` over ranks, on `tensor`'s device and dtype (a copy; the input is kept)."""
    return _all_reduce(tensor, torch.distributed.ReduceOp.SUM)


def all_reduce_min(tensor: Tensor) -> Tensor:
    """The element-wise minimum of `tensor` over ranks (a copy on `tensor`'s device)."""
    return _all_reduce(tensor, torch.distributed.ReduceOp.MIN)


def all_gather_rows(tensor: Tensor) -> Tensor:
    """Every rank's `tensor` (N_r, ...) concatenated along dim 0 in rank order; the N_r may differ."""
    if world_size() == 1:
        return tensor
    device = collective_device()
    count = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=device)
    counts = [torch.zeros_like(count) for _ in range(world_size())]
    torch.distributed.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    padded = torch.zeros((max(sizes), *tensor.shape[1:]), dtype=tensor.dtype, device=device)
    padded[:tensor.shape[0]] = tensor.detach().to(device)
    parts = [torch.empty_like(padded) for _ in sizes]
    torch.distributed.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)]).to(tensor.device)


def broadcast_(tensor: Tensor, source: int = 0) -> Tensor:
    """Overwrite `tensor` on every rank with rank `source`'s (in place; returned)."""
    if world_size() == 1:
        return tensor
    work = tensor.detach().to(collective_device(), copy=True)
    torch.distributed.broadcast(work, src=source)
    tensor.copy_(work.to(tensor.device))
    return tensor


def all_agree(flag: bool) -> bool:
    """True only when `flag` is True on every rank (one collective)."""
    if world_size() == 1:
        return flag
    return bool(all_reduce_min(torch.tensor([int(flag)], dtype=torch.int64)).item())


def shard_range(count: int, batch_size: int, *, rank_: int | None = None, world_size_: int | None = None) -> range:
    """This rank's contiguous block of [0, count): whole batches of `batch_size` split as evenly as they go (the
    first ranks take one batch more), so every batch of a shard is a batch of the one-process run and the blocks in
    rank order are [0, count)."""
    index = rank() if rank_ is None else rank_
    size = world_size() if world_size_ is None else world_size_
    batches = -(-count // batch_size) if count else 0
    per_rank, extra = divmod(batches, size)
    first = index * per_rank + min(index, extra)
    last = first + per_rank + (1 if index < extra else 0)
    return range(min(first * batch_size, count), min(last * batch_size, count))


def resolve_device(text: str) -> torch.device:
    """A --device value: "auto" -> this rank's GPU (cuda:LOCAL_RANK under torchrun) when CUDA is available, else
    the CPU; anything else must be a valid torch device string of a device that exists."""
    from genvision.errors import UsageError

    if text == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", local_rank() % torch.cuda.device_count())
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {text!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {text}: no CUDA device is available")
    return device

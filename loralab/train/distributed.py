"""Data-parallel training over ``torch.distributed``: the processes ``torchrun`` starts train one
run together.

Every process holds the whole run (network, optimizer, random state, data order) and advances it
identically: each draws the same batches and the same random numbers, computes its share of every
batch (see :meth:`World.share`), and the gradients are summed over the processes before clipping
and the optimizer step. As every process's loss is its share of the batch's mean loss, the sum is
the gradient of the whole batch: N processes at ``batch_size`` B train the run one process at
``batch_size`` B trains (up to the order of floating-point sums), and a state saved by either
resumes on the other. Only the main process (rank 0) writes files.

This is DistributedDataParallel's arithmetic without its module wrapper: the trained factors live
in the run's network, not in a module ComfyUI owns, and they are small, so one flat all-reduce per
step is all the communication there is. Sharded training (FSDP, DeepSpeed ZeRO) would replace
:meth:`World.all_reduce_grads` and the optimizer step for the factors; the base model is frozen
and already shared read-only by ComfyUI's loaders.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable

import torch

from ..errors import TrainingError

#: the environment ``torchrun`` sets for every process it starts
ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """The processes training one run: this one's ``rank`` of ``size``, its device, and its
    ``local_rank`` among the processes of its machine."""

    rank: int = 0
    size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes the run's files (rank 0)."""
        return self.rank == 0

    def share(self, n: int) -> range:
        """Positions of this process's samples in a batch of ``n``: contiguous, sizes differing by
        at most one, lower ranks taking the extra ones (a short batch may leave a rank none)."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return range(start, start + base + (1 if self.rank < extra else 0))

    def all_reduce_grads(self, params: Iterable[torch.Tensor]) -> None:
        """Sum every parameter's ``.grad`` over the processes (one all-reduce of them all, flat).
        A gradient missing in a process counts as zero; one missing in every process stays
        missing, as it would in one process (the optimizer then leaves the parameter alone)."""
        if self.size == 1:
            return
        params = list(params)
        if not params:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        present = torch.tensor([p.grad is not None for p in params], dtype=grads[0].dtype, device=grads[0].device)
        flat = torch.cat([g.reshape(-1) for g in grads] + [present])
        torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
        offset = 0
        for p, g, anywhere in zip(params, grads, flat[-len(params):].tolist()):
            if anywhere:
                p.grad = g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def sum(self, value: float) -> float:
        """``value`` summed over the processes (float64)."""
        if self.size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._collective_device())
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return float(t.item())

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true in any process (a stop asked for in one stops all)."""
        return self.sum(1.0 if flag else 0.0) > 0 if self.size > 1 else flag

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.size > 1:
            torch.distributed.barrier()

    def _collective_device(self) -> torch.device:
        return self.device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")


SINGLE = World()


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or set up the same way by hand)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE"))


def init_world(backend: str | None = None) -> World:
    """This process's place in the run, from ``torchrun``'s environment: the process group joined
    (NCCL on GPUs, gloo on CPUs unless ``backend`` says otherwise) and, with CUDA, the GPU of its
    ``LOCAL_RANK``. Without that environment: the single process :data:`SINGLE` (on CUDA when
    there is one)."""
    cuda = torch.cuda.is_available()
    if not launched():
        return World(device=torch.device("cuda" if cuda else "cpu"))
    try:
        rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise TrainingError("RANK, WORLD_SIZE and LOCAL_RANK must be integers",
                            hint="launch with torchrun, which sets them") from None
    if cuda:
        if local >= torch.cuda.device_count():
            raise TrainingError(f"process {rank} wants GPU {local}, but this machine has {torch.cuda.device_count()}",
                                hint="give torchrun --nproc_per_node no more than the GPUs of each machine")
        torch.cuda.set_device(local)
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if size > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend or ("nccl" if cuda else "gloo"), rank=rank, world_size=size)
    return World(rank, size, device, local)


def close_world(world: World) -> None:
    """Leave the process group :func:`init_world` joined."""
    if world.size > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()

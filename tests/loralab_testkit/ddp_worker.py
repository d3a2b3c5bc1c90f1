"""One process of a data-parallel toy run, as ``torchrun`` starts it (gloo on the CPU).

    python -m torch.distributed.run --standalone --nproc_per_node=N ddp_worker.py straight|resume OUT

``straight``: trains the toy run 4 steps (weights to OUT/straight_rank<R>.safetensors), then a fresh
run 2 steps and saves its checkpoint into OUT/ckpt (main process only), then sums gradients that
are present in both processes, in one, and in none (to OUT/grads_rank<R>.safetensors). ``resume``: continues that
checkpoint 2 steps (weights to OUT/resumed_rank<R>.safetensors). Every process writes its own
weights so that the test sees the processes agree; the run's files come from rank 0 only.
"""
from __future__ import annotations

import os
import sys

import torch

from loralab.files.safetensors import save_tensors
from loralab.train.checkpoint import restore_run, save_checkpoint
from loralab.train.distributed import close_world, init_world
from loralab_testkit.train_toys import ToyModel, make_dataset, make_run

#: the run both this worker and the single-process test train: batch 3 of 4 images, so every epoch
#: has a short batch of one (which leaves the second process nothing to compute), two batches per
#: step, noise offset and min-SNR weighting (per-sample draws and weights split over the processes)
RUN = {"batch_size": 3, "grad_accumulation": 2, "total_steps": 8, "seed": 5, "max_grad_norm": 0.5,
       "lr_scheduler": "cosine", "noise_offset": 0.05, "min_snr_gamma": 5.0}
DATASET = {"flip": True, "caption_dropout": 0.2}


def toy_run(out: str, world):
    """The dataset (encoded by rank 0 first, then read from the cache by the others) and a fresh run."""
    if not world.main:
        world.barrier()
    ds = make_dataset(os.path.join(out, "data"), os.path.join(out, "cache"), **DATASET)
    if world.main:
        world.barrier()
    return ds, make_run(ds, ToyModel(), **RUN)


def main(mode: str, out: str) -> None:
    torch.set_num_threads(1)
    world = init_world()
    try:
        ds, run = toy_run(out, world)
        model = ToyModel()
        model.network = run.network
        if mode == "straight":
            run.train(model, 4, world=world)
            save_tensors(os.path.join(out, f"straight_rank{world.rank}.safetensors"), run.network.state_tensors())
            _, again = toy_run(out, world)
            model.network = again.network
            again.train(model, 2, world=world)
            if world.main:
                save_checkpoint(again, os.path.join(out, "ckpt"))
            # gradients: summed; present in one process only, summed with zero; present in none, left out
            grads = [torch.full((2,), float(world.rank + 1)), torch.ones(3) if world.main else None, None]
            params = [torch.zeros(2), torch.zeros(3), torch.zeros(1)]
            for p, g in zip(params, grads):
                p.grad = g
            world.all_reduce_grads(params)
            summed = {"both": params[0].grad, "one": params[1].grad}
            assert params[2].grad is None
            save_tensors(os.path.join(out, f"grads_rank{world.rank}.safetensors"), summed)
        else:
            folder = os.path.join(out, "ckpt")
            state = os.path.join(folder, next(f for f in sorted(os.listdir(folder)) if f.endswith(".loralab-state")))
            resumed = restore_run(run, state)
            model.network = resumed.network
            resumed.train(model, 2, world=world)
            save_tensors(os.path.join(out, f"resumed_rank{world.rank}.safetensors"), resumed.network.state_tensors())
        world.barrier()
    finally:
        close_world(world)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

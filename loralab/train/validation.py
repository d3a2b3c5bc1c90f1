"""Validation: images held out of training (a fraction of the dataset, or a folder of their own)
and their loss at fixed noise levels with fixed noise, so that the figure is comparable across
steps, resumes and runs.

The held-out images are chosen by hashing ``seed`` with each image's id: the same dataset and seed
hold out the same images whatever the order the folder was read in. The loss is the mean squared
error of the model's prediction target (ε, v or the flow velocity), unweighted, over
:data:`NOISE_LEVELS` noise levels spread evenly over the schedule; each image's noise comes from
a generator seeded with ``seed`` and its id alone. No draw touches the run's generators.
"""
from __future__ import annotations

import hashlib
import math
from typing import Any, Callable, Mapping

import torch

from ..errors import TrainingError
from .dataset import Dataset
from .objectives import noisy_input, prediction_target, raw_output

#: noise levels every validation image is scored at
NOISE_LEVELS = 4


def _draw_key(seed: int, item_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\x00{item_id}".encode()).digest()[:8], "little")


def held_out(dataset: Dataset, fraction: float, seed: int) -> list[int]:
    """The indices of the images held out for validation: ``round(fraction × images)`` of them
    (at least one when ``fraction`` > 0), chosen by seed, in dataset order."""
    if fraction <= 0:
        return []
    n = len(dataset.items)
    count = max(1, round(fraction * n))
    if count >= n:
        raise TrainingError(f"validation_split {fraction:g} holds out all {n} images of the dataset",
                            hint="lower validation_split or give a validation folder")
    ranked = sorted(range(n), key=lambda i: (_draw_key(seed, dataset.items[i].id), dataset.items[i].id))
    return sorted(ranked[:count])


def fixed_sigmas(model: Any, count: int = NOISE_LEVELS) -> torch.Tensor:
    """``count`` noise levels at the midpoints of ``count`` equal slices of the schedule: flow
    models' σ = (i + ½)/count, ε/v models' σ of timestep ⌊(i + ½)·T/count⌋."""
    mids = [(i + 0.5) / count for i in range(count)]
    if model.kind == "flow":
        return torch.tensor(mids, dtype=torch.float32)
    sigmas = model.sigmas
    return torch.stack([sigmas[int(m * len(sigmas))] for m in mids]).float()


def validation_loss(model: Any, dataset: Dataset, indices: list[int], *, seed: int,
                    encode: Callable[[str], Mapping[str, torch.Tensor]] | None = None) -> float:
    """The mean validation loss of ``indices`` (see the module's description), no gradients.
    ``encode`` gives the conditioning of a caption where the run trains the text encoders (the
    dataset's cached encodings otherwise)."""
    if not indices:
        raise TrainingError("validation needs at least one image")
    sigma = fixed_sigmas(model).to(model.device)
    k = sigma.shape[0]
    total = 0.0
    with torch.no_grad():
        for idx in indices:
            item = dataset.items[idx]
            p = item.placement
            cond: dict[str, Any] = dict(dataset.cond(idx, 0) if encode is None else encode(dataset.text(idx, 0)))
            cond.update(width=p.size[0], height=p.size[1], crop_w=p.crop[0], crop_h=p.crop[1],
                        target_width=p.bucket[0], target_height=p.bucket[1])
            x0 = model.latent_in(dataset.latent(idx)[None].to(model.device, torch.float32)).float()
            x0 = x0.expand(k, *x0.shape[1:])
            gen = torch.Generator().manual_seed(_draw_key(seed, item.id))
            noise = torch.randn(tuple(x0.shape), generator=gen).to(model.device)
            x = noisy_input(model.kind, x0, noise, sigma)
            denoised = model.denoise(x, sigma, [cond] * k).float()
            pred = raw_output(model.kind, x, sigma, denoised, model.sigma_data)
            target = prediction_target(model.kind, x0, noise, sigma, model.sigma_data)
            total += float(((pred - target) ** 2).mean())
    loss = total / len(indices)
    if not math.isfinite(loss):
        raise TrainingError(f"the validation loss is not finite ({loss})",
                            hint="lower the learning rate or check the validation images")
    return loss

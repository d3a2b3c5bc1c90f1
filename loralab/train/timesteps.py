"""Noise levels for training steps.

ε/v-prediction models: a timestep drawn uniformly from the model's discrete schedule (the σ table
ComfyUI's model sampling holds), as kohya draws it. Flow-matching models (Flux): t ∈ (0, 1) from

* ``uniform``: U(0, 1);
* ``sigmoid``: sigmoid(s·N(0, 1)), s = ``sigmoid_scale`` (kohya's ``sigmoid``);
* ``shift``: the sigmoid draw t, then t·k / (1 + (k − 1)·t) with k = ``shift`` (kohya's ``shift``;
  k > 1 moves steps toward high noise);
* ``logit_normal``: sigmoid(m + s·N(0, 1)) with m = ``logit_mean``, s = ``logit_std`` (SD3's);
* ``flux_shift``: the sigmoid draw t, shifted by the image size as Flux's sampler shifts its
  schedule (kohya's ``flux_shift``): μ = :func:`flux_mu` of the image's token count, then
  e^μ / (e^μ + 1/t − 1), which is the ``shift`` formula with k = e^μ;
* ``model_shift``: the sigmoid draw t, shifted with k = the model's own sampling shift (ComfyUI's
  ``model_sampling.shift``: SD3 3, Wan 8 or 5, Qwen-Image 1.15, or what a ModelSamplingSD3 /
  ModelSamplingAuraFlow node set), so training draws noise levels the way the model samples them.

Flow draws are clamped to [``FLOW_T_MIN``, 1]: the raw output is recovered from ComfyUI's denoised
estimate by dividing by t.
"""
from __future__ import annotations

import math

import torch

from ..errors import TrainingError

FLOW_SAMPLERS = ("uniform", "sigmoid", "shift", "logit_normal", "flux_shift", "model_shift")
FLOW_T_MIN = 1e-3
#: Flux's resolution-dependent shift: μ runs linearly from BASE_SHIFT at BASE_TOKENS image tokens
#: to MAX_SHIFT at MAX_TOKENS (the values of Flux's scheduler configuration)
BASE_TOKENS, BASE_SHIFT = 256, 0.5
MAX_TOKENS, MAX_SHIFT = 4096, 1.15
#: latent pixels per image token side (Flux packs 2×2 latent patches into one token)
FLUX_PATCH = 2


def sample_discrete_sigmas(sigmas: torch.Tensor, batch: int, generator: torch.Generator) -> torch.Tensor:
    """σ of ``batch`` timesteps drawn uniformly from a discrete schedule (index 0 = least noise)."""
    idx = torch.randint(0, int(sigmas.shape[0]), (batch,), generator=generator)
    return sigmas.detach().to("cpu", torch.float32)[idx]


def shift_t(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Resolution-style time shift: t·k / (1 + (k − 1)·t)."""
    return t * shift / (1.0 + (shift - 1.0) * t)


def image_tokens(latent_height: int, latent_width: int) -> int:
    """Flux's image sequence length for a latent of this size: (h // 2)·(w // 2)."""
    return (latent_height // FLUX_PATCH) * (latent_width // FLUX_PATCH)


def flux_mu(tokens: int) -> float:
    """μ of Flux's resolution-dependent shift for an image of ``tokens`` tokens: the line through
    (BASE_TOKENS, BASE_SHIFT) and (MAX_TOKENS, MAX_SHIFT), extended beyond them."""
    slope = (MAX_SHIFT - BASE_SHIFT) / (MAX_TOKENS - BASE_TOKENS)
    return BASE_SHIFT + slope * (tokens - BASE_TOKENS)


def sample_flow_sigmas(method: str, batch: int, generator: torch.Generator, *, sigmoid_scale: float = 1.0,
                       shift: float = 3.0, logit_mean: float = 0.0, logit_std: float = 1.0,
                       tokens: int = MAX_TOKENS, model_shift: float | None = None) -> torch.Tensor:
    """t ∈ [FLOW_T_MIN, 1] for ``batch`` flow-matching samples, drawn by ``method``; ``tokens``
    is the image's token count (``flux_shift`` only), ``model_shift`` the model's sampling shift
    (``model_shift`` only)."""
    if method == "uniform":
        t = torch.rand((batch,), generator=generator)
    elif method in ("sigmoid", "shift", "flux_shift", "model_shift"):
        t = torch.sigmoid(sigmoid_scale * torch.randn((batch,), generator=generator))
        if method == "shift":
            t = shift_t(t, shift)
        elif method == "model_shift":
            if model_shift is None or not model_shift > 0:
                raise TrainingError(f"timestep sampling model_shift needs the model's sampling shift, got {model_shift}",
                                    hint="this model has no flow shift: choose sigmoid or shift")
            t = shift_t(t, model_shift)
        elif method == "flux_shift":
            t = shift_t(t, math.exp(flux_mu(tokens)))
    elif method == "logit_normal":
        t = torch.sigmoid(logit_mean + logit_std * torch.randn((batch,), generator=generator))
    else:
        raise TrainingError(f"unknown timestep sampling {method!r} (known: {', '.join(FLOW_SAMPLERS)})")
    return t.clamp(FLOW_T_MIN, 1.0)

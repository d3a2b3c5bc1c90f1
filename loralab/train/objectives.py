"""Training objectives per model type, in ComfyUI's sigma parameterisation.

ComfyUI hands a model ``x = x0 + σ·ε`` for ε- and v-prediction models (the variance-exploding
form; the DDPM input is ``x / sqrt(1 + σ²)``, with ``σ² = (1 − ᾱ)/ᾱ``) and ``x = (1 − t)·x0 + t·ε``
with σ = t for flow-matching models (Flux). It returns the denoised estimate; the raw network
output is recovered here exactly from it. Targets:

* ``eps``: ε.
* ``v``: ``v = α·ε − σ_ddpm·x0`` with ``α = 1/sqrt(1 + σ²)``, ``σ_ddpm = σ/sqrt(1 + σ²)``
  (general σ_data: ``(σ_data·ε − σ/σ_data·x0) / sqrt(σ² + σ_data²)``).
* ``flow``: ``ε − x0``.

Min-SNR-γ weights (Hang et al. 2023, as kohya applies them): ε: ``min(SNR, γ)/SNR``,
v: ``min(SNR, γ)/(SNR + 1)``, with ``SNR = σ_data²/σ²`` (= ᾱ/(1 − ᾱ)).
"""
from __future__ import annotations

import torch

from ..errors import TrainingError

KINDS = ("eps", "v", "flow")


def _col(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """σ per sample, shaped to broadcast over a [B, C, ...] tensor."""
    return sigma.to(like.dtype).reshape(sigma.shape[0], *[1] * (like.dim() - 1))


def _check(kind: str) -> None:
    if kind not in KINDS:
        raise TrainingError(f"unknown prediction type {kind!r} (known: {', '.join(KINDS)})")


def noisy_input(kind: str, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The model input at noise level σ, as ComfyUI's ``noise_scaling`` forms it."""
    _check(kind)
    s = _col(sigma, x0)
    if kind == "flow":
        return (1.0 - s) * x0 + s * noise
    return x0 + s * noise


def prediction_target(kind: str, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor,
                      sigma_data: float = 1.0) -> torch.Tensor:
    """What the raw network output should equal for this sample."""
    _check(kind)
    if kind == "eps":
        return noise
    if kind == "flow":
        return noise - x0
    s = _col(sigma, x0)
    return (sigma_data * noise - (s / sigma_data) * x0) / torch.sqrt(s * s + sigma_data ** 2)


def raw_output(kind: str, x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor,
               sigma_data: float = 1.0) -> torch.Tensor:
    """The raw network output that ComfyUI turned into ``denoised`` (the inverse of its
    ``calculate_denoised``): ε, v or the flow velocity."""
    _check(kind)
    s = _col(sigma, x)
    if kind in ("eps", "flow"):
        return (x - denoised) / s
    total = s * s + sigma_data ** 2
    return (x * (sigma_data ** 2) / total - denoised) * torch.sqrt(total) / (s * sigma_data)


def snr(kind: str, sigma: torch.Tensor, sigma_data: float = 1.0) -> torch.Tensor:
    """Signal-to-noise ratio of each sample's noise level."""
    _check(kind)
    s = sigma.double()
    if kind == "flow":
        return ((1.0 - s) / s) ** 2
    return (sigma_data ** 2) / (s * s)


def loss_weights(kind: str, sigma: torch.Tensor, min_snr_gamma: float = 0.0, sigma_data: float = 1.0) -> torch.Tensor:
    """Per-sample loss weights: 1, or min-SNR-γ for ε and v prediction."""
    _check(kind)
    if not min_snr_gamma:
        return torch.ones(sigma.shape[0], dtype=torch.float32, device=sigma.device)
    if kind == "flow":
        raise TrainingError("min-SNR-γ weighting is defined for ε- and v-prediction models",
                            hint="set min_snr_gamma to 0 for flow-matching models (Flux); use timestep sampling instead")
    r = snr(kind, sigma, sigma_data)
    clipped = torch.clamp(r, max=float(min_snr_gamma))
    w = clipped / r if kind == "eps" else clipped / (r + 1.0)
    return w.float()


def sample_noise(shape: tuple[int, ...], generator: torch.Generator, noise_offset: float = 0.0) -> torch.Tensor:
    """Gaussian noise on the CPU, plus ``noise_offset``·N(0, 1) per sample and channel (kohya's
    noise offset) when it is non-zero."""
    noise = torch.randn(shape, generator=generator)
    if noise_offset:
        offset = torch.randn((shape[0], shape[1], *[1] * (len(shape) - 2)), generator=generator)
        noise = noise + noise_offset * offset
    return noise

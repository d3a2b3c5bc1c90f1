"""Sampling one image the way ComfyUI's core nodes do: CLIP Text Encode, KSampler and VAE Decode,
called through core's own node functions, so an image made here equals the one those nodes make
(bit for bit, on every ComfyUI version) and shows the sampler's step previews on the node."""
from __future__ import annotations

from typing import Any

import nodes as core  # ComfyUI's nodes.py (this pack imports its own modules relatively)
import torch


def encode(clip: Any, text: str) -> list:
    """CONDITIONING of ``text``, as CLIP Text Encode makes it."""
    return core.CLIPTextEncode().encode(clip, text)[0]


def ksample(model: Any, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str, positive: list,
            negative: list, latent: dict, denoise: float) -> dict:
    """The sampled LATENT, as KSampler makes it."""
    return core.common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent,
                                denoise=denoise)[0]


def decode(vae: Any, latent: dict) -> torch.Tensor:
    """The IMAGE batch of a LATENT, as VAE Decode makes it."""
    return core.VAEDecode().decode(vae, latent)[0]

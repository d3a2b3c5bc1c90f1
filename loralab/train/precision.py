"""Training precision: the dtype the model computes in, and the loss scaling fp16 needs.

The LoRA factors and the optimizer state are fp32 in every precision (the master copies the
optimizer updates); only the model's forward and backward run in the compute dtype, and ΔW is
handed to the model in it.

``precision`` is ``auto``, ``bf16``, ``fp16`` or ``fp32``. ``auto`` is bf16 on a device with bf16
support (CUDA GPUs from Ampere on), fp32 on the CPU, and fp16 elsewhere. fp16 always trains with
the dynamic :class:`LossScaler`: without it gradients below fp16's smallest subnormal (6·10⁻⁸)
round to zero, which for diffusion models is a large share of them.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

import torch

from ..errors import TrainingError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
NAMES = {v: k for k, v in DTYPES.items()}


def bf16_supported(device: torch.device | str) -> bool:
    """Whether ``device`` computes in bf16 natively (CUDA: the GPU says; other devices: no)."""
    dev = torch.device(device)
    return dev.type == "cuda" and torch.cuda.is_bf16_supported()


def compute_dtype(precision: str, device: torch.device | str) -> torch.dtype:
    """The dtype a run with this ``precision`` setting computes in on ``device``."""
    if precision not in PRECISIONS:
        raise TrainingError(f"unknown precision {precision!r} (known: {', '.join(PRECISIONS)})")
    dev = torch.device(device)
    if precision == "auto":
        if bf16_supported(dev):
            return torch.bfloat16
        return torch.float32 if dev.type == "cpu" else torch.float16
    if precision == "bf16" and dev.type == "cuda" and not bf16_supported(dev):
        raise TrainingError("this GPU does not compute in bf16", hint="choose precision auto or fp16 (loss-scaled)")
    return DTYPES[precision]


def grads_finite(params: Iterable[torch.Tensor]) -> bool:
    """Whether every gradient of ``params`` is free of inf and NaN (missing gradients count as finite)."""
    return all(bool(torch.isfinite(p.grad).all()) for p in params if p.grad is not None)


@dataclass
class LossScaler:
    """Dynamic loss scaling for fp16 compute.

    The loss is multiplied by ``scale`` before backward and the fp32 gradients divided by it
    after; ``scale`` is always a power of two, so both are exact. A step whose gradients hold an
    inf or NaN is skipped (no optimizer step) and the scale halves; after ``growth_interval``
    finite steps in a row it doubles. Bounds: [2⁻¹⁴, 2²⁴].
    """

    scale: float = 2.0 ** 16
    growth_interval: int = 2000
    good_steps: int = 0
    skipped: int = 0

    MIN_SCALE = 2.0 ** -14
    MAX_SCALE = 2.0 ** 24

    def unscale(self, params: list[torch.Tensor]) -> bool:
        """Divide the gradients by the scale and update it. Returns False (gradients left as
        they are, scale halved) when a gradient is not finite: the step must be skipped."""
        if not grads_finite(params):
            self.scale = max(self.scale / 2.0, self.MIN_SCALE)
            self.good_steps = 0
            self.skipped += 1
            return False
        inverse = 1.0 / self.scale
        for p in params:
            if p.grad is not None:
                p.grad.mul_(inverse)
        self.good_steps += 1
        if self.good_steps >= self.growth_interval:
            self.scale = min(self.scale * 2.0, self.MAX_SCALE)
            self.good_steps = 0
        return True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "LossScaler":
        scaler = cls(scale=float(data["scale"]), growth_interval=int(data["growth_interval"]),
                     good_steps=int(data["good_steps"]), skipped=int(data["skipped"]))
        exponent = math.log2(scaler.scale) if scaler.scale > 0 else 0.5
        if exponent != int(exponent):
            raise ValueError(f"loss scale {scaler.scale} is not a power of two")
        if scaler.growth_interval < 1:
            raise ValueError(f"loss-scale growth interval {scaler.growth_interval} is below 1")
        return scaler

"""What every algorithm shares: the :class:`Adapter` (one module's tensors and its ΔW) and the
:class:`Algorithm` (how a file stores such a module: its roles, key suffixes and shape rules).

Scale conventions follow the producers (and ComfyUI): LoRA/LoHa scale is alpha / rank with a
missing alpha meaning alpha = rank; LoKr scales by alpha / rank of its decomposed factor and
ignores alpha when neither factor is decomposed (full-dimension LoKr).

Norms and reference math are float64; ΔW and factors are float32 unless a dtype is given. The
shape rules (the :class:`Algorithm` side) need no torch: reading a header never imports it, and
the tensor math imports it where it runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    import torch

    Tensor = torch.Tensor

from . import dora

Shapes = Mapping[str, tuple[int, ...]]

#: the key suffix of a module's alpha scalar, shared by every weighted algorithm
ALPHA_SUFFIX = ".alpha"


def flat(t: Tensor) -> Tensor:
    """``t`` as a matrix [rows, everything else]."""
    return t.reshape(t.shape[0], -1)


def as_dtype(dtype: torch.dtype | None) -> torch.dtype:
    """``dtype``, or float32 (the adapters' default precision) where none is given."""
    import torch
    return torch.float32 if dtype is None else dtype


#: below this fraction of (Σᵢ‖bᵢ‖‖aᵢ‖)², ‖B·A‖² has cancelled enough that float32 Gram matrices could
#: show their rounding: :func:`gram_fro_norm` then recomputes them in float64
GRAM_CANCELLATION = 1e-3


def gram_fro_norm(b: Tensor, a: Tensor) -> float:
    """‖B·A‖_F from the factors: sqrt(Σ (BᵀB ∘ AAᵀ)), no out×in product.

    For 16-bit factors (fp16, bf16: every LoRA file but fp32 ones) the Gram matrices, the out·r²
    and in·r² work, are float32, where their products are exact, and are combined in float64;
    where the sum cancels (below :data:`GRAM_CANCELLATION` of its bound) or float32 overflows, and
    for wider factors, the Gram matrices are float64."""
    import torch
    b, a = flat(b), flat(a)
    if b.dtype.itemsize <= 2 and a.dtype.itemsize <= 2:
        b32, a32 = b.to(torch.float32), a.to(torch.float32)
        gb, ga = (b32.T @ b32).double(), (a32 @ a32.T).double()
        val = float((gb * ga).sum())
        bound = float((gb.diagonal().sqrt() * ga.diagonal().sqrt()).sum()) ** 2
        if math.isfinite(val) and math.isfinite(bound) and val >= GRAM_CANCELLATION * bound:
            return math.sqrt(val)
    b64, a64 = b.to(torch.float64), a.to(torch.float64)
    val = float(((b64.T @ b64) * (a64 @ a64.T)).sum())
    return math.sqrt(max(val, 0.0))


@dataclass
class Adapter:
    """One module's tensors: the dense update ``delta()`` (scale included), its Frobenius norm
    ``fro_norm()`` computed from the factors where a closed form exists, and, where one exists,
    an exact low-rank form ``low_rank()`` = (B, A) with ``B @ A`` equal to the flattened scaled ΔW.
    DoRA (``dora_scale``) depends on the base weight: use ``apply_to``."""

    alpha: float | None = None
    dora_scale: Tensor | None = None
    kind: str = field(default="", init=False)

    #: whether ΔW exists without the base weight (False for set_weight)
    has_delta = True

    @property
    def scale(self) -> float:
        raise NotImplementedError

    @property
    def rank(self) -> int | None:
        return None

    @property
    def out_features(self) -> int:
        raise NotImplementedError

    @property
    def in_numel(self) -> int:
        raise NotImplementedError

    @property
    def needs_base(self) -> bool:
        return self.dora_scale is not None

    def delta_flat(self, dtype: torch.dtype | None = None) -> Tensor:
        """Scaled ΔW as an [out, in·kh·kw] matrix (float32 unless ``dtype``)."""
        raise NotImplementedError

    def delta(self, shape: tuple[int, ...] | None = None, dtype: torch.dtype | None = None) -> Tensor:
        """Scaled ΔW (without DoRA), reshaped to ``shape`` when given."""
        d = self.delta_flat(dtype)
        return d.reshape(shape) if shape is not None else d

    def low_rank(self, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor] | None:
        """(B [out, k], A [k, in_numel]) with B @ A == delta_flat(), or None if no low-rank form."""
        return None

    def fro_norm(self) -> float:
        """‖scale·ΔW‖_F (without DoRA)."""
        import torch
        lr = self.low_rank(torch.float64)
        if lr is not None:
            return gram_fro_norm(*lr)
        return float(self.delta_flat(torch.float64).norm())

    def apply_to(self, weight: Tensor, strength: float = 1.0) -> Tensor:
        """The patched weight: W + strength·ΔW, or DoRA's normalised form when ``dora_scale`` is set."""
        import torch
        w = weight.to(torch.float64)
        d = self.delta(tuple(weight.shape), torch.float64)
        if self.dora_scale is None:
            return w + strength * d
        return dora.normalize(w + d, self.dora_scale.to(torch.float64), strength)

    def file_tensors(self, weight_shape: tuple[int, ...]) -> dict[str, Tensor]:
        """The tensors that store this module in a kohya/LyCORIS file, by key suffix (``.alpha`` and
        ``.dora_scale`` included), for a model weight of ``weight_shape``."""
        raise NotImplementedError


@dataclass(frozen=True)
class Claim:
    """An entry an algorithm finds among one module's roles."""

    kind: str
    param: str  # "weight" or "bias"
    roles: tuple[str, ...]
    style: str = ""
    problem: str | None = None


class Algorithm:
    """How a file stores one algorithm's modules: its key suffixes and roles, which roles form an
    entry, its shape rules and rank, and the :class:`Adapter` it builds."""

    kind: str = ""
    #: key suffix -> (role, naming style); the first suffix of a role is the one LoRA Lab writes
    suffixes: Mapping[str, tuple[str, str]] = {}
    #: whether the entry takes the module's ``alpha`` and ``dora_scale``
    shares_alpha: bool = True
    #: whether ΔW is multiplied by alpha / rank
    weighted: bool = True
    #: whether the update is a function of the base weight (OFT, BOFT, GLoRA): applied by the host's
    #: own adapters, never turned into a ΔW by the engine
    needs_base: bool = False
    #: whether the entry is one whole tensor (a difference or a replacement), sized like its target
    whole_tensor: bool = False

    def suffix(self, role: str) -> str:
        """The key suffix LoRA Lab writes for ``role``."""
        return next(s for s, (r, _) in self.suffixes.items() if r == role)

    def claims(self, roles: Mapping[str, str], styles: set[str]) -> list[Claim]:
        """The entries this algorithm forms from one module's roles (role -> naming style)."""
        raise NotImplementedError

    def problem(self, shapes: Shapes) -> str | None:
        """Why these factor shapes cannot form an update (None where they can)."""
        return None

    def rank(self, shapes: Shapes) -> int | None:
        """The rank alpha is divided by (None where there is none)."""
        return None

    def delta_shape(self, shapes: Shapes) -> tuple[int, int] | None:
        """(out_features, in_numel) of ΔW from the shapes alone."""
        return None

    def name(self, shapes: Shapes) -> str:
        """The algorithm's name for an entry of these shapes."""
        raise NotImplementedError

    def fit_problem(self, shapes: Shapes, shape: tuple[int, ...]) -> str | None:
        """For base-dependent algorithms: why the entry cannot act on a weight of ``shape``."""
        return None

    def build(self, tensors: Mapping[str, Tensor], alpha: float | None) -> Adapter:
        """The adapter of an entry from its tensors by role (``dora_scale`` included)."""
        raise NotImplementedError

"""Memory modes for training, and the estimate of a configuration's peak memory.

A :class:`MemoryMode` says how a run keeps the model: base weights as loaded or stored in fp8
(computed in the run's compute dtype, upcast per layer at use), how many transformer blocks wait
on the offload device (block swap), whether blocks are gradient-checkpointed and whether the
activations checkpointing keeps go to the CPU. None but fp8 changes what is computed.

``fits_in`` picks the mode: a memory budget (``24 GB`` .. ``8 GB``, or ``auto`` = the device's
memory) and the first mode of :func:`ladder` whose :func:`estimate` fits it; ``manual`` takes the
details as set. The estimate is a sum of parts (see :class:`Estimate`), each from the model's
blocks as :class:`BlockCost` describes them; :func:`check_fits` refuses a configuration whose
estimate exceeds the memory it has.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from ..errors import TrainingError

GIB = 1024 ** 3
FITS_IN = ("auto", "24 GB", "16 GB", "12 GB", "8 GB", "manual")
BUDGETS = {"24 GB": 24 * GIB, "16 GB": 16 * GIB, "12 GB": 12 * GIB, "8 GB": 8 * GIB}
BASE_DTYPES = ("as loaded", "fp8")
#: bytes a GPU keeps for itself and the CUDA context, never available to tensors
GPU_RESERVE = GIB
#: swapped blocks on the device at once: the one computing and the one streaming in
SWAP_IN_FLIGHT = 2
#: optimizer state bytes per trained fp32 parameter
OPTIMIZER_STATE_BYTES = {"adamw": 8, "adamw8bit": 2, "prodigy": 16, "adafactor": 4}


@dataclass(frozen=True)
class MemoryMode:
    """How a run keeps its model in memory."""

    base_dtype: str = "as loaded"
    swap_blocks: int = 0
    checkpointing: bool = False
    offload_activations: bool = False

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> "MemoryMode":
        """A mode as :meth:`to_json` wrote it (keys a later version adds are ignored); ValueError
        for anything else."""
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or not names <= set(data):
            raise ValueError(f"not a memory mode: {str(data)[:200]}")
        mode = cls(**{k: data[k] for k in names})
        if (mode.base_dtype not in BASE_DTYPES or type(mode.swap_blocks) is not int or mode.swap_blocks < 0
                or not all(type(v) is bool for v in (mode.checkpointing, mode.offload_activations))):
            raise ValueError(f"not a memory mode: {str(data)[:200]}")
        return mode

    def same_numbers(self, other: "MemoryMode") -> bool:
        """Whether training in ``other`` computes what this mode computes, bit for bit (block swap
        and where activations wait change nothing; fp8 storage rounds the weights, and
        checkpointing sums some gradients in another order)."""
        return (self.base_dtype, self.checkpointing) == (other.base_dtype, other.checkpointing)

    def describe(self) -> str:
        parts = ["fp8 base weights" if self.base_dtype == "fp8" else "base weights as loaded"]
        if self.swap_blocks:
            parts.append(f"{self.swap_blocks} blocks swapped to the CPU")
        if self.checkpointing:
            parts.append("gradient checkpointing" + (" with activations on the CPU" if self.offload_activations else ""))
        return ", ".join(parts)


@dataclass(frozen=True)
class BlockCost:
    """One swappable, checkpointable block of a model, as the estimate sees it.

    ``weight_numel``: elements of its ≥2-D floating weights (what fp8 storage shrinks);
    ``weight_bytes``: those weights' bytes as loaded; ``other_bytes``: its other parameters and
    buffers; ``target_numel``: elements of the weights the network trains (their patched copies
    are kept for backward) and ``largest_target`` the biggest of them; ``activations``: elements
    autograd keeps per sample inside the block, attention scores aside; ``boundary``: elements of
    the block's input per sample (what checkpointing keeps); ``scores``: elements of the attention
    scores (heads × query tokens × key tokens, summed over its attentions) per sample, where the
    attention implementation keeps them for backward (a math path), else 0 (flash or
    memory-efficient attention keeps none)."""

    weight_numel: int
    weight_bytes: int
    other_bytes: int
    target_numel: int
    largest_target: int
    activations: int
    boundary: int
    scores: int = 0


@dataclass(frozen=True)
class ModelCost:
    """A model for the estimate: its blocks in execution order and everything else."""

    blocks: tuple[BlockCost, ...]
    #: bytes of the weights outside the blocks (embedders, final layers), as loaded
    other_bytes: int
    #: the loaded weights' element size (2 for bf16/fp16, 1 for fp8, 4 for fp32)
    loaded_itemsize: int
    #: elements autograd keeps per sample outside the blocks (the text the model reads)
    activations: int = 0
    #: of ``other_bytes``, the ≥2-D floating weights (what fp8 storage shrinks): elements and bytes as loaded
    other_weight_numel: int = 0
    other_weight_bytes: int = 0

    def other_stored(self, fp8: bool) -> int:
        """Bytes of the weights outside the blocks as stored (fp8: one byte per weight element)."""
        return self.other_bytes - self.other_weight_bytes + self.other_weight_numel if fp8 else self.other_bytes


@dataclass(frozen=True)
class Estimate:
    """Peak memory on the training device, in bytes, by part."""

    parts: tuple[tuple[str, int], ...]

    @property
    def total(self) -> int:
        return sum(b for _, b in self.parts)

    def describe(self) -> str:
        return ", ".join(f"{name} {gib(b)}" for name, b in self.parts if b) + f"; total {gib(self.total)}"


def gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def estimate(cost: ModelCost, mode: MemoryMode, *, batch: int, trained_params: int, optimizer: str,
             compute_itemsize: int, offload_to_device: bool = False) -> Estimate:
    """The peak memory of training ``cost`` in ``mode`` with ``batch`` samples per step.

    Parts: the base weights on the device (fp8: one byte per weight element, outside the blocks
    too; swapped blocks: only :data:`SWAP_IN_FLIGHT` of them); the trained factors with their
    gradients and optimizer state (fp32, two optimizer moments for adamw); what autograd keeps
    until backward: per block the activations and the patched (or upcast) weight copies, all
    blocks' without checkpointing, else every block's input plus the one block being recomputed,
    and the activations outside the blocks; the attention scores kept, all blocks' or the
    recomputed block's; and the working memory of one patched weight (its fp32 copy and sum, its
    gradient) with the gradients of one block's activations and of its attention scores (the
    scores' gradient and softmax's). ``offload_to_device`` says the offload device is the training
    device itself (CPU training): swapping and offloading then save nothing, and fp8 storage keeps
    the originals beside the fp8 copies."""
    blocks = cost.blocks
    fp8 = mode.base_dtype == "fp8"
    stored = [(b.weight_numel if fp8 else b.weight_bytes) + b.other_bytes for b in blocks]
    swapped = 0 if offload_to_device else min(mode.swap_blocks, len(blocks))
    resident = sum(stored[swapped:]) + sum(sorted(stored[:swapped], reverse=True)[:SWAP_IN_FLIGHT])
    if fp8 and offload_to_device:
        resident += sum(b.weight_bytes for b in blocks) + cost.other_weight_bytes
    casts = fp8 or cost.loaded_itemsize != compute_itemsize

    def kept(b: BlockCost) -> int:
        patched = b.target_numel + (b.weight_numel - b.target_numel if casts else 0)
        return (batch * b.activations + patched) * compute_itemsize

    if mode.checkpointing:
        inputs = 0 if mode.offload_activations and not offload_to_device else \
            sum(batch * b.boundary * compute_itemsize for b in blocks)
        autograd = inputs + max((kept(b) for b in blocks), default=0)
        scores = max((b.scores for b in blocks), default=0)
    else:
        autograd = sum(kept(b) for b in blocks)
        scores = sum(b.scores for b in blocks)
    autograd += batch * cost.activations * compute_itemsize
    working = max((b.largest_target * (8 + compute_itemsize) + batch * (b.activations + 2 * b.scores) * compute_itemsize
                   for b in blocks), default=0)
    state = trained_params * (8 + OPTIMIZER_STATE_BYTES.get(optimizer, 8))
    return Estimate((("base weights", cost.other_stored(fp8) + resident), ("LoRA, gradients and optimizer state", state),
                     ("activations and patched weights", autograd),
                     ("attention scores", batch * scores * compute_itemsize), ("working memory", working)))


def ladder(num_blocks: int, keep: MemoryMode | None = None) -> list[MemoryMode]:
    """The modes tried for a memory budget, from fastest to leanest: as loaded, checkpointing,
    fp8 base, then ever more blocks swapped (in quarters of the blocks, then all but two; fewer
    than :data:`SWAP_IN_FLIGHT` + 1 save nothing), then activations on the CPU. With ``keep``,
    only modes that compute what it computes (:meth:`MemoryMode.same_numbers`)."""
    out = [MemoryMode(), MemoryMode(checkpointing=True), MemoryMode("fp8", checkpointing=True)]
    counts = sorted(n for n in {num_blocks * q // 4 for q in (1, 2, 3)} | {num_blocks - 2} if n > SWAP_IN_FLIGHT)
    out += [MemoryMode("fp8", n, True) for n in counts]
    last = out[-1]
    out.append(replace(last, offload_activations=True))
    if keep is None:
        return out
    kept: list[MemoryMode] = []
    for m in out:
        m = replace(m, base_dtype=keep.base_dtype, checkpointing=keep.checkpointing,
                    offload_activations=m.offload_activations and keep.checkpointing)
        if m not in kept:
            kept.append(m)
    return kept


def choose_mode(cost: ModelCost, budget: int, keep: MemoryMode | None = None, **kwargs) -> tuple[MemoryMode, Estimate]:
    """The first mode of :func:`ladder` (with ``keep``) whose estimate fits ``budget`` bytes, or
    the leanest with its (too large) estimate; ``kwargs`` as for :func:`estimate`."""
    tried = [(m, estimate(cost, m, **kwargs)) for m in ladder(len(cost.blocks), keep)]
    for mode, est in tried:
        if est.total <= budget:
            return mode, est
    return tried[-1]


def usable_memory(total: int, device_type: str) -> int:
    """The bytes training may use of a device with ``total`` bytes (a GPU keeps :data:`GPU_RESERVE`)."""
    return max(total - (GPU_RESERVE if device_type == "cuda" else 0), 0)


def resolve(fits_in: str, manual: MemoryMode, cost: ModelCost, device_memory: int, device_type: str,
            keep: MemoryMode | None = None, **kwargs) -> tuple[MemoryMode, Estimate]:
    """The mode ``fits_in`` picks (among those computing what ``keep`` computes, when given) and
    its estimate; refuses (TrainingError) when it does not fit the device (see :func:`check_fits`)."""
    if fits_in not in FITS_IN:
        raise TrainingError(f"unknown fits_in {fits_in!r} (known: {', '.join(FITS_IN)})")
    available = usable_memory(device_memory, device_type)
    if fits_in == "manual":
        mode, est = manual, estimate(cost, manual, **kwargs)
    else:
        budget = available if fits_in == "auto" else min(BUDGETS[fits_in], available)
        mode, est = choose_mode(cost, budget, keep, **kwargs)
    check_fits(est, available, mode, fits_in, len(cost.blocks))
    return mode, est


def check_fits(est: Estimate, available: int, mode: MemoryMode, fits_in: str, num_blocks: int) -> None:
    """Refuse, naming what to change, a configuration whose estimate exceeds ``available`` bytes."""
    if est.total <= available:
        return
    if fits_in == "manual":
        hint = ("choose fits_in auto, or in manual mode use fp8 base weights, gradient checkpointing and more "
                f"swapped blocks (up to {max(num_blocks - 1, 0)})")
    else:
        hint = "lower batch_size or the dataset's resolution, or train fewer targets or a lower rank"
    raise TrainingError(f"this training would need about {gib(est.total)} but the device has {gib(available)} for it "
                        f"({mode.describe()}: {est.describe()})", hint=hint)


def swap_units(count: int, mode: MemoryMode) -> int:
    """The blocks a mode swaps for a model with ``count`` blocks (at least one stays resident)."""
    return max(0, min(mode.swap_blocks, count - 1))


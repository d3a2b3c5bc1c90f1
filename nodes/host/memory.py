"""Host glue for training's memory modes: a ComfyUI MODEL described for the estimator, the
device's memory, and the mode applied to the loaded diffusion model for a training call.

Blocks are the units gradient checkpointing and block swap work on, in execution order: Flux's
``double_blocks`` then ``single_blocks``; a UNet's ``input_blocks``, ``middle_block`` and
``output_blocks`` opened down to their layers (ResBlocks, SpatialTransformers, down- and
upsamplers), which ComfyUI calls one by one.

What autograd keeps inside a block is estimated per token from the block's structure
(:data:`ACTIVATIONS_PER_WIDTH`: elements kept per token per unit of width, by block class; a
ResBlock's width is its input and output channels together, a transformer's cross-attention adds
:data:`CONTEXT_PER_WIDTH` per text token), counted with ``torch.autograd.graph.saved_tensors_hooks``
from the tensors ComfyUI's blocks save for backward with LoRA on their linear layers, attention
scores aside. Those are a term of their own (heads × query tokens × key tokens per attention) where
ComfyUI's attention keeps them (:func:`attention_keeps_scores`: its math paths, the CPU's; PyTorch
attention on a GPU is assumed to run flash or memory-efficient SDPA, which keeps none). Tokens come
from the dataset's largest bucket and its text length; the text itself is kept outside the blocks.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import comfy.model_management
import torch

from ...loralab.train.base_weights import stored_in_fp8
from ...loralab.train.block_swap import block_swap, resident_on
from ...loralab.train.grad_checkpoint import checkpoint_blocks, gradient_checkpointing
from ...loralab.train.memory import BlockCost, MemoryMode, ModelCost, estimate, resolve, swap_units
from ...loralab.train.precision import compute_dtype

#: block containers of the diffusion model, in execution order
BLOCK_LISTS = ("double_blocks", "single_blocks", "input_blocks", "middle_block", "output_blocks")
#: elements autograd keeps per token per unit of width, by block class, attention scores aside (counted; see
#: module doc); an Upsample's per token of its input, which it saves at four times the tokens
ACTIVATIONS_PER_WIDTH = {"DoubleStreamBlock": 23, "SingleStreamBlock": 22, "SpatialTransformer": 3,
                         "BasicTransformerBlock": 28, "ResBlock": 3, "Downsample": 1, "Upsample": 4}
#: elements a cross-attention keeps per text token per unit of width (its keys and values and their copies)
CONTEXT_PER_WIDTH = {"BasicTransformerBlock": 12}
#: for a block class not listed
DEFAULT_PER_WIDTH = 24
#: weights that read the text only (cross-attention keys and values): their input needs no gradient, so
#: autograd keeps no patched copy of them
TEXT_INPUT_WEIGHTS = ("attn2.to_k.weight", "attn2.to_v.weight")
#: ComfyUI's attention functions that keep the attention scores (softmax's output) for backward
SCORE_KEEPING_ATTENTION = ("attention_basic", "attention_sub_quad", "attention_split")


def model_blocks(diffusion_model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(module path under the diffusion model, block) in execution order."""
    names = {id(m): n for n, m in diffusion_model.named_modules()}
    out = []
    for attr in BLOCK_LISTS:
        container = getattr(diffusion_model, attr, None)
        if isinstance(container, torch.nn.Module):
            out += [(names[id(b)], b) for b in checkpoint_blocks(container)]
    return out


def _width(block: torch.nn.Module) -> int:
    """The width of the block's input."""
    for attr in ("hidden_size", "in_channels", "channels", "out_channels"):
        value = getattr(block, attr, None)
        if isinstance(value, int):
            return value
    weights = [p for p in block.parameters() if p.dim() >= 2]
    return max((int(p.shape[1]) for p in weights), default=1)


def _transformers(block: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in block.modules() if type(m).__name__ == "BasicTransformerBlock"]


def _activations(block: torch.nn.Module, tokens: int, text_tokens: int) -> int:
    """Elements autograd keeps per sample inside ``block`` computing on ``tokens`` tokens, attention scores aside."""
    kind = type(block).__name__
    width = _width(block)
    if kind == "ResBlock":
        width += int(getattr(block, "out_channels", width))
    kept = ACTIVATIONS_PER_WIDTH.get(kind, DEFAULT_PER_WIDTH) * width * tokens
    if kind == "SpatialTransformer":
        for t in _transformers(block):
            inner = int(t.attn1.to_q.weight.shape[0])
            kept += (ACTIVATIONS_PER_WIDTH["BasicTransformerBlock"] * tokens
                     + CONTEXT_PER_WIDTH["BasicTransformerBlock"] * text_tokens) * inner
    return kept


def _scores(block: torch.nn.Module, tokens: int, text_tokens: int) -> int:
    """Elements of the attention scores ``block`` computes per sample: heads × query tokens × key tokens."""
    if hasattr(block, "num_heads"):
        return int(block.num_heads) * tokens * tokens
    return sum(int(t.attn1.heads) * tokens * tokens + int(t.attn2.heads) * tokens * text_tokens
               for t in _transformers(block))


def attention_keeps_scores(device: torch.device) -> bool:
    """Whether ComfyUI's attention on ``device`` keeps the attention scores for backward: its math
    paths do; PyTorch's SDPA is taken to run flash or memory-efficient attention (on a GPU where
    both are disabled it keeps them too)."""
    import comfy.ldm.modules.attention as attention
    name = getattr(attention.optimized_attention, "__name__", "")
    if name in SCORE_KEEPING_ATTENTION:
        return True
    if name == "attention_pytorch" and device.type == "cuda":
        return not (torch.backends.cuda.flash_sdp_enabled() or torch.backends.cuda.mem_efficient_sdp_enabled())
    return False


def _tokens(diffusion_model: torch.nn.Module, blocks: list[tuple[str, torch.nn.Module]], latent_hw: tuple[int, int],
            text_tokens: int) -> list[int]:
    """Tokens each block computes on per sample: Flux's image patches plus text; a UNet's latent
    pixels at the block's level (a Downsample ends a level, an Upsample starts the next one up)."""
    h, w = latent_hw
    if hasattr(diffusion_model, "double_blocks"):
        patch = int(getattr(diffusion_model, "patch_size", 2))
        return [(h // patch) * (w // patch) + text_tokens] * len(blocks)
    out, level = [], 0
    for _, block in blocks:
        kind = type(block).__name__
        out.append(max(1, (h >> level) * (w >> level)))
        if kind == "Downsample":
            level += 1
        elif kind == "Upsample":
            level = max(level - 1, 0)
    return out


def model_cost(model, targets: Mapping[str, float], latent_hw: tuple[int, int], text_tokens: int,
               text_width: int = 0, keeps_scores: bool = False) -> ModelCost:
    """The estimator's description of a MODEL's diffusion model training ``targets`` on latents of
    ``latent_hw`` with ``text_tokens`` tokens of text ``text_width`` wide; ``keeps_scores``: the
    attention keeps its scores (:func:`attention_keeps_scores`)."""
    dm = model.model.diffusion_model
    blocks = model_blocks(dm)
    tokens = _tokens(dm, blocks, latent_hw, text_tokens)
    in_blocks: set[int] = set()
    costs = []
    for (path, block), n in zip(blocks, tokens):
        weights = [(f"diffusion_model.{path}.{k}", p) for k, p in block.named_parameters()]
        in_blocks.update(id(p) for _, p in weights)
        big = [(k, p) for k, p in weights if p.is_floating_point() and p.dim() >= 2]
        trained = [p.numel() for k, p in big if k in targets]
        kept = [p.numel() for k, p in big if k in targets and not k.endswith(TEXT_INPUT_WEIGHTS)]
        width = _width(block)
        text = 0 if hasattr(dm, "double_blocks") else text_tokens  # Flux attends to its text among its tokens
        costs.append(BlockCost(
            weight_numel=sum(p.numel() for _, p in big), weight_bytes=sum(p.numel() * p.element_size() for _, p in big),
            other_bytes=sum(p.numel() * p.element_size() for k, p in weights if p.dim() < 2),
            target_numel=sum(kept), largest_target=max(trained, default=0),
            activations=_activations(block, n, text), boundary=width * n,
            scores=_scores(block, n, text) if keeps_scores else 0))
    other = [p for p in dm.parameters() if id(p) not in in_blocks]
    other_weights = [p for p in other if p.is_floating_point() and p.dim() >= 2]
    first = next((p for p in dm.parameters() if p.dim() >= 2), None)
    return ModelCost(tuple(costs), sum(p.numel() * p.element_size() for p in other),
                     first.element_size() if first is not None else 2, activations=text_tokens * text_width,
                     other_weight_numel=sum(p.numel() for p in other_weights),
                     other_weight_bytes=sum(p.numel() * p.element_size() for p in other_weights))


def device_memory(device: torch.device) -> int:
    """The total memory of the training device (the CPU: the machine's RAM)."""
    return int(comfy.model_management.get_total_memory(device))


def plan(model, dataset, settings, targets: Mapping[str, float], trained_params: int,
         keep: MemoryMode | None = None):
    """The memory mode ``settings.fits_in`` picks for training ``model`` on ``dataset`` (among the
    modes that compute what ``keep`` computes, when given), with its estimate; TrainingError
    (naming what to change) when it will not fit the device."""
    device = torch.device(model.load_device)
    # the largest sample: a clip's latent frames count as so many more rows of latent pixels
    largest = max(range(len(dataset.items)),
                  key=lambda i: dataset.items[i].placement.bucket[0] * dataset.items[i].placement.bucket[1]
                  * dataset.items[i].frames)
    width, height = dataset.items[largest].placement.bucket
    latent = dataset.latent(largest) if dataset.items[largest].frames > 1 else None
    height *= latent.shape[1] if latent is not None and latent.dim() == 4 else 1
    texts = [t for t in dataset.cond(0).values() if t.dim() >= 2] if dataset.items else []
    text, text_width = max(((t.shape[-2], t.shape[-1]) for t in texts), default=(77, 0))
    manual = MemoryMode(settings.base_weights, settings.swap_blocks, settings.gradient_checkpointing,
                        settings.offload_activations)
    cost = model_cost(model, targets, (height // 8, width // 8), text, text_width, attention_keeps_scores(device))
    sizes = dict(batch=settings.batch_size, trained_params=trained_params, optimizer=settings.optimizer,
                 compute_itemsize=compute_dtype(settings.precision, device).itemsize,
                 offload_to_device=torch.device(model.offload_device) == device)
    mode, est = resolve(settings.fits_in, manual, cost, device_memory(device), device.type, keep, **sizes)
    if settings.fits_in != "manual" and at_least(mode, manual) != mode:
        mode = at_least(mode, manual)
        est = estimate(cost, mode, **sizes)
    return mode, est


def at_least(mode: MemoryMode, floor: MemoryMode) -> MemoryMode:
    """``mode`` with every saving ``floor`` asks for added."""
    return MemoryMode("fp8" if "fp8" in (mode.base_dtype, floor.base_dtype) else mode.base_dtype,
                      max(mode.swap_blocks, floor.swap_blocks), mode.checkpointing or floor.checkpointing,
                      mode.offload_activations or floor.offload_activations)


@contextlib.contextmanager
def _cast_layers(root: torch.nn.Module) -> Iterator[None]:
    """ComfyUI's layers cast their weights to the input's dtype at use (``comfy_cast_weights``)."""
    layers = [m for m in root.modules() if hasattr(m, "comfy_cast_weights")]
    before = [m.comfy_cast_weights for m in layers]
    for m in layers:
        m.comfy_cast_weights = True
    try:
        yield
    finally:
        for m, b in zip(layers, before):
            m.comfy_cast_weights = b


def loads_in_part(patcher, mode: MemoryMode) -> bool:
    """Whether ``mode`` keeps part of the model off the training device (fp8 base weights, whose
    originals wait on the offload device, or swapped blocks): ComfyUI then loads the model on the
    offload device and :func:`memory_mode` places the rest on the training device, so the model
    as loaded never has to fit the device whole."""
    blocks = model_blocks(patcher.model.diffusion_model)
    return mode.base_dtype == "fp8" or swap_units(len(blocks), mode) > 0


@contextlib.contextmanager
def memory_mode(patcher, mode: MemoryMode, device: torch.device | str) -> Iterator[dict[str, Any]]:
    """The loaded model of ``patcher`` in ``mode`` on the training ``device`` for the length of
    the block: fp8 base weights in ComfyUI's cast layers (converted where they compute, resident
    on the device, swapped on the offload device; originals on the offload device, back on exit),
    checkpointed blocks, swapped blocks, and everything else placed on ``device`` (a model
    ComfyUI loaded on the offload device, see :func:`loads_in_part`, goes back there on exit).
    Yields what was applied (``fp8``, ``checkpointed``, ``swap``) and ``resident``, the bytes of
    the model on ``device`` while the swapped blocks wait."""
    root = patcher.model.diffusion_model
    blocks = [b for _, b in model_blocks(root)]
    swapped = blocks[:swap_units(len(blocks), mode)]
    away = {id(m) for b in swapped for m in b.modules()}
    device, offload = torch.device(device), torch.device(patcher.offload_device)
    with contextlib.ExitStack() as stack:
        converted = 0
        if mode.base_dtype == "fp8":
            stack.enter_context(_cast_layers(root))
            converted = stack.enter_context(stored_in_fp8(
                root, offload, where=lambda m: hasattr(m, "comfy_cast_weights"),
                place=lambda m: offload if id(m) in away else device))
        wrapped = stack.enter_context(gradient_checkpointing(root, mode.checkpointing, mode.offload_activations))
        swap = stack.enter_context(block_swap(blocks, len(swapped), device, offload))
        resident = stack.enter_context(resident_on(patcher.model, device, away=swapped))
        yield {"fp8": converted, "checkpointed": wrapped, "swap": swap, "resident": resident}

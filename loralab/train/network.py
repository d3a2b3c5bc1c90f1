"""Trainable networks: LoRA, LoCon, LoHa, LoKr and DoRA modules on chosen model weights.

Each module is a weight function ``W -> W'`` (what ComfyUI's ``ModelPatcher.add_weight_wrapper``
takes): the graph's own model computes with the patched weight and autograd reaches the factors.
Factors are fp32 whatever the base weight's dtype; ``W'`` is returned in ``W``'s dtype. The
arithmetic is the one ComfyUI's loader applies to a saved file (``W + scale·ΔW``; DoRA normalises
``W + scale·ΔW`` per input column to the learned magnitude), so the saved LoRA reproduces the
trained model.

A run may start from an existing LoRA file (:class:`InitLoRA`): its modules must be exactly the
run's targets, and its rank and alpha become the run's.

Targets come from presets over the model's weights (``attention``, ``attention_mlp``,
``all_linear``, ``all_linear_convs``) and a block spec in the loader's syntax
(:func:`loralab.blocks.spec.parse_block_weights`): a block weighted 0 is not trained, any other
weight multiplies that block's learning rate.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

import torch
from torch import nn

from ..adapters import LoHa, LoKr, LoRA, dora, loha, lokr, lora
from ..blocks.spec import parse_block_weights
from ..errors import TrainingError
from ..layouts import DIFFUSION_PREFIX, ModelLayout, Target
from ..layouts.archs import arch
from ..lora import Lora

ALGORITHMS = ("lora", "locon", "loha", "lokr", "dora")
PRESETS = ("attention", "attention_mlp", "all_linear", "all_linear_convs")

_ATTENTION = {
    "unet": re.compile(r"\.attn[12]\.(?:to_q|to_k|to_v|to_out\.0)\.weight$"),
    "flux": re.compile(r"^diffusion_model\.(?:double_blocks\.\d+\.(?:img|txt)_attn\.(?:qkv|proj)"
                       r"|single_blocks\.\d+\.linear[12])\.weight$"),
    "mmdit": re.compile(r"^diffusion_model\.joint_blocks\.\d+\.(?:x|context)_block\.attn2?\.(?:qkv|proj)\.weight$"),
    "wan": re.compile(r"^diffusion_model\.blocks\.\d+\.(?:self|cross)_attn\.(?:q|k|v|o|k_img|v_img)\.weight$"),
    "qwen_image": re.compile(r"^diffusion_model\.transformer_blocks\.\d+\.attn\."
                             r"(?:to_q|to_k|to_v|to_out\.0|add_[qkv]_proj|to_add_out)\.weight$"),
    "z_image": re.compile(r"^diffusion_model\.(?:layers|noise_refiner|context_refiner|siglip_refiner)\.\d+\."
                          r"attention\.(?:qkv|out)\.weight$"),
}
_MLP = {
    "unet": re.compile(r"\.ff\.net\.(?:0\.proj|2)\.weight$"),
    "flux": re.compile(r"^diffusion_model\.double_blocks\.\d+\.(?:img|txt)_mlp\.[02]\.weight$"),
    "mmdit": re.compile(r"^diffusion_model\.joint_blocks\.\d+\.(?:x|context)_block\.mlp\.fc[12]\.weight$"),
    "wan": re.compile(r"^diffusion_model\.blocks\.\d+\.ffn\.[02]\.weight$"),
    "qwen_image": re.compile(r"^diffusion_model\.transformer_blocks\.\d+\.(?:img|txt)_mlp\.net\.(?:0\.proj|2)\.weight$"),
    "z_image": re.compile(r"^diffusion_model\.(?:layers|noise_refiner|context_refiner|siglip_refiner)\.\d+\."
                          r"feed_forward\.w[123]\.weight$"),
}
#: kohya's text-encoder modules: CLIP's attention and MLP, T5's attention and gated MLP
_TE_ATTENTION = re.compile(r"\.(?:self_attn\.(?:q_proj|k_proj|v_proj|out_proj)|SelfAttention\.[qkvo])\.weight$")
_TE_MLP = re.compile(r"\.(?:mlp\.fc[12]|DenseReluDense\.(?:wi|wi_0|wi_1|wo))\.weight$")


def weight_kind(shape: tuple[int, ...]) -> str | None:
    """``linear`` (2-D, or a 1×1 convolution), ``conv`` (a larger kernel), or None (norms, biases)."""
    if len(shape) == 2:
        return "linear"
    if len(shape) >= 3:
        return "linear" if math.prod(shape[2:]) == 1 else "conv"
    return None


def _in_preset(key: str, shape: tuple[int, ...], family: str, preset: str, convs: bool) -> bool:
    kind = weight_kind(shape)
    if kind is None:
        return False
    if kind == "conv":
        return convs or preset == "all_linear_convs"
    if preset in ("all_linear", "all_linear_convs"):
        return True
    if _ATTENTION[family].search(key):
        return True
    return preset == "attention_mlp" and bool(_MLP[family].search(key))


def select_targets(shapes: Mapping[str, tuple[int, ...]], arch_id: str, preset: str, block_spec: str = "", *,
                   convs: bool = False, layout: ModelLayout | None = None) -> dict[str, float]:
    """The diffusion-model weights to train, each with its learning-rate multiplier."""
    if preset not in PRESETS:
        raise TrainingError(f"unknown target preset {preset!r} (known: {', '.join(PRESETS)})")
    family = arch(arch_id).family
    if family not in _ATTENTION:
        raise TrainingError(f"LoRA Lab does not train {arch(arch_id).name} models yet",
                            hint="load a model of a family it trains")
    blocks = parse_block_weights(block_spec, arch_id, layout=layout)
    out: dict[str, float] = {}
    for key in sorted(shapes):
        if not key.startswith(DIFFUSION_PREFIX) or not _in_preset(key, tuple(shapes[key]), family, preset, convs):
            continue
        mult = blocks.for_key(key)
        if mult != 0:
            out[key] = float(mult)
    if not out:
        raise TrainingError(f"no weight of this {arch(arch_id).name} model matches target preset {preset!r} "
                            f"with blocks {block_spec!r}", hint="choose a wider preset or fewer zero blocks")
    return out


def is_text_encoder_key(key: str) -> bool:
    """Whether a target key is a text encoder's (``clip_l.transformer...``), not the diffusion model's."""
    return not key.startswith(DIFFUSION_PREFIX)


def select_text_encoder_targets(shapes: Mapping[str, tuple[int, ...]], arch_id: str, preset: str) -> dict[str, float]:
    """The text-encoder weights to train (ComfyUI's CLIP keys, ``clip_l.transformer...``), each
    with multiplier 1: the attention projections, and with every preset but ``attention`` the MLP
    (kohya's CLIPAttention/CLIPMLP, T5Attention/T5DenseGatedActDense) of every text encoder of
    the architecture that ``shapes`` holds."""
    if preset not in PRESETS:
        raise TrainingError(f"unknown target preset {preset!r} (known: {', '.join(PRESETS)})")
    a = arch(arch_id)
    prefixes = tuple(f"{te}.transformer." for te in a.text_encoders if te in a.kohya_te_prefix)
    out = {key: 1.0 for key in sorted(shapes)
           if key.startswith(prefixes) and len(shapes[key]) == 2
           and (_TE_ATTENTION.search(key) or (preset != "attention" and _TE_MLP.search(key)))}
    if not out:
        raise TrainingError(f"this CLIP has no {a.name} text-encoder weight to train",
                            hint="connect the CLIP that belongs to the model, or set text_encoder_lr to 0")
    return out


def factorize(dimension: int, factor: int = -1) -> tuple[int, int]:
    """(m, n) with m·n = dimension and m ≤ n: m = ``factor`` when it divides and m ≤ n, else the
    divisor pair closest to a square (no larger than ``factor`` when one is given)."""
    if factor > 0 and dimension % factor == 0 and factor * factor <= dimension:
        return factor, dimension // factor
    best = 1
    for m in range(1, math.isqrt(dimension) + 1):
        if dimension % m == 0 and (factor <= 0 or m <= factor):
            best = m
    return best, dimension // best


def _kaiming(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    t = torch.empty(shape, dtype=torch.float32)
    nn.init.kaiming_uniform_(t, a=math.sqrt(5), generator=generator)
    return t


class TrainableAdapter(nn.Module):
    """One trained module: a weight function plus the adapter it saves as."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        #: the dtype W' is returned in (the run's compute dtype; None = the weight's)
        self.output_dtype: torch.dtype | None = None

    def delta(self) -> torch.Tensor:
        """scale·ΔW in fp32, shaped like the weight."""
        raise NotImplementedError

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return (weight.float() + self.delta()).to(self.output_dtype or weight.dtype)

    def adapter(self):
        """The :mod:`loralab.adapters` adapter that writes this module (CPU fp32 copies)."""
        raise NotImplementedError

    def passive_memory_usage(self) -> int:
        """Bytes held by the factors (ComfyUI's weight-function protocol)."""
        return sum(p.numel() * p.element_size() for p in self.parameters())

    def move_to(self, device=None) -> int:
        """ComfyUI's weight-function protocol: the trainer keeps factors on the training device
        (the optimizer state lives beside them), so nothing moves; reports the memory."""
        return self.passive_memory_usage()


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", torch.float32).clone()


class LoRAModule(TrainableAdapter):
    """LoRA / LoCon: ΔW = (alpha/rank)·up·down; with ``magnitude`` set, DoRA (per input column)."""

    def __init__(self, shape: tuple[int, ...], rank: int, alpha: float, generator: torch.Generator,
                 base: torch.Tensor | None = None) -> None:
        super().__init__(shape)
        in_numel = math.prod(self.shape[1:])
        self.rank = rank
        self.alpha = float(alpha)
        self.down = nn.Parameter(_kaiming((rank, in_numel), generator))
        self.up = nn.Parameter(torch.zeros(self.shape[0], rank))
        self.magnitude = None
        if base is not None:
            self.magnitude = nn.Parameter(dora.column_norms(base.float().reshape(self.shape)))

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def merged(self, weight: torch.Tensor) -> torch.Tensor:
        """W + scale·up·down in fp32, in one fused op (no separate ΔW temporaries)."""
        flat = weight.float().reshape(self.shape[0], -1)
        return lora.merged(flat, self.up, self.down, self.scale).reshape(self.shape)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        merged = self.merged(weight)
        if self.magnitude is not None:
            merged = dora.normalize(merged, self.magnitude)
        return merged.to(self.output_dtype or weight.dtype)

    def adapter(self) -> LoRA:
        return LoRA(up=_cpu(self.up), down=_cpu(self.down), alpha=self.alpha,
                    dora_scale=None if self.magnitude is None else _cpu(self.magnitude))


class LoHaModule(TrainableAdapter):
    """LoHa: ΔW = (alpha/rank)·(w1a·w1b) ⊙ (w2a·w2b)."""

    def __init__(self, shape: tuple[int, ...], rank: int, alpha: float, generator: torch.Generator) -> None:
        super().__init__(shape)
        in_numel = math.prod(self.shape[1:])
        out = self.shape[0]
        self.rank = rank
        self.alpha = float(alpha)
        self.w1a = nn.Parameter(0.1 * torch.randn((out, rank), generator=generator))
        self.w1b = nn.Parameter(torch.randn((rank, in_numel), generator=generator))
        self.w2a = nn.Parameter(torch.zeros(out, rank))
        self.w2b = nn.Parameter(torch.randn((rank, in_numel), generator=generator))

    def delta(self) -> torch.Tensor:
        return loha.delta(self.w1a, self.w1b, self.w2a, self.w2b, self.alpha / self.rank).reshape(self.shape)

    def adapter(self) -> LoHa:
        return LoHa(w1a=_cpu(self.w1a), w1b=_cpu(self.w1b), w2a=_cpu(self.w2a), w2b=_cpu(self.w2b), alpha=self.alpha)


class LoKrModule(TrainableAdapter):
    """LoKr: ΔW = scale·kron(w1, w2) with w1 full and w2 = w2a·w2b (scale alpha/rank) or, when the
    rank reaches half of w2's size, w2 full (scale 1, alpha unused, as every loader does)."""

    def __init__(self, shape: tuple[int, ...], rank: int, alpha: float, generator: torch.Generator,
                 factor: int = -1) -> None:
        super().__init__(shape)
        kernel = math.prod(self.shape[2:]) if len(self.shape) > 2 else 1
        o1, o2 = factorize(self.shape[0], factor)
        i1, i2 = factorize(self.shape[1], factor)
        self.alpha = float(alpha)
        self.w1 = nn.Parameter(_kaiming((o1, i1), generator))
        cols = i2 * kernel
        self.full = rank >= max(o2, cols) / 2
        if self.full:
            self.rank = None
            self.w2 = nn.Parameter(torch.zeros(o2, cols))
        else:
            self.rank = rank
            self.w2a = nn.Parameter(_kaiming((o2, rank), generator))
            self.w2b = nn.Parameter(torch.zeros(rank, cols))

    @property
    def scale(self) -> float:
        return 1.0 if self.rank is None else self.alpha / self.rank

    def delta(self) -> torch.Tensor:
        w2 = self.w2 if self.full else self.w2a @ self.w2b
        return lokr.delta(self.w1, w2, self.scale).reshape(self.shape)

    def adapter(self) -> LoKr:
        if self.full:
            return LoKr(w1=_cpu(self.w1), w2=_cpu(self.w2), alpha=self.alpha)
        return LoKr(w1=_cpu(self.w1), w2a=_cpu(self.w2a), w2b=_cpu(self.w2b), alpha=self.alpha)


class Network(nn.Module):
    """The trained modules of a run, keyed by model weight, with their learning-rate multipliers."""

    def __init__(self, modules: Mapping[str, TrainableAdapter], lr_mults: Mapping[str, float]) -> None:
        super().__init__()
        self.keys = sorted(modules)
        self.lr_mults = {k: float(lr_mults.get(k, 1.0)) for k in self.keys}
        for i, key in enumerate(self.keys):
            self.add_module(f"m{i:05d}", modules[key])

    def __len__(self) -> int:
        return len(self.keys)

    def items(self) -> Iterator[tuple[str, TrainableAdapter]]:
        """(model weight key, module), in key order."""
        for i, key in enumerate(self.keys):
            yield key, getattr(self, f"m{i:05d}")

    def set_output_dtype(self, dtype: torch.dtype) -> None:
        """Hand W' to the diffusion model in ``dtype`` (the run's compute dtype), whatever the
        weight's; text encoders compute in their own dtype, so theirs get W' in the weight's."""
        for key, module in self.items():
            module.output_dtype = None if is_text_encoder_key(key) else dtype

    def param_groups(self) -> list[dict]:
        """Optimizer parameter groups, one per learning-rate multiplier of the diffusion model's
        modules, then the text encoders' (``text_encoder``: True), in a fixed order."""
        by_mult: dict[tuple[bool, float], list[nn.Parameter]] = {}
        for key, module in self.items():
            by_mult.setdefault((is_text_encoder_key(key), self.lr_mults[key]), []).extend(module.parameters())
        return [{"params": params, "lr_mult": mult, "text_encoder": te}
                for (te, mult), params in sorted(by_mult.items())]

    def writer_items(self) -> list[tuple[Target, object]]:
        """(Target, adapter) pairs for :func:`loralab.formats.writer.kohya_tensors`."""
        return [(Target(key), module.adapter()) for key, module in self.items()]

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every factor as ``network.<weight key>.<factor>`` (fp32)."""
        return {f"network.{key}.{name}": p.detach() for key, module in self.items()
                for name, p in module.named_parameters()}

    def load_state_tensors(self, tensors: Mapping[str, torch.Tensor]) -> list[str]:
        """Copy saved factors in; returns the problems (missing, unexpected or misshapen names)."""
        problems: list[str] = []
        expected = self.state_tensors()
        for name, p in expected.items():
            t = tensors.get(name)
            if t is None:
                problems.append(f"missing {name}")
            elif tuple(t.shape) != tuple(p.shape):
                problems.append(f"{name} has shape {tuple(t.shape)}, the network needs {tuple(p.shape)}")
        problems += [f"unexpected {n}" for n in tensors if n.startswith("network.") and n not in expected]
        if not problems:
            with torch.no_grad():
                for name, p in expected.items():
                    p.copy_(tensors[name].to(p.device, p.dtype))
        return problems


def build_network(shapes: Mapping[str, tuple[int, ...]], lr_mults: Mapping[str, float], algorithm: str, rank: int,
                  alpha: float, generator: torch.Generator, *, base_weight: Callable[[str], torch.Tensor] | None = None,
                  lokr_factor: int = -1, device: torch.device | str = "cpu") -> Network:
    """Fresh modules (zero ΔW) on the targets, initialised from ``generator`` in key order.
    ``base_weight(key)`` gives the base weight DoRA's magnitude starts from."""
    if algorithm not in ALGORITHMS:
        raise TrainingError(f"unknown network algorithm {algorithm!r} (known: {', '.join(ALGORITHMS)})")
    if rank < 1:
        raise TrainingError(f"rank must be at least 1, got {rank}")
    if algorithm == "dora" and base_weight is None:
        raise TrainingError("DoRA needs the base weights to start its magnitudes from")
    modules: dict[str, TrainableAdapter] = {}
    for key in sorted(lr_mults):
        shape = tuple(shapes[key])
        r = min(rank, shape[0], math.prod(shape[1:]))
        if algorithm in ("lora", "locon"):
            modules[key] = LoRAModule(shape, r, alpha, generator)
        elif algorithm == "dora":
            modules[key] = LoRAModule(shape, r, alpha, generator, base=base_weight(key).detach().to("cpu"))
        elif algorithm == "loha":
            modules[key] = LoHaModule(shape, r, alpha, generator)
        else:
            modules[key] = LoKrModule(shape, rank, alpha, generator, lokr_factor)
    return Network(modules, lr_mults).to(device)


INIT_ALGORITHMS = ("lora", "locon", "dora")


@dataclass
class InitLoRA:
    """The factors of a LoRA file a run starts from, by model weight key, with the file's rank
    and alpha (one of each: a file whose modules differ in them is refused)."""

    name: str
    rank: int
    alpha: float
    adapters: dict[str, LoRA]

    @classmethod
    def read(cls, path: str, layout: ModelLayout, targets: Mapping[str, float], algorithm: str,
             name: str | None = None) -> "InitLoRA":
        """Read a kohya-format LoRA (or LoCon / DoRA) file for a run that trains ``targets``
        with ``algorithm``; TrainingError naming the file and the module when it does not fit."""
        name = name or os.path.basename(path)

        def bad(msg: str, key: str | None = None, hint: str | None = None) -> TrainingError:
            return TrainingError(msg, path=path, key=key, hint=hint or "start from a LoRA trained with the same "
                                 "targets and blocks on this model, or set the run's targets to the file's")
        if algorithm not in INIT_ALGORITHMS:
            raise bad(f"a run can start from a LoRA file with algorithm {', '.join(INIT_ALGORITHMS)}, not {algorithm}",
                      hint="choose lora, locon or dora, or start without a file")
        adapters: dict[str, LoRA] = {}
        rank = alpha = None
        with Lora.open(path, layout) as lora:
            for m in lora.items:
                module = m.entry.module
                if not m.mapped:
                    raise bad(f"module {module} lands on no weight of this model: {m.reason}", module)
                if m.component != "unet":
                    raise bad(f"module {module} belongs to the {m.component} text encoder; runs train the diffusion "
                              "model only", module, hint="start from a LoRA without text-encoder modules")
                if m.target.rows is not None or m.target.key in adapters:
                    raise bad(f"module {module} is a slice of {m.target.key}; the run trains the whole weight",
                              module, hint="start from a file that stores that weight as one module (kohya's format)")
                adapter = lora.adapter(m.entry)
                if not isinstance(adapter, LoRA) or adapter.mid is not None:
                    raise bad(f"module {module} is {m.algorithm(layout)}, not a plain LoRA", module)
                if (adapter.dora_scale is not None) != (algorithm == "dora"):
                    raise bad(f"module {module} {'has' if adapter.dora_scale is not None else 'has no'} DoRA "
                              f"magnitude but the run's algorithm is {algorithm}", module,
                              hint="choose dora for a DoRA file and lora/locon otherwise")
                if m.target.key not in targets:
                    raise bad(f"module {module} trains {m.target.key}, which is not among the run's targets", module)
                file_alpha = float(adapter.alpha if adapter.alpha is not None else adapter.rank)
                if rank is None:
                    rank, alpha = adapter.rank, file_alpha
                elif (adapter.rank, file_alpha) != (rank, alpha):
                    raise bad(f"module {module} has rank {adapter.rank} and alpha {file_alpha:g}, other modules "
                              f"rank {rank} and alpha {alpha:g}; a run has one rank and alpha", module,
                              hint="resize the file to one rank first (Resize LoRA)")
                adapters[m.target.key] = adapter
        missing = sorted(set(targets) - set(adapters))
        if missing:
            raise bad(f"the file has no module for {len(missing)} of the run's {len(targets)} targets "
                      f"(first: {missing[0]})", missing[0])
        return cls(name, int(rank), float(alpha), adapters)

    def load_into(self, network: Network) -> None:
        """Copy the file's factors into a network built with this rank and alpha."""
        with torch.no_grad():
            for key, module in network.items():
                a = self.adapters[key]
                if not isinstance(module, LoRAModule) or module.rank != self.rank:
                    raise TrainingError(f"{key}: the run's module is not a rank-{self.rank} LoRA", key=key,
                                        hint="the weight is smaller than the file's rank")
                pairs = [(module.up, a.up), (module.down, a.down)]
                if module.magnitude is not None:
                    if a.dora_scale.shape[0] == module.shape[0] and a.dora_scale.numel() == module.shape[0]:
                        raise TrainingError(f"{key}: the file's DoRA magnitude is per output row; LoRA Lab trains "
                                            "it per input column", key=key, hint="start this run without the file")
                    pairs.append((module.magnitude, a.dora_scale))
                for param, value in pairs:
                    if value.numel() != param.numel():
                        raise TrainingError(f"{key}: the file's {list(value.shape)} factor does not fit the "
                                            f"module's {list(param.shape)}", key=key)
                    param.copy_(value.reshape(param.shape).to(param.device, param.dtype))

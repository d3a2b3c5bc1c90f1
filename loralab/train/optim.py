"""Optimizers for LoRA training, and their state as tensors + JSON (never a pickle).

``adamw`` is torch's own (its fused kernel when every parameter is on a CUDA GPU: the same
update, one kernel launch per step). ``adamw8bit`` (bitsandbytes), ``prodigy`` (prodigyopt) and
``adafactor`` (transformers) are used when their package is installed in ComfyUI's Python; a
clear message names the package otherwise. Each parameter group carries ``lr_mult`` (the block
learning-rate multiplier); the trainer sets every group's ``lr`` before each step.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
from typing import Any

import torch

from ..errors import CheckpointError, TrainingError

#: optimizer name -> (package to import, pip name) for the optional ones
OPTIONAL = {
    "adamw8bit": ("bitsandbytes", "bitsandbytes"),
    "prodigy": ("prodigyopt", "prodigyopt"),
    "adafactor": ("transformers", "transformers"),
}
OPTIMIZERS = ("adamw", *OPTIONAL)
STATE_PREFIX = "optim."


def _module(name: str):
    package, pip_name = OPTIONAL[name]
    try:
        return importlib.import_module(package)
    except ImportError:
        raise TrainingError(f"the {name} optimizer needs the {pip_name!r} package, which is not installed",
                            hint=f"install it into ComfyUI's Python (python -m pip install {pip_name}) "
                                 "or choose adamw") from None


def available_optimizers() -> list[str]:
    """Optimizer names whose packages can be imported here."""
    out = ["adamw"]
    for name, (package, _) in OPTIONAL.items():
        if importlib.util.find_spec(package) is not None:
            out.append(name)
    return out


def make_optimizer(name: str, groups: list[dict[str, Any]], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """An optimizer over parameter groups (each: ``params``, ``lr_mult``)."""
    groups = [{**g, "lr": lr * g.get("lr_mult", 1.0)} for g in groups]
    if name == "adamw":
        on_cuda = all(p.is_cuda for g in groups for p in g["params"])
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=on_cuda or None)
    if name not in OPTIONAL:
        raise TrainingError(f"unknown optimizer {name!r} (known: {', '.join(OPTIMIZERS)})")
    mod = _module(name)
    if name == "adamw8bit":
        return importlib.import_module("bitsandbytes.optim").AdamW8bit(groups, lr=lr, weight_decay=weight_decay)
    if name == "prodigy":
        return mod.Prodigy(groups, lr=lr, weight_decay=weight_decay)
    optimization = importlib.import_module("transformers.optimization")
    return optimization.Adafactor(groups, lr=lr, weight_decay=weight_decay, scale_parameter=False,
                                  relative_step=False, warmup_init=False)


def _jsonable(value: Any, where: str) -> Any:
    if isinstance(value, tuple):
        value = list(value)
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise TrainingError(f"optimizer state {where} of type {type(value).__name__} cannot be saved") from None
    return value


def optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The optimizer's state: its tensors (``optim.<param index>.<name>``) and everything else as JSON."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{STATE_PREFIX}{idx}.{k}"] = v.detach()
            else:
                scalars.setdefault(str(idx), {})[k] = _jsonable(v, f"{idx}.{k}")
    groups = [{k: _jsonable(v, f"group.{k}") for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"state": scalars, "param_groups": groups}


def load_optimizer_state(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                         *, path: str | None = None) -> None:
    """Restore what :func:`optimizer_state` saved into an optimizer over the same parameters."""
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        if not name.startswith(STATE_PREFIX):
            continue
        idx, _, key = name[len(STATE_PREFIX):].partition(".")
        state.setdefault(int(idx), {})[key] = t.clone()  # the optimizer updates its state in place
    for idx, values in meta.get("state", {}).items():
        state.setdefault(int(idx), {}).update(values)
    groups = []
    for g in meta.get("param_groups", []):
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"optimizer state does not fit this run: {e}", path=path) from None

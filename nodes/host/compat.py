"""The one place that knows how ComfyUI versions differ: each difference LoRA Lab meets is a named
capability of the running host, read once here, and the support policy (which versions LoRA Lab is
tested on, what is unavailable on others) is logged once at start-up.

Tested: ComfyUI 0.3.64 (the oldest supported) and 0.33.0 (the newest tested). Newer versions run
with the newest known rules for as far as their APIs match, and are reported as untested.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Iterator

import comfy.model_management
import comfy.model_patcher

from ...loralab.errors import TrainingError
from ...loralab.formats.host_keys import HOSTS, HostRules, host_rules, parse_version

log = logging.getLogger("loralab")

#: the versions LoRA Lab is tested on, oldest (the floor) first
TESTED = tuple(r.version for r in HOSTS.values())
FLOOR, NEWEST_TESTED = TESTED[0], TESTED[-1]


def _running_version() -> str:
    """The running ComfyUI's version (``comfyui_version.__version__``), "unknown" where it has none."""
    try:
        import comfyui_version
    except ImportError:
        return "unknown"
    return str(getattr(comfyui_version, "__version__", "unknown"))


@dataclass(frozen=True)
class HostCapabilities:
    """What the running ComfyUI offers, where versions differ."""

    version: str
    #: ``comfy.model_management.in_training``: models run their training-safe code paths while it is
    #: set (0.33: rope outside comfy-kitchen, whose kernels have no autograd formula)
    training_flag: bool
    #: ModelPatcher.is_dynamic: Dynamic VRAM (weights streamed on demand, force_full_load ignored)
    dynamic_vram: bool
    #: ModelPatcher.add_weight_wrapper, which training hooks its modules into
    weight_wrappers: bool
    #: PromptServer.send_progress_text (live loss text on the training node)
    progress_text: bool
    #: the LoRA key-map rules of this version (see loralab.formats.host_keys)
    key_rules: HostRules

    @classmethod
    def detect(cls) -> "HostCapabilities":
        """The capabilities of the ComfyUI this process runs in."""
        from server import PromptServer
        version = _running_version()
        try:
            rules = host_rules(version)
        except ValueError:
            rules = host_rules(None)
        return cls(version=version,
                   training_flag=hasattr(comfy.model_management, "in_training"),
                   dynamic_vram=hasattr(comfy.model_patcher.ModelPatcher, "is_dynamic"),
                   weight_wrappers=hasattr(comfy.model_patcher.ModelPatcher, "add_weight_wrapper"),
                   progress_text=hasattr(PromptServer, "send_progress_text"),
                   key_rules=rules)

    def unavailable(self) -> list[str]:
        """The features this host lacks, each with what it lacks."""
        out = []
        if not self.weight_wrappers:
            out.append("training (this ComfyUI's ModelPatcher has no add_weight_wrapper)")
        if not self.progress_text:
            out.append("live loss text on the training node (no PromptServer.send_progress_text)")
        return out

    def support_lines(self) -> list[str]:
        """What the start-up log says about this host."""
        tested = " and ".join(".".join(map(str, v)) for v in TESTED)
        try:
            v = parse_version(self.version)
        except ValueError:
            v = None
        if v is None:
            lines = [f"LoRA Lab: cannot tell this ComfyUI's version ({self.version!r}); tested on {tested}; "
                     f"LoRA keys follow {self.key_rules.name}'s rules"]
        elif v < FLOOR:
            lines = [f"LoRA Lab: ComfyUI {self.version} is older than {'.'.join(map(str, FLOOR))}, the oldest "
                     f"LoRA Lab supports; update ComfyUI. LoRA keys follow {self.key_rules.name}'s rules"]
        elif v > NEWEST_TESTED:
            lines = [f"LoRA Lab: ComfyUI {self.version} is untested (tested on {tested}); LoRA keys follow "
                     f"{self.key_rules.name}'s rules, other features work as far as its APIs match"]
        elif v in TESTED:
            lines = [f"LoRA Lab: ComfyUI {self.version} (tested)"]
        else:
            lines = [f"LoRA Lab: ComfyUI {self.version} lies between the tested versions ({tested}); "
                     f"LoRA keys follow {self.key_rules.name}'s rules"]
        lines += [f"LoRA Lab: unavailable on this ComfyUI: {what}" for what in self.unavailable()]
        return lines

    def log_support(self) -> None:
        """Log :meth:`support_lines` (warnings where something is untested or unavailable)."""
        lines = self.support_lines()
        quiet = len(lines) == 1 and lines[0].endswith("(tested)")
        for line in lines:
            (log.info if quiet else log.warning)(line)


HOST = HostCapabilities.detect()


@contextlib.contextmanager
def training_mode() -> Iterator[None]:
    """While training steps run: ``comfy.model_management.in_training`` set (where this ComfyUI
    has it), as core's own trainer sets it; the previous value is restored on exit."""
    if not HOST.training_flag:
        yield
        return
    before = comfy.model_management.in_training
    comfy.model_management.in_training = True
    try:
        yield
    finally:
        comfy.model_management.in_training = before


def is_dynamic(patcher: Any) -> bool:
    """Whether a ModelPatcher streams its weights (Dynamic VRAM) instead of loading them."""
    return HOST.dynamic_vram and bool(patcher.is_dynamic())


def unload(patcher: Any) -> None:
    """Unload ``patcher`` where ComfyUI holds it loaded, as its ``free_memory`` unloads a model:
    weights unpatched and back on the offload device, its entry dropped (an entry left behind
    passes to the clone's parent when the clone is collected, and ComfyUI 0.3.64 keeps the
    entry's device then, loading the parent where the clone was loaded)."""
    loaded = comfy.model_management.current_loaded_models
    for i in range(len(loaded) - 1, -1, -1):
        if loaded[i].model is patcher:
            loaded[i].model_unload()
            loaded.pop(i)


def trainable_clone(patcher: Any) -> Any:
    """A clone of a MODEL's ModelPatcher that loads its weights fully, as training needs: a plain
    clone, or for a Dynamic VRAM patcher a non-dynamic copy that ComfyUI reloads from the model's
    file (its patches carried over). TrainingError where ComfyUI cannot make one (a model from a
    loader that registered no way to reload it)."""
    if not is_dynamic(patcher):
        return patcher.clone()
    if getattr(patcher, "cached_patcher_init", None) is None:
        raise TrainingError("this MODEL streams its weights (ComfyUI's Dynamic VRAM) and its loader gives no way "
                            "to load a full copy for training",
                            hint="load the model with a core loader (Load Checkpoint, Load Diffusion Model), or "
                                 "start ComfyUI with --disable-dynamic-vram")
    try:
        clone = patcher.clone(disable_dynamic=True)
    except RuntimeError as e:
        raise TrainingError(f"ComfyUI could not load a non-dynamic copy of this MODEL for training ({e})",
                            hint="start ComfyUI with --disable-dynamic-vram") from None
    if is_dynamic(clone):
        raise TrainingError("ComfyUI gave a dynamic (streamed) copy of this MODEL for training",
                            hint="start ComfyUI with --disable-dynamic-vram")
    return clone

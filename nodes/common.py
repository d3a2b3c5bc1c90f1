"""Host glue shared by every LoRA Lab node: naming, the loras folder, and model layouts."""
from __future__ import annotations

import os

import folder_paths

from ..loralab.errors import UnsafeNameError
from ..loralab.layouts import ModelLayout
from ..loralab.layouts.mmdit import mmdit_variant
from ..loralab.files.paths import check_relative_name, resolve_in_folder

NODE_PREFIX = "LoRALab"
CATEGORY = "LoRA Lab"
LORA_EXTENSIONS = (".safetensors", ".sft")

#: ComfyUI model_config class (or a base class of it) -> LoRA Lab arch id
_CONFIG_ARCH = {"SD15": "sd1", "SD20": "sd2", "SDXL": "sdxl", "SDXLRefiner": "sdxl_refiner",
                "Flux": "flux", "FluxSchnell": "flux"}


def node_id(name: str) -> str:
    """The pack-prefixed node id (``Inspect`` -> ``LoRALabInspect``)."""
    return NODE_PREFIX + name


def display_name(name: str) -> str:
    """The display name shown in ComfyUI (``Inspect LoRA`` -> ``Inspect LoRA (LoRA Lab)``)."""
    return f"{name} (LoRA Lab)"


_LISTED: dict[tuple[str, ...], list[str]] = {}


def lora_names() -> list[str]:
    """LoRA files in ComfyUI's ``loras`` folders that LoRA Lab can read: safetensors only, and only
    files that lie inside a loras folder (a symlink leading out of it is not offered). Checked
    again whenever ComfyUI's listing changes; :func:`lora_path` checks the chosen name anyway."""
    listing = tuple(folder_paths.get_filename_list("loras"))
    if listing not in _LISTED:
        names = []
        for name in listing:
            try:
                lora_path(name)
            except UnsafeNameError:
                continue
            names.append(name)
        _LISTED.clear()
        _LISTED[listing] = names
    return list(_LISTED[listing])


def unlisted(names: dict, allowed: list[str]) -> bool | str:
    """A node's ``validate_inputs`` answer for its file-name inputs: True when every chosen name
    is one the node offers, else what is wrong. This ComfyUI checks only V1-style combos against
    their options, so V3 nodes check the names they read themselves."""
    for input_name, value in names.items():
        if value is not None and value not in allowed:
            return f"{input_name}: {str(value)[:200]!r} is not a LoRA in the loras folder list"
    return True


def lora_file(name: str, extensions: tuple[str, ...] = LORA_EXTENSIONS) -> str | None:
    """The real path of a file named relative to a ``loras`` folder, or None where no folder holds
    it; refuses (:class:`UnsafeNameError`) names that escape the folder and files without one of
    ``extensions`` (by default what :func:`lora_names` lists, so never a pickled checkpoint)."""
    if isinstance(name, str) and not name.lower().endswith(extensions):
        raise UnsafeNameError(f"LoRA Lab reads {' and '.join(extensions)} files here only", key=name,
                              hint="convert the file to .safetensors with a tool you trust")
    check_relative_name(name)
    for folder in folder_paths.get_folder_paths("loras"):
        real = resolve_in_folder(folder, name, must_exist=False)
        if os.path.isfile(real):
            return real
    return None


def lora_path(name: str, extensions: tuple[str, ...] = LORA_EXTENSIONS) -> str:
    """The real path of a file named relative to a ``loras`` folder; refuses what :func:`lora_file`
    refuses, and names no loras folder holds."""
    path = lora_file(name, extensions)
    if path is None:
        raise UnsafeNameError("no such file in the loras folders", key=name, hint="pick a file from the list")
    return path


def model_arch(model) -> str | None:
    """The LoRA Lab arch id of a ComfyUI MODEL (ModelPatcher), or None for architectures we do not map."""
    for cls in type(model.model.model_config).__mro__:
        if cls.__name__ == "SD3":
            return mmdit_variant(model.model.model_config.unet_config)
        if cls.__name__ in _CONFIG_ARCH:
            return _CONFIG_ARCH[cls.__name__]
    return None


def model_layout(model) -> ModelLayout | None:
    """The exact layout of a loaded ComfyUI MODEL, generated from its own config."""
    arch_id = model_arch(model)
    if arch_id is None:
        return None
    return ModelLayout.from_config(arch_id, model.model.model_config.unet_config)


def output_folder(kind: str = "loras") -> str:
    """The first configured folder of a kind (where LoRA Lab writes files of that kind)."""
    return os.path.abspath(folder_paths.get_folder_paths(kind)[0])

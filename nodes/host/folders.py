"""ComfyUI's model folders as LoRA Lab uses them: the LoRA names it offers, the one check of a
picked name (extension, folder escape, existence), and where outputs go."""
from __future__ import annotations

import os

import folder_paths

from ...loralab.errors import PickleRefusedError, UnsafeNameError
from ...loralab.files.paths import check_relative_name, resolve_in_folder

LORA_EXTENSIONS = (".safetensors", ".sft")

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


def _is_lora_name(name: str, extensions: tuple[str, ...] = LORA_EXTENSIONS) -> bool:
    return name.lower().endswith(extensions)


def lora_file(name: str, extensions: tuple[str, ...] = LORA_EXTENSIONS) -> str | None:
    """The real path of a file named relative to a ``loras`` folder, or None where no folder holds
    it; refuses (:class:`UnsafeNameError`) names that escape the folder and files without one of
    ``extensions`` (by default what :func:`lora_names` lists, so never a pickled checkpoint)."""
    if isinstance(name, str) and not _is_lora_name(name, extensions):
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


def picked_lora(name: str) -> str:
    """The path of a LoRA picked by name in a node; a name the loras list would not offer is refused
    as what it would be (a pickled checkpoint), names escaping the folder as :func:`lora_path` does."""
    if not _is_lora_name(name):
        raise PickleRefusedError("LoRA Lab reads .safetensors LoRAs only, never pickled checkpoints", path=name,
                                 hint="convert the file to .safetensors with a tool you trust")
    return lora_path(name)


def output_folder(kind: str = "loras") -> str:
    """The first configured folder of a kind (where LoRA Lab writes files of that kind)."""
    return os.path.abspath(folder_paths.get_folder_paths(kind)[0])

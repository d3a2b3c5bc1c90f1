"""ComfyUI's model folders as LoRA Lab uses them: the LoRA names it offers, the one check of a
picked name, and where outputs go.

The names offered are ComfyUI's own listing of the ``loras`` folders (symlinked files and folders
and extra_model_paths.yaml folders included), less pickles and less names that ComfyUI's combo menu
would render as markup. A picked name is read only when it is in that listing, so names that climb
out of the folders (``..``, absolute paths) are refused because no listing holds them.
"""
from __future__ import annotations

import logging
import os
import re
import unicodedata
from typing import Collection

import folder_paths

from ...loralab.errors import PickleRefusedError, UnsafeNameError
from ...loralab.files.paths import check_relative_name

log = logging.getLogger("loralab")

LORA_EXTENSIONS = (".safetensors", ".sft")
#: characters ComfyUI's combo menu renders as markup (a frontend bug that hits core's loaders too)
_MARKUP = re.compile(r"[<>\"&]")

_LISTED: dict[tuple[str, ...], tuple[list[str], frozenset[str]]] = {}


def _is_lora_name(name: str, extensions: tuple[str, ...] = LORA_EXTENSIONS) -> bool:
    return name.lower().endswith(extensions)


def unsafe_to_show(name: str) -> bool:
    """Whether a file name would run as markup in ComfyUI's menus (``<``, ``>``, ``"``, ``&``) or
    hides control characters."""
    return bool(_MARKUP.search(name)) or any(unicodedata.category(c) == "Cc" for c in name)


def _listed() -> tuple[list[str], frozenset[str]]:
    """(names in order, the same as a set) of the LoRAs LoRA Lab offers; recomputed, with one
    warning about names left out, whenever ComfyUI's listing changes."""
    listing = tuple(folder_paths.get_filename_list("loras"))
    if listing not in _LISTED:
        candidates = [n for n in listing if _is_lora_name(n)]
        names = [n for n in candidates if not unsafe_to_show(n)]
        hidden = [n for n in candidates if unsafe_to_show(n)]
        if hidden:
            log.warning("LoRA Lab: %d LoRA file(s) left out of LoRA Lab's lists because their names contain <, >, "
                        "\", & or control characters, which ComfyUI's menus would run as markup; rename them to "
                        "use them: %s", len(hidden), ", ".join(repr(n) for n in hidden[:5]))
        _LISTED.clear()
        _LISTED[listing] = (names, frozenset(names))
    return _LISTED[listing]


def lora_names() -> list[str]:
    """LoRA files LoRA Lab offers: every ``.safetensors``/``.sft`` name ComfyUI lists in its
    ``loras`` folders, except names ComfyUI's menus would render as markup (logged)."""
    return list(_listed()[0])


def _full_path(name: str) -> str | None:
    """The real path of a listed name: the first loras folder that holds it, as ComfyUI looks it up."""
    for folder in folder_paths.get_folder_paths("loras"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return os.path.realpath(path)
    return None


def lora_file(name: str, extensions: tuple[str, ...] = LORA_EXTENSIONS,
              listing: Collection[str] | None = None) -> str | None:
    """The real path of a file named relative to a ``loras`` folder, or None where it is not in
    ``listing`` (by default :func:`lora_names`) but could be a name of the folder. Refuses
    (:class:`UnsafeNameError`) files without one of ``extensions`` (so never a pickle), names that
    could leave the folder, and listed-elsewhere names this pack hides."""
    if not isinstance(name, str) or not _is_lora_name(name, extensions):
        raise UnsafeNameError(f"LoRA Lab reads {' and '.join(extensions)} files here only", key=str(name)[:200],
                              hint="convert the file to .safetensors with a tool you trust")
    listed = _listed()[1] if listing is None else listing
    if name in listed:
        return _full_path(name)
    if unsafe_to_show(name):
        raise UnsafeNameError("the name contains <, >, \", & or control characters, which ComfyUI's menus would "
                              "run as markup", key=repr(name), hint="rename the file")
    check_relative_name(name)  # a name no listing can hold gets its precise reason
    return None


def lora_path(name: str, extensions: tuple[str, ...] = LORA_EXTENSIONS,
              listing: Collection[str] | None = None) -> str:
    """The real path of a listed file (see :func:`lora_file`); refuses what it refuses and names
    that are not listed."""
    path = lora_file(name, extensions, listing)
    if path is None:
        raise UnsafeNameError("not in ComfyUI's list of the loras folders", key=name,
                              hint="pick a file from the list (press R in ComfyUI to refresh it)")
    return path


def picked_lora(name: str) -> str:
    """The path of a LoRA picked by name in a node; a name the loras list would not offer is refused
    as what it would be (a pickled checkpoint), other names as :func:`lora_path` does."""
    if not isinstance(name, str) or not _is_lora_name(name):
        raise PickleRefusedError("LoRA Lab reads .safetensors LoRAs only, never pickled checkpoints",
                                 path=str(name)[:200], hint="convert the file to .safetensors with a tool you trust")
    return lora_path(name)


#: model folders whose files the coverage route reads the header of (Load Checkpoint's, Load Diffusion Model's)
MODEL_KINDS = ("checkpoints", "diffusion_models")


def model_file(kind: str, name: str) -> str | None:
    """The real path of a model file named as ComfyUI's ``kind`` list names it (``checkpoints`` or
    ``diffusion_models``), or None where no listing holds it but the name could be one. Refuses
    (:class:`UnsafeNameError`) other kinds, files that are not ``.safetensors``/``.sft`` (never a
    pickle) and names that could leave the folders."""
    if kind not in MODEL_KINDS:
        raise UnsafeNameError(f"not a model folder LoRA Lab reads ({', '.join(MODEL_KINDS)})", key=str(kind)[:50])
    if not isinstance(name, str) or not _is_lora_name(name):
        raise UnsafeNameError(f"LoRA Lab reads the header of {' and '.join(LORA_EXTENSIONS)} files only",
                              key=str(name)[:200], hint="convert the file to .safetensors with a tool you trust")
    if name not in folder_paths.get_filename_list(kind):
        check_relative_name(name)  # a name no listing can hold gets its precise reason
        return None
    path = folder_paths.get_full_path(kind, name)
    return os.path.realpath(path) if path else None


def listed_name(path: str) -> str | None:
    """The name under which the loras list offers a file in the first loras folder (where LoRA Lab
    writes), None where the list does not offer it."""
    root = os.path.realpath(output_folder("loras"))
    name = os.path.relpath(os.path.realpath(path), root).replace(os.sep, "/")
    return name if name in _listed()[1] and _full_path(name) == os.path.realpath(path) else None


def file_stamp(path: str | None) -> tuple[int, int] | None:
    """(size, modification time in ns) of a file, None if it cannot be read: what a node's
    ``fingerprint_inputs`` returns so ComfyUI reruns it when the file changes, and only then."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def picked_stamp(name: str | None) -> tuple[int, int] | str | None:
    """:func:`file_stamp` of a picked LoRA (None for no pick or "None"); a name that cannot be read
    gives itself, and fails with its reason when the node runs."""
    if not name or name == "None":
        return None
    try:
        return file_stamp(picked_lora(name))
    except (UnsafeNameError, PickleRefusedError):
        return name


def output_folder(kind: str = "loras") -> str:
    """The first configured folder of a kind (where LoRA Lab writes files of that kind)."""
    return os.path.abspath(folder_paths.get_folder_paths(kind)[0])

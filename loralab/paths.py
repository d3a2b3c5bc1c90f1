"""Untrusted file names: resolve them inside their folder, or refuse; sanitise names we write."""
from __future__ import annotations

import os
import re
import unicodedata

from .errors import UnsafeNameError

_DRIVE = re.compile(r"^[A-Za-z]:")
_UNSAFE_CHARS = re.compile(r"[^\w.\- ()\[\]+,=@]", re.UNICODE)
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
MAX_NAME = 200


def _parts(name: str) -> list[str]:
    return [p for p in re.split(r"[\\/]+", name) if p not in ("", ".")]


def check_relative_name(name: object) -> list[str]:
    """Validate a user-supplied relative file name and return its path components.

    Refuses non-strings, empty names, NUL and control characters, absolute paths, Windows drive
    and UNC forms, and any ``..`` component.
    """
    if not isinstance(name, str) or not name.strip():
        raise UnsafeNameError("file name is empty or not text", hint="pick a file from the list")
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise UnsafeNameError("file name contains control characters (NUL or similar)", key=repr(name))
    if name.startswith(("/", "\\")) or _DRIVE.match(name) or os.path.isabs(name):
        raise UnsafeNameError("absolute paths are not accepted here", key=name,
                              hint="give a name relative to the models folder")
    parts = _parts(name)
    if not parts:
        raise UnsafeNameError("file name has no file in it", key=name)
    if any(p == ".." for p in parts):
        raise UnsafeNameError("'..' is not allowed in file names", key=name)
    return parts


def resolve_in_folder(folder: str | os.PathLike, name: str, *, must_exist: bool = True) -> str:
    """The real path of ``name`` inside ``folder``; refuses names or symlinks that lead outside it."""
    parts = check_relative_name(name)
    root = os.path.realpath(os.fspath(folder))
    real = os.path.realpath(os.path.join(root, *parts))
    if os.path.commonpath([root, real]) != root:
        raise UnsafeNameError("resolves outside its folder (through a symlink?)", key=name, path=folder)
    if must_exist and not os.path.isfile(real):
        raise UnsafeNameError("no such file", key=name, path=folder)
    return real


def sanitize_component(part: str, default: str = "lora") -> str:
    """One safe path component: unsafe characters become ``_``; no leading dots; bounded length."""
    s = unicodedata.normalize("NFC", part)
    s = _UNSAFE_CHARS.sub("_", s).strip(" .")
    if not s:
        s = default
    if s.split(".")[0].upper() in _WINDOWS_RESERVED:
        s = "_" + s
    return s[:MAX_NAME]


def sanitize_output_name(name: str, extension: str = ".safetensors", default: str = "lora") -> str:
    """A safe relative output name (sub-folders kept, each part sanitised) ending in ``extension``."""
    raw = name if isinstance(name, str) else ""
    parts = [p for p in _parts(raw.replace("\x00", "")) if p != ".."]
    parts = [sanitize_component(p, default) for p in parts] or [default]
    last = parts[-1]
    if extension and last.lower().endswith(extension.lower()):
        last = last[: -len(extension)] or default
    parts[-1] = last + extension
    return "/".join(parts)


def unused_path(folder: str | os.PathLike, relative_name: str) -> str:
    """An absolute path for ``relative_name`` in ``folder`` that does not exist yet
    (``name.safetensors``, then ``name_00001.safetensors``, ...)."""
    parts = check_relative_name(relative_name)
    root = os.path.realpath(os.fspath(folder))
    base = os.path.join(root, *parts)
    if os.path.commonpath([root, os.path.realpath(os.path.dirname(base))]) != root:
        raise UnsafeNameError("resolves outside its folder", key=relative_name, path=folder)
    if not os.path.exists(base):
        return base
    stem, ext = os.path.splitext(base)
    for i in range(1, 100000):
        candidate = f"{stem}_{i:05d}{ext}"
        if not os.path.exists(candidate):
            return candidate
    raise UnsafeNameError("no free file name left", key=relative_name, path=folder)

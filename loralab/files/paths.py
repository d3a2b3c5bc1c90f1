"""Untrusted file names: resolve them inside their folder, or refuse; sanitise names we write.

A name is refused when it could mean a file outside its folder, or another file than it says, on
any platform the pack runs on: absolute and drive forms (``/x``, ``C:x``, ``\\\\server\\x``,
``\\\\?\\C:\\x``), ``..`` and its look-alikes (``...``, ``.. ``, fullwidth ``．．／``), ``:``
(alternate data streams), control characters, Windows device names (``CON``, ``nul.txt``),
components ending in a dot or space (Windows drops them), and over-long names.
"""
from __future__ import annotations

import os
import re
import unicodedata

from ..errors import UnsafeNameError

_DRIVE = re.compile(r"^[A-Za-z]:")
_UNSAFE_CHARS = re.compile(r"[^\w.\- ()\[\]+,=@]", re.UNICODE)
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "CLOCK$",
                     *(f"{d}{i}" for d in ("COM", "LPT") for i in (*range(1, 10), "¹", "²", "³"))}
#: bytes (UTF-8) of one component of a name we write, extension included (room left for ``_00001``)
MAX_NAME = 200
#: bytes (UTF-8) of one component of a name we accept (the usual filesystem limit)
MAX_COMPONENT = 255
#: bytes (UTF-8) of a whole relative name we accept
MAX_PATH = 1024


def _parts(name: str) -> list[str]:
    return [p for p in re.split(r"[\\/]+", name) if p not in ("", ".")]


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _is_reserved(component: str) -> bool:
    """Windows device names, also with an extension or trailing spaces (``nul.txt``, ``COM1 .x``)."""
    return component.split(".")[0].rstrip(" ").upper() in _WINDOWS_RESERVED


def check_relative_name(name: object) -> list[str]:
    """Validate a user-supplied relative file name and return its path components.

    Refuses non-strings, empty names, NUL and control characters, absolute paths, Windows drive,
    UNC and device forms, ``:``, any ``..`` component or look-alike, components ending in a dot
    or space, and over-long names.
    """
    if not isinstance(name, str) or not name.strip():
        raise UnsafeNameError("file name is empty or not text", hint="pick a file from the list")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        raise UnsafeNameError("file name contains control characters (NUL or similar)", key=repr(name))
    if name.startswith(("/", "\\")) or _DRIVE.match(name) or os.path.isabs(name):
        raise UnsafeNameError("absolute paths are not accepted here", key=name,
                              hint="give a name relative to the models folder")
    if ":" in name:
        raise UnsafeNameError("':' is not allowed in file names (Windows drives and alternate data streams)",
                              key=name)
    if _utf8_len(name) > MAX_PATH:
        raise UnsafeNameError(f"file name is longer than {MAX_PATH} bytes", key=name[:80] + "...")
    parts = _parts(name)
    if not parts:
        raise UnsafeNameError("file name has no file in it", key=name)
    folded = _parts(unicodedata.normalize("NFKC", name))
    if any(p.strip(" .") == "" for p in parts + folded):
        raise UnsafeNameError("'..' (or a look-alike of it) is not allowed in file names", key=name)
    for p in parts:
        if p[-1] in ". ":
            raise UnsafeNameError("a name part ends in a dot or space (Windows would open another file)", key=name)
        if _is_reserved(p):
            raise UnsafeNameError(f"{p!r} is a Windows device name", key=name)
        if _utf8_len(p) > MAX_COMPONENT:
            raise UnsafeNameError(f"a name part is longer than {MAX_COMPONENT} bytes", key=name[:80] + "...")
    return parts


def _inside(root: str, real: str) -> bool:
    try:
        return os.path.commonpath([root, real]) == root
    except ValueError:  # different drives on Windows
        return False


def resolve_in_folder(folder: str | os.PathLike, name: str, *, must_exist: bool = True) -> str:
    """The real path of ``name`` inside ``folder``; refuses names or symlinks that lead outside it."""
    parts = check_relative_name(name)
    root = os.path.realpath(os.fspath(folder))
    real = os.path.realpath(os.path.join(root, *parts))
    if not _inside(root, real):
        raise UnsafeNameError("resolves outside its folder (through a symlink?)", key=name, path=folder)
    if must_exist and not os.path.isfile(real):
        raise UnsafeNameError("no such file", key=name, path=folder)
    return real


def _clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, at a character boundary."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def sanitize_component(part: str, default: str = "lora", limit: int = MAX_NAME) -> str:
    """One safe path component: unsafe characters become ``_``; no leading or trailing dots or
    spaces; no Windows device name; at most ``limit`` UTF-8 bytes."""
    s = unicodedata.normalize("NFC", part)
    s = _UNSAFE_CHARS.sub("_", s)
    s = _clip(s, limit).strip(" .") or default
    if _is_reserved(s):
        s = _clip("_" + s, limit).strip(" .")
    return s


def sanitize_output_name(name: str, extension: str = ".safetensors", default: str = "lora") -> str:
    """A safe relative output name (sub-folders kept, each part sanitised) ending in ``extension``."""
    raw = name if isinstance(name, str) else ""
    raw = "".join(c for c in raw if unicodedata.category(c) not in ("Cc", "Cs"))
    parts = [p for p in _parts(unicodedata.normalize("NFC", raw)) if p.strip(" .")]
    parts = [sanitize_component(p, default) for p in parts] or [default]
    last = parts[-1]
    if extension and last.lower().endswith(extension.lower()):
        last = last[: -len(extension)].rstrip(" .") or default
    parts[-1] = sanitize_component(last, default, MAX_NAME - _utf8_len(extension)) + extension
    return "/".join(parts)


def unused_path(folder: str | os.PathLike, relative_name: str) -> str:
    """An absolute path for ``relative_name`` in ``folder`` that does not exist yet
    (``name.safetensors``, then ``name_00001.safetensors``, ...)."""
    parts = check_relative_name(relative_name)
    root = os.path.realpath(os.fspath(folder))
    base = os.path.join(root, *parts)
    if not _inside(root, os.path.realpath(os.path.dirname(base))):
        raise UnsafeNameError("resolves outside its folder", key=relative_name, path=folder)
    if not os.path.lexists(base):
        return base
    stem, ext = os.path.splitext(base)
    for i in range(1, 100000):
        candidate = f"{stem}_{i:05d}{ext}"
        if not os.path.lexists(candidate):
            return candidate
    raise UnsafeNameError("no free file name left", key=relative_name, path=folder)

"""The library on ComfyUI's side: one index of the ``loras`` folders (extra_model_paths.yaml folders
included) in ``<ComfyUI user directory>/loralab/library.sqlite``, kept in step by a background
worker that starts with the server and never holds it up (:mod:`..loralab.library.worker`), and
the answer of ``GET /loralab/library``.

Entries are named as the LoRA pickers name them (relative to the ``loras`` folder that holds
them, the first such folder winning, as ComfyUI looks names up); files the pickers do not offer
are not listed. Absolute paths never leave the server.
"""
from __future__ import annotations

import logging
import os

import folder_paths

from ..loralab.errors import LoRALabError
from ..loralab.layouts.archs import ARCHS
from ..loralab.library import Entry, Library, Worker
from .host import folders

log = logging.getLogger("loralab")

DB_NAME = "library.sqlite"
#: entry fields the route sends (facts, hashes, flags and imports; not the absolute path)
_SENT = ("verdict", "arch", "arch_name", "variant", "fits", "format", "format_name", "algorithms", "rank", "modules",
         "mapped", "title", "base_model", "triggers", "not_lora", "warnings", "error", "embedded")


def db_path() -> str:
    """Where the index of this ComfyUI lives."""
    return os.path.join(folder_paths.get_user_directory(), "loralab", DB_NAME)


def lora_folders() -> list[str]:
    """ComfyUI's ``loras`` folders, in its lookup order."""
    return list(folder_paths.get_folder_paths("loras"))


class Service:
    """The index and its background worker."""

    def __init__(self, path: str) -> None:
        self.library = Library(path)
        self.worker = Worker(self.library, lora_folders)
        self._unknown_asked: frozenset[str] = frozenset()

    def listing(self, model_arch: str | None = None, query: str | None = None, limit: int | None = None) -> dict:
        """The route's answer: the worker's status, and the offered LoRAs the index knows that fit
        ``model_arch`` and match ``query``, by picker name (the first ``limit`` of them; ``matched``
        counts them all). Offered names the index does not know yet (a file dropped into the folder)
        start a scan, once for each new set of them."""
        names = folders.lora_names()
        roots = lora_folders()
        by_path = {e.path: e for e in self.library.entries()}
        name_of: dict[str, str] = {}
        for name in names:
            for root in roots:
                path = os.path.join(os.path.abspath(root), name)
                if path in by_path:
                    name_of[path] = name
                    break
        unknown = frozenset(names) - set(name_of.values())
        if unknown and unknown != self._unknown_asked:
            self.worker.request_scan()
        self._unknown_asked = unknown
        wanted = [(n, p) for p, n in name_of.items() if by_path[p].wanted(model_arch, query)]
        wanted.sort(key=lambda np: (np[0].casefold(), np[0]))
        entries = [_sent(by_path[p], n, name_of) for n, p in wanted[:limit]]
        status = self.worker.status()
        hashing = status.get("hashing")
        if hashing and hashing.get("current"):
            hashing["current"] = name_of.get(hashing["current"], os.path.basename(hashing["current"]))
        return {"status": status, "model_arch": model_arch, "query": query or "", "offered": len(names),
                "known": len(name_of), "matched": len(wanted),
                "archs": [{"id": a.id, "name": a.name} for a in ARCHS.values()], "entries": entries}


def _sent(e: Entry, name: str, name_of: dict[str, str]) -> dict:
    out = {"name": name, "size": e.size, **{k: e.facts.get(k) for k in _SENT}, "hashes": e.hashes,
           "hash_error": e.hash_error, "flags": e.flags, "imported": e.imported,
           "duplicates": sorted(name_of.get(p, os.path.basename(p)) for p in e.duplicates)}
    if out["hash_error"]:
        out["hash_error"] = out["hash_error"].replace(e.path, name)
    return out


_SERVICE: list[Service] = []


def start() -> Service | None:
    """Open the index and start its worker (once per process); None, with a warning in the log,
    where the index cannot be used."""
    if _SERVICE:
        return _SERVICE[0]
    try:
        service = Service(db_path())
    except LoRALabError as e:
        log.warning("LoRA Lab: the LoRA library is off: %s", e)
        return None
    service.worker.start()
    _SERVICE.append(service)
    return service


def service() -> Service | None:
    """The running library, if :func:`start` opened it."""
    return _SERVICE[0] if _SERVICE else None

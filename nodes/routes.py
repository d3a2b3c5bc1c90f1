"""LoRA Lab's HTTP routes on ComfyUI's server, registered once from ``comfy_entrypoint``:

* ``GET /loralab/lora_info?name=...``: what the metadata panel shows of the header-only summary,
  :meth:`loralab.ops.inspect.Summary.panel_dict` (a few KB); with ``&details=1`` the whole summary,
  :meth:`~loralab.ops.inspect.Summary.to_dict` (per-module lists, metadata, tag table: hundreds of
  KB for an SDXL LoRA), which the panel asks for when its details are opened. Either answer's
  ``path`` is the name relative to the loras folder; ``400`` for names that escape the folder (``..``, absolute paths, symlinks pointing
  outside, control characters), ``404`` for files that do not exist and ``422`` for files that are
  not readable LoRAs; errors are ``{"error": "..."}``. It reads the header and the alpha scalars
  only, never tensor data. Answers carry an ``ETag`` naming the file's identity (size and
  ``mtime_ns``); a request whose ``If-None-Match`` names it gets ``304`` without the header being read,
  so the frontend can revalidate its copy on every pick and after a file was rewritten.
* ``GET /loralab/coverage?lora=<name>&model=<name>&kind=checkpoints|diffusion_models&clip=0|1``: the
  coverage doctor's verdict (:meth:`loralab.ops.coverage.Coverage.to_dict`) for a LoRA on the model
  a Load Checkpoint / Load Diffusion Model node names, before anything runs: the model's
  architecture comes from its safetensors header alone (never a tensor, never a pickle), ``clip``
  says whether the LoRA node has a CLIP connected. Level ``unknown`` where the header shows no
  architecture LoRA Lab knows. Names are checked as ``lora_info`` checks them (``400``, ``404``;
  ``422`` for unreadable files); the answer is cached and carries an ``ETag`` of both files'
  identities, answered with ``304`` in the same way.
* ``GET /loralab/blocks?arch=<id>``: the block-weight editor's catalog of one arch
  (:func:`loralab.blocks.catalog.block_catalog`: blocks, families, vector forms, presets resolved per
  block); without an arch, the arch ids and names it knows; an unknown arch id is a 404.
* ``GET /loralab/library?arch=<id>&q=<words>``: the LoRA library (:meth:`nodes.library.Service.listing`):
  the background worker's status (scanning, hashing progress, a pass queued), and the LoRAs the pickers offer that
  the index knows, with their header facts, hashes, flags (duplicate, wrong embedded hash) and
  imported names and trigger words; ``arch`` keeps those that fit a model of that architecture (an
  unknown id is a 400), ``q`` those whose name, title or trigger words hold every word, ``limit``
  sends the first so many (``matched`` counts them all); ``rescan=1`` asks the worker to scan the
  folders again (it answers at once, with the index as it
  is); offered names the index does not know queue a scan by themselves. ``503`` where the index could not be opened (the server log says why).
* ``GET /loralab/train_progress?node=<id>``: the progress events of the last training run of a
  node (:func:`nodes.host.training.train_progress`: {node, run, events, saved}), kept in memory so
  a reloaded page redraws its loss chart (no events when the node has trained nothing since the
  server started); without a node, ``{"nodes": [ids]}``, the nodes that have a history.
"""
from __future__ import annotations

import asyncio
import functools
import json
import math
import os
import threading
from collections import OrderedDict

from aiohttp import web

from ..loralab.blocks.catalog import block_catalog
from ..loralab.errors import LoRALabError, UnsafeNameError
from ..loralab.layouts.archs import ARCHS
from ..loralab.ops.coverage import ModelFile, diagnose_files, unknown_model_dict
from ..loralab.ops.inspect import summarize
from .host.compat import HOST
from .host.folders import lora_file, model_file
from .library import service as library_service

LORA_INFO = "/loralab/lora_info"
COVERAGE = "/loralab/coverage"
BLOCKS = "/loralab/blocks"
TRAIN_PROGRESS = "/loralab/train_progress"
LIBRARY = "/loralab/library"
#: the longest search text the library route takes
MAX_QUERY = 200
_REGISTERED: set[int] = set()


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def lora_info(request: web.Request) -> web.Response:
    """``GET /loralab/lora_info?name=<name relative to loras>[&details=1]``: the panel's part of the
    header-only summary, or all of it."""
    name = request.query.get("name", "")
    details = request.query.get("details", "") == "1"
    try:
        path = lora_file(name)
    except UnsafeNameError as e:
        return _error(400, f"{name!r}: refused file name: {e.problem}")
    if path is None:
        return _error(404, f"{name!r}: no such LoRA in the loras folder")
    try:
        st = os.stat(path)
    except OSError:
        return _error(404, f"{name!r}: no such LoRA in the loras folder")
    etag = file_etag(st)
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if _not_modified(request, etag):
        return web.Response(status=304, headers=headers)
    try:
        summary = await asyncio.get_running_loop().run_in_executor(None, summarize, path, None, HOST.key_rules)
    except LoRALabError as e:
        return _error(422, f"{name!r}: {e.problem}" + (f" ({e.hint})" if e.hint else ""))
    data = summary.to_dict() if details else summary.panel_dict()
    data["path"] = name
    return web.json_response(data, headers=headers,
                             dumps=lambda d: json.dumps(d, ensure_ascii=False, allow_nan=False))


def _identity(st: os.stat_result) -> str:
    return f"{st.st_size}-{st.st_mtime_ns}"


def file_etag(st: os.stat_result) -> str:
    """A file's identity for ``lora_info``: its size and modification time in nanoseconds."""
    return f'"{_identity(st)}"'


def _not_modified(request: web.Request, etag: str) -> bool:
    return etag in [t.strip() for t in request.headers.get("If-None-Match", "").split(",")]


#: how many model headers and coverage answers the coverage route keeps (by file identity)
CACHED_MODELS = 16
CACHED_COVERAGE = 64
_MODELS: "OrderedDict[tuple, ModelFile]" = OrderedDict()
_COVERAGE: "OrderedDict[tuple, dict]" = OrderedDict()
_CACHE_LOCK = threading.Lock()


def _cached(cache: OrderedDict, key: tuple, limit: int, compute):
    """``cache[key]``, computed (outside the lock) where it is missing; the oldest entries go past ``limit``."""
    with _CACHE_LOCK:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    value = compute()
    with _CACHE_LOCK:
        cache[key] = value
        while len(cache) > limit:
            cache.popitem(last=False)
    return value


def _coverage_of(lora_path: str, lora_id: str, model_path: str, model_id: str, clip: bool, label: str) -> dict:
    model = _cached(_MODELS, (model_path, model_id), CACHED_MODELS, lambda: ModelFile.read(model_path))

    def compute() -> dict:
        cov = diagnose_files(lora_path, model, clip_connected=clip, host=HOST.key_rules, label=label)
        return unknown_model_dict(label) if cov is None else cov.to_dict()
    return _cached(_COVERAGE, (lora_path, lora_id, model_path, model_id, clip, label), CACHED_COVERAGE, compute)


async def coverage(request: web.Request) -> web.Response:
    """``GET /loralab/coverage?lora=...&model=...&kind=...&clip=...``: the coverage doctor's verdict."""
    q = request.query
    lora_name, model_name, kind = q.get("lora", ""), q.get("model", ""), q.get("kind", "checkpoints")
    clip = q.get("clip", "0") in ("1", "true")
    try:
        lora_path = lora_file(lora_name)
    except UnsafeNameError as e:
        return _error(400, f"{lora_name!r}: refused file name: {e.problem}")
    try:
        model_path = model_file(kind, model_name)
    except UnsafeNameError as e:
        return _error(400, f"{model_name!r}: refused file name: {e.problem}")
    if lora_path is None:
        return _error(404, f"{lora_name!r}: no such LoRA in the loras folder")
    if model_path is None:
        return _error(404, f"{model_name!r}: no such model in the {kind} folder")
    try:
        lora_st, model_st = os.stat(lora_path), os.stat(model_path)
    except OSError:
        return _error(404, "a file named here no longer exists")
    etag = f'"{_identity(lora_st)}-{_identity(model_st)}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if _not_modified(request, etag):
        return web.Response(status=304, headers=headers)
    try:
        data = await asyncio.get_running_loop().run_in_executor(
            None, _coverage_of, lora_path, _identity(lora_st), model_path, _identity(model_st), clip, lora_name)
    except LoRALabError as e:  # the file's name, not the server's path to it
        named = model_name if e.path == model_path else lora_name if e.path == lora_path else None
        return _error(422, (f"{named!r}: " if named else "") + e.problem + (f" ({e.hint})" if e.hint else ""))
    return web.json_response({**data, "model_name": model_name, "kind": kind}, headers=headers,
                             dumps=lambda d: json.dumps(d, ensure_ascii=False, allow_nan=False))


@functools.lru_cache(maxsize=None)
def _catalog(arch_id: str) -> dict:
    return block_catalog(arch_id)


async def blocks(request: web.Request) -> web.Response:
    """The editor's catalog of one arch, or the list of archs."""
    arch_id = request.query.get("arch", "").strip()
    if not arch_id:
        return web.json_response({"archs": [{"id": a.id, "name": a.name} for a in ARCHS.values()]})
    if arch_id not in ARCHS:
        return web.json_response({"error": f"unknown architecture {arch_id!r}; known: {', '.join(ARCHS)}"},
                                 status=404)
    return web.json_response(_catalog(arch_id))


async def train_progress(request: web.Request) -> web.Response:
    """The loss history of a node's last run, for the chart of a reloaded page."""
    from .host.training import train_progress as history, trained_nodes  # torch and comfy: loaded on first ask
    node = request.query.get("node", "").strip()
    if not node:
        return web.json_response({"nodes": trained_nodes()})
    found = history(node) or {"node": node, "run": None, "events": [], "saved": None}
    finite = lambda v: None if isinstance(v, float) and not math.isfinite(v) else v  # noqa: E731
    found["events"] = [{k: finite(v) for k, v in e.items()} for e in found["events"]]
    return web.json_response(found, dumps=lambda d: json.dumps(d, allow_nan=False, default=str))


async def library(request: web.Request) -> web.Response:
    """The LoRA library, filtered by model architecture and search words; asks for a rescan on ``rescan=1``."""
    svc = library_service()
    if svc is None:
        return _error(503, "the LoRA library is off: its index could not be opened (see the server log)")
    arch_id = request.query.get("arch", "").strip() or None
    if arch_id is not None and arch_id not in ARCHS:
        return _error(400, f"unknown architecture {arch_id[:50]!r}; known: {', '.join(ARCHS)}")
    limit = request.query.get("limit", "")
    if limit and not (limit.isdigit() and 0 < int(limit) <= 100_000):
        return _error(400, f"limit must be a whole number from 1 to 100000, not {limit[:20]!r}")
    if request.query.get("rescan") == "1":
        svc.worker.request_scan()
    data = await asyncio.get_running_loop().run_in_executor(None, svc.listing, arch_id,
                                                            request.query.get("q", "")[:MAX_QUERY],
                                                            int(limit) if limit else None)
    return web.json_response(data, headers={"Cache-Control": "no-cache"},
                             dumps=lambda d: json.dumps(d, ensure_ascii=False, allow_nan=False))


def register(server) -> None:
    """Add the routes to ComfyUI's ``PromptServer`` (once per server, however often it is called)."""
    if id(server) in _REGISTERED:
        return
    _REGISTERED.add(id(server))
    server.routes.get(LORA_INFO)(lora_info)
    server.routes.get(COVERAGE)(coverage)
    server.routes.get(BLOCKS)(blocks)
    server.routes.get(TRAIN_PROGRESS)(train_progress)
    server.routes.get(LIBRARY)(library)

"""HTTP route for the block-weight editor: ``GET /loralab/blocks?arch=<id>``.

With an arch id it returns :func:`loralab.blocks.catalog.block_catalog` for it (blocks, families,
vector forms, presets resolved per block); without one, the arch ids and names it knows. An
unknown arch id is a 404 with ``{"error": ...}``. Registered on ComfyUI's server at import.
"""
from __future__ import annotations

import functools

import server
from aiohttp import web

from ..loralab.layouts.archs import ARCHS
from ..loralab.blocks.catalog import block_catalog

NODES: list = []


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


server.PromptServer.instance.routes.get("/loralab/blocks")(blocks)

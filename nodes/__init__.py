"""The ComfyUI layer of LoRA Lab: V3 nodes that turn graph inputs into engine calls and back."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from . import compare, convert, dataset, inspect, library, loader, merge, routes, stack_report, train

#: node modules; each exposes ``NODES``, a list of io.ComfyNode classes
NODE_MODULES: list = [loader, dataset, train, inspect, merge, convert, stack_report, compare]


class LoRALabExtension(ComfyExtension):
    """Registers every LoRA Lab node."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [node for module in NODE_MODULES for node in module.NODES]


async def comfy_entrypoint() -> LoRALabExtension:
    """ComfyUI's V3 entry point: logs what this ComfyUI supports (see host.compat), registers the
    HTTP routes, starts the LoRA library's background scan and returns the nodes."""
    import server

    from .host.compat import HOST
    HOST.log_support()
    routes.register(server.PromptServer.instance)
    library.start()
    return LoRALabExtension()

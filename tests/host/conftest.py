"""Host tests: the real ComfyUI, booted in-process on the CPU, with this pack loaded the way
ComfyUI loads custom nodes. Build the host with ../shared/tools/comfy-host/setup, then run
``$COMFYUI_PYTHON -m pytest tests/host`` with its env file sourced. Without COMFYUI_PATH every
test here skips with that reason."""
from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACK_DIR_NAME = "lora-lab"  # installed under a name that is not a valid Python identifier, as users do
COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "")
HOST_BASE = os.environ.get("COMFYHOST_BASE", "")
SKIP_REASON = ("no ComfyUI host: set COMFYUI_PATH (source ~/.cache/loralab-comfy-host/env after "
               "../shared/tools/comfy-host/setup) and run with $COMFYUI_PYTHON")


def pytest_collection_modifyitems(config, items):
    if COMFYUI_PATH:
        return
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


def _harness_dir() -> str | None:
    """The comfyhost_testing harness pack (linked into the host base by setup)."""
    candidates = [os.path.join(HOST_BASE, "custom_nodes", "comfyhost_testing"),
                  os.path.join(REPO, "..", "shared", "tools", "comfy-host", "comfyhost_testing")]
    for c in candidates:
        if os.path.isdir(c):
            return os.path.realpath(c)
    return None


class Host:
    """The booted ComfyUI: its modules, the folder layout, and a prompt runner."""

    def __init__(self, base: str, cli_args: dict | None = None) -> None:
        """Boot ComfyUI on ``base``; ``cli_args`` override its command-line arguments (by default
        ``cpu=True``; bench/gpu_check.py boots it on the GPU with or without Dynamic VRAM)."""
        self.base = base
        sys.path.insert(0, COMFYUI_PATH)
        from comfy.cli_args import args
        args.cpu = True
        for name, value in (cli_args or {}).items():
            setattr(args, name, value)
        args.base_directory = base
        args.disable_auto_launch = True
        import utils.extra_config  # noqa: F401  (before `nodes`, or `utils` resolves to comfy/utils.py)
        import folder_paths
        import comfy.model_management  # noqa: F401
        import execution
        import nodes
        import server
        self.folder_paths = folder_paths
        self.execution = execution
        self.nodes = nodes
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.server = _construct(server.PromptServer, self.loop)
        self.loop.run_until_complete(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
        pack_path = os.path.join(base, "custom_nodes", PACK_DIR_NAME)
        self.pack = sys.modules[pack_path.replace(".", "_x_")]
        executor_options = {"cache_type": execution.CacheType.CLASSIC}
        if "cache_args" in inspect.signature(execution.PromptExecutor).parameters:
            executor_options["cache_args"] = {"lru": 0, "ram": 0, "ram_inactive": 0}  # as main.py with --cache-classic
        self.executor = execution.PromptExecutor(self.server, **executor_options)
        import comfyui_version
        self.version = comfyui_version.__version__

    def node_type(self, *names: str) -> str:
        """The first of ``names`` (one node under the names it had in different versions) that this
        host has; KeyError naming them all where it has none."""
        for name in names:
            if name in self.nodes.NODE_CLASS_MAPPINGS:
                return name
        raise KeyError(f"ComfyUI {self.version} has none of the node types {names}")

    def node_inputs(self, class_type: str, inputs: dict) -> dict:
        """``inputs`` plus the default of every required widget input of ``class_type`` they leave
        out (inputs a newer host added, such as LoraModelLoader's ``bypass``)."""
        required = self.nodes.NODE_CLASS_MAPPINGS[class_type].INPUT_TYPES().get("required", {})
        out = dict(inputs)
        for name, spec in required.items():
            if name not in out and len(spec) > 1 and isinstance(spec[1], dict) and "default" in spec[1]:
                out[name] = spec[1]["default"]
        return out

    def call_node(self, class_type: str, **inputs):
        """Run one node's function directly (a V1 node's FUNCTION or a V3 node's ``execute``), with
        :meth:`node_inputs` defaults; returns its output tuple."""
        cls = self.nodes.NODE_CLASS_MAPPINGS[class_type]
        inputs = self.node_inputs(class_type, inputs)
        if hasattr(cls, "FUNCTION") and not hasattr(cls, "define_schema"):
            return getattr(cls(), cls.FUNCTION)(**inputs)
        out = cls.execute(**inputs)
        if inspect.isawaitable(out):
            out = self.loop.run_until_complete(out)
        return tuple(out.args)

    def module(self, relative: str):
        """A module of the pack as ComfyUI imported it (``"loralab.formats.canonical"``, ``"nodes.common"``).
        Use these, not a second top-level ``import loralab``, when objects are compared."""
        return importlib.import_module(f"{self.pack.__name__}.{relative}")

    def folder(self, kind: str) -> str:
        return self.folder_paths.get_folder_paths(kind)[0]

    def run_prompt(self, prompt: dict) -> tuple[bool, dict, list]:
        """Validate and execute an API-format prompt with ComfyUI's own executor."""
        import uuid
        pid = str(uuid.uuid4())
        valid = self.loop.run_until_complete(self.execution.validate_prompt(pid, prompt, None))
        if not valid[0]:
            return False, {"validation_error": valid[1], "node_errors": valid[3]}, []
        self.executor.execute(prompt, pid, {}, valid[2])
        return self.executor.success, getattr(self.executor, "history_result", {}), self.executor.status_messages


def _construct(cls: type, loop: asyncio.AbstractEventLoop):
    """``cls(loop)``, with None for any further required parameter a newer host added (ComfyUI
    0.38's ``PromptServer(loop, asset_manager)``)."""
    params = list(inspect.signature(cls).parameters.values())[1:]
    extra = [None for p in params if p.default is inspect.Parameter.empty
             and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return cls(loop, *extra)


@pytest.fixture(scope="session")
def host(tmp_path_factory) -> Host:
    """ComfyUI booted once per session with a fresh base folder holding this pack."""
    if not COMFYUI_PATH:
        pytest.skip(SKIP_REASON)
    base = str(tmp_path_factory.mktemp("comfy-base"))
    for d in ("models/loras", "models/diffusion_models", "models/checkpoints", "models/vae",
              "models/text_encoders", "custom_nodes", "input", "output", "temp", "user"):
        os.makedirs(os.path.join(base, d), exist_ok=True)
    os.symlink(REPO, os.path.join(base, "custom_nodes", PACK_DIR_NAME))
    harness = _harness_dir()
    if harness:
        os.symlink(harness, os.path.join(base, "custom_nodes", "comfyhost_testing"))
    return Host(base)


@pytest.fixture(scope="session")
def tiny_models(host):
    """``make_tiny_models`` from ../shared/tools/comfy-host (builds real-layout models in-process)."""
    tools = None
    harness = _harness_dir()
    if harness:
        tools = os.path.dirname(harness)
    if not tools or not os.path.isfile(os.path.join(tools, "make_tiny_models.py")):
        pytest.skip("make_tiny_models.py not found (../shared/tools/comfy-host)")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    import make_tiny_models
    return make_tiny_models

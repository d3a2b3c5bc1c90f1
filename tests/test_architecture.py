"""The engine's layers and the pack's boundaries, as an import graph:

* the engine (``loralab/``) never imports ComfyUI, nor the node layer;
* engine layers import only layers below them: errors < files < layouts < adapters < formats, blocks
  < lora (the facade) < ops < train, library < cli; blocks and formats never import each other, nor
  do train and library (the index of LoRA files reads headers and hashes through ops and below; it
  neither trains nor is needed by training), and no layer imports ops, train, library or cli but
  those above them;
* no import cycle, between layers or between modules;
* the pack imports itself relatively (ComfyUI loads it under any folder name), and ComfyUI's
  model, weight, patching and training internals are reached from ``nodes/host/`` only;
* one engine module reaches the node layer: ``loralab train`` loads ``nodes/host/boot.py`` by its path
  when it runs (boot imports ComfyUI, then the pack as ComfyUI would); nothing is imported at start.
"""
import ast
import os

import pytest

from loralab_testkit import REPO

COMFY_MODULES = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "nodes", "server", "execution",
                 "comfy_execution", "node_helpers"}
#: ComfyUI's model, weight, patching and training internals: reached from nodes/host/ only (node modules use
#: the V3 schema, folders, progress, interruption and the sampler for previews)
HOST_INTERNALS = ("comfy.lora", "comfy.lora_convert", "comfy.sd", "comfy.model_patcher", "comfy.model_base",
                  "comfy.model_sampling", "comfy.patcher_extension", "comfy.supported_models", "comfy.model_detection",
                  "comfy.weight_adapter", "comfy.ldm")

#: engine layers, lowest first; a module may import its own layer and those of lower rank only
LAYERS = {"errors": 0, "files": 1, "layouts": 2, "adapters": 3, "formats": 4, "blocks": 4, "lora": 5, "ops": 6,
          "train": 7, "library": 7, "cli": 8}
#: the package root (``loralab/__init__.py``: the version) is importable from every layer
ROOT_LAYER = "loralab"


def _python_files(folder):
    for root, _, files in os.walk(os.path.join(REPO, folder)):
        for f in files:
            if f.endswith(".py"):
                yield os.path.join(root, f)


def _imports(path):
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, 0, ()
        elif isinstance(node, ast.ImportFrom):
            yield node.module or "", node.level, tuple(a.name for a in node.names)


def _module_name(path: str) -> tuple[str, bool]:
    rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
    if rel.endswith(".__init__"):
        return rel[: -len(".__init__")], True
    return rel, False


def engine_graph() -> dict[str, set[str]]:
    """Engine module -> the engine modules it imports (relative imports resolved)."""
    modules = {}
    for path in _python_files("loralab"):
        name, is_pkg = _module_name(path)
        modules[name] = (path, is_pkg)
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in modules.items():
        package = name.split(".") if is_pkg else name.split(".")[:-1]
        out = set()
        for mod, level, names in _imports(path):
            if not level:
                continue
            base = ".".join(package[: len(package) - level + 1] + ([mod] if mod else []))
            if mod:
                out.add(base)
            else:
                out.update(f"{base}.{n}" if f"{base}.{n}" in modules else base for n in names)
        graph[name] = out
    return graph


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT_LAYER


def test_engine_never_imports_comfy_or_the_nodes():
    for path in _python_files("loralab"):
        for mod, level, _ in _imports(path):
            assert level > 0 or mod.split(".")[0] not in COMFY_MODULES, f"{path} imports {mod}"
            assert level == 0 or not mod.startswith("nodes"), f"{path} imports the node layer"


def test_every_engine_module_belongs_to_a_layer():
    unknown = {m for m in engine_graph() if layer_of(m) not in LAYERS and layer_of(m) not in (ROOT_LAYER, "__main__")}
    assert not unknown, f"modules outside the stated layers (add them to LAYERS in a deliberate order): {unknown}"


def _violations(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, imported in graph.items():
        src = layer_of(module)
        if src not in LAYERS:
            continue
        for target in imported:
            dst = layer_of(target)
            if dst != ROOT_LAYER and dst != src and LAYERS.get(dst, 99) >= LAYERS[src]:
                wrong.append(f"{module} ({src}) imports {target} ({dst})")
    return sorted(wrong)


def test_layers_import_only_lower_layers():
    wrong = _violations(engine_graph())
    assert not wrong, "imports from a layer to one of equal or higher rank:\n" + "\n".join(wrong)


def test_the_layer_check_finds_upward_and_sideways_imports():
    graph = {"loralab.files.safetensors": {"loralab.ops.merge"}, "loralab.blocks.map": {"loralab.formats.keys"},
             "loralab.ops.merge": {"loralab.files.safetensors", "loralab.ops.results", "loralab"}}
    assert _violations(graph) == ["loralab.blocks.map (blocks) imports loralab.formats.keys (formats)",
                                  "loralab.files.safetensors (files) imports loralab.ops.merge (ops)"]


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle():
    graph = engine_graph()
    # a package's __init__ importing its own modules is not a cycle of the modules themselves
    modules = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    assert _cycle(modules) is None, " -> ".join(_cycle(modules))


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_pack_code_imports_itself_relatively():
    for path in [os.path.join(REPO, "__init__.py"), *_python_files("nodes")]:
        for mod, level, _ in _imports(path):
            assert level > 0 or mod.split(".")[0] != "loralab", f"{path}: absolute import of the engine"


@pytest.mark.parametrize("path", sorted(set(_python_files("nodes")) - set(_python_files(os.path.join("nodes", "host")))))
def test_comfy_internals_are_reached_from_the_host_seam_only(path):
    for mod, level, _ in _imports(path):
        if level:
            continue
        assert not any(mod == s or mod.startswith(s + ".") for s in HOST_INTERNALS), (
            f"{os.path.relpath(path, REPO)} imports {mod}: ComfyUI internals belong in nodes/host/")


#: the one engine module that reaches the node layer: ``loralab train`` loads the host seam's boot
#: module by its path when it runs (never at import), and that module imports ComfyUI, then the pack
TRAIN_COMMAND = os.path.join("loralab", "cli", "train.py")
BOOT_MODULE = os.path.join("nodes", "host", "boot.py")


def _strings(path):
    return [n.value for n in ast.walk(ast.parse(open(path, encoding="utf-8").read()))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_only_the_train_command_reaches_the_node_layer_and_only_through_boot():
    for path in _python_files("loralab"):
        text = open(path, encoding="utf-8").read()
        names_nodes = "nodes" in _strings(path) or "spec_from_file_location" in text
        assert not names_nodes or os.path.relpath(path, REPO) == TRAIN_COMMAND, f"{path} reaches the node layer"
    tree = ast.parse(open(os.path.join(REPO, TRAIN_COMMAND), encoding="utf-8").read())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    absolute = {n.module for n in top if isinstance(n, ast.ImportFrom) and not n.level}
    absolute |= {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
    assert absolute <= {"__future__", "argparse", "importlib", "os", "sys"}, absolute  # no torch, no ComfyUI


def test_the_boot_module_imports_only_the_standard_library_at_module_level():
    tree = ast.parse(open(os.path.join(REPO, BOOT_MODULE), encoding="utf-8").read())
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module in ("__future__", "types"), ast.dump(node)
        elif isinstance(node, ast.Import):
            assert all(a.name.split(".")[0] in ("importlib", "os", "sys") for a in node.names), ast.dump(node)

"""The engine never imports ComfyUI; the pack uses relative imports only."""
import ast
import os

from loralab_testkit import REPO

COMFY_MODULES = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "nodes", "server", "execution",
                 "comfy_execution", "node_helpers"}


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
                yield a.name.split(".")[0], 0
        elif isinstance(node, ast.ImportFrom):
            yield (node.module or "").split(".")[0], node.level


def test_engine_never_imports_comfy():
    for path in _python_files("loralab"):
        for mod, level in _imports(path):
            assert level > 0 or mod not in COMFY_MODULES, f"{path} imports {mod}"


def test_pack_code_imports_itself_relatively():
    for path in [os.path.join(REPO, "__init__.py"), *_python_files("nodes")]:
        for mod, level in _imports(path):
            assert level > 0 or mod != "loralab", f"{path}: absolute import of the engine"

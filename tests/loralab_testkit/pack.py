"""What the pack ships and declares, read from its files without importing ComfyUI: the tracked
files, pyproject.toml, requirements.txt, and the node ids and display names its ``nodes/``
modules define (read from their source, so no host is needed)."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the test extra installs tomli
    import tomli as tomllib

from . import REPO


@lru_cache(maxsize=None)
def tracked_files() -> tuple[str, ...]:
    """Paths (relative, ``/``-separated) of the files git tracks: what a clone or the registry's
    archive of the repository holds. Skips the calling test outside a git checkout."""
    if not os.path.exists(os.path.join(REPO, ".git")):
        pytest.skip("not a git checkout: which files ship is what git tracks")
    out = subprocess.run(["git", "-C", REPO, "ls-files", "-z"], capture_output=True, check=True).stdout
    return tuple(p for p in out.decode("utf-8").split("\0") if p)


#: what ships as code: the package ComfyUI imports and the engine the CLI installs
SHIPPED_CODE = ("__init__.py", "nodes/", "loralab/")
#: modules the host provides to the nodes: ComfyUI itself and what its requirements.txt installs
HOST_MODULES = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "nodes", "server",
                "execution", "node_helpers", "aiohttp", "comfyui_version", "utils"}
#: distributions ComfyUI brings that a pack must never ask pip to (re)install
HOST_TORCH = {"torch", "torchvision", "torchaudio"}
#: import name -> distribution name, where they differ
DISTRIBUTION_OF = {"PIL": "pillow"}


def read(relative: str) -> str:
    with open(os.path.join(REPO, relative), encoding="utf-8") as f:
        return f.read()


def shipped_python() -> list[str]:
    """The tracked Python files that run in ComfyUI or the CLI (tests and benchmarks left out)."""
    return [p for p in tracked_files() if p.endswith(".py") and p.startswith(SHIPPED_CODE)]


def third_party_imports(source: str, filename: str) -> set[str]:
    """Top-level names of a module's absolute imports that are not the standard library."""
    names = set()
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names}


def imported_distributions() -> set[str]:
    """Canonical names of the distributions the shipped code imports, beyond ComfyUI and itself."""
    imported = set()
    for path in shipped_python():
        imported |= third_party_imports(read(path), path)
    return {canonicalize_name(DISTRIBUTION_OF.get(n, n)) for n in imported - HOST_MODULES - {"loralab"}}


def pyproject() -> dict:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def requirement_lines() -> list[str]:
    """The requirement lines of requirements.txt (comments and blank lines left out)."""
    with open(os.path.join(REPO, "requirements.txt"), encoding="utf-8") as f:
        lines = [line.split(" #", 1)[0].strip() for line in f]
    return [line for line in lines if line and not line.startswith("#")]


def requirements() -> list[Requirement]:
    """requirements.txt parsed as PEP 508 requirements (raises on a line that is not one)."""
    return [Requirement(line) for line in requirement_lines()]


@dataclass(frozen=True)
class NodeDef:
    node_id: str
    display_name: str
    class_name: str
    module: str


def _module_names(tree: ast.Module, variable: str) -> list[str]:
    """The names listed in ``variable = [a, b, ...]`` at a module's top level."""
    for stmt in tree.body:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else \
            [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == variable for t in targets):
            if not isinstance(stmt.value, ast.List):
                raise AssertionError(f"{variable} is not a literal list")
            return [e.id for e in stmt.value.elts if isinstance(e, ast.Name)]
    raise AssertionError(f"no {variable} = [...] found")


def _parse(relative: str) -> ast.Module:
    return ast.parse(read(relative), relative)


def _constant_of(tree: ast.Module, name: str) -> str:
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in stmt.targets):
            if isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
                return stmt.value.value
    raise AssertionError(f"no string constant {name}")


def _template_of(tree: ast.Module, function: str) -> str:
    """The f-string a one-argument helper returns, with ``{}`` where the argument goes."""
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef) and stmt.name == function:
            ret = stmt.body[-1]
            if isinstance(ret, ast.Return) and isinstance(ret.value, ast.JoinedStr):
                return "".join("{}" if isinstance(v, ast.FormattedValue) else v.value for v in ret.value.values)
    raise AssertionError(f"{function}() does not return an f-string")


def _helper_argument(call: ast.AST, helper: str) -> str | None:
    """``"X"`` for ``helper("X")`` or ``common.helper("X")``; None for anything else."""
    if not isinstance(call, ast.Call) or len(call.args) != 1 or call.keywords:
        return None
    func = call.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    arg = call.args[0]
    if name == helper and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    return None


@lru_cache(maxsize=None)
def node_defs() -> tuple[NodeDef, ...]:
    """Every node the pack registers: the modules in ``nodes.NODE_MODULES``, the classes in each
    module's ``NODES``, and the ``node_id=``/``display_name=`` of each class's ``io.Schema``, which
    must be ``node_id("<Name>")`` and ``display_name("<name>")`` calls (the helpers of
    nodes/common.py that add the pack's prefix and suffix)."""
    common = _parse("nodes/common.py")
    prefix = _constant_of(common, "NODE_PREFIX")
    shown_as = _template_of(common, "display_name")
    defs = []
    for module in _module_names(_parse("nodes/__init__.py"), "NODE_MODULES"):
        tree = _parse(f"nodes/{module}.py")
        classes = {c.name: c for c in tree.body if isinstance(c, ast.ClassDef)}
        for class_name in _module_names(tree, "NODES"):
            schema = next((n for n in ast.walk(classes[class_name]) if isinstance(n, ast.Call)
                           and getattr(n.func, "attr", getattr(n.func, "id", "")) == "Schema"), None)
            if schema is None:
                raise AssertionError(f"nodes/{module}.py: {class_name} defines no io.Schema")
            kw = {k.arg: k.value for k in schema.keywords}
            name = _helper_argument(kw.get("node_id"), "node_id")
            shown = _helper_argument(kw.get("display_name"), "display_name")
            if name is None or shown is None:
                raise AssertionError(f"nodes/{module}.py: {class_name}'s schema must use node_id(\"...\") and "
                                     "display_name(\"...\") from nodes/common.py")
            defs.append(NodeDef(prefix + name, shown_as.format(shown), class_name, module))
    return tuple(defs)


@dataclass(frozen=True)
class Section:
    """One heading of a Markdown file and the text up to the next heading of any level."""
    level: int
    title: str
    body: str

    @property
    def anchor(self) -> str:
        """The fragment GitHub gives the heading (``## Train a LoRA (quick start)`` -> ``train-a-lora-quick-start``)."""
        return re.sub(r"[^\w\- ]", "", self.title.lower()).replace(" ", "-")


def markdown_sections(text: str) -> list[Section]:
    """The headings of ``text`` in order, outside fenced and indented code blocks."""
    sections: list[Section] = []
    body: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else re.match(r"^(#{1,6}) (.+?)\s*$", line)
        if match:
            if sections:
                sections[-1] = Section(sections[-1].level, sections[-1].title, "\n".join(body))
            sections.append(Section(len(match.group(1)), match.group(2), ""))
            body = []
        else:
            body.append(line)
    if sections:
        sections[-1] = Section(sections[-1].level, sections[-1].title, "\n".join(body))
    return sections


def section_tree(sections: list[Section], title: str) -> list[Section]:
    """The section called ``title`` and every section below it (until a heading of its level or higher)."""
    start = next(i for i, s in enumerate(sections) if s.title == title)
    end = next((i for i in range(start + 1, len(sections)) if sections[i].level <= sections[start].level),
               len(sections))
    return sections[start:end]

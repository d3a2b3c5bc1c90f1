"""Every file the pack writes goes through the one atomic-write helper, and nothing is ever
unpickled: the engine and the nodes are scanned for calls that write, rename, copy or load
pickles directly (outside loralab/files/atomic.py and the safetensors writer)."""
from __future__ import annotations

import ast
import os

import pytest

from loralab_testkit import REPO

#: the only modules that may touch files for writing: the helper and the writer built on it
WRITERS = {os.path.join("loralab", "files", "atomic.py"), os.path.join("loralab", "files", "safetensors.py")}

#: dotted call names that write, move or copy files
WRITE_CALLS = {
    "torch.save", "numpy.save", "np.save", "numpy.savez", "np.savez", "numpy.savez_compressed",
    "np.savez_compressed", "numpy.savetxt", "np.savetxt", "safetensors.torch.save_file", "save_file",
    "shutil.copy", "shutil.copy2", "shutil.copyfile", "shutil.copytree", "shutil.move", "os.rename", "os.renames",
    "os.replace", "os.link", "os.symlink", "os.truncate", "os.mkfifo", "os.mknod", "tempfile.mkstemp",
    "tempfile.NamedTemporaryFile", "tempfile.TemporaryFile", "tempfile.SpooledTemporaryFile",
    "pickle.dump",  # the pack writes no pickle anyone would have to unpickle
}
#: method names that write whatever they are called on (pathlib and friends)
WRITE_METHODS = {"write_text", "write_bytes", "touch", "symlink_to", "hardlink_to"}
#: calls that run or unpickle what a file says
LOAD_CALLS = {
    "pickle.load", "pickle.loads", "pickle.Unpickler", "cPickle.load", "torch.load", "numpy.load", "np.load",
    "joblib.load", "dill.load", "dill.loads", "yaml.load", "yaml.unsafe_load", "yaml.full_load", "marshal.load",
    "marshal.loads", "shelve.open", "eval", "exec", "torch.jit.load", "torch.serialization.load",
}
OPENERS = {"open", "io.open", "codecs.open", "os.fdopen", "builtins.open"}
WRITE_FLAGS = {"O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC"}


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _name(node.value)
        return f"{base}.{node.attr}" if base else node.attr
    return ""


def _mode(call: ast.Call) -> ast.AST | None:
    for kw in call.keywords:
        if kw.arg == "mode":
            return kw.value
    return call.args[1] if len(call.args) > 1 else None


def violations(source: str, filename: str) -> list[str]:
    """Direct writes and unpickling in one module's source."""
    out = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        where = f"{filename}:{node.lineno}"
        if name in LOAD_CALLS:
            out.append(f"{where}: {name}() runs or unpickles what a file says")
        if name in WRITE_CALLS:
            out.append(f"{where}: {name}() writes a file outside loralab.files.atomic")
        elif isinstance(node.func, ast.Attribute) and node.func.attr in WRITE_METHODS:
            out.append(f"{where}: .{node.func.attr}() writes a file outside loralab.files.atomic")
        elif name in OPENERS:
            mode = _mode(node)
            if mode is not None and not (isinstance(mode, ast.Constant) and isinstance(mode.value, str)
                                         and not set(mode.value) & set("wax+")):
                out.append(f"{where}: {name}() opened for writing outside loralab.files.atomic")
        elif name == "os.open" and len(node.args) > 1:
            if {_name(n).rsplit(".", 1)[-1] for n in ast.walk(node.args[1])} & WRITE_FLAGS:
                out.append(f"{where}: os.open() for writing outside loralab.files.atomic")
    return out


def _pack_sources() -> list[str]:
    out = [os.path.join(REPO, "__init__.py")]
    for folder in ("loralab", "nodes"):
        for root, _, files in os.walk(os.path.join(REPO, folder)):
            out += [os.path.join(root, f) for f in files if f.endswith(".py")]
    return sorted(out)


def test_only_the_atomic_helper_writes_and_nothing_unpickles():
    found = []
    for path in _pack_sources():
        rel = os.path.relpath(path, REPO)
        with open(path, encoding="utf-8") as f:
            problems = violations(f.read(), rel)
        if rel in WRITERS:
            problems = [p for p in problems if "unpickles" in p]
        found += problems
    assert not found, "\n".join(found)


@pytest.mark.parametrize("code", [
    "open(p, 'w')", "open(p, mode='ab')", "open(p, 'r+b')", "open(p, m)", "io.open(p, 'x')", "os.fdopen(fd, 'wb')",
    "torch.save(sd, p)", "np.save(p, a)", "safetensors.torch.save_file(t, p)", "shutil.copy(a, b)", "os.rename(a, b)",
    "os.replace(a, b)", "Path(p).write_text('x')", "p.write_bytes(b)", "tempfile.mkstemp()", "pickle.dump(x, f)",
    "os.open(p, os.O_WRONLY | os.O_CREAT)", "torch.load(p)", "pickle.loads(b)", "np.load(p, allow_pickle=True)",
    "yaml.load(s)", "eval(s)",
])
def test_scanner_finds_each_kind(code):
    assert violations(code, "x.py"), code


@pytest.mark.parametrize("code", [
    "open(p)", "open(p, 'rb')", "open(p, encoding='utf-8')", "os.open(p, os.O_RDONLY | os.O_NONBLOCK)",
    "'a'.replace('a', 'b')", "result.save(path)", "json.loads(s)", "save_tensors(p, t)",
    "json.dump(x, f)",  # f comes from atomic_write
])
def test_scanner_leaves_reads_alone(code):
    assert violations(code, "x.py") == []

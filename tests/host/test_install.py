"""ComfyUI Manager's install of LoRA Lab, simulated on a clean environment, then a real server.

1. A fresh venv from the host's interpreter sees the host's site-packages (torch and ComfyUI's
   requirements) through a folder of links added with a ``.pth`` file, except the distributions
   the pack declares or imports (torch aside): those must come from ``pip install -r
   requirements.txt`` (a requirement missing from it fails the import), run with
   the new venv's Python in the pack folder as Manager runs it. pip uses this machine's own
   configuration (here: local wheel mirrors and PyPI); the host's torch must stay what it is.
2. Only the files git tracks are copied into ``custom_nodes/lora-lab`` of a fresh ComfyUI base
   directory, as a clone would hold them.
3. ComfyUI's ``main.py`` runs as a server (CPU, loopback, a free port) with that venv; the checks
   read its startup log, ``/object_info``, ``/extensions`` and the pack's own route.
"""
from __future__ import annotations

import glob
import importlib.metadata
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request

import pytest
from packaging.utils import canonicalize_name

from loralab_testkit import REPO
from loralab_testkit.pack import (HOST_TORCH, imported_distributions, markdown_sections, node_defs, read, requirements,
                                   section_tree, tracked_files)

COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "")
PACK = "lora-lab"
STARTUP_TIMEOUT = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _top_level_entries(distribution: str) -> set[str]:
    """The site-packages entries (packages, modules, .dist-info, .libs) of an installed distribution."""
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        return set()
    return {f.parts[0] for f in files if f.parts[0] != ".."}


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LEVEL_TAG = re.compile(r"^\[(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\] ?", re.M)


class Installed:
    def __init__(self, root: str) -> None:
        self.root = root
        self.venv_python = os.path.join(root, "venv", "bin", "python")
        self.site = ""  # the venv's site-packages, once made
        self.base = os.path.join(root, "base")
        self.pack = os.path.join(self.base, "custom_nodes", PACK)
        self.log_path = os.path.join(root, "server.log")
        self.pip_output = ""
        self.port = 0
        self.process: subprocess.Popen | None = None

    def log(self) -> str:
        """ComfyUI's log as plain lines: without the colour codes and ``[INFO]`` level tags newer
        ComfyUI (seen: 0.33) writes before each record."""
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        return _LEVEL_TAG.sub("", _ANSI.sub("", text))

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=60) as r:
            assert r.status == 200, path
            return r.read()

    def json(self, path: str):
        return json.loads(self.get(path))


def _make_venv(inst: Installed) -> None:
    """A new venv whose Python sees the host's packages after its own, minus every distribution the
    pack declares or imports (torch aside): those must come from requirements.txt."""
    subprocess.run([sys.executable, "-m", "venv", os.path.join(inst.root, "venv")], check=True, env=_clean_env())
    inst.site = subprocess.run([inst.venv_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True, env=_clean_env()).stdout.strip()
    host_site = sysconfig.get_paths()["purelib"]
    needed = ({canonicalize_name(r.name) for r in requirements()} | imported_distributions()) - HOST_TORCH
    left_out = {e for name in needed for e in _top_level_entries(name)}
    overlay = os.path.join(inst.root, "host-packages")
    os.makedirs(overlay)
    for entry in os.listdir(host_site):
        if entry not in left_out and entry != "__pycache__":
            os.symlink(os.path.join(host_site, entry), os.path.join(overlay, entry))
    # addsitedir (not a bare path line) so the host's own .pth files run too (its torchvision shim)
    with open(os.path.join(inst.site, "zz_host_packages.pth"), "w", encoding="utf-8") as f:
        f.write(f"import site; site.addsitedir({overlay!r})\n")


def _copy_tracked_files(inst: Installed) -> None:
    for relative in tracked_files():
        source = os.path.join(REPO, relative)
        if os.path.isfile(source):  # a tracked file deleted in the working tree is not shipped
            os.makedirs(os.path.dirname(os.path.join(inst.pack, relative)), exist_ok=True)
            shutil.copy2(source, os.path.join(inst.pack, relative))


def _start_server(inst: Installed) -> None:
    inst.port = _free_port()
    cmd = [inst.venv_python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(inst.port),
           "--disable-auto-launch", "--base-directory", inst.base,
           "--database-url", f"sqlite:///{os.path.join(inst.base, 'user', 'comfyui.db')}"]
    os.makedirs(os.path.join(inst.base, "user"), exist_ok=True)
    with open(inst.log_path, "w", encoding="utf-8") as log:
        inst.process = subprocess.Popen(cmd, cwd=COMFYUI_PATH, stdout=log, stderr=subprocess.STDOUT, env=_clean_env())
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if inst.process.poll() is not None:
            pytest.fail(f"ComfyUI exited with {inst.process.returncode}:\n{inst.log()[-4000:]}")
        try:
            inst.get("/object_info/KSampler")
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"ComfyUI did not answer within {STARTUP_TIMEOUT} s:\n{inst.log()[-4000:]}")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    inst = Installed(str(tmp_path_factory.mktemp("manager-install")))
    _make_venv(inst)
    _copy_tracked_files(inst)
    pip = subprocess.run([inst.venv_python, "-m", "pip", "install", "-r", "requirements.txt"], cwd=inst.pack,
                         capture_output=True, text=True, env=_clean_env())
    inst.pip_output = pip.stdout + pip.stderr
    assert pip.returncode == 0, inst.pip_output
    try:
        _start_server(inst)
        yield inst
    finally:
        if inst.process is not None:
            inst.process.terminate()
            try:
                inst.process.wait(30)
            except subprocess.TimeoutExpired:
                inst.process.kill()
                inst.process.wait()


def _installed_here(site: str) -> dict[str, str]:
    """Canonical name -> version of the distributions installed in one site-packages folder."""
    out = {}
    for info in glob.glob(os.path.join(site, "*.dist-info")):
        name, version = os.path.basename(info)[:-len(".dist-info")].rsplit("-", 1)
        out[canonicalize_name(name)] = version
    return out


def _venv_says(inst: Installed, code: str) -> str:
    return subprocess.run([inst.venv_python, "-c", code], capture_output=True, text=True, check=True,
                          env=_clean_env()).stdout.strip()


def test_pip_brings_the_requirements_and_leaves_the_hosts_torch(installed):
    here = _installed_here(installed.site)
    for req in requirements():
        name = canonicalize_name(req.name)
        assert name in here, f"{req} was not installed into the new environment:\n{installed.pip_output}"
        assert req.specifier.contains(here[name], prereleases=True)
    assert not HOST_TORCH & set(here), f"pip installed {sorted(HOST_TORCH & set(here))} over ComfyUI's torch"
    torch_file, torch_version = _venv_says(installed, "import torch; print(torch.__file__); print(torch.__version__)"
                                           ).splitlines()
    assert not torch_file.startswith(installed.site)
    assert torch_version == importlib.metadata.version("torch")


def test_pack_imported_without_errors(installed):
    log = installed.log()
    assert "Import times for custom nodes:" in log, log[-4000:]
    times = re.findall(r"^\s*([\d.]+) seconds( \(IMPORT FAILED\))?: (.+)$", log, re.M)
    ours = [(seconds, failed) for seconds, failed, path in times if path.strip() == installed.pack]
    assert len(ours) == 1, f"{installed.pack} not in ComfyUI's import list:\n{log[-4000:]}"
    seconds, failed = ours[0]
    assert not failed, log[-6000:]
    assert re.search(r"^LoRA Lab: ComfyUI \S+ ", log, re.M), f"no support line in the start-up log:\n{log[-4000:]}"
    for complaint in (f"Cannot import {installed.pack}", f"comfy_entrypoint in {installed.pack}",
                      "Unable to parse pyproject.toml"):
        assert complaint not in log, log[-6000:]
    print(f"\nLoRA Lab import time in ComfyUI's startup log: {seconds} s")


def test_every_node_is_registered(installed):
    info = installed.json("/object_info")
    registered = {k: v for k, v in info.items() if k.startswith("LoRALab")}
    expected = {d.node_id: d.display_name for d in node_defs()}
    assert set(registered) == set(expected)
    for node_id, shown in expected.items():
        assert registered[node_id]["display_name"] == shown
        assert registered[node_id]["category"].startswith("LoRA Lab/")
        assert registered[node_id]["python_module"] == f"custom_nodes.{PACK}"


def test_frontend_files_are_served(installed):
    listed = {u for u in installed.json("/extensions") if u.startswith(f"/extensions/{PACK}/")}
    shipped = {f"/extensions/{PACK}/{p[len('js/'):]}" for p in tracked_files()
               if p.startswith("js/") and p.endswith(".js")}
    assert listed == shipped
    with open(os.path.join(REPO, "js", "loralab.js"), "rb") as f:
        assert installed.get(f"/extensions/{PACK}/loralab.js") == f.read()


def test_pack_routes_answer(installed):
    archs = {a["id"] for a in installed.json("/loralab/blocks")["archs"]}
    assert {"sd1", "sdxl", "flux"} <= archs


def _documents(section: str, name: str) -> bool:
    """Whether a reference section names an input or output: as `name`, or inside a numbered
    range such as `lora_name_1` … `lora_name_5`."""
    if f"`{name}`" in section:
        return True
    numbered = re.fullmatch(r"(.+)_(\d+)", name)
    if numbered:
        base, n = numbered.group(1), int(numbered.group(2))
        last = re.search(rf"`{re.escape(base)}_1` … `{re.escape(base)}_(\d+)`", section)
        return bool(last) and 1 <= n <= int(last.group(1))
    return False


def test_readme_reference_names_every_input_and_output(installed):
    """The README's entry of each node, as the server describes the node: the group it sits in is
    the node's category, and it names every input and output (an entry may link a shared table)."""
    sections = section_tree(markdown_sections(read("README.md")), "Node reference")
    by_anchor = {s.anchor: s for s in sections}
    info = installed.json("/object_info")
    group = ""
    checked = set()
    for s in sections:
        if s.level == 3:
            group = s.title
        node_id = re.search(r"`(LoRALab\w+)`$", s.title) if s.level == 4 else None
        if node_id is None:
            continue
        node = info[node_id.group(1)]
        assert node["category"] == f"LoRA Lab/{group}", f"{node_id.group(1)} is documented under {group}"
        text = s.body + "".join(by_anchor[a].body for a in re.findall(r"\]\(#([^)]+)\)", s.body) if a in by_anchor)
        names = [*node["input"].get("required", {}), *node["input"].get("optional", {}), *node["output_name"]]
        missing = [n for n in names if not _documents(text, n)]
        assert not missing, f"README entry of {node_id.group(1)} does not name {missing}"
        checked.add(node_id.group(1))
    assert checked == {d.node_id for d in node_defs()}

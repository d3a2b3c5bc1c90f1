"""Browser tests: the real ComfyUI server with this pack, its real frontend, headless Chromium.

Runs when COMFYUI_PATH is set (source ~/.cache/loralab-comfy-host/env; run with $COMFYUI_PYTHON)
and a system Chromium is installed (Debian: ``apt-get install chromium``); skips with the reason
otherwise. The server runs from a fresh base folder with the pack linked in as ``lora-lab`` and
the test-only stand-ins (tests/e2e/standins) loaded after it; it is always stopped.
Screenshots go to tests/e2e/out/ (git-ignored).
"""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "out")
COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)

sys.path.insert(0, HERE)


def _skip_reason() -> str | None:
    if not COMFYUI_PATH:
        return "no ComfyUI host: set COMFYUI_PATH (source ~/.cache/loralab-comfy-host/env) and run with $COMFYUI_PYTHON"
    if importlib.util.find_spec("aiohttp") is None:
        return "aiohttp is missing (run with $COMFYUI_PYTHON)"
    from cdp import find_chromium
    if find_chromium() is None:
        return "no Chromium: install the system package (apt-get install chromium)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _skip_reason()
    if reason:
        for item in items:
            if str(item.fspath).startswith(HERE):
                item.add_marker(pytest.mark.skip(reason=reason))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """ComfyUI's main.py on a free loopback port, from a fresh base folder."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        later = os.path.join(base, "later_custom_nodes")
        for d in ("models/loras", "custom_nodes", "input", "output", "temp", "user/default", "later_custom_nodes"):
            os.makedirs(os.path.join(base, d), exist_ok=True)
        os.symlink(REPO, os.path.join(base, "custom_nodes", "lora-lab"))
        os.symlink(os.path.join(HERE, "standins"), os.path.join(later, "loralab_e2e_standins"))
        extra = os.path.join(base, "extra_paths.yaml")
        with open(extra, "w", encoding="utf-8") as f:
            f.write(f"loralab_e2e:\n  base_path: {base}\n  custom_nodes: later_custom_nodes\n")
        with open(os.path.join(base, "user", "default", "comfy.settings.json"), "w", encoding="utf-8") as f:
            json.dump({"Comfy.TutorialCompleted": True}, f)
        from xss_lora import write_loras
        write_loras(os.path.join(base, "models", "loras"))
        from host.workflow_kit import LORAS
        from loralab_testkit import materialize
        for name, (_, fixture_name, seed) in LORAS.items():  # the files the example workflows pick
            materialize(fixture_name, os.path.join(base, "models", "loras", name), rank=4, seed=seed)
        self.log_path = os.path.join(base, "server.log")
        env = {**os.environ, "LORALAB_E2E_REPO": REPO, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [COMFYUI_PYTHON, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                 "--disable-auto-launch", "--base-directory", base, "--extra-model-paths-config", extra,
                 "--database-url", f"sqlite:///{base}/user/comfyui.db"],
                cwd=COMFYUI_PATH, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 150
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                urllib.request.urlopen(self.url + "/object_info/KSampler", timeout=2).read()
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("ComfyUI did not answer within 150 s:\n" + self.log()[-3000:])

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        from cdp import stop_process
        stop_process(self.proc)


#: what the last server of this session used in place of the real nodes and routes
STANDINS_USED: dict = {}


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    srv = Server(str(tmp_path_factory.mktemp("comfy-e2e")))
    try:
        with urllib.request.urlopen(srv.url + "/loralab_e2e/standins", timeout=30) as r:
            STANDINS_USED.update(json.loads(r.read()))
        yield srv
    finally:
        srv.stop()


def pytest_terminal_summary(terminalreporter):
    if STANDINS_USED:
        used = STANDINS_USED["nodes"] + STANDINS_USED["routes"]
        terminalreporter.write_line("e2e stand-ins in use (the real ones are not in this tree): "
                                    + (", ".join(used) if used else "none, every node and route was the real one"))


@pytest.fixture(scope="session")
def page(server):
    from cdp import Page, find_chromium
    pg = Page(find_chromium())
    try:
        pg.goto(server.url)
        pg.wait_for("window.comfyAPI?.app?.app?.graph && window.comfyAPI.app.app.extensionManager "
                    "&& document.getElementById('loralab-styles')", timeout=90)
        yield pg
    finally:
        pg.close()


@pytest.fixture(scope="session")
def out_dir():
    os.makedirs(OUT, exist_ok=True)
    return OUT

"""Browser tests: the real ComfyUI server with this pack, its real frontend, headless Chromium.

Runs when COMFYUI_PATH is set (source ~/.cache/loralab-comfy-host/env; run with $COMFYUI_PYTHON)
and a system Chromium is installed (Debian: ``apt-get install chromium``); skips with the reason
otherwise. The server runs from a fresh base folder with the pack linked in as ``lora-lab`` and
the test-only stand-ins (tests/e2e/standins) loaded after it; it is always stopped.
Screenshots go to tests/e2e/out/ (git-ignored).
"""
from __future__ import annotations

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
from cdp import Page, find_chromium  # noqa: E402

#: strings that would run script if any widget put them into the page as markup
PAYLOADS = {
    "script": '<script>window.__xss=(window.__xss||0)+1;alert("xss-script")</script>',
    "img": "<img src=x onerror=\"window.__xss=(window.__xss||0)+1;alert('xss-img')\">",
    "svg": '"><svg/onload=alert("xss-svg")>',
    "js_url": 'javascript:alert("xss-url")',
    "entities": "&lt;b&gt;bold&lt;/b&gt; &amp;amp; &#60;i&#62;",
    "rtl": "safe\u202egnp.exe\u202c",
    "zero_width": "oh\u200bwx",
    "long": "L" * 5000,
}
XSS_FILE = "xss_<img src=x onerror=alert(9)>.safetensors"


def _skip_reason() -> str | None:
    if not COMFYUI_PATH:
        return "no ComfyUI host: set COMFYUI_PATH (source ~/.cache/loralab-comfy-host/env) and run with $COMFYUI_PYTHON"
    if find_chromium() is None:
        return "no Chromium: install the system package (apt-get install chromium)"
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return "aiohttp is missing (run with $COMFYUI_PYTHON)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _skip_reason()
    if reason:
        for item in items:
            if str(item.fspath).startswith(HERE):
                item.add_marker(pytest.mark.skip(reason=reason))


def xss_metadata() -> dict[str, str]:
    """Kohya-style metadata with a payload in every field the panel or report shows."""
    p = PAYLOADS
    folder = "10_" + p["img"]
    return {
        "ss_base_model_version": "sdxl_base_v1-0", "ss_network_module": "networks.lora",
        "ss_network_dim": "2", "ss_network_alpha": "1.0", "ss_steps": "1280", "ss_max_train_steps": "1280",
        "ss_num_epochs": "10", "ss_epoch": "10", "ss_resolution": "(1024, 1024)",
        "ss_sd_scripts_commit_hash": "48d368fa557731ad0488c07304dfeba8c07910eb",
        "ss_output_name": p["img"], "modelspec.trigger_phrase": p["script"], "modelspec.title": p["svg"],
        "ss_tag_frequency": json.dumps({folder: {p["js_url"]: 10, p["entities"]: 10, p["rtl"]: 10, p["zero_width"]: 10}}),
        "ss_dataset_dirs": json.dumps({folder: {"n_repeats": 10, "img_count": 10}}),
        "ss_sd_model_name": p["long"], "ss_training_comment": p["entities"],
    }


def _write_loras(folder: str) -> None:
    from loralab.safetensors_io import save_tensors
    from loralab_testkit import fixture_tensors

    save_tensors(os.path.join(folder, XSS_FILE), fixture_tensors("kohya_sdxl_lora", rank=2), xss_metadata())
    save_tensors(os.path.join(folder, "flux_kohya.safetensors"), fixture_tensors("kohya_flux_lora", rank=2),
                 {"ss_base_model_version": "flux1", "ss_network_module": "networks.lora_flux",
                  "modelspec.trigger_phrase": "flux style"})
    with open(os.path.join(folder, "broken.safetensors"), "wb") as f:
        f.write(b"\xff" * 64)


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
        _write_loras(os.path.join(base, "models", "loras"))
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

    def get_json(self, route: str):
        with urllib.request.urlopen(self.url + route, timeout=30) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    srv = Server(str(tmp_path_factory.mktemp("comfy-e2e")))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def page(server):
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

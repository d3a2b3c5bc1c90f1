"""Browser tests: the real ComfyUI server with this pack, its real frontend, headless Chromium.

Runs when COMFYUI_PATH is set (source ~/.cache/loralab-comfy-host/env; run with $COMFYUI_PYTHON)
and a system Chromium is installed (Debian: ``apt-get install chromium``); skips with the reason
otherwise. The server runs from a fresh base folder with the pack linked in as ``lora-lab`` and
the test-only stand-ins (tests/e2e/standins) loaded after it; it is always stopped.

Frontends and modes: ``--frontends`` (or ``LORALAB_E2E_FRONTENDS``), a comma list of ``bundled``
(the host's own comfyui-frontend-package), versions of comfyui-frontend-package (downloaded once
with the host's pip into ``LORALAB_FRONTENDS_DIR``, default ~/.cache/loralab-frontends/VERSION;
tests skip with the version named where it cannot be had) or folders holding a frontend's
``index.html``; default ``bundled,1.58.1``. ``--modes`` (or ``LORALAB_E2E_MODES``): ``classic``,
``nodes2`` (Nodes 2.0, the setting ``Comfy.VueNodes.Enabled``), default both. One server per
frontend and one browser page per frontend and mode, whatever the number of tests.
Screenshots go to tests/e2e/out/<host>-<frontend>-<mode>/ (git-ignored), with each page's console.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "out")
COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)
FRONTENDS_DIR = os.environ.get("LORALAB_FRONTENDS_DIR", os.path.expanduser("~/.cache/loralab-frontends"))
DEFAULT_FRONTENDS = "bundled,1.58.1"
MODES = ("classic", "nodes2")
#: the setting that turns Nodes 2.0 (Vue nodes) on
VUE_SETTING = "Comfy.VueNodes.Enabled"
#: how long a ComfyUI server may take to answer after its start (a first start on 2 busy cores takes minutes)
STARTUP_S = 300

sys.path.insert(0, HERE)


def pytest_addoption(parser):
    group = parser.getgroup("loralab-e2e")
    group.addoption("--frontends", default=None,
                    help="comma list: bundled, comfyui-frontend-package versions, or static folders "
                         f"(env LORALAB_E2E_FRONTENDS; default {DEFAULT_FRONTENDS})")
    group.addoption("--modes", default=None, help="comma list of classic, nodes2 (env LORALAB_E2E_MODES; default both)")


def _listed(config, option: str, env: str, default: str) -> list[str]:
    try:
        value = config.getoption(option)
    except ValueError:
        value = None
    value = value or os.environ.get(env) or default
    return [v.strip() for v in value.split(",") if v.strip()]


def pytest_generate_tests(metafunc):
    """Every test runs once per frontend (``fe``) and, where it opens a page, once per mode."""
    if "fe" in metafunc.fixturenames:
        frontends = _listed(metafunc.config, "--frontends", "LORALAB_E2E_FRONTENDS", DEFAULT_FRONTENDS)
        metafunc.parametrize("fe", frontends, scope="session", ids=[f.replace("/", "_") for f in frontends])
    if "mode" in metafunc.fixturenames:
        modes = _listed(metafunc.config, "--modes", "LORALAB_E2E_MODES", ",".join(MODES))
        unknown = set(modes) - set(MODES)
        if unknown:
            raise pytest.UsageError(f"unknown e2e modes {sorted(unknown)}; known: {', '.join(MODES)}")
        metafunc.parametrize("mode", modes, scope="session")


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


class Frontend:
    """Where a frontend's static files are (None: the host's bundled one) and its version."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.root: str | None = None
        if spec == "bundled":
            self.version = subprocess.run(
                [COMFYUI_PYTHON, "-c", "import importlib.metadata as m; print(m.version('comfyui-frontend-package'))"],
                capture_output=True, text=True, cwd="/").stdout.strip() or "unknown"
        elif os.path.isdir(spec):
            self.root = spec
            self.version = os.path.basename(os.path.normpath(spec))
        elif re.fullmatch(r"\d+\.\d+\.\d+", spec):
            self.version = spec
            self.root = _frontend_root(spec)
        else:
            raise pytest.UsageError(f"frontend {spec!r}: neither 'bundled', a version nor a folder")
        self.label = self.version if spec == "bundled" or self.version == spec else f"{spec} ({self.version})"


def _frontend_root(version: str) -> str:
    """comfyui-frontend-package VERSION's static folder, downloaded with the host's pip once; skips
    the calling test (naming the version) where the package registry cannot deliver it."""
    dest = os.path.join(FRONTENDS_DIR, version)
    static = os.path.join(dest, "comfyui_frontend_package", "static")
    if os.path.isfile(os.path.join(static, "index.html")):
        return static
    os.makedirs(dest, exist_ok=True)
    res = subprocess.run([COMFYUI_PYTHON, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
                          f"comfyui-frontend-package=={version}", "-d", dest], capture_output=True, text=True, cwd="/")
    wheels = [f for f in os.listdir(dest) if f.startswith("comfyui_frontend_package-") and f.endswith(".whl")]
    if res.returncode != 0 or not wheels:
        pytest.skip(f"frontend {version}: comfyui-frontend-package=={version} could not be downloaded "
                    f"({(res.stderr.strip().splitlines() or ['no wheel'])[-1][:200]})")
    with zipfile.ZipFile(os.path.join(dest, wheels[0])) as z:
        z.extractall(dest)
    return static


class Server:
    """ComfyUI's main.py on a free loopback port, from a fresh base folder, serving ``frontend``."""

    def __init__(self, base: str, frontend: Frontend) -> None:
        self.base = base
        self.frontend = frontend
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
        self.write_settings({})
        from xss_lora import write_loras
        write_loras(os.path.join(base, "models", "loras"))
        from host.workflow_kit import CHECKPOINT_HEADERS, LORAS
        from loralab_testkit import materialize, sparse_model_file
        for name, (_, fixture_name, seed) in LORAS.items():  # the files the example workflows pick
            path = os.path.join(base, "models", "loras", *name.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            materialize(fixture_name, path, rank=4, seed=seed)
        os.makedirs(os.path.join(base, "models", "checkpoints"), exist_ok=True)
        for name, parts in CHECKPOINT_HEADERS.items():  # headers only: the coverage doctor reads no more
            sparse_model_file(os.path.join(base, "models", "checkpoints", name), parts)
        self.log_path = os.path.join(base, "server.log")
        env = {**os.environ, "LORALAB_E2E_REPO": REPO, "PYTHONUNBUFFERED": "1"}
        args = [COMFYUI_PYTHON, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                "--disable-auto-launch", "--base-directory", base, "--extra-model-paths-config", extra,
                "--database-url", f"sqlite:///{base}/user/comfyui.db"]
        if frontend.root:
            args += ["--front-end-root", frontend.root]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(args, cwd=COMFYUI_PATH, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + STARTUP_S
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                urllib.request.urlopen(self.url + "/object_info/KSampler", timeout=2).read()
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {STARTUP_S} s:\n" + self.log()[-3000:])

    def write_settings(self, settings: dict) -> None:
        """The default user's settings, read by the frontend when a page loads."""
        with open(os.path.join(self.base, "user", "default", "comfy.settings.json"), "w", encoding="utf-8") as f:
            json.dump({"Comfy.TutorialCompleted": True, **settings}, f)

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        from cdp import stop_process
        stop_process(self.proc)


#: what the last server of this session used in place of the real nodes and routes
STANDINS_USED: dict = {}


@pytest.fixture(scope="session")
def frontend(fe):
    return Frontend(fe)


@pytest.fixture(scope="session")
def server(tmp_path_factory, frontend):
    srv = Server(str(tmp_path_factory.mktemp("comfy-e2e")), frontend)
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


def comfyui_version() -> str:
    """The host's ComfyUI version (comfyui_version.py), or "unknown"."""
    try:
        with open(os.path.join(COMFYUI_PATH, "comfyui_version.py"), encoding="utf-8") as f:
            m = re.search(r"__version__\s*=\s*[\"']([^\"']+)", f.read())
        return m.group(1) if m else "unknown"
    except OSError:
        return "unknown"


class Target:
    """The frontend and mode a page runs: ``name`` labels screenshots and the console log
    (e.g. ``comfyui-0.33.0-frontend-1.58.1-nodes2``)."""

    def __init__(self, frontend: Frontend, mode: str) -> None:
        self.frontend, self.mode = frontend, mode
        self.version = frontend.version
        self.name = f"comfyui-{comfyui_version()}-frontend-{frontend.version}-{mode}"
        self.widgets_missing: str | None = None  # why LoRA Lab's DOM widgets cannot exist on this page

    def vtuple(self) -> tuple:
        try:
            return tuple(int(p) for p in self.version.split(".")[:3])
        except ValueError:
            return (999,)


@pytest.fixture(scope="session")
def page(server, frontend, mode):
    from cdp import Page, find_chromium
    server.write_settings({VUE_SETTING: mode == "nodes2"})
    pg = Page(find_chromium())
    try:
        pg.goto(server.url)
        pg.wait_for("window.comfyAPI?.app?.app?.graph && window.comfyAPI.app.app.extensionManager "
                    "&& document.getElementById('loralab-styles')", timeout=90)
        on = pg.eval(f"window.comfyAPI.app.app.extensionManager.setting.get({json.dumps(VUE_SETTING)}) === true")
        assert on == (mode == "nodes2"), f"frontend {frontend.version}: {VUE_SETTING} is {on}, the {mode} mode wants the opposite"
        pg.target = Target(frontend, mode)
        yield pg
        from page_checks import dump_console
        dump_console(pg)
    finally:
        pg.close()


@pytest.fixture(scope="session")
def out_dir():
    os.makedirs(OUT, exist_ok=True)
    return OUT


@pytest.fixture
def ui(page):
    """A clean graph, helpers in the page (widget_page.HELPERS), and a check after the test that
    nothing ran or broke."""
    from page_checks import require_widgets, unexpected_console_errors
    from widget_page import HELPERS
    require_widgets(page)
    page.eval(HELPERS)
    page.eval("__ll.reset()")
    exceptions, errors, dialogs = len(page.exceptions), len(page.console_errors), len(page.dialogs)
    yield page
    assert page.dialogs[dialogs:] == [], "a dialog opened"
    assert page.eval("window.__xss === undefined"), "a payload ran"
    assert page.eval("__ll.foreignElements()") == []
    assert page.eval("__ll.handlerAttributes()") == []
    assert page.exceptions[exceptions:] == []
    assert unexpected_console_errors(page, errors) == []
    assert not [e for e in page.exceptions if "/extensions/lora-lab/" in e]

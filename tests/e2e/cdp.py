"""A small Chrome DevTools Protocol client for the browser tests: starts the system Chromium
headless, opens one page, evaluates JavaScript, takes screenshots, and records what must never
happen on a page showing attacker-controlled metadata: dialogs, uncaught exceptions, console
errors. Uses aiohttp's websocket client (ComfyUI's own dependency), no browser download."""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile

import aiohttp

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync", "--hide-scrollbars",
                  "--mute-audio", "--remote-debugging-port=0"]


def find_chromium() -> str | None:
    """The system Chromium (Debian's package), or None."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


def stop_process(proc: subprocess.Popen, grace: float = 20) -> None:
    """Terminate a process this test started (kill it if it does not exit within ``grace`` s)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class JsError(AssertionError):
    """A JavaScript expression threw in the page."""


class Page:
    """One browser tab driven over CDP; every call is synchronous for the test."""

    def __init__(self, executable: str, width: int = 1600, height: int = 1000) -> None:
        self.loop = asyncio.new_event_loop()
        self.profile = tempfile.mkdtemp(prefix="loralab-chromium-")
        self.log_path = os.path.join(self.profile, "chromium.log")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen([executable, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                                          f"--window-size={width},{height}", "about:blank"],
                                         stdout=subprocess.DEVNULL, stderr=log)
        self.dialogs: list[str] = []
        self.exceptions: list[str] = []
        self.console_errors: list[str] = []
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._session: str | None = None
        try:
            self._run(self._connect(width, height))
        except BaseException:
            self.close()
            raise

    def _run(self, coro, timeout: float = 60):
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    async def _browser_url(self) -> str:
        while self.proc.poll() is None:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                m = re.search(r"DevTools listening on (ws://\S+)", f.read())
            if m:
                return m.group(1)
            await asyncio.sleep(0.1)
        raise RuntimeError(f"chromium exited with {self.proc.returncode} before opening DevTools")

    async def _connect(self, width: int, height: int) -> None:
        url = await self._browser_url()
        self.http = aiohttp.ClientSession()
        self.ws = await self.http.ws_connect(url, max_msg_size=0)
        self.reader = self.loop.create_task(self._read())
        target = await self._send("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = await self._send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True},
                                    session=False)
        self._session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            await self._send(f"{domain}.enable")
        await self._send("Emulation.setDeviceMetricsOverride",
                         {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data:
                fut = self._pending.pop(data["id"], None)
                if fut and not fut.done():
                    fut.set_result(data)
                continue
            method, params = data.get("method"), data.get("params", {})
            if method == "Page.javascriptDialogOpening":
                self.dialogs.append(f"{params.get('type')}: {params.get('message')}")
                self.loop.create_task(self._send("Page.handleJavaScriptDialog", {"accept": False}))
            elif method == "Runtime.exceptionThrown":
                d = params.get("exceptionDetails", {})
                self.exceptions.append(d.get("exception", {}).get("description") or d.get("text", ""))
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                self.console_errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                                    for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                e = params["entry"]
                self.console_errors.append(f"{e.get('source')}: {e.get('text')} {e.get('url', '')}".strip())

    async def _send(self, method: str, params: dict | None = None, session: bool = True) -> dict:
        mid = next(self._ids)
        msg = {"id": mid, "method": method, "params": params or {}}
        if session and self._session:
            msg["sessionId"] = self._session
        fut = self.loop.create_future()
        self._pending[mid] = fut
        await self.ws.send_str(json.dumps(msg))
        data = await fut
        if "error" in data:
            raise RuntimeError(f"{method}: {data['error']}")
        return data.get("result", {})

    def send(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        return self._run(self._send(method, params), timeout)

    def goto(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})

    def eval(self, expression: str, timeout: float = 60):
        """The value of a JavaScript expression (promises awaited); raises JsError if it throws."""
        res = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                             "returnByValue": True, "userGesture": True}, timeout)
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            raise JsError(d.get("exception", {}).get("description") or d.get("text"))
        return res.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 60, interval: float = 0.2):
        """Poll until the expression is truthy; returns its value."""
        async def poll():
            while True:
                res = await self._send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
                value = res.get("result", {}).get("value")
                if value not in (None, False, 0, "") and "exceptionDetails" not in res:
                    return value
                await asyncio.sleep(interval)
        try:
            return self._run(poll(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"timed out after {timeout}s waiting for: {expression}") from None

    def pause(self, seconds: float) -> None:
        self._run(asyncio.sleep(seconds), seconds + 5)

    def screenshot(self, path: str, clip: dict | None = None) -> str:
        params = {"format": "png"}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        data = self.send("Page.captureScreenshot", params)["data"]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path

    def close(self) -> None:
        async def shutdown():
            if getattr(self, "ws", None) is not None:
                await self.ws.close()
            if getattr(self, "http", None) is not None:
                await self.http.close()
        try:
            self.loop.run_until_complete(asyncio.wait_for(shutdown(), 10))
        except Exception:
            pass
        stop_process(self.proc)
        self.loop.close()
        shutil.rmtree(self.profile, ignore_errors=True)

"""Keeping a library in step with its folders from a background thread: a scan (headers of new and
changed files), then the hashing of every file not hashed yet, streamed at disk speed (hashlib
releases the GIL, so the thread never holds up the rest of the process); again whenever asked.

On Linux the thread runs at a lower CPU priority (nice +10) than the rest of the process, so the
server and the samplers come first. Progress is a dict anyone may read at any time
(:meth:`Worker.status`). A scan asked for while
files are being hashed starts after the file being hashed; :meth:`Worker.cancel` stops at once
(the file being hashed is hashed again next time).
"""
from __future__ import annotations

import os
import sys
import threading
import time
from typing import Callable, Sequence

from .index import Library


#: how much lower the worker thread's CPU priority is than its process's (Linux; capped at 19)
NICE = 10


class _Stop(Exception):
    """Raised from a progress callback to end the current pass."""


class Worker:
    """Scans ``folders()`` into ``library`` and hashes what is new, in one daemon thread."""

    def __init__(self, library: Library, folders: Callable[[], Sequence[str]]) -> None:
        self.library = library
        self._folders = folders
        self._wake = threading.Event()
        self._cancel = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._closed = False
        self._lock = threading.Lock()
        self._current: str | None = None
        self._status: dict = {"state": "idle", "scan": None, "hashing": None, "last_scan": None, "error": None,
                              "passes": 0}
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread and its first scan."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="loralab-library", daemon=True)
            self._idle.clear()
            self._wake.set()
            self._thread.start()

    def request_scan(self) -> None:
        """Scan again soon (after the file being hashed, if any)."""
        self._idle.clear()
        self._wake.set()

    def cancel(self) -> None:
        """Stop the current scan or hashing now; the worker waits for the next request."""
        self._cancel.set()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread (waits up to ``timeout`` seconds for it)."""
        self._closed = True
        self._cancel.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every requested pass is done; False on timeout."""
        return self._idle.wait(timeout)

    def status(self) -> dict:
        """``state`` ("idle", "scanning", "hashing", "cancelled", "error"), ``scan`` {read, to_read},
        ``hashing`` {files_done, files_total, bytes_done, bytes_total, current (path or None)},
        ``last_scan`` (:class:`~loralab.library.index.ScanResult` as a dict), ``error``, ``passes``
        (passes finished), ``queued`` (a pass is asked for and not started yet)."""
        with self._lock:
            status = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self._status.items()}
        return {**status, "queued": self._wake.is_set() and not self._closed}

    def _set(self, **values: object) -> None:
        with self._lock:
            self._status.update(values, updated=time.time())

    def _on_scan(self, read: int, to_read: int) -> None:
        if self._cancel.is_set():
            raise _Stop
        self._set(scan={"read": read, "to_read": to_read})

    def _on_hash(self, files_done: int, files_total: int, bytes_done: int, bytes_total: int, path: str | None) -> None:
        if self._cancel.is_set() or (path != self._current and self._wake.is_set()):
            raise _Stop  # cancelled, or a scan was asked for: it goes first, before the next file
        self._current = path
        self._set(hashing={"files_done": files_done, "files_total": files_total, "bytes_done": bytes_done,
                           "bytes_total": bytes_total, "current": path})

    def _run(self) -> None:
        if sys.platform == "linux":  # a thread id names one thread there (elsewhere it would be the process)
            try:
                own = os.getpriority(os.PRIO_PROCESS, 0)  # NICE below the process's, wherever it runs
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, own + NICE))
            except OSError:
                pass
        while True:
            self._wake.wait()
            if self._closed:
                return
            self._wake.clear()
            self._cancel.clear()
            self._current = None
            try:
                self._set(state="scanning", scan={"read": 0, "to_read": 0}, hashing=None, error=None)
                result = self.library.scan(self._folders(), self._on_scan)
                self._set(state="hashing", last_scan=result.to_dict())
                self.library.hash_pending(self._on_hash)
                self._set(state="idle")
            except _Stop:
                self._set(state="idle" if self._wake.is_set() and not self._cancel.is_set() else "cancelled")
            except Exception as e:  # a background pass must not die silently: its error is its status
                self._set(state="error", error=f"{type(e).__name__}: {e}")
            with self._lock:
                self._status["passes"] += 1
            if not self._wake.is_set():
                self._idle.set()

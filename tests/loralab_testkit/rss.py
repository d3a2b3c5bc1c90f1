"""The peak resident memory of work done in a child process, for the memory estimator's tests
(Linux). The child takes its resident memory once its baseline is in place and resets the
high-water mark to it (:func:`start_peak`) and, after the measured work, reads the mark
(:func:`high_water`): the peak increase is the difference. (``ru_maxrss`` will not do: a
child starts with its parent's, so a test process grown large would set it.) :func:`run_child`
starts it with glibc told to serve allocations over 64 KiB with mmap, so freed tensors leave the
resident set at once and the peak is the tensors' peak, not heap fragmentation; what the child
allocates is measured, not the machine's memory, so other processes' load does not change it.
:func:`start_peak` sets the baseline: it returns the heap's free memory (what earlier work freed
below the mmap threshold) to the system first, or the measured work's small tensors would reuse it
unseen."""
from __future__ import annotations

import ctypes
import gc
import json
import os
import subprocess
import sys


def resident() -> int:
    """This process's resident memory now (Linux: /proc/self/statm), in bytes."""
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def start_peak() -> int:
    """The baseline: this process's resident memory once garbage is collected and glibc's free heap
    memory is returned (``malloc_trim``), with the high-water mark reset to it (/proc/self/clear_refs)."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")
    return resident()


def high_water() -> int:
    """This process's peak resident memory since the last reset (Linux: VmHWM), in bytes."""
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def run_child(args: list[str], pythonpath: list[str], timeout: float):
    """Run ``python ARGS`` single-threaded with large allocations served by mmap and ``pythonpath``
    first on its path; the JSON value its last line of output prints."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(pythonpath + [os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode:
        raise AssertionError(f"{' '.join(args)} failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])

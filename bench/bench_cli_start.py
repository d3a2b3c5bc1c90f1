"""Benchmark: ``loralab inspect FILE`` (header only) as a process vs a plain header parse
(target: <= 0.3 s per process on 2 cores).

Builds kohya SDXL at rank 128 (~0.9 GB, 2958 keys; or takes --file), then runs, --repeat times each:
  inspect:  ``python -m loralab inspect FILE`` (a whole process: interpreter start, imports, report),
  parse:    ``python -c`` reading the 8-byte length and ``json.loads`` of the header (a whole process),
and times ``json.loads`` of the header in this process too. Prints the median and best wall time and
the median CPU time (the child's own rusage: what the run costs whatever else shares the machine),
and whether the inspect process imported torch (``-X importtime``, one extra run).

    python bench/bench_cli_start.py [--file F] [--dir DIR] [--repeat 10]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

PARSE = "import json,struct,sys\nf=open(sys.argv[1],'rb')\njson.loads(f.read(struct.unpack('<Q',f.read(8))[0]))"


def timed(args: list[str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, stderr) of one child process."""
    with tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, text=True, cwd=REPO,
                                env={**os.environ, "PYTHONPATH": REPO})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        err.seek(0)
        if os.waitstatus_to_exitcode(status):
            raise SystemExit(f"{' '.join(args)} failed:\n{err.read()}")
        return wall, usage.ru_utime + usage.ru_stime, err.read()


def report(label: str, runs: list[tuple[float, float, str]]) -> None:
    wall = [w for w, _, _ in runs]
    cpu = [c for _, c, _ in runs]
    print(f"  {label}: median {statistics.median(wall) * 1000:.0f} ms wall (best {min(wall) * 1000:.0f} ms), "
          f"median {statistics.median(cpu) * 1000:.0f} ms CPU")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", help="a LoRA to inspect (default: kohya SDXL rank 128, written to --dir or a temp "
                                   "folder)")
    ap.add_argument("--dir", help="where to write the default file (kept); default: a temp folder, removed")
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.file
        if path is None:
            path = os.path.join(args.dir or tmp, "kohya_sdxl_lora_r128.safetensors")
            if not os.path.exists(path):
                from lora_files import write_lora
                write_lora("kohya_sdxl_lora", path, 128)
        with open(path, "rb") as f:
            raw = f.read(struct.unpack("<Q", f.read(8))[0])
        t = time.perf_counter()
        n = len(json.loads(raw))
        parse_in_process = time.perf_counter() - t
        print(f"{path}: {os.path.getsize(path) / 2**20:.0f} MiB, header {len(raw) / 1024:.0f} KiB, {n} entries; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
        inspect_cmd = [sys.executable, "-m", "loralab", "inspect", path]
        parse_cmd = [sys.executable, "-c", PARSE, path]
        timed(inspect_cmd)  # warm: page cache, .pyc files
        runs = {"inspect": [], "parse": []}
        for _ in range(args.repeat):  # interleaved, so both see the same machine
            runs["inspect"].append(timed(inspect_cmd))
            runs["parse"].append(timed(parse_cmd))
        print(f"per process, {args.repeat} runs each:")
        report("loralab inspect FILE (header only)", runs["inspect"])
        report("plain header parse (json.loads)   ", runs["parse"])
        print(f"  json.loads of the header in this process: {parse_in_process * 1000:.1f} ms")
        err = timed([sys.executable, "-X", "importtime", "-m", "loralab", "inspect", path])[2]
        mods = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in err.splitlines() if "|" in line}
        print(f"inspect imported torch: {'torch' in mods}, numpy: {'numpy' in mods}")


if __name__ == "__main__":
    main()

"""Benchmark: ``inspect --blocks`` (block strengths and the NaN/Inf and all-zero checks) on the kohya
SDXL fixture at its real size (rank 32, fp16, ~218 MiB) (target: <= 2 s on 2 cores).

Writes the file to a temp folder (or --dir), then times on the warm file, --repeat times:
  in process: ``loralab.ops.inspect.inspect_lora(path, blocks=True)``,
  as a process: ``python -m loralab inspect --blocks FILE`` (interpreter start and imports included).
Prints the median and best wall time and the median CPU time (robust to other processes sharing
the machine), torch's thread count, and the strongest block (so two runs can be compared).

    python bench/bench_inspect_blocks.py [--dir DIR] [--repeat 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]


def summary(label: str, wall: list[float], cpu: list[float]) -> None:
    print(f"  {label}: median {statistics.median(wall):.2f} s wall (best {min(wall):.2f} s), "
          f"median {statistics.median(cpu):.2f} s CPU")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", help="where to write the file (kept); default: a temp folder, removed")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    import torch
    from loralab.ops.inspect import inspect_lora
    from loralab_testkit import materialize
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(args.dir or tmp, "kohya_sdxl_lora_r32.safetensors")
        if not os.path.exists(path):
            materialize("kohya_sdxl_lora", path, rank=None)
        report = inspect_lora(path, blocks=True)  # warm: page cache, layouts
        touched = [b for b in report.blocks if b.modules]
        strongest = max(touched, key=lambda b: b.norm)
        print(f"{path}: {os.path.getsize(path) / 2**20:.0f} MiB, {len(report.summary.modules)} modules, "
              f"strongest block {strongest.block} {strongest.norm:.6g}, {len(report.warnings)} warning(s)")
        wall, cpu = [], []
        for _ in range(args.repeat):
            w, c = time.perf_counter(), time.process_time()
            inspect_lora(path, blocks=True)
            wall.append(time.perf_counter() - w)
            cpu.append(time.process_time() - c)
        summary("inspect_lora(blocks=True), in process", wall, cpu)
        wall, cpu = [], []
        for _ in range(args.repeat):
            start = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "loralab", "inspect", "--blocks", path],
                                    stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": REPO})
            _, status, usage = os.wait4(proc.pid, 0)
            wall.append(time.perf_counter() - start)
            cpu.append(usage.ru_utime + usage.ru_stime)
            if os.waitstatus_to_exitcode(status):
                raise SystemExit("loralab inspect --blocks failed")
        summary("python -m loralab inspect --blocks FILE", wall, cpu)


if __name__ == "__main__":
    main()

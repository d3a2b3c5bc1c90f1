"""Benchmark: the header-only summary of a ~1 GB LoRA (target: <= 50 ms).

Builds kohya SDXL (UNet + both text encoders, 2958 keys, the largest header of the fixtures) at
rank 128 (~0.9 GB) and kohya Flux at rank 128 (~1.2 GB) in a temp folder (or --dir), then times
``loralab.ops.inspect.summarize`` (warm page cache, layouts built once per process, as in a running
ComfyUI): wall-clock median and best, and CPU-time median (robust to other processes sharing the
machine) of --repeat runs.

    python bench/bench_inspect_header.py [--dir DIR] [--repeat 20]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from lora_files import write_lora

from loralab.ops.inspect import summarize

FILES = (("kohya_sdxl_lora", 128), ("kohya_flux_lora", 128))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", help="where to write the files (kept); default: a temp folder, removed")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir or tmp
        for name, rank in FILES:
            path = os.path.join(folder, f"{name}_r{rank}.safetensors")
            if not os.path.exists(path):
                t = time.perf_counter()
                write_lora(name, path, rank)
                print(f"wrote {path} in {time.perf_counter() - t:.1f} s")
            summarize(path)  # warm: page cache, layouts, imports
            wall, cpu = [], []
            for _ in range(args.repeat):
                t, c = time.perf_counter(), time.process_time()
                s = summarize(path)
                wall.append((time.perf_counter() - t) * 1000)
                cpu.append((time.process_time() - c) * 1000)
            print(f"{name} rank {rank}: {os.path.getsize(path) / 2**30:.2f} GiB, {s.tensor_count} tensors, "
                  f"{len(s.modules)} modules; summarize wall median {statistics.median(wall):.1f} ms "
                  f"(best {min(wall):.1f}), CPU median {statistics.median(cpu):.1f} ms over {args.repeat} runs")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()

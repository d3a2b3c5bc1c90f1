"""Benchmark: our exact low-rank SVD merge against the dense method (build ΔW, torch.linalg.svd),
on Flux-size layers and on a whole Flux-layout merge, in one run.

1. Layers (3072×12288, 21504×3072, 9216×3072): the sum of three rank-16 LoRAs truncated to rank
   32, by both methods; time, peak RSS (each measured in its own process) and the relative
   Frobenius difference of the two rank-32 results.
2. Flux set: three rank-16 LoRAs with kohya Flux keys (304 modules each, bf16, the real shapes of
   tests/fixtures) merged to rank 32 by ``loralab merge``, file to file (interpreter start and
   writing included); the dense method on a sample of modules per shape (``--dense-samples``),
   extrapolated to the 304 modules, and checked against our written file on those modules.

Goal: the whole Flux merge in ≤ 15 s and ≤ 2 GB peak RSS on 2 cores, ≥ 300× faster than the
dense method at ≤ 1e-4 relative error.

    python bench/merge_bench.py [--dir DIR] [--dense-samples 1] [--skip-dense]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]

WEIGHTS = (1.0, 0.5, -0.7)
LAYERS = ((3072, 12288), (21504, 3072), (9216, 3072))
RANK_IN, RANK_OUT = 16, 32


def run_measured(args: list[str]) -> tuple[float, float, float, str]:
    """(wall seconds, CPU seconds, peak RSS in MiB, stdout) of a child process (its own rusage, from
    wait4; CPU time is what the run costs whatever else shares the machine)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err, text=True, env={**os.environ, "PYTHONPATH": REPO})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise SystemExit(f"{' '.join(args)} failed:\n{err.read()}")
        return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out.read()


def _self_rss() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _factors(shape: tuple[int, int], seed: int):
    import torch
    g = torch.Generator().manual_seed(seed)
    out, inn = shape
    terms = []
    for i, w in enumerate(WEIGHTS):
        b = (torch.randn(out, RANK_IN, generator=g) * 0.02).bfloat16()
        a = (torch.randn(RANK_IN, inn, generator=g) * 0.02).bfloat16()
        terms.append((b, a, w))
    return terms


class Clock:
    """Wall and CPU time of a block."""

    def __enter__(self) -> "Clock":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def phase_layer(method: str, out: int, inn: int) -> None:
    """One layer by one method, in this process; prints JSON."""
    import torch
    from loralab.ops.lowrank import one_thread, svd_of_product
    terms = _factors((out, inn), 0)
    if method == "ours":
        with Clock() as c, one_thread():
            b = torch.cat([tb.double() * w for tb, _, w in terms], 1)
            a = torch.cat([ta.double() for _, ta, _ in terms], 0)
            up, down = svd_of_product(b, a).factors(RANK_OUT)
        result = {"seconds": c.wall, "cpu": c.cpu}
    else:
        with Clock() as c:
            delta = sum(w * (tb.float() @ ta.float()) for tb, ta, w in terms)
            u, s, vh = torch.linalg.svd(delta, full_matrices=False)
            dense_k = (u[:, :RANK_OUT] * s[:RANK_OUT]) @ vh[:RANK_OUT]
        result = {"seconds": c.wall, "cpu": c.cpu}
        with one_thread():
            b = torch.cat([tb.double() * w for tb, _, w in terms], 1)
            a = torch.cat([ta.double() for _, ta, _ in terms], 0)
            up, down = svd_of_product(b, a).factors(RANK_OUT)
        ours = (up @ down).float()
        result["rel_diff"] = float((ours - dense_k).norm() / dense_k.norm())
    result["rss_mib"] = _self_rss()
    print(json.dumps(result))


def phase_dense(paths: list[str], out_path: str, samples: int) -> None:
    """The dense method on ``samples`` modules per shape of the Flux set; prints JSON."""
    import torch
    from loralab.lora import Lora
    loras = [Lora.open(p) for p in paths]
    merged = Lora.open(out_path)
    mine = {m.target.key: m for m in merged.mapped()}
    by_shape: dict[tuple, list[str]] = {}
    for m in loras[0].mapped():
        by_shape.setdefault(tuple(loras[0].layout.shapes[m.target.key]), []).append(m.target.key)
    rows = []
    for shape, keys in sorted(by_shape.items()):
        for key in keys[:samples]:
            adapters = [lo.adapter(next(m.entry for m in lo.mapped() if m.target.key == key)) for lo in loras]
            with Clock() as c:
                delta = sum(w * ad.delta_flat(torch.float32) for w, ad in zip(WEIGHTS, adapters))
                u, s, vh = torch.linalg.svd(delta, full_matrices=False)
                dense_k = (u[:, :RANK_OUT] * s[:RANK_OUT]) @ vh[:RANK_OUT]
            ours = merged.adapter(mine[key].entry).delta_flat(torch.float32)
            rows.append({"shape": list(shape), "count": len(keys), "key": key, "seconds": c.wall, "cpu": c.cpu,
                         "rel_diff": float((ours - dense_k).norm() / dense_k.norm()),
                         "bf16_storage": float((ours.bfloat16().float() - ours).norm() / ours.norm())})
    print(json.dumps({"rows": rows, "rss_mib": _self_rss()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", help="where to write the LoRA files (kept); default: a temp folder")
    ap.add_argument("--dense-samples", type=int, default=1, help="modules per shape timed with the dense method")
    ap.add_argument("--skip-dense", action="store_true", help="only our method (the dense method takes minutes)")
    ap.add_argument("--dense-threads", type=int, default=1,
                    help="torch threads of the dense method (1: faster than 2 on a shared two-core machine)")
    ap.add_argument("--phase", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        import torch
        torch.set_num_threads(args.dense_threads)
        if args.phase[0] == "layer":
            phase_layer(args.phase[1], int(args.phase[2]), int(args.phase[3]))
        else:
            phase_dense(args.phase[1:4], args.phase[4], args.dense_samples)
        return

    import torch
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs; dense method on {args.dense_threads} torch thread(s), "
          f"ours on one; load average {os.getloadavg()[0]:.2f} (other processes share the CPUs above 0)")
    me = [sys.executable, os.path.abspath(__file__), "--dense-threads", str(args.dense_threads)]

    print(f"\n1. layers: three rank-{RANK_IN} LoRAs (bf16), weights {WEIGHTS}, truncated to rank {RANK_OUT}")
    for out, inn in LAYERS:
        o = run_measured(me + ["--phase", "layer", "ours", str(out), str(inn)])[-1]
        ours = json.loads(o.splitlines()[-1])
        line = (f"  {out}×{inn}: ours {ours['seconds'] * 1000:.0f} ms wall ({ours['cpu'] * 1000:.0f} ms CPU), "
                f"{ours['rss_mib']:.0f} MiB peak")
        if not args.skip_dense:
            o = run_measured(me + ["--phase", "layer", "dense", str(out), str(inn)])[-1]
            dense = json.loads(o.splitlines()[-1])
            line += (f"; dense {dense['seconds']:.1f} s wall ({dense['cpu']:.1f} s CPU), {dense['rss_mib']:.0f} MiB "
                     f"peak; {dense['seconds'] / ours['seconds']:.0f}× faster by wall time, "
                     f"{dense['cpu'] / ours['cpu']:.0f}× by CPU time; results differ by {dense['rel_diff']:.1e}")
        print(line, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir or tmp
        from loralab_testkit import materialize
        paths = []
        for i in range(3):
            p = os.path.join(folder, f"flux_kohya_r{RANK_IN}_{i}.safetensors")
            if not os.path.exists(p):
                materialize("kohya_flux_lora", p, rank=None, seed=i)
            paths.append(p)
        runs = {}
        for dtype in ("bf16", "fp32"):  # bf16: the inputs' dtype, the default; fp32: for the accuracy check
            out_path = os.path.join(folder, f"merged_{dtype}.safetensors")
            if os.path.exists(out_path):
                os.unlink(out_path)
            cmd = [sys.executable, "-m", "loralab", "merge", *paths, *sum((["-w", str(w)] for w in WEIGHTS), []),
                   "--rank", str(RANK_OUT), "--dtype", dtype, "-o", out_path, "-q"]
            print(f"\n2. Flux set: {' '.join(os.path.basename(c) if c.endswith('.safetensors') else c for c in cmd[1:])}")
            wall, cpu, rss, o = run_measured(cmd)
            runs[dtype] = (wall, cpu, out_path)
            print(f"  ours, file to file: {wall:.2f} s wall, {cpu:.2f} s CPU, {rss:.0f} MiB peak RSS "
                  f"({sum(os.path.getsize(p) for p in paths) / 2**20:.0f} MiB in, "
                  f"{os.path.getsize(out_path) / 2**20:.0f} MiB out)")
            print("  " + "\n  ".join(line for line in o.splitlines() if line.startswith(("304", "rank", "kept"))))
        wall, cpu, out_path = runs["bf16"]
        if args.skip_dense:
            print(f"load average {os.getloadavg()[0]:.2f}")
            return
        _, _, rss_dense, o = run_measured(me + ["--dense-samples", str(args.dense_samples), "--phase", "dense",
                                                *paths, runs["fp32"][2]])
        rows = json.loads(o.splitlines()[-1])["rows"]
        per_shape: dict[tuple, list[tuple[float, float]]] = {}
        counts: Counter = Counter()
        for r in rows:
            per_shape.setdefault(tuple(r["shape"]), []).append((r["seconds"], r["cpu"]))
            counts[tuple(r["shape"])] = r["count"]
        total = sum(counts[s] * sum(w for w, _ in v) / len(v) for s, v in per_shape.items())
        total_cpu = sum(counts[s] * sum(c for _, c in v) / len(v) for s, v in per_shape.items())
        for s, v in sorted(per_shape.items()):
            print(f"  dense {s[0]}×{s[1]}: {sum(w for w, _ in v) / len(v):.1f} s wall "
                  f"({sum(c for _, c in v) / len(v):.1f} s CPU) per module (×{counts[s]} modules)")
        worst = max(r["rel_diff"] for r in rows)
        print(f"  dense, extrapolated from {len(rows)} sampled modules to {sum(counts.values())}: {total / 60:.1f} min "
              f"wall ({total_cpu / 60:.1f} min CPU), {rss_dense:.0f} MiB peak RSS while sampling")
        print(f"  speed-up: {total / wall:.0f}× by wall time, {total_cpu / cpu:.0f}× by CPU time (ours file to file, "
              f"bf16, vs dense compute alone); "
              f"largest relative difference of our fp32 file from the dense rank-{RANK_OUT} result: {worst:.1e} "
              f"(storing a result in bf16 alone changes it by {max(r['bf16_storage'] for r in rows):.1e})")
        print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

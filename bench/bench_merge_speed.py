"""Benchmark: the SDXL three-LoRA SVD merge (target: ≤ 10 s at two threads, optimal error), in a
warm process and as a ``loralab merge`` process (interpreter start-up included), against a
baseline checkout of the previous code when given, with its accuracy against dense SVDs.

Inputs: three kohya SDXL LoRAs in the fixture's real layout (986 modules each, rank 32, fp16,
seeds 0-2), weights 1, 0.5, -0.7, merged by ``svd`` to rank 32 (the fixture's rank), fp16 output
(the default). Every run is a child process with OMP_NUM_THREADS=2 and torch.set_num_threads(2);
the checkouts take turns, --repeat times:

1. in process: ``merge()`` of the opened files, tensors in memory (after the imports; no
   hashing, no file written);
2. process: ``python -m loralab merge A B C -w ... --rank 32 -o OUT`` (start-up, imports, hashing,
   writing).

Prints min and median wall time and median CPU time of each, and the load average before and
after (the machine may be shared: CPU time is what a run costs whatever else runs). Then the
accuracy: per sampled module (--samples per shape) the written ΔW against the dense rank-32
truncation of the weighted sum (float64 SVD), for the fp16 output and an fp32 one, and the
difference between this checkout's and the baseline's fp16 outputs. ``--conditioning``: the
float32 Gram path forced on constructed ill-conditioned stacks, its error against the trace bound
(``loralab.ops.lowrank.GRAM_LIMIT``), and what the merge does there.

    python bench/bench_merge_speed.py [--baseline main | --baseline DIR] [--repeat 5] [--dir DIR]
                                      [--samples 1] [--conditioning]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

WEIGHTS = (1.0, 0.5, -0.7)
RANK = 32
THREADS = 2


def child_env(repo: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": repo, "OMP_NUM_THREADS": str(THREADS)}


def run_child(args: list[str], repo: str) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, stdout) of a child process (CPU time from its own rusage)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err, text=True, env=child_env(repo), cwd=repo)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status):
            raise SystemExit(f"{' '.join(args)} failed:\n{err.read()}")
        return wall, usage.ru_utime + usage.ru_stime, out.read()


def merge_command(paths: list[str], out: str, dtype: str = "fp16") -> list[str]:
    return [sys.executable, "-m", "loralab", "merge", *paths, *sum((["-w", str(w)] for w in WEIGHTS), []),
            "--rank", str(RANK), "--dtype", dtype, "-o", out, "--overwrite", "-q"]


def phase_in_process(repo: str, paths: list[str]) -> None:
    """One merge in this process (loralab imported from ``repo``); prints JSON."""
    sys.path.insert(0, repo)
    import torch
    torch.set_num_threads(THREADS)
    from loralab.lora import Lora
    from loralab.ops.lowrank import RankRule
    from loralab.ops.merge import MergeInput, merge
    wall, cpu = time.perf_counter(), time.process_time()
    inputs = [MergeInput(Lora.open(p), w, title=f"input {i}") for i, (p, w) in enumerate(zip(paths, WEIGHTS))]
    result = merge(inputs, "svd", RankRule("fixed", RANK))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(json.dumps({"wall": wall, "cpu": cpu, "modules": len(result.modules)}))


def phase_accuracy(paths: list[str], outputs: list[str], samples: int) -> None:
    """For ``samples`` modules per shape: each output's ΔW against the dense optimum, and the first
    output's against the others; prints JSON."""
    sys.path.insert(0, REPO)
    import torch
    torch.set_num_threads(THREADS)
    from loralab.lora import Lora
    d = torch.float64
    loras = [Lora.open(p) for p in paths]
    merged = [Lora.open(p) for p in outputs]
    entries = [{m.target.key: m.entry for m in lo.mapped()} for lo in loras]
    written = [{m.target.key: m.entry for m in lo.mapped()} for lo in merged]
    by_shape: dict[tuple, list[str]] = {}
    for key in entries[0]:
        by_shape.setdefault(tuple(loras[0].layout.shapes[key]), []).append(key)
    rows = []
    for shape, keys in sorted(by_shape.items()):
        for key in keys[:samples]:
            dense = sum(w * lo.adapter(e[key]).delta_flat(d) for w, lo, e in zip(WEIGHTS, loras, entries))
            u, s, vh = torch.linalg.svd(dense, full_matrices=False)
            best = (u[:, :RANK] * s[:RANK]) @ vh[:RANK]
            mine = [lo.adapter(w[key]).delta_flat(d) for lo, w in zip(merged, written)]
            rows.append({"shape": list(shape), "vs_dense": [float((m - best).norm() / best.norm()) for m in mine],
                         "vs_first": [float((m - mine[0]).norm() / mine[0].norm()) for m in mine]})
    print(json.dumps(rows))


def phase_conditioning() -> None:
    """The float32 Gram path forced on stacks of growing condition; prints a table."""
    sys.path.insert(0, REPO)
    import torch
    from loralab.ops import lowrank
    torch.set_num_threads(1)
    d = torch.float64
    g = torch.Generator().manual_seed(0)

    def orthonormal(n: int, k: int) -> torch.Tensor:
        return torch.linalg.qr(torch.randn(n, k, generator=g, dtype=d))[0]

    def trace_bound(m: torch.Tensor) -> float:
        gram = m.T.double() @ m.double()
        dg = gram.diagonal().sqrt()
        return float(torch.linalg.inv(gram / (dg[:, None] * dg[None, :])).diagonal().sum())

    limit = lowrank.GRAM_LIMIT[torch.float32]
    print(f"float32 Gram path forced (limit in use: trace ≤ {limit:g}) on 1280×96 · 96×1280 float16 stacks, "
          f"rank {RANK}, worst of 3 seeds: the rank-{RANK} result's relative difference from the float64 path's, "
          f"and its excess error (‖ΔW − result‖ − ‖ΔW − best‖) / ‖ΔW‖")
    print("  kind          condition  trace(G'⁻¹) of b, a   forced float32: vs float64, excess   as merged (path)")
    for kind in ("random", "adversarial"):
        for kappa in (1e0, 1e1, 1e2, 1e3, 1e4):
            worst_forced, worst_diff, worst_merged, traces, paths = 0.0, 0.0, 0.0, (0.0, 0.0), set()
            for _ in range(3):
                s = torch.logspace(0, -math.log10(kappa), 96, dtype=d)
                b = ((orthonormal(1280, 96) * s) @ orthonormal(96, 96).T * 0.02).half()
                if kind == "adversarial":  # a undoes b's spectrum: b·a well conditioned, its factors not
                    qb = torch.linalg.qr(b.double())[0]
                    core = orthonormal(96, 96) * torch.logspace(0, -1, 96, dtype=d)
                    a = (torch.linalg.pinv(b.double()) @ qb @ core @ orthonormal(1280, 96).T).half()
                else:
                    a = ((orthonormal(1280, 96) * s[torch.randperm(96, generator=g)]) @ orthonormal(96, 96).T).T.half()
                m = b.double() @ a.double()
                sv = torch.linalg.svdvals(m)
                best = float(sv[RANK:].pow(2).sum().sqrt())
                traces = (max(traces[0], trace_bound(b)), max(traces[1], trace_bound(a.T)))
                up, down = lowrank.svds_of_products(b[None], a[None])[0].factors(RANK)
                exact = up @ down
                for forced in (True, False):
                    lowrank.GRAM_LIMIT[torch.float32] = math.inf if forced else limit
                    up, down = lowrank.svds_of_products(b[None], a[None], work=torch.float32)[0].factors(RANK)
                    err = (float((up.double() @ down.double() - m).norm()) - best) / float(m.norm())
                    if forced:
                        worst_forced = max(worst_forced, err)
                        diff = float((up.double() @ down.double() - exact).norm() / exact.norm())
                        worst_diff = max(worst_diff, diff)
                    else:
                        worst_merged = max(worst_merged, err)
                        paths.add("float32" if up.dtype == torch.float32 else "float64")
            lowrank.GRAM_LIMIT[torch.float32] = limit
            print(f"  {kind:12s} {kappa:10.0e}  {traces[0]:9.2e}, {traces[1]:9.2e}   {worst_diff:15.1e}, "
                  f"{worst_forced:7.1e}   {worst_merged:9.1e} ({'/'.join(sorted(paths))})")


def baseline_checkout(spec: str, tmp: str) -> tuple[str, str]:
    """(directory, description) of the baseline: a directory as given, or a git ref exported."""
    if os.path.isdir(spec):
        return os.path.abspath(spec), spec
    target = os.path.join(tmp, "baseline")
    os.makedirs(target)
    sha = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", spec], check=True, capture_output=True,
                         text=True).stdout.strip()
    archive = subprocess.run(["git", "-C", REPO, "archive", spec, "loralab"], check=True, capture_output=True).stdout
    with tempfile.TemporaryFile() as f:
        f.write(archive)
        f.seek(0)
        with tarfile.open(fileobj=f) as tar:
            tar.extractall(target, filter="data")
    return target, f"{spec} ({sha})"


def summary(label: str, runs: list[tuple[float, float]]) -> str:
    wall = [w for w, _ in runs]
    return (f"  {label}: min {min(wall):.2f} s, median {statistics.median(wall):.2f} s wall; "
            f"median {statistics.median([c for _, c in runs]):.2f} s CPU ({len(runs)} runs)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", help="a git ref (exported to a temp folder) or a checkout folder of the previous code")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", help="where to write the LoRA files (kept); default: a temp folder")
    ap.add_argument("--samples", type=int, default=1, help="modules per shape checked against a dense SVD (0: none)")
    ap.add_argument("--conditioning", action="store_true", help="also the float32 Gram path on ill-conditioned stacks")
    ap.add_argument("--phase", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        if args.phase[0] == "in_process":
            phase_in_process(args.phase[1], args.phase[2:])
        elif args.phase[0] == "accuracy":
            phase_accuracy(args.phase[1:4], args.phase[4:], args.samples)
        else:
            phase_conditioning()
        return

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir or tmp
        sys.path[:0] = [REPO, os.path.join(REPO, "tests")]
        from loralab_testkit import materialize
        paths = []
        for i in range(3):
            p = os.path.join(folder, f"sdxl_kohya_r{RANK}_{i}.safetensors")
            if not os.path.exists(p):
                materialize("kohya_sdxl_lora", p, rank=None, seed=i)
            paths.append(p)
        checkouts = [(REPO, "this checkout")]
        if args.baseline:
            checkouts.append(baseline_checkout(args.baseline, tmp))
        print(f"{len(paths)} kohya SDXL LoRAs (986 modules, rank {RANK}, fp16), weights {WEIGHTS} → svd rank {RANK}, "
              f"fp16; {THREADS} threads; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
        me = [sys.executable, os.path.abspath(__file__)]
        in_process: dict[str, list] = {d: [] for _, d in checkouts}
        process: dict[str, list] = {d: [] for _, d in checkouts}
        outputs = {d: os.path.join(folder, f"merged_{n}.safetensors") for n, (_, d) in enumerate(checkouts)}
        for repo, desc in checkouts:  # warm: page cache, .pyc files
            run_child(merge_command(paths, outputs[desc]), repo)
        for _ in range(args.repeat):  # the checkouts take turns, so both see the same machine
            for repo, desc in checkouts:
                in_process[desc].append(json.loads(run_child(me + ["--phase", "in_process", repo, *paths], repo)[2]))
                process[desc].append(run_child(merge_command(paths, outputs[desc]), repo)[:2])
        for _, desc in checkouts:
            print(desc)
            print(summary("merge() in process", [(r["wall"], r["cpu"]) for r in in_process[desc]]))
            print(summary("loralab merge process, start-up included", process[desc]))
        print(f"load average {os.getloadavg()[0]:.2f} (1 min), {os.getloadavg()[1]:.2f} (5 min)")

        if args.samples:
            wide = os.path.join(folder, "merged_fp32.safetensors")
            run_child(merge_command(paths, wide, "fp32"), REPO)
            outs = [outputs["this checkout"], wide] + [outputs[d] for _, d in checkouts[1:]]
            rows = json.loads(run_child(me + ["--samples", str(args.samples), "--phase", "accuracy", *paths, *outs],
                                        REPO)[2])
            names = ["this checkout, fp16", "this checkout, fp32"] + [f"{d}, fp16" for _, d in checkouts[1:]]
            print(f"accuracy on {len(rows)} modules ({args.samples} per shape), relative Frobenius difference of ΔW:")
            for j, name in enumerate(names):
                line = f"  {name}: vs the dense rank-{RANK} optimum ≤ {max(r['vs_dense'][j] for r in rows):.1e}"
                if j:
                    line += f"; vs this checkout's fp16 output ≤ {max(r['vs_first'][j] for r in rows):.1e}"
                print(line)
        if args.conditioning:
            print(run_child(me + ["--phase", "conditioning"], REPO)[2], end="")


if __name__ == "__main__":
    main()

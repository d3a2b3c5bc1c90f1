"""Benchmark: the library's scan of 200 LoRA files (targets: <= 1 s when nothing changed; a new
file read and hashed once) and its hashing throughput against ``sha256sum`` on one file of
1-2 GB (target: >= 0.9x).

The 200 files have the real key layouts of the fixtures (kohya SDXL and Flux, ai-toolkit Flux,
kohya SD1.5, LyCORIS LoHa, diffusers SDXL, musubi Wan) at real ranks and real sizes; they are
sparse (a real header, real alphas, a few seeded bytes per file, holes elsewhere), so 20+ GB take
no disk. Two of them hold the same tensor data under different metadata (one duplicate pair).
The throughput file is dense (random bytes after a real kohya SDXL header); both hashers read it
from the page cache (each run twice, best time kept). The library hashes sha256, addnet
(AutoV3) and the legacy window in one read: two sha256 over the data where sha256sum does one.

    python bench/bench_library.py [--dir DIR] [--gib 1.5] [--no-hash-all]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from loralab.files import hashes  # noqa: E402
from loralab.files.safetensors import DTYPE_SIZES, DTYPES  # noqa: E402
from loralab.library import Library  # noqa: E402
from loralab_testkit import fixture, scaled_shapes  # noqa: E402

#: (fixture, ranks cycled, files)
MIX = (("kohya_sdxl_lora", (8, 16, 32), 70), ("kohya_flux_lora", (4, 8, 16), 50), ("aitoolkit_flux_lora", (16,), 20),
       ("kohya_sd15_lora", (32, 64, 128), 29), ("lycoris_sd15_loha", (16,), 10),
       ("diffusers_sdxl_dreambooth_lora", (16,), 10), ("musubi_wan21_t2v_14b_lora", (32,), 10))


def write_layout(path: str, name: str, rank: int, seed: int, *, dense_bytes: int = 0, title: str | None = None) -> int:
    """A file with fixture ``name``'s keys at ``rank``: real header and alphas, ``seed`` in the first
    tensor's first bytes, holes elsewhere (or ``dense_bytes`` of random data, padded to the layout's
    size at least). Returns its size."""
    d = fixture("loras", name)
    shapes = scaled_shapes(name, rank, at_most=False)
    metadata = dict(d.get("metadata", {}))
    metadata["ss_output_name"] = title or os.path.splitext(os.path.basename(path))[0]
    if "ss_network_dim" in metadata:
        metadata["ss_network_dim"], metadata["ss_network_alpha"] = str(rank), f"{rank / 2:.1f}"
    header: dict = {"__metadata__": metadata}
    offset = 0
    alphas = []
    seeded = None  # where the seed goes: the first tensor that is no alpha
    sizes = {k: DTYPE_SIZES[d["tensors"][k]["dtype"]][0] for k in shapes}
    for key, shape in shapes.items():
        n = sizes[key]
        for dim in shape:
            n *= dim
        header[key] = {"dtype": d["tensors"][key]["dtype"], "shape": list(shape), "data_offsets": [offset, offset + n]}
        if key.endswith(".alpha"):
            alphas.append((offset, d["tensors"][key]["dtype"]))
        elif seeded is None and n >= 8:
            seeded = offset
        offset += n
    if dense_bytes > offset:  # a bigger file: one more tensor of the needed size (a dense LoRA module's diff)
        extra = dense_bytes - offset
        header["lora_unet_bench_filler.diff"] = {"dtype": "U8", "shape": [extra], "data_offsets": [offset, offset + extra]}
        offset += extra
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    start = 8 + len(raw)
    import torch
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.seek(start + (seeded or 0))
        f.write(seed.to_bytes(8, "little"))
        for off, dtype in alphas:
            f.seek(start + off)
            f.write(torch.tensor([rank / 2]).to(DTYPES[dtype][1]).view(torch.uint8).numpy().tobytes())
        if dense_bytes:
            f.seek(start)
            left = offset
            while left:
                block = os.urandom(min(left, 64 << 20))
                f.write(block)
                left -= len(block)
        f.truncate(start + offset)
    return start + offset


def build(folder: str) -> tuple[int, int]:
    """The 200 files (one duplicate pair); returns (files, bytes)."""
    os.makedirs(folder, exist_ok=True)
    total = i = 0
    for name, ranks, count in MIX:
        for j in range(count):
            sub = os.path.join(folder, name.split("_")[0])
            os.makedirs(sub, exist_ok=True)
            total += write_layout(os.path.join(sub, f"{name}_{j:03d}.safetensors"), name, ranks[j % len(ranks)], i)
            i += 1
    # the 200th: the first file's tensor data under another title (a duplicate by AutoV3, not by sha256)
    total += write_layout(os.path.join(folder, "renamed_copy.safetensors"), MIX[0][0], MIX[0][1][0], 0, title="renamed")
    return i + 1, total


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def throughput(folder: str, gib: float) -> None:
    path = os.path.join(folder, "throughput.safetensors")
    size = write_layout(path, "kohya_sdxl_lora", 128, 7, dense_bytes=int(gib * 2**30))
    ours, theirs = [], []
    for _ in range(2):
        theirs.append(timed(lambda: subprocess.run(["sha256sum", path], check=True, capture_output=True))[1])
        hashes._CACHE.clear()
        ours.append(timed(lambda: hashes.file_hashes(path))[1])
    mb = size / 1e6
    print(f"throughput on one {size / 2**30:.2f} GiB file (page cache, best of 2): library hashing "
          f"(sha256 + addnet + legacy) {mb / min(ours):.0f} MB/s, sha256sum {mb / min(theirs):.0f} MB/s: "
          f"{min(theirs) / min(ours):.2f}x sha256sum (target >= 0.9x)")
    os.remove(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", help="where to write the files (kept); default: a temp folder, removed")
    ap.add_argument("--gib", type=float, default=1.5, help="size of the throughput file")
    ap.add_argument("--no-hash-all", action="store_true", help="skip hashing the 200 files (20+ GB of holes)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = args.dir or tmp
        loras = os.path.join(base, "loras")
        if os.path.isdir(loras):
            shutil.rmtree(loras)
        (files, total), t = timed(lambda: build(loras))
        print(f"wrote {files} sparse LoRA files, {total / 2**30:.1f} GiB in all, in {t:.1f} s")
        db = os.path.join(base, "library.sqlite")
        if os.path.exists(db):
            os.remove(db)
        lib = Library(db)
        cold, t = timed(lambda: lib.scan([loras]))
        print(f"cold scan: {cold.files} files, {cold.added} headers read in {t:.2f} s ({t / cold.files * 1000:.1f} ms each)")
        if not args.no_hash_all:
            hashed, t = timed(lib.hash_pending)
            print(f"hashing every file: {hashed} files, {total / 1e9:.1f} GB in {t:.1f} s ({total / 1e6 / t:.0f} MB/s, "
                  "holes read as zeros)")
        warm = []
        for _ in range(5):
            result, t = timed(lambda: lib.scan([loras]))
            assert result.unchanged == files and result.added == result.changed == 0
            warm.append(t)
        print(f"warm scan, nothing changed: {min(warm) * 1000:.1f} ms best, {max(warm) * 1000:.1f} ms worst of 5 "
              f"(target <= 1000 ms); {files} files, none read")
        write_layout(os.path.join(loras, "new.safetensors"), "kohya_sdxl_lora", 16, 999)
        result, t = timed(lambda: lib.scan([loras]))
        before = len(lib.pending())
        hashed, th = timed(lib.hash_pending)
        again = lib.scan([loras])
        print(f"one new file: scan {t * 1000:.1f} ms ({result.added} header read, {result.unchanged} unchanged), "
              f"{hashed} of {before} pending hashed in {th:.2f} s; next scan reads {again.added + again.changed}, "
              f"hashes {lib.hash_pending()}")
        entries, t = timed(lib.entries)
        flagged = sum(1 for e in entries if any(f["code"] == "duplicate" for f in e.flags))
        print(f"listing {len(entries)} entries with flags and imports: {t * 1000:.1f} ms; {flagged} flagged as "
              "duplicates (the pair)")
        _, t = timed(lambda: lib.entries("flux", "ohwx"))
        print(f"filtered listing (flux, 'ohwx'): {t * 1000:.1f} ms")
        lib.close()
        throughput(base, args.gib)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()

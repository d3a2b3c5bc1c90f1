"""Worst cases of the safetensors header parser: how long a hostile header at the size cap takes
to refuse (or to accept), and how much memory it costs, measured in a fresh process each.

    python bench/bench_hostile_headers.py [--mib 32]

A header is read in full only when its declared length is at most MAX_HEADER_BYTES (32 MiB);
larger ones are refused from the 8-byte length alone. Within the cap the cost is Python's JSON
parser: these figures are the bound a crafted file can impose on one request.
"""
from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

CHILD = """
import sys, time
sys.path.insert(0, {repo!r})
from loralab.errors import LoRALabError
from loralab.files.safetensors import read_header
from loralab.ops.inspect import summarize

def kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to what is resident now
before = kib("VmRSS")
t = time.perf_counter()
try:
    {call}({path!r})
    outcome = "accepted"
except LoRALabError as e:
    outcome = "refused: " + e.problem[:40]
took = time.perf_counter() - t
print(f"{{took:.2f}}\\t{{(kib('VmHWM') - before) / 1024:.0f}}\\t{{outcome}}")
"""


def _containers(size: int, token: bytes) -> bytes:
    """``{"a":[T,T,...]}`` filling ``size`` bytes: the most Python objects per header byte."""
    body = b'{"a":[' + b",".join([token] * ((size - 8) // (len(token) + 1))) + b"]}"
    return body + b" " * (size - len(body))


def _tensors(size: int) -> tuple[bytes, bytes]:
    """Valid one-byte tensors filling ``size`` bytes of header: the most entries a header can hold."""
    entries, n, used = [], 0, 2
    while True:
        e = f'"t{n}":{{"dtype":"U8","shape":[1],"data_offsets":[{n},{n + 1}]}}'
        if used + len(e) + 1 > size:
            break
        entries.append(e)
        used += len(e) + 1
        n += 1
    body = ("{" + ",".join(entries) + "}").encode()
    return body + b" " * (size - len(body)), b"\0" * n


def _lora_tensors(size: int) -> tuple[bytes, bytes]:
    """Valid kohya-named LoRA pairs filling ``size`` bytes: the most entries detection must map."""
    entries, n, used, off = [], 0, 2, 0
    while True:
        e = ",".join(f'"lora_unet_input_blocks_{n}_1_proj_in.{role}":{{"dtype":"U8","shape":[1,1],'
                     f'"data_offsets":[{off + i},{off + i + 1}]}}'
                     for i, role in enumerate(("lora_up.weight", "lora_down.weight")))
        if used + len(e) + 1 > size:
            break
        off += 2
        entries.append(e)
        used += len(e) + 1
        n += 1
    body = ("{" + ",".join(entries) + "}").encode()
    return body + b" " * (size - len(body)), b"\0" * off


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=float, default=32, help="header size (MiB); the cap is 32")
    args = ap.parse_args()
    size = int(args.mib * 2**20)
    cases = {
        "empty lists [] (refused after parsing)": (_containers(size, b"[]"), b""),
        "empty objects {} (refused after parsing)": (_containers(size, b"{}"), b""),
        "one-byte tensors (valid)": _tensors(size),
        "kohya LoRA pairs (valid)": _lora_tensors(size),
        "declared 2^40 bytes (refused from the length)": (b"{}", b""),
    }
    print(f"header {args.mib:g} MiB; python {sys.version.split()[0]}")
    print("case\tcall\tseconds\tpeak memory added (MiB)\toutcome")
    with tempfile.TemporaryDirectory() as d:
        for label, (header, data) in cases.items():
            path = os.path.join(d, "h.safetensors")
            length = 2**40 if "2^40" in label else len(header)
            with open(path, "wb") as f:
                f.write(struct.pack("<Q", length) + header + data)
            calls = ["read_header"] + (["summarize"] if "valid" in label else [])
            for call in calls:
                code = CHILD.format(repo=REPO, call=call, path=path)
                r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
                print(f"{label}\t{call}\t{r.stdout.strip()}")


if __name__ == "__main__":
    main()

"""Fuzzing the safetensors header parser with a bounded budget (a few seconds): only LoRALabError
subclasses may escape ``read_header``, and whatever it accepts is readable, tensor by tensor, and
means what the reference library says it means."""
from __future__ import annotations

import json
import math
import os
import struct
import tempfile

import safetensors.torch
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from loralab.errors import LoRALabError
from loralab.files.safetensors import DTYPES, SafetensorsFile, read_header, save_tensors

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_DIR = tempfile.mkdtemp(prefix="loralab-fuzz-")


def _check(data: bytes) -> dict | None:
    """Parse ``data`` as a file: None when refused (with a LoRALabError), else tensor name -> tensor."""
    path = os.path.join(_DIR, "f.safetensors")
    with open(path, "wb") as f:
        f.write(data)
    try:
        header = read_header(path)
    except LoRALabError as e:
        assert path in str(e)
        return None
    # accepted: the tensors tile the data section exactly, and each one reads back
    cursor = header.data_start
    for info in sorted(header.tensors.values(), key=lambda t: (t.start, t.end)):
        assert info.start == cursor and info.nbytes == math.prod(info.shape) * DTYPES[info.dtype][0]
        cursor = info.end
    assert cursor == header.file_size == len(data)
    with SafetensorsFile(path) as f:
        return {k: f.get(k) for k in f.keys()}


@FUZZ
@given(st.binary(max_size=512))
def test_any_bytes(data):
    _check(data)


@FUZZ
@given(st.binary(max_size=512), st.binary(max_size=64), st.integers(-8, 8))
def test_any_header_bytes_with_a_plausible_length(header, data, skew):
    n = max(0, len(header) + skew)
    _check(struct.pack("<Q", n) + header + data)


# --- near-valid headers ---------------------------------------------------------------------------

ints = st.one_of(st.integers(0, 8), st.integers(-3, 2**64), st.sampled_from([2**48 - 1, 2**48, 2**63]))
junk = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True), st.text(max_size=3), st.just([]), st.just({}))
def mostly(valid: st.SearchStrategy, invalid: st.SearchStrategy) -> st.SearchStrategy:
    """``valid`` nine times in ten: many files get through and are compared with the reference."""
    return st.sampled_from([True] * 9 + [False]).flatmap(lambda ok: valid if ok else invalid)


dtypes = mostly(st.sampled_from(sorted(DTYPES)), st.one_of(st.sampled_from(["F128", "f32", "", "BOOL ", "Q4_K"]), junk))
shapes = mostly(st.lists(st.integers(0, 5), max_size=4), st.one_of(st.lists(ints, max_size=9), junk))


@st.composite
def entries(draw, cursor: list[int]):
    dtype = draw(dtypes)
    shape = draw(shapes)
    size = DTYPES[dtype][0] if isinstance(dtype, str) and dtype in DTYPES else 1
    numel = math.prod(shape) if isinstance(shape, list) and all(isinstance(d, int) for d in shape) else 1
    start = cursor[0]
    honest = [start, start + numel * size if 0 <= numel < 4096 else start]
    offsets = draw(mostly(st.just(honest), st.one_of(st.lists(ints, min_size=2, max_size=2),
                                                      st.lists(ints, max_size=3), junk)))
    if offsets == honest:
        cursor[0] = honest[1]
    entry = {"dtype": dtype, "shape": shape, "data_offsets": offsets}
    if draw(st.integers(0, 9)) == 0:
        entry.pop(draw(st.sampled_from(sorted(entry))))
    return entry


@st.composite
def near_valid_files(draw) -> bytes:
    cursor = [0]
    names = draw(st.lists(st.text(max_size=6), max_size=4, unique=True))
    header: dict = {name: draw(entries(cursor)) for name in names}
    if draw(st.booleans()):
        header["__metadata__"] = draw(mostly(st.dictionaries(st.text(max_size=4), st.text(max_size=8), max_size=3),
                                             st.one_of(st.dictionaries(st.text(max_size=4), junk, max_size=2), junk)))
    raw = json.dumps(header).encode()
    mutation = draw(st.sampled_from(["none"] * 6 + ["duplicate", "truncate", "flip", "pad"]))
    if mutation == "duplicate" and names:
        first = json.dumps(names[0])
        raw = raw[:-1] + b"," + first.encode() + b":" + json.dumps(header[names[0]]).encode() + b"}"
    elif mutation == "truncate" and raw:
        raw = raw[:draw(st.integers(0, len(raw) - 1))]
    elif mutation == "flip" and raw:
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([raw[i] ^ (1 << draw(st.integers(0, 7)))]) + raw[i + 1:]
    elif mutation == "pad":
        raw += b" " * draw(st.integers(0, 9))
    data = bytes(draw(st.integers(0, 255)) for _ in range(min(cursor[0], 64)))
    data += b"\0" * (cursor[0] - len(data)) + draw(st.sampled_from([b""] * 4 + [b"\0", b"\0" * 8]))
    return struct.pack("<Q", len(raw)) + raw + data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(near_valid_files())
def test_near_valid_headers(data):
    got = _check(data)
    if got is None:
        return
    # what we accept, the reference library accepts and reads the same
    path = os.path.join(_DIR, "ref.safetensors")
    with open(path, "wb") as f:
        f.write(data)
    ref = safetensors.torch.load_file(path)
    assert ref.keys() == got.keys()
    for k, t in got.items():
        assert t.dtype == ref[k].dtype and t.shape == ref[k].shape
        assert torch.equal(_raw_bytes(t), _raw_bytes(ref[k]))


def _raw_bytes(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).view(torch.uint8) if t.numel() else torch.zeros(0, dtype=torch.uint8)


# --- mutations of a real file ---------------------------------------------------------------------

def _real_file() -> bytes:
    path = os.path.join(_DIR, "real.safetensors")
    if not os.path.exists(path):
        save_tensors(path, {"lora_unet_a.lora_up.weight": torch.randn(4, 2).half(),
                            "lora_unet_a.lora_down.weight": torch.randn(2, 3),
                            "lora_unet_a.alpha": torch.tensor(2.0)}, {"ss_network_dim": "2"})
    with open(path, "rb") as f:
        return f.read()


@FUZZ
@given(st.data())
def test_mutated_real_file(data):
    raw = bytearray(_real_file())
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        i = data.draw(st.integers(0, len(raw)))
        if op == "flip" and i < len(raw):
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del raw[i:]
        elif op == "insert":
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del raw[i:i + data.draw(st.integers(1, 4))]
    assume(bytes(raw) != _real_file())
    _check(bytes(raw))

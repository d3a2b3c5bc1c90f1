"""The safetensors reader/writer: round trips with the reference library, and one clear error
type naming the file for each malformed input."""
import json
import os
import pickle
import struct
import zipfile

import pytest
import safetensors.torch
import torch

from loralab.errors import FileExistsRefusedError, LoRALabError, PickleRefusedError, SafetensorsError
from loralab.files.safetensors import (MAX_HEADER_BYTES, SafetensorsWriter, load_tensors, open_safetensors,
                                    read_header, save_tensors)

TENSORS = {
    "a": torch.randn(3, 4),
    "b": torch.randn(5).half(),
    "c": torch.tensor(2.0, dtype=torch.bfloat16),
    "empty": torch.zeros(0, 3),
    "i": torch.arange(3),
}


def raw_file(path, header: dict, data: bytes = b"", header_len: int | None = None) -> str:
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw) if header_len is None else header_len))
        f.write(raw)
        f.write(data)
    return path


def test_round_trip_with_reference_library(tmp):
    ours = save_tensors(os.path.join(tmp, "ours.safetensors"), TENSORS, {"k": "v"})
    ref = safetensors.torch.load_file(ours)
    assert all(torch.equal(ref[k], TENSORS[k]) for k in TENSORS)
    theirs = os.path.join(tmp, "theirs.safetensors")
    safetensors.torch.save_file(TENSORS, theirs, metadata={"q": "r"})
    got = load_tensors(theirs)
    assert all(torch.equal(got[k], TENSORS[k]) for k in TENSORS)
    assert read_header(theirs).metadata == {"q": "r"}
    with open_safetensors(ours) as f:
        assert f.scalar("c") == 2.0
        assert f.metadata == {"k": "v"}


def test_writer_keeps_tensors_aligned(tmp):
    path = save_tensors(os.path.join(tmp, "x.safetensors"), {"h": torch.ones(3).half(), "d": torch.ones(3).double(),
                                                               "u": torch.ones(5, dtype=torch.uint8)})
    h = read_header(path)
    for info in h.tensors.values():
        itemsize = {"F64": 8, "F16": 2, "U8": 1}[info.dtype]
        assert (info.start - h.data_start) % itemsize == 0
    assert h.data_start % 8 == 0


def test_never_overwrites_unless_asked(tmp):
    path = os.path.join(tmp, "x.safetensors")
    save_tensors(path, {"a": torch.ones(2)})
    with pytest.raises(FileExistsRefusedError) as e:
        save_tensors(path, {"a": torch.zeros(2)})
    assert path in str(e.value)
    assert torch.equal(load_tensors(path)["a"], torch.ones(2))
    save_tensors(path, {"a": torch.zeros(2)}, overwrite=True)
    assert torch.equal(load_tensors(path)["a"], torch.zeros(2))
    assert sorted(os.listdir(tmp)) == ["x.safetensors"]


def test_failed_write_leaves_nothing(tmp):
    path = os.path.join(tmp, "x.safetensors")
    with pytest.raises(RuntimeError):
        with SafetensorsWriter(path) as w:
            w.add("a", torch.ones(4))
            raise RuntimeError("boom")
    assert os.listdir(tmp) == []


def _expect(path, exc=SafetensorsError, match=None):
    with pytest.raises(exc) as e:
        read_header(path)
    assert path in str(e.value)
    if match:
        assert match in str(e.value)


def test_empty_file(tmp):
    p = os.path.join(tmp, "e.safetensors")
    open(p, "wb").close()
    _expect(p, match="too short")


def test_truncated_in_data(tmp):
    p = save_tensors(os.path.join(tmp, "t.safetensors"), {"a": torch.randn(100)})
    with open(p, "r+b") as f:
        f.truncate(os.path.getsize(p) - 10)
    _expect(p, match="out of range")


def test_truncated_in_header(tmp):
    p = save_tensors(os.path.join(tmp, "t.safetensors"), {"a": torch.randn(100)})
    with open(p, "r+b") as f:
        f.truncate(20)
    _expect(p, match="larger than the file")


def test_header_length_larger_than_file(tmp):
    _expect(raw_file(os.path.join(tmp, "h.safetensors"), {}, header_len=1000), match="larger than the file")


def test_oversized_header(tmp):
    _expect(raw_file(os.path.join(tmp, "h.safetensors"), {}, header_len=MAX_HEADER_BYTES + 1), match="limit")


def test_header_not_json(tmp):
    p = os.path.join(tmp, "j.safetensors")
    with open(p, "wb") as f:
        f.write(struct.pack("<Q", 5) + b"{abc}")
    _expect(p, match="not valid JSON")


def test_header_json_not_an_object(tmp):
    p = os.path.join(tmp, "j.safetensors")
    with open(p, "wb") as f:
        f.write(struct.pack("<Q", 2) + b"[]")
    _expect(p, match="does not start with")


def test_offsets_out_of_range(tmp):
    h = {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    _expect(raw_file(os.path.join(tmp, "o.safetensors"), h, b"\0" * 8), match="out of range")


def test_overlapping_offsets(tmp):
    h = {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
         "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}
    _expect(raw_file(os.path.join(tmp, "o.safetensors"), h, b"\0" * 16), match="overlaps")


def test_shape_size_mismatch(tmp):
    h = {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}
    _expect(raw_file(os.path.join(tmp, "s.safetensors"), h, b"\0" * 16), match="needs 12 bytes")


def test_unknown_dtype(tmp):
    h = {"a": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}
    _expect(raw_file(os.path.join(tmp, "d.safetensors"), h, b"\0" * 16), match="unknown dtype")


def test_duplicate_keys(tmp):
    p = os.path.join(tmp, "dup.safetensors")
    raw = b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'
    with open(p, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"\0")
    _expect(p, match="duplicate")


def test_pickle_renamed_safetensors_is_refused_not_unpickled(tmp):
    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + os.path.join(tmp, "PWNED"),))
    p = os.path.join(tmp, "evil.safetensors")
    with open(p, "wb") as f:
        pickle.dump({"x": Boom()}, f, protocol=2)
    _expect(p, PickleRefusedError, match="not unpickled")
    assert not os.path.exists(os.path.join(tmp, "PWNED"))


@pytest.mark.parametrize("header_bytes", [640, 896, 1152, 1408])
def test_a_header_length_that_starts_like_a_pickle_reads(tmp, header_bytes):
    """Lengths 0x280, 0x380, 0x480, 0x580 begin with a pickle's protocol bytes (0x80, 2..5)."""
    p = os.path.join(tmp, "small.safetensors")
    raw = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    with open(p, "wb") as f:
        f.write(struct.pack("<Q", header_bytes) + raw.ljust(header_bytes) + struct.pack("<2f", 1.5, -2.0))
    assert load_tensors(p)["a"].tolist() == [1.5, -2.0]


def test_zip_checkpoint_renamed_is_refused(tmp):
    p = os.path.join(tmp, "model.safetensors")
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    _expect(p, PickleRefusedError, match="zip")


def test_ckpt_extension_with_garbage_says_convert(tmp):
    p = os.path.join(tmp, "model.ckpt")
    with open(p, "wb") as f:
        f.write(struct.pack("<Q", 4) + b"abcd")
    _expect(p, PickleRefusedError, match="convert")


def test_metadata_values_must_be_strings(tmp):
    h = {"__metadata__": {"n": 3}, "a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}
    _expect(raw_file(os.path.join(tmp, "m.safetensors"), h, b"\0"), match="not a string")


def test_trailing_bytes(tmp):
    h = {"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}
    _expect(raw_file(os.path.join(tmp, "t.safetensors"), h, b"\0\0"), match="trailing")


def test_file_truncated_after_open_is_an_error_not_garbage(tmp):
    p = save_tensors(os.path.join(tmp, "t.safetensors"), {"a": torch.randn(1000)})
    f = open_safetensors(p)
    with open(p, "r+b") as fh:
        fh.truncate(200)
    with pytest.raises(SafetensorsError) as e:
        f.get("a")
    assert "truncated" in str(e.value)
    f.close()


def test_name_with_nul_is_an_error_not_a_value_error(tmp):
    with pytest.raises(LoRALabError) as e:
        read_header(os.path.join(tmp, "a\x00b.safetensors"))
    assert "NUL" in str(e.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_is_refused_without_blocking(tmp):
    p = os.path.join(tmp, "pipe.safetensors")
    os.mkfifo(p)
    with pytest.raises(LoRALabError) as e:
        read_header(p)  # opening a FIFO for reading without O_NONBLOCK would wait for a writer forever
    assert p in str(e.value) and "not a regular file" in str(e.value)


def test_folder_is_refused(tmp):
    with pytest.raises(LoRALabError) as e:
        read_header(tmp)
    assert "folder" in str(e.value)


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() == 0, reason="root reads every file")
def test_unreadable_file_is_an_error_not_an_os_error(tmp):
    p = save_tensors(os.path.join(tmp, "x.safetensors"), {"a": torch.ones(1)})
    os.chmod(p, 0)
    with pytest.raises(LoRALabError) as e:
        read_header(p)
    assert p in str(e.value) and "cannot read" in str(e.value)


def test_io_error_while_reading_tensor_data_names_file_and_key(tmp, monkeypatch):
    import loralab.files.safetensors as sio
    p = save_tensors(os.path.join(tmp, "x.safetensors"), {"a": torch.ones(4)})

    def eio(*_):
        raise OSError(5, "Input/output error")
    with open_safetensors(p) as f:
        monkeypatch.setattr(sio, "_pread_all", eio)
        with pytest.raises(SafetensorsError) as e:
            f.get("a")
    assert p in str(e.value) and "'a'" in str(e.value) and "Input/output error" in str(e.value)


def test_unpaired_surrogate_escape_is_refused_paired_is_fine(tmp):
    lone = {"__metadata__": {"t": "\ud800x"}, "a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}
    _expect(raw_file(os.path.join(tmp, "lone.safetensors"), lone, b"\0"), match="unpaired surrogate")
    pair = {"__metadata__": {"t": "\U0001F600"}, "a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}
    p = raw_file(os.path.join(tmp, "pair.safetensors"), pair, b"\0")  # json.dumps writes \\ud83d\\ude00
    assert read_header(p).metadata == {"t": "\U0001F600"}


def test_writer_refuses_text_that_is_not_unicode(tmp):
    with pytest.raises(LoRALabError):
        save_tensors(os.path.join(tmp, "m.safetensors"), {"a": torch.ones(1)}, {"k": "\udcff"})
    with pytest.raises(LoRALabError):
        save_tensors(os.path.join(tmp, "n.safetensors"), {"\ud800": torch.ones(1)})
    assert os.listdir(tmp) == []


def test_collector_pause_is_undone_whatever_happens(tmp):
    import gc
    bad = raw_file(os.path.join(tmp, "bad.safetensors"), {"a": 5})
    good = save_tensors(os.path.join(tmp, "good.safetensors"), {"a": torch.ones(1)})
    assert gc.isenabled()
    read_header(good)
    with pytest.raises(SafetensorsError):
        read_header(bad)
    assert gc.isenabled()
    gc.disable()
    try:
        read_header(good)
        assert not gc.isenabled()  # the caller's choice is kept
    finally:
        gc.enable()


def test_scalar_of_every_dtype(tmp):
    values = {"f64": torch.tensor(0.1, dtype=torch.float64), "f32": torch.tensor(0.1), "f16": torch.tensor(0.1).half(),
              "bf16": torch.tensor(0.3).bfloat16(), "inf16": torch.tensor(1e6).half(), "i64": torch.tensor(-7),
              "i32": torch.tensor(9, dtype=torch.int32), "u8": torch.tensor(200, dtype=torch.uint8),
              "bool": torch.tensor(True), "one": torch.tensor([[2.5]])}
    path = save_tensors(os.path.join(tmp, "s.safetensors"), values)
    with open_safetensors(path) as f:
        for k, t in values.items():
            assert f.scalar(k) == float(t.reshape(()).to(torch.float64)), k

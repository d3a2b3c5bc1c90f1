"""The library index: a scan reads a header only when the file is new or changed, every file is
hashed once, the facts and flags are those of the files, the filters keep what they say, and the
background worker scans and hashes without holding up the thread that serves requests."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import statistics
import struct
import sys
import threading
import time

import pytest
import torch

from loralab.errors import LoRALabError
from loralab.files import hashes as hashes_mod
from loralab.files.safetensors import read_header, save_tensors
from loralab.formats.writer import save_with_hashes
from loralab.library import Library, Worker, index as index_mod
from loralab.library.worker import NICE
from loralab.library.compat import compatible, fitting_archs, matches
from loralab.lora import Lora
from loralab_testkit import fixture_tensors, materialize

#: file name -> (fixture, seed)
FILES = {"style_xl.safetensors": ("kohya_sdxl_lora", 0), "char.safetensors": ("kohya_sd15_lora", 1),
         "sub/flux_char.safetensors": ("kohya_flux_lora", 2), "sub/wan_i2v.safetensors": ("diffusion_pipe_wan21_i2v_14b_lora", 3),
         "detail.safetensors": ("lycoris_sd15_loha", 4)}


@pytest.fixture
def loras(tmp):
    folder = os.path.join(tmp, "loras")
    for name, (fixture_name, seed) in FILES.items():
        os.makedirs(os.path.dirname(os.path.join(folder, name)), exist_ok=True)
        materialize(fixture_name, os.path.join(folder, name), rank=2, seed=seed)
    return folder


@pytest.fixture
def lib(tmp):
    with Library(os.path.join(tmp, "index", "library.sqlite")) as library:
        yield library


@pytest.fixture
def counted(monkeypatch):
    """Counts header reads (read_facts) and hashings (the one streamed read) per path."""
    reads, hashed = [], []
    real_facts, real_compute = index_mod.read_facts, hashes_mod._compute
    monkeypatch.setattr(index_mod, "read_facts", lambda p: reads.append(p) or real_facts(p))
    monkeypatch.setattr(hashes_mod, "_compute", lambda p, *a: hashed.append(p) or real_compute(p, *a))
    return reads, hashed


def _bump_mtime(path):
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_an_unchanged_file_is_never_read_or_hashed_again(loras, lib, counted):
    reads, hashed = counted
    first = lib.scan([loras])
    assert (first.files, first.added, first.unchanged) == (5, 5, 0) and len(reads) == 5
    assert lib.hash_pending() == 5 and len(hashed) == 5
    again = lib.scan([loras])
    assert (again.added, again.changed, again.unchanged, again.removed) == (0, 0, 5, 0)
    assert lib.hash_pending() == 0 and len(reads) == 5 and len(hashed) == 5
    # a rewritten file (same name, new content and mtime) is read and hashed once more; a new one once
    char = os.path.join(loras, "char.safetensors")
    save_tensors(char, fixture_tensors("kohya_sd15_lora", 2, seed=9), {}, overwrite=True)
    _bump_mtime(char)
    shutil.copy(os.path.join(loras, "detail.safetensors"), os.path.join(loras, "new.safetensors"))
    os.remove(os.path.join(loras, "sub", "flux_char.safetensors"))
    third = lib.scan([loras])
    assert (third.files, third.added, third.changed, third.unchanged, third.removed) == (5, 1, 1, 3, 1)
    assert sorted(os.path.basename(p) for p in reads[5:]) == ["char.safetensors", "new.safetensors"]
    assert lib.hash_pending() == 2 and sorted(os.path.basename(p) for p in hashed[5:]) == ["char.safetensors",
                                                                                         "new.safetensors"]
    assert lib.scan([loras]).unchanged == 5 and lib.hash_pending() == 0 and len(hashed) == 7


def test_the_index_outlives_the_process_that_built_it(loras, tmp, counted):
    reads, hashed = counted
    db = os.path.join(tmp, "lib.sqlite")
    with Library(db) as lib:
        lib.scan([loras])
        lib.hash_pending()
    hashes_mod._CACHE.clear()  # a new process: nothing in memory
    with Library(db) as lib:
        assert lib.scan([loras]).unchanged == 5 and lib.hash_pending() == 0
        assert all(e.hashes for e in lib.entries())
    assert len(reads) == 5 and len(hashed) == 5


def test_hashes_are_the_files(loras, lib):
    lib.scan([loras])
    lib.hash_pending()
    for e in lib.entries():
        raw = open(e.path, "rb").read()
        (n,) = struct.unpack("<Q", raw[:8])
        sha, addnet = hashlib.sha256(raw).hexdigest(), hashlib.sha256(raw[8 + n:]).hexdigest()
        assert e.hashes == {"sha256": sha, "autov2": sha[:10], "addnet": addnet, "autov3": addnet[:12],
                            "legacy": hashlib.sha256(raw[0x100000:0x110000]).hexdigest()[:8]}


def test_facts_come_from_the_header(loras, lib):
    lib.scan([loras])
    by_name = {e.name: e for e in lib.entries()}
    assert sorted(by_name) == sorted(n.replace("/", os.sep) for n in FILES)
    xl = by_name["style_xl.safetensors"].facts
    assert (xl["arch"], xl["fits"], xl["format"], xl["rank"]) == ("sdxl", ["sdxl"], "kohya", "2 ×986")
    assert xl["triggers"] == ["ohwx woman"] and xl["verdict"].startswith("LoRA for SDXL")
    assert by_name["detail.safetensors"].facts["algorithms"] == {"LoHa": 354}
    wan = by_name[os.path.join("sub", "wan_i2v.safetensors")].facts
    assert wan["arch"] == "wan21_i2v_14b" and wan["fits"] == ["wan21_t2v_14b", "wan21_i2v_14b"]
    with Lora.open(by_name["char.safetensors"].path) as lora:
        assert by_name["char.safetensors"].facts["fits"] == fitting_archs(lora.detection) == ["sd1"]
    assert by_name["char.safetensors"].facts["embedded"]["sshs_model_hash"] == read_header(
        by_name["char.safetensors"].path).metadata["sshs_model_hash"]


def test_files_that_are_no_lora_or_broken_are_listed_and_not_hashed(loras, lib, counted):
    _, hashed = counted
    save_tensors(os.path.join(loras, "ckpt.safetensors"),
                 {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3),
                  "first_stage_model.decoder.conv_in.weight": torch.zeros(4, 4, 3, 3)})
    with open(os.path.join(loras, "broken.safetensors"), "wb") as f:
        f.write(b"\xff" * 64)
    lib.scan([loras])
    by_name = {e.name: e for e in lib.entries()}
    assert by_name["ckpt.safetensors"].facts["not_lora"] == "checkpoint"
    assert by_name["ckpt.safetensors"].facts["fits"] == []
    assert "header" in by_name["broken.safetensors"].facts["error"]
    assert lib.hash_pending() == 5 and not {os.path.basename(p) for p in hashed} & {"ckpt.safetensors",
                                                                                   "broken.safetensors"}
    assert by_name["ckpt.safetensors"].hashes is None and by_name["broken.safetensors"].hashes is None


def test_duplicates_are_files_with_the_same_tensor_data(loras, lib):
    src = os.path.join(loras, "char.safetensors")
    header = read_header(src)
    # the same tensors under other metadata: another sha256 (AutoV2), the same AutoV3
    from loralab.files.safetensors import load_tensors
    save_tensors(os.path.join(loras, "char renamed.safetensors"), load_tensors(src), {"ss_output_name": "renamed"})
    lib.scan([loras])
    lib.hash_pending()
    by_name = {e.name: e for e in lib.entries()}
    a, b = by_name["char.safetensors"], by_name["char renamed.safetensors"]
    assert a.sha256 != b.sha256 and a.addnet == b.addnet
    assert a.duplicates == [b.path] and b.duplicates == [a.path]
    assert [f["code"] for f in b.flags] == ["duplicate"] and a.addnet[:12] in b.flags[0]["message"]
    assert [[e.name for e in g] for g in lib.duplicates()] == [["char renamed.safetensors", "char.safetensors"]]
    assert not by_name["detail.safetensors"].duplicates and header.metadata


def test_wrong_embedded_hashes_are_flagged_and_saved_files_carry_right_ones(tmp, lib):
    folder = os.path.join(tmp, "saved")
    tensors = fixture_tensors("kohya_sd15_lora", 2, seed=5)
    save_with_hashes(os.path.join(folder, "ours.safetensors"), tensors, {"ss_output_name": "ours"})
    right = read_header(os.path.join(folder, "ours.safetensors")).metadata
    changed = {k: v * 2 for k, v in tensors.items()}
    save_tensors(os.path.join(folder, "stale.safetensors"), changed, {"sshs_model_hash": right["sshs_model_hash"]})
    save_tensors(os.path.join(folder, "spec.safetensors"), changed,
                 {"modelspec.hash_sha256": right["modelspec.hash_sha256"].upper()})
    save_tensors(os.path.join(folder, "lycoris style.safetensors"), tensors,
                 {"sshs_model_hash": "0x" + right["sshs_model_hash"]})  # LyCORIS writes a 0x prefix
    lib.scan([folder])
    before = {e.name: e.flags for e in lib.entries()}
    assert all(f == [] for f in before.values())  # nothing is compared before the file is hashed
    lib.hash_pending()
    flags = {e.name: [f["code"] for f in e.flags] for e in lib.entries()}
    assert flags["ours.safetensors"] == ["duplicate"] and flags["lycoris style.safetensors"] == ["duplicate"]
    assert flags["stale.safetensors"] == flags["spec.safetensors"] == ["duplicate", "wrong_hash"]  # same data, both
    entries = {e.name: e for e in lib.entries()}
    assert entries["stale.safetensors"].wrong_hashes == ["sshs_model_hash"]
    assert entries["spec.safetensors"].wrong_hashes == ["modelspec.hash_sha256"]
    assert entries["ours.safetensors"].wrong_hashes == [] and entries["lycoris style.safetensors"].wrong_hashes == []
    assert "sshs_model_hash in the metadata names other tensor data" in entries["stale.safetensors"].flags[-1]["message"]


def test_filters_keep_compatible_files_and_search_words(loras, lib):
    lib.scan([loras])
    names = lambda **kw: [e.name for e in lib.entries(**kw)]  # noqa: E731
    assert names(model_arch="sdxl") == ["style_xl.safetensors"]
    assert names(model_arch="sd1") == ["char.safetensors", "detail.safetensors"]
    assert names(model_arch="wan21_t2v_14b") == [os.path.join("sub", "wan_i2v.safetensors")]  # I2V on T2V: applied
    assert names(model_arch="sd2") == []
    assert len(names()) == 5
    assert names(query="OHWX") == names(query="woman ohwx") == ["char.safetensors", "detail.safetensors",
                                                                "style_xl.safetensors",
                                                                os.path.join("sub", "flux_char.safetensors")]
    assert names(query="ohwx", model_arch="flux") == [os.path.join("sub", "flux_char.safetensors")]
    assert names(query="detail") == ["detail.safetensors"]  # the file name
    assert names(query="ohwx nobody") == []


def test_pure_compat_and_search():
    assert compatible(["sdxl"], "sdxl") and compatible([], None) and not compatible(["sd1"], "sdxl")
    assert not compatible([], "flux")
    assert matches(["My LoRA", "Ohwx  Woman"], "ohwx woman") and matches(["x"], "  ") and matches([], None)
    assert not matches(["ohwx"], "ohwx man") and not matches([None, ""], "a")


def test_the_index_holds_the_folders_scanned_last(loras, lib, tmp):
    other = os.path.join(tmp, "other")
    materialize("kohya_sd15_lora", os.path.join(other, "o.safetensors"), rank=2)
    lib.scan([loras, other])
    assert len(lib.entries()) == 6
    assert {e.root for e in lib.entries()} == {loras, other}
    result = lib.scan([other])
    assert result.removed == 5 and [e.name for e in lib.entries()] == ["o.safetensors"]


def test_new_facts_versions_read_headers_again_and_keep_hashes(loras, lib, counted, monkeypatch):
    reads, hashed = counted
    lib.scan([loras])
    lib.hash_pending()
    monkeypatch.setattr(index_mod, "FACTS_VERSION", index_mod.FACTS_VERSION + 1)
    result = lib.scan([loras])
    assert result.unchanged == 0 and len(reads) == 10
    assert lib.hash_pending() == 0 and len(hashed) == 5 and all(e.hashes for e in lib.entries())


def test_a_file_that_changes_while_hashed_is_left_for_the_next_scan(loras, lib, monkeypatch):
    lib.scan([loras])
    target = os.path.join(loras, "char.safetensors")
    real = hashes_mod._compute

    def touching(path, *a):
        out = real(path, *a)
        if os.path.basename(path) == "char.safetensors":
            _bump_mtime(target)
        return out
    monkeypatch.setattr(hashes_mod, "_compute", touching)
    assert lib.hash_pending() == 4
    assert {e.name: e.hashes is None for e in lib.entries()}["char.safetensors"]
    monkeypatch.setattr(hashes_mod, "_compute", real)
    assert lib.scan([loras]).changed == 1 and lib.hash_pending() == 1


def test_an_unreadable_index_names_its_file(tmp):
    db = os.path.join(tmp, "bad.sqlite")
    with open(db, "wb") as f:
        f.write(b"this is not a database" * 100)
    with pytest.raises(LoRALabError) as e:
        Library(db)
    assert e.value.path == db and "delete the file" in e.value.hint


def test_an_index_of_another_layout_is_rebuilt(loras, tmp):
    db = os.path.join(tmp, "old.sqlite")
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE files (path TEXT)")
    con.execute("PRAGMA user_version=99")
    con.commit()
    con.close()
    with Library(db) as lib:
        assert lib.scan([loras]).added == 5


def test_progress_of_hashing_counts_files_and_bytes(loras, lib, monkeypatch):
    monkeypatch.setattr(hashes_mod, "CHUNK", 1 << 16)
    lib.scan([loras])
    calls = []
    lib.hash_pending(lambda *a: calls.append(a))
    total = sum(e.size for e in lib.entries())
    assert calls[-1] == (5, 5, total, total, None)
    bytes_seen = [c[2] for c in calls]
    assert bytes_seen == sorted(bytes_seen) and len(calls) > 10  # chunk by chunk, never backwards


def _sparse(path, size, seed):
    """A LoRA-looking file of ``size`` bytes that is mostly a hole (a few real bytes per seed)."""
    def header(n):
        raw = json.dumps({"x.lora_up.weight": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
        return raw + b" " * (-len(raw) % 8)
    raw = header(size)
    raw = header(size - 8 - len(raw))
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + bytes([seed + 1]) * 8)
        f.truncate(size)


def test_the_worker_scans_and_hashes_in_the_background(loras, lib):
    for i in range(3):
        _sparse(os.path.join(loras, f"big{i}.safetensors"), 96 << 20, i)
    nice_seen = []

    def folders():
        nice_seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return [loras]
    worker = Worker(lib, folders)
    gaps = []
    try:
        worker.start()
        seen_hashing = False
        last = time.perf_counter()
        while not worker.wait_idle(0.002):  # this thread keeps its pace while the worker hashes
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
            seen_hashing |= worker.status()["state"] == "hashing"
        status = worker.status()
    finally:
        worker.close()
    assert seen_hashing and status["state"] == "idle" and status["passes"] == 1
    assert status["last_scan"]["added"] == 8
    assert status["hashing"]["files_done"] == status["hashing"]["files_total"] == 8
    assert status["hashing"]["bytes_done"] == status["hashing"]["bytes_total"] > 3 * (96 << 20)
    # the hashing thread leaves the GIL while it hashes: this thread keeps its pace (a median, so
    # that a machine busy with other work, which delays any thread now and then, does not count)
    assert statistics.median(gaps) < 0.05, f"this thread waited {statistics.median(gaps):.3f} s per turn"
    if sys.platform == "linux":  # the worker thread ran at a lower priority than this one
        assert nice_seen and nice_seen[0] == min(19, os.getpriority(os.PRIO_PROCESS, 0) + NICE)


def test_the_worker_rescans_when_asked_and_cancels(loras, lib, monkeypatch):
    worker = Worker(lib, lambda: [loras])
    try:
        worker.start()
        assert worker.wait_idle(60)
        materialize("kohya_sd15_lora", os.path.join(loras, "later.safetensors"), rank=2, seed=11)
        worker.request_scan()
        assert worker.wait_idle(60)
        assert worker.status()["passes"] == 2 and worker.status()["last_scan"]["added"] == 1
        assert all(e.hashes for e in lib.entries())
        gate = threading.Event()
        real = hashes_mod._compute

        def slow(path, size, header_len, metadata, progress=None):
            def on_chunk(done, total):
                gate.set()
                time.sleep(0.05)
                progress(done, total)
            return real(path, size, header_len, metadata, on_chunk)
        monkeypatch.setattr(hashes_mod, "CHUNK", 4096)
        monkeypatch.setattr(hashes_mod, "_compute", slow)
        save_tensors(os.path.join(loras, "cancelled.safetensors"), fixture_tensors("kohya_sd15_lora", 2, seed=12), {})
        worker.request_scan()
        assert gate.wait(60)
        worker.cancel()
        assert worker.wait_idle(60)
        assert worker.status()["state"] == "cancelled"
        assert {e.name: e.hashes for e in lib.entries()}["cancelled.safetensors"] is None
    finally:
        worker.close()


def test_the_status_says_a_pass_is_queued_until_it_starts(loras, lib):
    worker = Worker(lib, lambda: [loras])
    assert worker.status()["queued"] is False
    worker.request_scan()  # no thread yet: asked for, not started
    assert worker.status()["queued"] is True and worker.status()["state"] == "idle"
    try:
        worker.start()
        assert worker.wait_idle(60)
        assert worker.status()["queued"] is False and worker.status()["passes"] == 1
    finally:
        worker.close()
    assert worker.status()["queued"] is False

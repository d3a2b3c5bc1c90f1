"""The LoRA library in the real ComfyUI: its worker starts with the server and scans the loras
folders in the background; GET /loralab/library lists the LoRAs the pickers offer, by picker name,
with facts, hashes and flags, filtered by model architecture and search words; hashing a big file
never holds up the server; the pickers' options keep every name whatever the filter."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import struct
import time

import pytest

from loralab_testkit import materialize

#: the files this module writes: name -> (fixture, seed)
FILES = {"lib_style_xl.safetensors": ("kohya_sdxl_lora", 1), "lib_char.safetensors": ("kohya_sd15_lora", 2),
         "lib_sub/lib_flux.safetensors": ("aitoolkit_flux_lora", 3)}


def _get(host, query: str = ""):
    from aiohttp.test_utils import make_mocked_request
    route = next(r for r in host.server.routes if getattr(r, "path", None) == "/loralab/library" and r.method == "GET")
    response = host.loop.run_until_complete(route.handler(make_mocked_request("GET", "/loralab/library" + query)))
    return response.status, json.loads(response.body)


@pytest.fixture(scope="module")
def svc(host):
    service = host.module("nodes.library").service()
    assert service is not None, "the library did not start with the server"
    return service


@pytest.fixture(scope="module")
def written(host, svc):
    folder = host.folder("loras")
    for name, (fixture_name, seed) in FILES.items():
        os.makedirs(os.path.dirname(os.path.join(folder, name)), exist_ok=True)
        materialize(fixture_name, os.path.join(folder, name), rank=2, seed=seed)
    shutil.copy(os.path.join(folder, "lib_char.safetensors"), os.path.join(folder, "lib_char_copy.safetensors"))
    rescan(host, svc)
    return folder


def rescan(host, svc):
    status, _ = _get(host, "?rescan=1")
    assert status == 200
    assert svc.worker.wait_idle(120), svc.worker.status()


def entries(host, query=""):
    status, body = _get(host, query)
    assert status == 200, body
    return {e["name"]: e for e in body["entries"]}


def test_the_worker_starts_with_the_server(host, svc):
    assert svc.worker._thread is not None and svc.worker._thread.is_alive() and svc.worker._thread.daemon
    assert svc.library.db_path == os.path.join(host.folder_paths.get_user_directory(), "loralab", "library.sqlite")
    assert svc.worker.wait_idle(120) and svc.worker.status()["passes"] >= 1


def test_the_route_lists_offered_loras_by_picker_name(host, written):
    got = entries(host)
    assert set(FILES) | {"lib_char_copy.safetensors"} <= set(got)
    xl = got["lib_style_xl.safetensors"]
    assert (xl["arch"], xl["fits"], xl["triggers"]) == ("sdxl", ["sdxl"], ["ohwx woman"])
    assert xl["verdict"].startswith("LoRA for SDXL") and len(xl["hashes"]["autov3"]) == 12
    assert "path" not in xl
    char, copy = got["lib_char.safetensors"], got["lib_char_copy.safetensors"]
    assert char["duplicates"] == ["lib_char_copy.safetensors"] and copy["duplicates"] == ["lib_char.safetensors"]
    assert [f["code"] for f in copy["flags"]] == ["duplicate", "wrong_hash"]  # the fixture's hash is the trainer's
    _, body = _get(host)
    assert body["offered"] >= body["known"] >= 4 and body["status"]["state"] == "idle"
    assert host.folder("loras") not in json.dumps(body)  # absolute paths never leave the server
    assert {"id": "sdxl", "name": "SDXL"} in body["archs"]


def test_the_route_filters_by_architecture_and_words(host, written):
    assert set(entries(host, "?arch=sdxl")) >= {"lib_style_xl.safetensors"}
    assert not {"lib_char.safetensors", "lib_sub/lib_flux.safetensors"} & set(entries(host, "?arch=sdxl"))
    assert "lib_sub/lib_flux.safetensors" in entries(host, "?arch=flux&q=P3R5ON")  # ai-toolkit's trigger
    assert set(entries(host, "?arch=sd1&q=ohwx%20woman")) >= {"lib_char.safetensors", "lib_char_copy.safetensors"}
    assert entries(host, "?q=no-such-word-anywhere") == {}
    status, body = _get(host, "?arch=%3Cimg%3E")
    assert status == 400 and "unknown architecture '<img>'" in body["error"]
    status, body = _get(host, "?q=ohwx&limit=1")
    assert status == 200 and len(body["entries"]) == 1 and body["matched"] >= 3
    assert body["entries"][0]["name"] == sorted(entries(host, "?q=ohwx"), key=str.casefold)[0]
    for bad in ("0", "-1", "x", "100001"):
        status, body = _get(host, f"?limit={bad}")
        assert status == 400 and "limit must be" in body["error"]


def test_the_pickers_keep_every_name_whatever_the_filter(host, written):
    from host.workflow_kit import object_info
    options = object_info(host)["LoRALabLoader"]["input"]["required"]["lora_name"]
    names = options[1]["options"] if isinstance(options[0], str) else options[0]
    assert set(FILES) | {"lib_char_copy.safetensors"} <= set(names)
    assert set(entries(host, "?arch=sdxl")) < set(names) and set(entries(host)) <= set(names)


def test_imports_attach_names_and_words(host, svc, written, tmp_path):
    sha = entries(host)["lib_style_xl.safetensors"]["hashes"]["sha256"]
    export = tmp_path / "lib_style_xl.metadata.json"
    export.write_text(json.dumps({"file_name": "lib_style_xl", "model_name": "Studio Light", "sha256": sha,
                                  "civitai": {"trainedWords": ["studiolight"]}}), encoding="utf-8")
    assert svc.library.import_export(str(export)) == (1, 1)
    found = entries(host, "?q=studiolight")
    assert list(found) == ["lib_style_xl.safetensors"]
    assert found["lib_style_xl.safetensors"]["imported"]["name"] == "Studio Light"


def _big_sparse(path, size):
    """A file of ``size`` bytes that reads as a LoRA tensor and is almost all a hole."""
    def header(n):
        raw = json.dumps({"lib_big.lora_up.weight": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
        return raw + b" " * (-len(raw) % 8)
    n = size - 8 - len(header(size))
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header(n))) + header(n) + b"\x01")
        f.truncate(size)


def test_hashing_never_holds_up_the_server(host, svc, written):
    """While the worker hashes 1.5 GB, the route answers and the event loop keeps its pace."""
    folder = host.folder("loras")
    for i in range(3):
        _big_sparse(os.path.join(folder, f"lib_big_{i}.safetensors"), 512 << 20)
    try:
        _get(host, "?rescan=1")
        deadline = time.time() + 60
        while svc.worker.status()["state"] != "hashing" and time.time() < deadline:
            time.sleep(0.005)
        answers, ticks = [], []
        while svc.worker.status()["state"] == "hashing" and len(answers) < 20:
            t = time.perf_counter()
            status, body = _get(host)
            answers.append(time.perf_counter() - t)
            assert status == 200
            progress = body["status"]["hashing"]
            assert progress["bytes_done"] <= progress["bytes_total"]
            t = time.perf_counter()
            host.loop.run_until_complete(asyncio.sleep(0.01))
            ticks.append(time.perf_counter() - t)
        assert answers, "the worker finished hashing before the route was asked"
        # medians: a machine busy with other work delays any request now and then
        assert statistics.median(answers) < 0.5 and statistics.median(ticks) < 0.1, (answers, ticks)
        assert svc.worker.wait_idle(300)
        assert all(entries(host)[f"lib_big_{i}.safetensors"]["hashes"] for i in range(3))
    finally:
        for i in range(3):
            os.remove(os.path.join(folder, f"lib_big_{i}.safetensors"))
        rescan(host, svc)


def test_a_file_dropped_in_the_folder_is_scanned_when_listed(host, svc, written):
    """Without a rescan asked for, the listing that offers a name the index does not know starts a
    scan, once: the next listing knows it."""
    assert svc.worker.wait_idle(120)
    path = os.path.join(written, "lib_dropped.safetensors")
    materialize("kohya_sdxl_lora", path, rank=2, seed=9)
    try:
        passes = svc.worker.status()["passes"]
        _, body = _get(host)
        assert body["offered"] == body["known"] + 1
        st = body["status"]  # the picker polls while a pass is queued or runs
        assert st["queued"] or st["state"] in ("scanning", "hashing") or st["passes"] > passes, st
        _get(host)
        assert svc.worker.wait_idle(120)
        assert svc.worker.status()["passes"] == passes + 1  # the second listing asked for no second scan
        _, body = _get(host)
        assert body["offered"] == body["known"]
        assert entries(host)["lib_dropped.safetensors"]["arch"] == "sdxl"
    finally:
        os.remove(path)
        rescan(host, svc)

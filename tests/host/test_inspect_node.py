"""Inspect LoRA in the real ComfyUI: the node runs on a file in loras/ (alone, in a prompt, and with
a MODEL for relative strength) and returns its four outputs; GET /loralab/lora_info answers from
ComfyUI's own server app, reads no tensor data, refuses names that escape the loras folder, and
sends the panel a few KB (the whole summary with details=1)."""
import json
import os
import uuid

import pytest
import torch

from loralab.files.safetensors import save_tensors
from loralab_testkit import materialize

NODE = "LoRALabInspect"


@pytest.fixture(scope="module")
def lora_name(host):
    name = f"inspect_{uuid.uuid4().hex[:8]}.safetensors"
    materialize("kohya_sd15_lora", os.path.join(host.folder("loras"), name), rank=2)
    return name


def test_node_is_registered_with_its_schema(host):
    cls = host.nodes.NODE_CLASS_MAPPINGS[NODE]
    schema = cls.GET_SCHEMA()
    assert schema.display_name == "Inspect LoRA (LoRA Lab)" and schema.category == "LoRA Lab/Inspect"
    assert [o.io_type for o in schema.outputs] == ["STRING", "STRING", "STRING", "IMAGE"]


def test_node_returns_all_four_outputs(host, lora_name):
    cls = host.nodes.NODE_CLASS_MAPPINGS[NODE]
    out = cls.execute(lora_name=lora_name)
    report, data, words, image = out.args
    assert "kohya sd-scripts" in report and "SD1.x" in report and "block strength" in report
    d = json.loads(data)
    assert d["path"] == lora_name and d["arch"]["id"] == "sd1" and d["blocks"]["relative"] is False
    assert d["hashes"]["autov3"] == d["hashes"]["addnet"][:12]
    assert words == "ohwx woman"
    assert isinstance(image, torch.Tensor) and image.dim() == 4 and image.shape[0] == 1 and image.shape[3] == 3
    assert image.dtype == torch.float32 and 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert image.shape[1] >= 400 and image.shape[2] >= 480
    assert out.ui.as_dict() == {"text": (report,)}


def test_node_runs_in_a_prompt_and_shows_the_report(host, lora_name):
    ok, history, messages = host.run_prompt({"1": {"class_type": NODE, "inputs": {"lora_name": lora_name}}})
    assert ok, (history, messages)
    text = history["outputs"]["1"]["text"][0]
    assert "trigger words: ohwx woman" in text


def test_node_with_a_model_gives_relative_strength(host, tiny_models):
    """A kohya LoRA written for the tiny model's own layout; the MODEL's weights are the base."""
    tiny_models.setup_comfy()
    mp = tiny_models.build_patcher("sd15_micro")
    sd = mp.model.state_dict()
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for k, v in sd.items():
        if k.startswith("diffusion_model.") and k.endswith(".weight") and v.dim() >= 2 and "attn1" in k:
            stem = "lora_unet_" + k[len("diffusion_model."):-len(".weight")].replace(".", "_")
            tensors[f"{stem}.lora_down.weight"] = torch.randn(2, v.shape[1:].numel(), generator=g)
            tensors[f"{stem}.lora_up.weight"] = torch.randn(v.shape[0], 2, generator=g)
            tensors[f"{stem}.alpha"] = torch.tensor(1.0)
    name = f"tiny_{uuid.uuid4().hex[:8]}.safetensors"
    save_tensors(os.path.join(host.folder("loras"), name), tensors)
    cls = host.nodes.NODE_CLASS_MAPPINGS[NODE]
    report, data, _, image = cls.execute(lora_name=name, model=mp).args
    d = json.loads(data)
    touched = [b for b in d["blocks"]["items"] if b["modules"]]
    assert d["blocks"]["relative"] is True and touched
    for b in touched:
        assert b["relative"] == pytest.approx(b["norm"] / b["base_norm"], rel=1e-9)
        assert b["base_norm"] > 0
    attn = [k for k in sd if "attn1" in k and k.endswith(".weight") and sd[k].dim() >= 2]
    assert d["coverage"]["mapped"] == len(attn) and d["coverage"]["unmapped"] == 0
    assert "‖ΔW‖/‖W‖" in report and image.shape[-1] == 3


def _responses(host, queries, headers=None):
    """Run GET requests against ComfyUI's own aiohttp app (routes added once per session):
    (status, body bytes, response headers) per query."""
    from aiohttp.test_utils import TestClient, TestServer  # the host's aiohttp (not in the engine's env)
    if not getattr(host, "loralab_routes_added", False):
        host.server.add_routes()
        host.loralab_routes_added = True

    async def run():
        out = []
        async with TestClient(TestServer(host.server.app)) as client:
            for q in queries:
                r = await client.get("/loralab/lora_info?" + q if isinstance(q, str) else "/loralab/lora_info",
                                     params=None if isinstance(q, str) else q, headers=headers)
                out.append((r.status, await r.read(), r.headers))
        return out
    return host.loop.run_until_complete(run())


def _request_all(host, queries):
    return [(status, json.loads(body)) for status, body, _ in _responses(host, queries)]


def test_route_answers_and_refuses_traversal(host, lora_name, tmp_path, monkeypatch):
    routes = [r for r in host.server.routes if getattr(r, "path", None) == "/loralab/lora_info"]
    assert len(routes) == 1 and routes[0].method == "GET"
    loras = host.folder("loras")
    outside = tmp_path / "outside.safetensors"
    materialize("kohya_sd15_lora", str(outside), rank=2)
    link = f"link_{uuid.uuid4().hex[:8]}.safetensors"
    os.symlink(outside, os.path.join(loras, link))
    broken = f"broken_{uuid.uuid4().hex[:8]}.safetensors"
    with open(os.path.join(loras, broken), "wb") as f:
        f.write(b"\x80\x04 not a safetensors file")
    reads = []
    sio = host.module("loralab.files.safetensors")
    original = sio.SafetensorsFile.read_bytes
    monkeypatch.setattr(sio.SafetensorsFile, "read_bytes",
                        lambda self, key: reads.append(self.info(key).numel) or original(self, key))
    queries = [
        {"name": lora_name},
        {"name": "../" + lora_name},
        {"name": "sub/../../" + lora_name},
        {"name": os.path.join(loras, lora_name)},
        {"name": link},
        {"name": "a\x00b.safetensors"},
        "name=..%2F..%2Fetc%2Fpasswd",
        {"name": "missing.safetensors"},
        {"name": broken},
        {},
    ]
    results = _request_all(host, queries)
    (ok_status, ok), *rest = results
    assert ok_status == 200, ok
    assert ok["path"] == lora_name and ok["format"]["id"] == "kohya" and ok["arch"]["id"] == "sd1"
    assert ok["trigger_words"] == ["ohwx woman"] and "blocks" not in ok and "hashes" not in ok
    assert all(n == 1 for n in reads), "the route read tensor data"
    (link_status, linked), refused = rest[3], rest[:3] + rest[4:]
    assert link_status == 200 and linked["path"] == link and linked["arch"]["id"] == "sd1", linked  # as core lists it
    statuses = [s for s, _ in refused]
    assert statuses == [400, 400, 400, 400, 400, 404, 422, 400], refused
    assert all(set(body) == {"error"} and body["error"] for _, body in refused)
    for q, (_, body) in zip(queries[1:4] + queries[5:], refused):  # no server path, unless the client sent it
        assert loras not in body["error"] or loras in str(q), (q, body)


#: the panel's answer for a real-layout SDXL kohya LoRA (986 modules, 2958 tensors) stays under this
#: many bytes (it was 316 KB when the route sent the whole summary)
PANEL_BUDGET = 4096


def test_route_sends_the_panel_part_and_the_details_on_demand(host):
    name = f"sdxl_{uuid.uuid4().hex[:8]}.safetensors"
    materialize("kohya_sdxl_lora", os.path.join(host.folder("loras"), name), rank=2)
    (status, lean, headers), (d_status, full, d_headers) = _responses(host, [{"name": name},
                                                                             {"name": name, "details": "1"}])
    assert status == d_status == 200 and headers["ETag"] == d_headers["ETag"]
    assert len(lean) < PANEL_BUDGET < len(full) // 50, (len(lean), len(full))
    panel, details = json.loads(lean), json.loads(full)
    assert panel["path"] == details["path"] == name and panel["arch"]["id"] == details["arch"]["id"] == "sdxl"
    assert panel["coverage"]["blocks"] == details["coverage"]["blocks"] and "IN04" in panel["coverage"]["blocks"]
    t = panel["training"]
    assert (t["optimizer"], t["learning_rate"], t["network_module"], t["base_model"], t["images"]) == (
        "AdamW8bit", 1e-4, "networks.lora", "sd_xl_base_1.0.safetensors", 25)
    assert panel["tags"]["top"][0] == {"tag": "ohwx woman", "count": 25}
    rest = {"modules", "unmapped", "unrecognized_keys", "metadata", "tag_frequency", "host", "layers", "scale", "dtypes",
            "tensor_count"}
    assert not rest & set(panel) and rest <= set(details)
    assert len(details["modules"]) == 986 and details["tag_frequency"][0]["folder"] == "10_ohwx woman"
    assert details["metadata"]["kohya"]["ss_network_dim"] == 32
    revalidated = _responses(host, [{"name": name}, {"name": name, "details": "1"}],
                             headers={"If-None-Match": headers["ETag"]})
    assert [(s, b) for s, b, _ in revalidated] == [(304, b""), (304, b"")]

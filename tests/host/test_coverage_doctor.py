"""The coverage doctor in the real ComfyUI. Before a run, ``GET /loralab/coverage`` answers for a
LoRA and the model file a Load Checkpoint / Load Diffusion Model node names (its safetensors
header only: the model files here are released models' headers over sparse zeros); after a run,
the loader's report names the same cause. The four cases: an SD1.5 LoRA on an SDXL model, a Wan I2V
LoRA on a Wan T2V model, a diffusers Wan LoRA (LoRA Lab applies it, ComfyUI's own loader drops it),
a text-encoder-only LoRA without a CLIP."""
from __future__ import annotations

import json
import os
import urllib.parse

import pytest
import torch

from loralab.files.safetensors import save_tensors
from loralab_testkit import fit_fixture_to_layout, fixture_tensors, materialize, sparse_model_file

ROUTE = "/loralab/coverage"

#: model file -> (folder, parts of the released model's header as the file stores them)
MODELS = {
    "doctor_sdxl.safetensors": ("checkpoints", [("sdxl", "model.diffusion_model."),
                                                ("clip_l", "conditioner.embedders.0.transformer.")]),
    "doctor_sd15.safetensors": ("checkpoints", [("sd15", "model.diffusion_model."),
                                                ("clip_l", "cond_stage_model.transformer.")]),
    "doctor_wan_t2v.safetensors": ("diffusion_models", [("wan21_t2v_14b", "")]),
}
#: LoRA file -> (fixture at its real shapes, the prefix of the keys it keeps)
LORAS = {
    "doctor_sd15_lora.safetensors": ("kohya_sd15_lora", ""),
    "doctor_i2v_lora.safetensors": ("diffusion_pipe_wan21_i2v_14b_lora", ""),
    "doctor_diffusers_wan_lora.safetensors": ("diffusers_peft_wan21_t2v_14b_lora", ""),
    "doctor_te_only_lora.safetensors": ("kohya_sd15_lora", "lora_te_"),
}
#: the four cases: (LoRA, model, folder, clip connected) -> (cause id, level, modules that land, modules)
CASES = {
    "sd15_on_sdxl": ("doctor_sd15_lora.safetensors", "doctor_sdxl.safetensors", True, "other_arch", "error", 0, 264),
    "i2v_on_t2v": ("doctor_i2v_lora.safetensors", "doctor_wan_t2v.safetensors", False, "i2v_on_t2v", "warn", 400, 480),
    "diffusers_wan": ("doctor_diffusers_wan_lora.safetensors", "doctor_wan_t2v.safetensors", False, "host_drops", "info",
                      320, 320),
    "te_only_no_clip": ("doctor_te_only_lora.safetensors", "doctor_sd15.safetensors", False, "no_clip", "error", 0, 72),
}


@pytest.fixture(scope="module")
def files(host):
    """The model files and LoRAs in the host's folders (written once)."""
    for name, (folder, parts) in MODELS.items():
        path = os.path.join(host.folder(folder), name)
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            sparse_model_file(path, parts)
    for name, (fixture_name, prefix) in LORAS.items():
        path = os.path.join(host.folder("loras"), name)
        if not os.path.exists(path):
            tensors = {k: v for k, v in fixture_tensors(fixture_name, rank=2).items() if k.startswith(prefix)}
            save_tensors(path, tensors, {"ss_base_model_version": "sd_v1"} if prefix else {})
    unknown = os.path.join(host.folder("diffusion_models"), "doctor_unknown.safetensors")
    if not os.path.exists(unknown):  # right names, sizes of no released model
        save_tensors(unknown, {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3)})
    return host


def _get(host, headers: dict | None = None, **query) -> tuple[int, dict | None, dict]:
    from aiohttp.test_utils import make_mocked_request
    route = next(r for r in host.server.routes if getattr(r, "path", None) == ROUTE and r.method == "GET")
    encoded = "&".join(f"{k}={urllib.parse.quote(v, safe='', errors='surrogatepass')}" for k, v in query.items())
    request = make_mocked_request("GET", f"{ROUTE}?{encoded}", headers=headers or {})
    response = host.loop.run_until_complete(route.handler(request))
    body = json.loads(response.body) if response.body else None
    return response.status, body, dict(response.headers)


def _ask(host, lora, model, clip, **extra):
    kind = next(folder for name, (folder, _) in MODELS.items() if name == model) if model in MODELS else "checkpoints"
    return _get(host, lora=lora, model=model, kind=extra.pop("kind", kind), clip="1" if clip else "0", **extra)


@pytest.mark.parametrize("case", sorted(CASES))
def test_route_names_the_cause_before_a_run(files, case):
    lora, model, clip, cause, level, landed, total = CASES[case]
    status, body, _ = _ask(files, lora, model, clip)
    assert status == 200, body
    assert (body["cause"]["id"] if body["cause"] else None, body["level"]) == (cause, level)
    assert (body["landed"], body["total"], body["model_name"], body["lora"]["label"]) == (landed, total, model, lora)
    assert body["cause"]["fix"]


def test_route_words(files):
    """The plain words of each case, as the panel shows them."""
    words = {case: _ask(files, *CASES[case][:3])[1]["cause"] for case in CASES}
    assert words["sd15_on_sdxl"] == {"id": "other_arch", "text": "an SD1.x LoRA on an SDXL model",
                                     "fix": "pick a LoRA made for SDXL, or load an SD1.x model"}
    assert words["i2v_on_t2v"]["text"].startswith("an I2V LoRA on a T2V model")
    assert words["i2v_on_t2v"]["fix"].startswith("load a Wan 2.1 I2V 14B model for all of it")
    rules = files.module("nodes.host.compat").HOST.key_rules
    assert words["diffusers_wan"]["text"] == (f"diffusers-format keys: {rules.name}'s own LoRA loader drops 320 of these "
                                              "modules; LoRA Lab applies them")
    assert words["diffusers_wan"]["fix"].startswith("none needed here; to use the file with other loaders, convert it")
    assert words["te_only_no_clip"] == {"id": "no_clip", "text": "text-encoder keys but no CLIP connected",
                                        "fix": "connect the CLIP (from the checkpoint or CLIP loader) to this "
                                               "node's clip input"}
    status, body, _ = _ask(files, "doctor_te_only_lora.safetensors", "doctor_sd15.safetensors", True)
    assert (status, body["level"], body["landed"], body["cause"]) == (200, "ok", 72, None)


def test_route_revalidates_with_the_identity_of_both_files(files):
    lora, model, clip = CASES["sd15_on_sdxl"][:3]
    status, body, headers = _ask(files, lora, model, clip)
    etag = headers["ETag"]
    lst = os.stat(os.path.join(files.folder("loras"), lora))
    mst = os.stat(os.path.join(files.folder("checkpoints"), model))
    assert etag == f'"{lst.st_size}-{lst.st_mtime_ns}-{mst.st_size}-{mst.st_mtime_ns}"'
    status, _, _ = _get(files, headers={"If-None-Match": etag}, lora=lora, model=model, kind="checkpoints", clip="1")
    assert status == 304
    # the LoRA rewritten under its name (now an SDXL LoRA): a new identity, a new answer
    path = os.path.join(files.folder("loras"), "doctor_rewritten.safetensors")
    materialize("kohya_sd15_lora", path, rank=2)
    first = _ask(files, "doctor_rewritten.safetensors", model, True)
    materialize("kohya_sdxl_lora", path + ".tmp", rank=2)
    os.replace(path + ".tmp", path)
    second = _ask(files, "doctor_rewritten.safetensors", model, True)
    assert first[1]["cause"]["id"] == "other_arch" and second[1]["level"] == "ok"
    assert first[2]["ETag"] != second[2]["ETag"]


def test_route_on_a_model_it_does_not_know_says_so(files):
    status, body, _ = _ask(files, "doctor_sd15_lora.safetensors", "doctor_unknown.safetensors", True,
                           kind="diffusion_models")
    assert status == 200 and body["level"] == "unknown" and body["cause"] is None
    assert body["headline"].startswith("the model file's header shows no architecture LoRA Lab knows")


@pytest.mark.parametrize("query,status,words", [
    ({"model": "doctor_sdxl.safetensors", "kind": "loras"}, 400, "not a model folder"),
    ({"model": "../loras/doctor_sd15_lora.safetensors"}, 400, "'..'"),
    ({"model": "/etc/passwd.safetensors"}, 400, "absolute paths"),
    ({"model": "doctor_sdxl.ckpt"}, 400, ".safetensors"),
    ({"model": "nowhere.safetensors"}, 404, "no such model in the checkpoints folder"),
    ({"lora": "nowhere.safetensors"}, 404, "no such LoRA"),
    ({"lora": "../checkpoints/doctor_sdxl.safetensors"}, 400, "'..'"),
])
def test_route_refuses_names_it_must_not_read(files, query, status, words):
    q = {"lora": "doctor_sd15_lora.safetensors", "model": "doctor_sdxl.safetensors", "kind": "checkpoints", **query}
    got, body, _ = _get(files, **q)
    assert got == status and set(body) == {"error"} and words in body["error"], body
    assert files.base not in body["error"]


def test_route_refuses_every_hostile_name_without_showing_a_path(files):
    from loralab_testkit.malformed import HOSTILE_NAMES
    for name in HOSTILE_NAMES:
        for param in ("lora", "model"):
            q = {"lora": "doctor_sd15_lora.safetensors", "model": "doctor_sdxl.safetensors", "kind": "checkpoints",
                 param: name}
            status, body, _ = _get(files, **q)
            assert status in (400, 404) and set(body) == {"error"}, (param, name, status, body)
            assert files.base not in body["error"], (param, name, body)


# --- the loader's report after a run, on tiny models of the real layouts -------------------------------

@pytest.fixture(scope="module")
def patchers(host, tiny_models):
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models as sm
    tiny_models.setup_comfy()
    wan = {"image_model": "wan2.1", "dim": 64, "ffn_dim": 96, "num_heads": 2, "num_layers": 4, "in_dim": 16,
           "out_dim": 16, "patch_size": (1, 2, 2), "freq_dim": 256, "window_size": (-1, -1), "qk_norm": True,
           "cross_attn_norm": True, "eps": 1e-6}
    built = {}

    def wan_model(cls_name, cfg):
        mc = getattr(sm, cls_name)(cfg)
        mc.set_inference_dtype(torch.float32, None)
        model = mc.get_model({}, "")
        g = torch.Generator().manual_seed(0)
        model.diffusion_model.load_state_dict({k: torch.randn(v.shape, generator=g) * 0.05
                                               for k, v in model.diffusion_model.state_dict().items()})
        return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                                offload_device=mm.unet_offload_device())

    def get(variant):
        if variant not in built:
            if variant == "wan_t2v":
                built[variant] = wan_model("WAN21_T2V", dict(wan, model_type="t2v"))
            elif variant == "wan_i2v":
                built[variant] = wan_model("WAN21_I2V", dict(wan, model_type="i2v", in_dim=36))
            else:
                built[variant] = tiny_models.build_patcher(variant)
        return built[variant]
    return get


def _apply(host, mp, name, clip=None):
    return host.module("nodes.loader").apply_lora(mp, clip, name, 1.0, 1.0, "", 1.0, 1.0, 0, ("doctor", 0))


def _fitted_file(host, mp, fixture_name, name):
    path = os.path.join(host.folder("loras"), name)
    if not os.path.exists(path):
        save_tensors(path, fit_fixture_to_layout(fixture_name, host.module("nodes.host.models").model_layout(mp), rank=4))
    return name


def test_report_sd15_lora_on_sdxl(files, patchers):
    mp = patchers("sdxl_micro")
    out, _, info = _apply(files, mp, "doctor_sd15_lora.safetensors")
    assert out is mp and not out.patches
    assert info.startswith("nothing applied: an SD1.x LoRA on an SDXL model\n"
                           "fix: pick a LoRA made for SDXL, or load an SD1.x model\n")


def test_report_i2v_lora_on_t2v(files, patchers):
    name = _fitted_file(files, patchers("wan_i2v"), "diffusion_pipe_wan21_i2v_14b_lora", "doctor_tiny_i2v.safetensors")
    mp = patchers("wan_t2v")
    out, _, info = _apply(files, mp, name)
    lines = info.splitlines()
    assert lines[0] == "applied 40 of 48 modules; 8 not applied (reasons below)"
    assert lines[2].startswith("  8 × image cross-attention of Wan I2V (a T2V model has none), e.g. ")
    assert lines[3].startswith("likely cause: an I2V LoRA on a T2V model: its image cross-attention (k_img, v_img) ")
    assert lines[4] == "fix: load a Wan I2V model for all of it; on this model the rest of the LoRA applies"
    assert len(out.patches) == 40


def test_report_diffusers_wan_lora_says_core_drops_what_lora_lab_applies(files, patchers):
    mp = patchers("wan_t2v")
    name = _fitted_file(files, mp, "diffusers_peft_wan21_t2v_14b_lora", "doctor_tiny_diffusers_wan.safetensors")
    core = files.nodes.LoraLoaderModelOnly().load_lora_model_only(mp, name, 1.0)[0]
    out, _, info = _apply(files, mp, name)
    assert not core.patches and len(out.patches) == 32  # core drops every module; LoRA Lab applies all of them
    rules = files.module("nodes.host.compat").HOST.key_rules
    lines = info.splitlines()
    assert lines[:3] == ["applied 32 of 32 modules",
                         f"note: diffusers-format keys: {rules.name}'s own LoRA loader drops 32 of these modules; "
                         "LoRA Lab applies them",
                         "fix: none needed here; to use the file with other loaders, convert it to kohya names (Merge "
                         "LoRAs with only this file, method concat, or loralab merge FILE -m concat -o NEW)"]


def test_report_text_encoder_only_lora_without_clip(files, patchers):
    mp = patchers("sd15_micro")
    out, clip, info = _apply(files, mp, "doctor_te_only_lora.safetensors")
    assert out is mp and clip is None
    assert info.splitlines()[:5] == [
        "nothing applied: none of its 72 modules lands on this model (reasons below)", "not applied: 72 modules",
        info.splitlines()[2], "likely cause: text-encoder keys but no CLIP connected",
        "fix: connect the CLIP (from the checkpoint or CLIP loader) to this node's clip input"]
    assert info.splitlines()[2].startswith("  72 × text encoder clip_l: no CLIP connected, e.g. lora_te_")


@pytest.mark.parametrize("case", ["sd15_on_sdxl", "te_only_no_clip"])
def test_stack_report_says_the_same(files, patchers, case):
    """The Stack words each row as the loader does (one place for the wording)."""
    lora, model = CASES[case][:2]
    variant = {"doctor_sdxl.safetensors": "sdxl_micro", "doctor_sd15.safetensors": "sd15_micro"}[model]
    stack = files.module("nodes.loader").LoRALabStack
    rows = json.dumps([{"on": True, "lora": lora, "strength_model": 1.0, "strength_clip": 1.0, "block_weights": ""}])
    info = stack.execute(patchers(variant), rows, 1.0, 1.0, 0).args[2]
    _, _, alone = _apply(files, patchers(variant), lora)
    assert info == "[1] " + alone

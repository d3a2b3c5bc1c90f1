"""LoRA Loader (Block Weights) and LoRA Stack in the real ComfyUI, on tiny real-layout models with
LoRAs fitted from the real trainers' key layouts: bit-exact against core's LoraLoader at all-1
weights, w·ΔW on exactly the keys of a weighted block, and the formats core drops applied."""
import json
import os

import pytest
import torch

from loralab_testkit import fit_fixture_to_layout, fixture, materialize
from loralab.files.safetensors import save_tensors

BLOCK_FAMILY = {"sd15_micro": "unet", "sdxl_micro": "unet", "flux_micro": "flux"}


@pytest.fixture(scope="module")
def models(host, tiny_models):
    tiny_models.setup_comfy()
    built = {}

    def get(variant):
        if variant not in built:
            built[variant] = tiny_models.build_patcher(variant)
        return built[variant]
    return get


def _layout(host, mp):
    return host.module("nodes.host.models").model_layout(mp)


def _write(host, file_name, tensors, metadata=None):
    """Write a LoRA into the host's loras folder (once: the same name always holds the same tensors)."""
    path = os.path.join(host.folder("loras"), file_name)
    if not os.path.exists(path):
        save_tensors(path, tensors, metadata or {})
    return file_name


def _fitted(host, mp, name, rank=4, seed=0, keep=None):
    tensors = fit_fixture_to_layout(name, _layout(host, mp), rank=rank, seed=seed)
    if keep is not None:
        tensors = {k: v for k, v in tensors.items() if keep(k)}
    file_name = f"loader_{name}_{seed}_{rank}_{len(tensors)}.safetensors"
    return _write(host, file_name, tensors, fixture("loras", name).get("metadata", {})), tensors


def _ours(host, mp, clip, file_name, sm=1.0, sc=1.0, spec="", a=1.0, b=1.0, seed=0):
    return host.module("nodes.loader").apply_lora(mp, clip, file_name, sm, sc, spec, a, b, seed, ("test", 0))


def _core(host, mp, clip, file_name, sm=1.0, sc=1.0):
    if clip is None:
        return host.nodes.LoraLoaderModelOnly().load_lora_model_only(mp, file_name, sm)[0], None
    return host.nodes.LoraLoader().load_lora(mp, clip, file_name, sm, sc)


def _loaded(patcher):
    """The live weights of the model as ComfyUI loads it for sampling (patches applied; a patcher
    without patches gives the base weights); valid until another patcher of the model is loaded."""
    import comfy.model_management
    with torch.no_grad():  # as during sampling
        comfy.model_management.load_models_gpu([patcher], force_full_load=True)
    return {k: v.detach() for k, v in patcher.model.state_dict().items()}


def _patched(patcher):
    """A copy of :func:`_loaded`'s weights."""
    return {k: v.clone() for k, v in _loaded(patcher).items()}


def _assert_bit_equal(a, b):
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"{len(diff)} tensors differ, e.g. {diff[:3]}"


def _assert_same_weights(core, ours):
    """Every weight of the two patchers' models, bit for bit (one copy in memory at a time)."""
    _assert_bit_equal(_patched(core), _loaded(ours))


def _entry_deltas(host, tensors, layout, component="unet"):
    """(model key, block, row slice, ΔW of the slice in float64) for every entry of one component,
    from the engine's adapter math."""
    lora = host.module("loralab.lora").Lora.from_state_dict(tensors, {}, layout)
    block_of = host.module("loralab.blocks.map").block_of
    out = []
    for m in lora.mapped():
        if (m.component == "unet") != (component == "unet"):
            continue
        shape = layout.shapes[m.target.key]
        start, rows = m.target.rows or (0, shape[0])
        d = lora.adapter(m.entry).delta_flat(torch.float64).reshape(rows, *shape[1:])
        if m.target.swap_halves:
            d = torch.cat(d.chunk(2)[::-1])
        out.append((m.target.key, block_of(m.target.key, layout.arch.family), slice(start, start + rows), d))
    return out


def _expected(deltas, layout, weight_of):
    """Model key -> Σ w·ΔW over the entries whose block has a non-zero weight."""
    out = {}
    for key, block, rows, d in deltas:
        w = weight_of(block)
        if w:
            out.setdefault(key, torch.zeros(layout.shapes[key], dtype=torch.float64))[rows] += w * d
    return out


def _expected_deltas(host, tensors, layout, weight_of, component="unet"):
    return _expected(_entry_deltas(host, tensors, layout, component), layout, weight_of)


def _assert_changed_by(base, patched, expected, tolerance=lambda weight: 2e-6 * max(1.0, float(weight.abs().max()))):
    """Exactly the expected keys change, each by its expected delta (within rounding of the stored
    weight); every other weight is untouched, bit for bit."""
    assert expected, "the check needs at least one weighted key"
    for k, v in base.items():
        if k in expected:
            assert float(expected[k].abs().max()) > 1e-5, k
            err = float((patched[k].double() - v.double() - expected[k]).abs().max())
            assert err <= tolerance(v), f"{k}: off by {err}"
        else:
            assert torch.equal(patched[k], v), f"{k} changed but is not in a weighted block"


CORE_CASES = [
    ("kohya_sd15_lora", "sd15_micro"), ("kohya_sdxl_lora", "sdxl_micro"), ("kohya_flux_lora", "flux_micro"),
    ("aitoolkit_flux_lora", "flux_micro"), ("lycoris_sd15_locon_dora", "sd15_micro"),
    ("lycoris_sd15_loha", "sd15_micro"), ("lycoris_sd15_lokr", "sd15_micro"), ("comfyui_trainer_sd15_lora", "sd15_micro"),
]


@pytest.mark.parametrize("name,variant", CORE_CASES)
@pytest.mark.parametrize("spec", ["", "ALL"])
def test_every_block_at_one_equals_core_loraloader_bit_for_bit(host, models, name, variant, spec):
    mp = models(variant)
    file_name, _ = _fitted(host, mp, name)
    core, _ = _core(host, mp, None, file_name, sm=0.7)
    ours, _, info = _ours(host, mp, None, file_name, sm=0.7, spec=spec)
    assert core.patches.keys() == ours.patches.keys() and len(ours.patches) > 10
    _assert_same_weights(core, ours)
    assert "not applied" not in info or "no CLIP connected" in info


@pytest.mark.parametrize("name,variant", [("kohya_sd15_lora", "sd15_micro"), ("kohya_sdxl_lora", "sdxl_micro"),
                                          ("kohya_flux_lora", "flux_micro"), ("aitoolkit_flux_lora", "flux_micro")])
def test_one_block_at_w_changes_exactly_its_keys_by_w_delta(host, models, name, variant):
    mp = models(variant)
    layout = _layout(host, mp)
    file_name, tensors = _fitted(host, mp, name, seed=1)
    base = _patched(mp)
    deltas = _entry_deltas(host, tensors, layout)
    blocks = sorted({block for _, block, _, _ in deltas})
    assert len(blocks) >= 4
    for block in blocks:
        ours, _, info = _ours(host, mp, None, file_name, sm=1.5, spec=f"{block}=0.6, default=0")
        _assert_changed_by(base, _loaded(ours), _expected(deltas, layout, lambda b: 1.5 * 0.6 if b == block else 0.0))
        assert f"(strength 1.5 x block weight = {1.5 * 0.6:g})" in info


def test_single_blocks_only_flux_lora_gets_the_single_block_weights(host, models):
    """Inspire #191: weights address absolute blocks, so a LoRA without double blocks gets S weights."""
    mp = models("flux_micro")
    layout = _layout(host, mp)
    file_name, tensors = _fitted(host, mp, "kohya_flux_lora", seed=2,
                                 keep=lambda k: k.startswith("lora_unet_single_blocks_"))
    base = _patched(mp)
    ours, _, _ = _ours(host, mp, None, file_name, spec="D=0, S=0.5")
    _assert_changed_by(base, _loaded(ours), _expected_deltas(host, tensors, layout, lambda b: 0.5))
    vector = ",".join(["1"] * 19 + ["0.25", "0.75"] + ["0"] * 36)
    ours, _, info = _ours(host, mp, None, file_name, spec=vector)
    weights = {"S00": 0.25, "S01": 0.75}
    _assert_changed_by(base, _loaded(ours), _expected_deltas(host, tensors, layout, lambda b: weights.get(b, 0.0)))
    rows = [ln.split() for ln in info.splitlines()]
    assert ["S00", "0.25", "3"] in rows and ["S01", "0.75", "3"] in rows


@pytest.mark.parametrize("name,variant", [("diffusers_sdxl_dreambooth_lora", "sdxl_micro"),
                                          ("xlabs_flux_lora", "flux_micro")])
def test_formats_core_drops_are_applied_as_the_math_says(host, models, name, variant):
    mp = models(variant)
    layout = _layout(host, mp)
    file_name, tensors = _fitted(host, mp, name, seed=3)
    base = _patched(mp)
    core, _ = _core(host, mp, None, file_name)
    assert not core.patches  # what ComfyUI itself does with these files
    ours, _, info = _ours(host, mp, None, file_name, sm=0.8)
    _assert_changed_by(base, _loaded(ours), _expected_deltas(host, tensors, layout, lambda b: 0.8))
    assert "not applied" not in info


def test_fp8_weights_and_low_vram_loading_match_core(host, tiny_models, models):
    """fp8 weights (patched in fp32, rounded back with ComfyUI's seeded stochastic rounding) and
    low-VRAM loading (patches applied on the fly in each forward) give what core gives."""
    import comfy.model_management
    path = os.path.join(host.folder("diffusion_models"), "loader_fp8_sd15_micro.safetensors")
    if not os.path.exists(path):
        tiny_models.write_model("sd15_micro", path, dtype="fp16")
    mp = tiny_models.load_tiny_model(path, model_options={"dtype": torch.float8_e4m3fn})
    assert torch.float8_e4m3fn in {v.dtype for v in mp.model.state_dict().values()}
    file_name, _ = _fitted(host, mp, "kohya_sd15_lora", seed=8)
    core, _ = _core(host, mp, None, file_name)
    ours, _, _ = _ours(host, mp, None, file_name, spec="ALL")
    _assert_same_weights(core, ours)

    comfy.model_management.unload_all_models()
    x, sigma, kw = tiny_models.dummy_inputs("sd15_micro")
    cpu = torch.device("cpu")
    outputs = []
    for patcher in (core, ours, mp):
        with torch.no_grad():
            patcher.patch_model(device_to=cpu, lowvram_model_memory=1)  # every layer in low-VRAM mode
            try:
                outputs.append((patcher.model.model_lowvram, patcher.model.lowvram_patch_counter,
                                patcher.model.apply_model(x, sigma, **kw)))
            finally:
                patcher.unpatch_model(device_to=cpu)
    (lv_core, n_core, out_core), (lv_ours, n_ours, out_ours), (_, _, out_base) = outputs
    assert lv_core and lv_ours and n_core == n_ours > 40
    assert torch.equal(out_core, out_ours) and not torch.equal(out_ours, out_base)


def test_wrong_architecture_applies_nothing_and_says_which(host, models, tmp_path):
    mp = models("sdxl_micro")
    path = materialize("kohya_sd15_lora", os.path.join(host.folder("loras"), "loader_full_sd15.safetensors"), rank=2)
    ours, clip, info = _ours(host, mp, None, os.path.basename(path))
    assert ours is mp and not ours.patches
    assert info.startswith("nothing applied: an SD1.x LoRA on an SDXL model\n"
                           "fix: pick a LoRA made for SDXL, or load an SD1.x model\n")


@pytest.fixture(scope="module")
def clip_l(host):
    """A real ComfyUI CLIP (SD1.x CLIP-L text encoder) built from a random state dict with the real key layout."""
    import comfy.sd
    clip_layout = host.module("loralab.layouts.text_encoders").clip_layout
    g = torch.Generator().manual_seed(0)
    prefix = "clip_l.transformer."
    sd = {k[len(prefix):]: torch.randn(shape, generator=g).mul_(0.02).half() for k, shape in clip_layout("clip_l").items()}
    clip = comfy.sd.load_text_encoder_state_dicts([sd], clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION)
    assert set(clip.cond_stage_model.state_dict()) >= {prefix + k for k in sd if k != "text_model.embeddings.position_ids"}
    return clip


def test_clip_strength_applies_to_text_encoder_keys_only(host, models, clip_l):
    mp = models("sd15_micro")
    file_name, _ = _fitted(host, mp, "kohya_sd15_lora", seed=4)
    core_m, core_c = _core(host, mp, clip_l, file_name, sm=1.0, sc=0.3)
    ours_m, ours_c, info = _ours(host, mp, clip_l, file_name, sm=1.0, sc=0.3)
    _assert_same_weights(core_c.patcher, ours_c.patcher)
    _assert_same_weights(core_m, ours_m)
    assert all(k.startswith("clip_l.") for k in ours_c.patcher.patches) and len(ours_c.patcher.patches) == 72
    assert all(k.startswith("diffusion_model.") for k in ours_m.patches)
    assert "applied to the clip: 72 keys from 72 modules (strength 0.3 x block weight = 0.3)" in info

    only_model, untouched, _ = _ours(host, mp, clip_l, file_name, sm=1.0, sc=0.0)
    assert untouched is clip_l and not untouched.patcher.patches
    _assert_same_weights(core_m, only_model)

    # BASE weights the text-encoder patches: strength_clip 0.3 x BASE 0.5 is core at strength_clip 0.15
    only_clip, clip_half, info = _ours(host, mp, clip_l, file_name, sm=0.0, sc=0.3, spec="BASE=0.5")
    assert only_clip is mp and "applied to the model: 0 keys" in info
    _, core_half = _core(host, mp, clip_l, file_name, sm=1.0, sc=0.15)
    _assert_same_weights(core_half.patcher, clip_half.patcher)
    assert {p[0] for ps in clip_half.patcher.patches.values() for p in ps} == {0.3 * 0.5}


def test_partial_match_applies_what_fits_and_lists_the_rest(host, models, clip_l):
    """A real-size SDXL LoRA on a tiny SDXL with only a CLIP-L: the CLIP-L part lands, every other
    module is listed with its reason."""
    mp = models("sdxl_micro")
    path = materialize("kohya_sdxl_lora", os.path.join(host.folder("loras"), "loader_full_sdxl.safetensors"), rank=2)
    ours_m, ours_c, info = _ours(host, mp, clip_l, os.path.basename(path))
    assert ours_m is mp
    assert len(ours_c.patcher.patches) == 72 and all(k.startswith("clip_l.") for k in ours_c.patcher.patches)
    lines = info.splitlines()
    assert lines[0] == "applied 72 of 986 modules; 914 not applied (reasons below)" and lines[1] == "not applied: 914 modules"
    reasons = lines[2:lines.index(next(ln for ln in lines if ln.startswith("likely cause: ")))]
    counts = {ln.split(" × ")[1].split(", e.g. ")[0]: int(ln.split(" × ")[0]) for ln in reasons}
    assert sum(counts.values()) == 914 and len(reasons) <= 5, reasons  # grouped: a line per reason, not per module
    assert counts["the clip has no such weight"] == 192  # clip_g modules: this CLIP is CLIP-L only
    unfit = next(ln for ln in reasons if " × does not fit its weight in this model, e.g. " in ln)
    assert ": size [" in unfit and "] does not fit diffusion_model." in unfit  # the first one's sizes, in full
    assert lines[len(reasons) + 2:len(reasons) + 4] == [
        "likely cause: modules for weights this SDXL model lacks or has at another size (a model built with other "
        "layers or widths)", "fix: load the model the LoRA was trained on; on this one the rest applies"]


def test_unknown_model_architecture_passes_through_and_says_so(host, models, monkeypatch):
    mp = models("sd15_micro")
    file_name, _ = _fitted(host, mp, "kohya_sd15_lora")
    monkeypatch.setattr(host.module("nodes.host.models"), "model_arch", lambda model: None)
    ours, _, info = _ours(host, mp, None, file_name)
    assert ours is mp and info.startswith("nothing applied: the model is ") and "which LoRA Lab has no layout for yet" in info


def test_user_preset_file_is_read_at_execution(host, models):
    mp = models("sd15_micro")
    layout = _layout(host, mp)
    file_name, tensors = _fitted(host, mp, "kohya_sd15_lora", seed=5)
    path = host.module("nodes.loader").user_presets_file()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("MYOUT:OUT=0.4, default=0\n")
    try:
        base = _patched(mp)
        ours, _, info = _ours(host, mp, None, file_name, spec="myout")
        _assert_changed_by(base, _loaded(ours), _expected_deltas(
            host, tensors, layout, lambda b: 0.4 if b.startswith("OUT") else 0.0))
    finally:
        os.remove(path)
    with pytest.raises(host.module("loralab.errors").SpecError, match="MYOUT"):
        _ours(host, mp, None, file_name, spec="MYOUT")


def _tiny_model_file(host, tiny_models) -> str:
    """A tiny SDXL in diffusion_models, for prompts that load one."""
    name = "loader_tiny_sdxl_micro.safetensors"
    path = os.path.join(host.folder("diffusion_models"), name)
    if not os.path.exists(path):
        tiny_models.write_model("sdxl_micro", path, dtype="fp32")
    return name


def test_nodes_run_in_the_real_executor(host, tiny_models, models):
    """Loader and Stack through ComfyUI's own validation and executor: the loader equals core's
    LoraLoaderModelOnly, the stack equals the loader applied twice."""
    model_file = _tiny_model_file(host, tiny_models)
    mp = tiny_models.load_tiny_model(os.path.join(host.folder("diffusion_models"), model_file))
    first, _ = _fitted(host, mp, "kohya_sdxl_lora", seed=6)
    second, _ = _fitted(host, mp, "diffusers_sdxl_dreambooth_lora", seed=7)
    host.nodes.NODE_CLASS_MAPPINGS["LoraLoaderModelOnly"].INPUT_TYPES()  # refresh the loras list
    load = {"1": {"class_type": "TinyDiffusionModelLoader", "inputs": {"unet_name": model_file}}}

    def run(extra):
        prompt = {**load, **extra, "9": {"class_type": "ModelWeightChecksum", "inputs": {"model": ["2", 0]}}}
        ok, result, messages = host.run_prompt(prompt)
        assert ok, (result, messages)
        return json.loads(host.executor.history_result["outputs"]["9"]["text"][0])

    core = run({"2": {"class_type": "LoraLoaderModelOnly",
                      "inputs": {"model": ["1", 0], "lora_name": first, "strength_model": 0.9}}})
    ours = run({"2": {"class_type": "LoRALabLoader",
                      "inputs": {"model": ["1", 0], "lora_name": first, "strength_model": 0.9, "strength_clip": 1.0,
                                 "block_weights": "", "a": 1.0, "b": 1.0, "seed": 0}}})
    assert (ours["sum"], ours["abs_sum"], ours["num_patches"]) == (core["sum"], core["abs_sum"], core["num_patches"])
    assert ours["num_patches"] > 100
    # the frontend learns the model's architecture (the LoRA picker's "fits this model" filter)
    assert list(host.executor.history_result["outputs"]["2"]["loralab_model_arch"]) == ["sdxl"]

    rows = [{"on": True, "lora": first, "strength_model": 1.0, "strength_clip": 1.0, "block_weights": "OUT=1, default=0"},
            {"on": False, "lora": "not_a_listed_file.safetensors", "strength_model": 1.0, "strength_clip": 1.0,
             "block_weights": ""},
            {"on": True, "lora": second, "strength_model": 0.5, "strength_clip": 1.0, "block_weights": "IN=0"}]
    stacked = run({"2": {"class_type": "LoRALabStack",
                         "inputs": {"model": ["1", 0], "loras": json.dumps(rows), "a": 1.0, "b": 1.0, "seed": 0}}})
    m1, _, _ = _ours(host, mp, None, first, spec="OUT=1, default=0")
    m2, _, _ = _ours(host, m1, None, second, sm=0.5, spec="IN=0")
    _patched(m2)
    direct = sum(float(p.detach().double().sum()) for p in m2.model.diffusion_model.parameters())
    assert stacked["sum"] == direct and stacked["num_patches"] == len(m2.patches)
    info = host.executor.history_result["outputs"]["2"]["text"][0]
    assert list(host.executor.history_result["outputs"]["2"]["loralab_model_arch"]) == ["sdxl"]
    assert info.startswith("[1] applied ") and "\nLoRA: " + first in info and "\n\n[3] applied " in info
    assert "\nLoRA: " + second in info and "[2]" not in info  # the row that is off is skipped, its file never read


def _rows(*rows):
    """The ``loras`` value of a Stack: one row per (lora, strength_model, strength_clip, block_weights[, on])."""
    return json.dumps([{"on": r[4] if len(r) > 4 else True, "lora": r[0], "strength_model": r[1],
                        "strength_clip": r[2], "block_weights": r[3]} for r in rows])


def _stack(host, model, clip, loras, block_weights=None):
    inputs = {"model": model, "clip": clip, "loras": loras, "a": 1.0, "b": 1.0, "seed": 0}
    if block_weights is not None:
        inputs["block_weights"] = block_weights
    return host.call_node("LoRALabStack", **inputs)


def test_stack_equals_the_loader_applied_row_by_row_bit_for_bit(host, models, clip_l):
    """Rows that are on, in their order, each applied as the Loader applies it: the same model and CLIP
    weights bit for bit; rows that are off change nothing; another order is that order's chain."""
    mp = models("sd15_micro")
    style, _ = _fitted(host, mp, "kohya_sd15_lora", seed=9)
    loha, _ = _fitted(host, mp, "lycoris_sd15_loha", seed=10)
    rows = [(style, 0.8, 0.6, "OUT=0.5"), (loha, 1.0, 1.0, "", False), (loha, -0.4, 0.3, "IN=0, M00=0.7")]
    model, clip, info = _stack(host, mp, clip_l, _rows(*rows))
    m1, c1, _ = _ours(host, mp, clip_l, style, sm=0.8, sc=0.6, spec="OUT=0.5")
    m2, c2, _ = _ours(host, m1, c1, loha, sm=-0.4, sc=0.3, spec="IN=0, M00=0.7")
    _assert_same_weights(m2, model)
    _assert_same_weights(c2.patcher, clip.patcher)
    assert [ln.split("]")[0] for ln in info.split("\n\n")] == ["[1", "[3"]

    reverse = [rows[2], rows[1], rows[0]]
    model, clip, info = _stack(host, mp, clip_l, _rows(*reverse))
    r1, q1, _ = _ours(host, mp, clip_l, loha, sm=-0.4, sc=0.3, spec="IN=0, M00=0.7")
    r2, q2, _ = _ours(host, r1, q1, style, sm=0.8, sc=0.6, spec="OUT=0.5")
    _assert_same_weights(r2, model)
    _assert_same_weights(q2.patcher, clip.patcher)
    assert info.startswith("[1] applied ") and info.index("LoRA: " + loha) < info.index("LoRA: " + style)

    untouched, same_clip, info = _stack(host, mp, clip_l, _rows((style, 1.0, 1.0, "", False)))
    assert untouched is mp and same_clip is clip_l and info.startswith("no LoRA on")


def test_stack_rows_are_checked_before_anything_runs(host, models, tiny_models):
    """Every row is parsed; rows that are on must pick a listed LoRA; messages name the input and the row."""
    mp = models("sd15_micro")
    style, _ = _fitted(host, mp, "kohya_sd15_lora", seed=9)
    validate = host.nodes.NODE_CLASS_MAPPINGS["LoRALabStack"].validate_inputs
    assert validate(loras=_rows((style, 1.0, 1.0, ""), ("gone.safetensors", 1.0, 1.0, "", False))) is True
    assert validate(loras="[]") is True and validate(loras="") is True
    assert validate(loras=_rows((style, 1.0, 1.0, ""), ("gone.safetensors", 1.0, 1.0, ""))) == \
        "loras row 2: 'gone.safetensors' is not a LoRA in the loras folder list"
    assert validate(loras=_rows(("", 1.0, 1.0, ""))) == \
        "loras row 1: no LoRA chosen (pick one, turn the row off or remove it)"
    for loras, problem in [
        ('[{"on": true, "lora": "a.safetensors"', "not valid JSON (Expecting ',' delimiter"),
        ('{"lora": "a.safetensors"}', "is a JSON dict, not a list of rows"),
        ('["a.safetensors"]', "row 1 is str, not an object with on, lora, strength_model"),
        (_rows((style, "1", 1.0, "")), 'row 1: strength_model is "1", not a number'),
        (_rows((style, 1.0, 1e9, "")), "row 1: strength_clip 1e+09 is outside -100..100"),
        (json.dumps([{"lora": style, "weight": 1}]), "row 1 has fields LoRA Lab does not know: weight"),
        (json.dumps([{"lora": style, "on": "yes"}]), 'row 1: on is "yes", not true or false'),
    ]:
        message = validate(loras=loras)
        assert message.startswith("key 'loras': ") and problem in message, (loras, message)
    assert "reload the page, or set the field to [] to start over" in validate(loras="nope")

    ok, result, _ = host.run_prompt({"1": {"class_type": "LoRALabStack", "inputs": {
        "model": ["0", 0], "loras": _rows(("gone.safetensors", 1.0, 1.0, "")), "a": 1.0, "b": 1.0, "seed": 0}},
        "0": {"class_type": "TinyDiffusionModelLoader", "inputs": {"unet_name": _tiny_model_file(host, tiny_models)}},
        "9": {"class_type": "ModelWeightChecksum", "inputs": {"model": ["1", 0]}}})
    assert not ok and "loras row 1: 'gone.safetensors' is not a LoRA" in json.dumps(result["node_errors"])


def test_a_five_slot_stack_prompt_is_refused_naming_the_rows_input(host, tiny_models):
    """API prompts of the old five-slot Stack (lora_name_1 ... block_weights_5) are refused by
    ComfyUI's validation, naming ``loras`` (the frontend migrates saved workflows; a script's
    prompt needs its rows)."""
    old = {"model": ["0", 0], "a": 1.0, "b": 1.0, "seed": 0}
    for i in range(1, 6):
        old.update({f"lora_name_{i}": "None", f"strength_model_{i}": 1.0, f"strength_clip_{i}": 1.0,
                    f"block_weights_{i}": ""})
    ok, result, _ = host.run_prompt({"1": {"class_type": "LoRALabStack", "inputs": old},
                                     "0": {"class_type": "TinyDiffusionModelLoader",
                                           "inputs": {"unet_name": _tiny_model_file(host, tiny_models)}},
                                     "9": {"class_type": "ModelWeightChecksum", "inputs": {"model": ["1", 0]}}})
    errors = result["node_errors"]["1"]["errors"]
    assert not ok and any(e["extra_info"].get("input_name") == "loras" for e in errors), errors


def test_a_broken_file_stops_the_node_with_a_clear_error(host, models):
    path = os.path.join(host.folder("loras"), "loader_broken.safetensors")
    with open(path, "wb") as f:
        f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(host.module("loralab.errors").SafetensorsError) as e:
        _ours(host, models("sd15_micro"), None, "loader_broken.safetensors")
    assert "loader_broken.safetensors: header is not valid JSON" in str(e.value)


# --- LyCORIS OFT, BOFT and GLoRA: updates that depend on the base weight, applied by core's adapters ---

def _base_dependent(host, mp, algo):
    """(file name, tensors) of a LyCORIS ``algo`` ("oft", "boft", "glora") LoRA on every diffusion-model
    module of the LyCORIS LoHa fixture the model has, shaped as LyCORIS writes them, in fp16."""
    layout = _layout(host, mp)
    lora = host.module("loralab.lora").Lora.from_state_dict(
        fit_fixture_to_layout("lycoris_sd15_loha", layout, rank=2), {}, layout)
    g = torch.Generator().manual_seed(11)
    out = {}
    for n, m in enumerate(m for m in lora.mapped() if m.component == "unet"):
        x, shape = m.entry.module, layout.shapes[m.target.key]
        rows, ones = shape[0], (1,) * (len(shape) - 1)
        blocks = 4 if rows % 16 == 0 else 2  # blocks of at least 2 rows (conv_out has 4)
        size = rows // blocks
        if algo == "oft":  # diag-OFT: [n, b, b], alpha = norm constraint (0: none); ComfyUI ignores rescale
            out[f"{x}.oft_blocks"] = torch.randn(blocks, size, size, generator=g) * 0.05
            out[f"{x}.alpha"] = torch.tensor(0.0 if n % 2 else 0.3)
        elif algo == "boft":  # butterfly: [m, n, b, b] with n a power of 2 and m = log2(n) + 1 stages
            stages = blocks.bit_length()
            out[f"{x}.oft_blocks"] = torch.randn(stages, blocks, size, size, generator=g) * 0.05
            out[f"{x}.rescale"] = 1 + torch.randn(rows, *ones, generator=g) * 0.1
            out[f"{x}.alpha"] = torch.tensor(0.0)
        else:  # GLoRA: W·a1·a2 + b1·b2 at alpha / rank
            rank, cin, kernel = 2, shape[1], shape[2:]
            one = (1,) * len(kernel)
            for role, s in (("a1", (cin, rank, *one)), ("a2", (rank, cin, *one)), ("b1", (rows, rank, *one)),
                            ("b2", (rank, cin, *kernel))):
                out[f"{x}.{role}.weight"] = torch.randn(s, generator=g) * 0.1
            out[f"{x}.alpha"] = torch.tensor(1.0)
    assert len({k.rsplit(".", 1)[0] for k in out}) > 10
    tensors = {k: v.half() for k, v in out.items()}
    return _write(host, f"loader_lycoris_{algo}_{len(tensors)}.safetensors", tensors), tensors


@pytest.mark.parametrize("algo,name", [("oft", "OFT"), ("boft", "BOFT"), ("glora", "GLoRA")])
def test_oft_boft_and_glora_equal_core_loraloader_bit_for_bit(host, models, algo, name):
    mp = models("sd15_micro")
    file_name, tensors = _base_dependent(host, mp, algo)
    base = _patched(mp)
    for strength in (1.0, 0.5):
        core, _ = _core(host, mp, None, file_name, sm=strength)
        ours, _, info = _ours(host, mp, None, file_name, sm=strength, spec="ALL" if strength == 1 else "")
        assert core.patches.keys() == ours.patches.keys() and len(ours.patches) > 10
        core_w = _patched(core)
        assert all(not torch.equal(core_w[k], base[k]) for k in core.patches)  # core's adapter really ran
        _assert_bit_equal(core_w, _loaded(ours))
        n = len(ours.patches)
        assert f"applied to the model: {n} keys from {n} modules (strength {strength:g} x block weight" in info
        assert "not applied" not in info

    summary = host.module("loralab.ops.inspect").summarize(os.path.join(host.folder("loras"), file_name),
                                                        _layout(host, mp))
    assert summary.algorithms == {name: len(core.patches)} and not summary.unmapped
    assert summary.host_dropped == 0 and summary.host_dropped_we_map == []


@pytest.mark.parametrize("algo", ["oft", "boft", "glora"])
def test_oft_boft_and_glora_block_at_zero_leaves_its_keys_unchanged(host, models, algo):
    mp = models("sd15_micro")
    file_name, _ = _base_dependent(host, mp, algo)
    base = _patched(mp)
    core, _ = _core(host, mp, None, file_name, sm=0.8)
    full = _patched(core)
    block_of = host.module("loralab.blocks.map").block_of
    blocks = {k: block_of(k, "unet") for k in core.patches}
    block = sorted(set(blocks.values()))[1]
    ours, _, info = _ours(host, mp, None, file_name, sm=0.8, spec=f"{block}=0")
    patched = _loaded(ours)
    zero = [k for k, b in blocks.items() if b == block]
    assert zero and set(ours.patches) == set(core.patches) - set(zero)
    for k in base:
        assert torch.equal(patched[k], base[k] if k in zero else full[k]), k
    assert f"; {len(zero)} left out at strength x block weight 0" in info.splitlines()[0]

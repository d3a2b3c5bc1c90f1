"""Every health warning has a file that triggers it (and only it), and a clean file triggers none."""
import os

import pytest
import torch

from loralab.ops.inspect import inspect_lora
from loralab.files.safetensors import save_tensors
from loralab_testkit import fixture, fixture_tensors

KOHYA = "kohya_sd15_lora"
MODULE = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"


def clean_kohya(rank=2):
    """kohya SD1.5 at a small rank, with metadata that says that rank."""
    meta = dict(fixture("loras", KOHYA)["metadata"], ss_network_dim=str(rank))
    return fixture_tensors(KOHYA, rank=rank), meta


def codes(tmp, tensors, meta=None, **kw):
    path = save_tensors(os.path.join(tmp, "h.safetensors"), tensors, meta or {}, overwrite=True)
    report = inspect_lora(path, **kw)
    return {w.code: w for w in report.warnings}


def test_clean_files_trigger_nothing(tmp):
    t, meta = clean_kohya()
    assert codes(tmp, t, meta) == {}
    lyco = dict(fixture("loras", "lycoris_sd15_locon_dora")["metadata"], ss_network_dim="2")
    assert codes(tmp, fixture_tensors("lycoris_sd15_locon_dora", rank=2), lyco) == {}
    aitk = fixture("metadata", "aitoolkit_flux")["metadata"]
    assert codes(tmp, fixture_tensors("aitoolkit_flux_lora", rank=2), aitk) == {}


def test_nan_and_inf_values(tmp):
    t, meta = clean_kohya()
    t[f"{MODULE}.lora_down.weight"][0, 3] = float("nan")
    t["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"][1, 0] = float("inf")
    found = codes(tmp, t, meta)
    assert set(found) == {"nonfinite_values"}
    assert found["nonfinite_values"].items == ["lora_te_text_model_encoder_layers_0_mlp_fc1", MODULE]
    assert codes(tmp, t, meta, blocks=False) == {}  # a header-only look cannot see values


def test_all_zero_module(tmp):
    t, meta = clean_kohya()
    t[f"{MODULE}.lora_up.weight"].zero_()
    found = codes(tmp, t, meta)
    assert set(found) == {"all_zero"} and found["all_zero"].items == [MODULE]


@pytest.mark.parametrize("alpha, code", [(float("inf"), "alpha_nonfinite"), (float("nan"), "alpha_nonfinite"),
                                         (0.0, "alpha_not_positive"), (-8.0, "alpha_not_positive"),
                                         (64.0, "alpha_far_above_rank")])
def test_bad_alpha(tmp, alpha, code):
    t, meta = clean_kohya()
    t[f"{MODULE}.alpha"] = torch.tensor(alpha).half()
    found = codes(tmp, t, {k: v for k, v in meta.items() if k != "ss_network_alpha"}, blocks=False)
    assert set(found) == {code} and found[code].items[0].startswith(MODULE)


def test_fp16_overflowed_alpha_is_the_nonfinite_trap(tmp):
    t, meta = clean_kohya()
    t[f"{MODULE}.alpha"] = torch.tensor(100000.0).half()  # what an fp16 save makes of a large alpha
    assert set(codes(tmp, t, blocks=False)) == {"alpha_nonfinite"}


def test_full_dimension_lokr_with_large_alpha(tmp):
    t = {"lora_unet_down_blocks_0_attentions_0_proj_in.lokr_w1": torch.randn(8, 8),
         "lora_unet_down_blocks_0_attentions_0_proj_in.lokr_w2": torch.randn(40, 40, 1, 1),
         "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(10000.0)}
    found = codes(tmp, t)
    assert set(found) == {"alpha_ignored"}
    t["lora_unet_down_blocks_0_attentions_0_proj_in.alpha"] = torch.tensor(1.0)
    assert codes(tmp, t) == {}


def test_rank_and_alpha_contradicting_the_metadata(tmp):
    t, meta = clean_kohya()
    found = codes(tmp, t, dict(meta, ss_network_dim="16", ss_network_alpha="4.0"), blocks=False)
    assert set(found) == {"rank_vs_metadata", "alpha_vs_metadata"}
    assert len(found["rank_vs_metadata"].items) == 264 and len(found["alpha_vs_metadata"].items) == 264
    assert codes(tmp, t, dict(meta, ss_network_dim="Dynamic", ss_network_alpha="Dynamic"), blocks=False) == {}
    assert codes(tmp, t, dict(meta, ss_network_dim="16", ss_network_args='{"block_dims": "2,4"}'),
                 blocks=False) == {}


def test_conv_dim_is_the_rank_of_wide_convolutions(tmp):
    """LyCORIS: conv_dim applies to k×k convolutions (k > 1), ss_network_dim to everything else."""
    name = "lycoris_sd15_locon_dora"
    meta = dict(fixture("loras", name)["metadata"], ss_network_dim="2",
                ss_network_args='{"algo": "locon", "conv_dim": "4", "conv_alpha": "8"}')
    found = codes(tmp, fixture_tensors(name, rank=2), meta, blocks=False)
    assert set(found) == {"rank_vs_metadata"}
    assert len(found["rank_vs_metadata"].items) == 52  # the LoCon modules: 3x3 convs at rank 2, not 4
    assert "conv_dim" in found["rank_vs_metadata"].message


def test_bf16_alpha_compares_after_rounding(tmp):
    t, meta = clean_kohya()
    for k in t:
        if k.endswith(".alpha"):
            t[k] = torch.tensor(0.3).to(torch.bfloat16)
    assert codes(tmp, t, dict(meta, ss_network_alpha="0.3"), blocks=False) == {}
    assert set(codes(tmp, t, dict(meta, ss_network_alpha="0.31"), blocks=False)) == {"alpha_vs_metadata"}


def test_metadata_arch_contradicting_the_weights(tmp):
    t, meta = clean_kohya()
    meta = dict(meta, **{"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"})
    meta.pop("ss_base_model_version")
    found = codes(tmp, t, meta, blocks=False)
    assert set(found) == {"arch_mismatch"}
    assert found["arch_mismatch"].message == "metadata says SDXL but the weights fit SD1.x"


def test_weights_that_fit_no_model(tmp):
    t = {"my_net.layer1.lora_up.weight": torch.randn(8, 2), "my_net.layer1.lora_down.weight": torch.randn(2, 8)}
    found = codes(tmp, t)
    assert set(found) == {"unknown_arch", "unmapped_modules"}
    assert found["unmapped_modules"].items == ["my_net.layer1"]


def test_keys_no_model_has(tmp):
    t, meta = clean_kohya()
    t["lora_unet_no_such_block_0.lora_up.weight"] = torch.randn(8, 2).half()
    t["lora_unet_no_such_block_0.lora_down.weight"] = torch.randn(2, 8).half()
    t["training_step_counter"] = torch.tensor(3)
    t["lora_unet_orphan_module.alpha"] = torch.tensor(1.0).half()
    found = codes(tmp, t, meta)
    assert set(found) == {"unknown_keys", "unmapped_modules"}
    assert found["unknown_keys"].items == ["training_step_counter", "lora_unet_orphan_module.alpha"]
    assert found["unmapped_modules"].items == ["lora_unet_no_such_block_0"]


def test_modules_that_do_not_fit_or_are_broken(tmp):
    t, meta = clean_kohya()
    t[f"{MODULE}.lora_down.weight"] = torch.randn(2, 77).half()  # to_q takes 640 inputs
    del t["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"]
    t["lora_unet_mid_block_attentions_0_proj_in.oft_blocks"] = torch.randn(4, 300, 300).half()  # proj_in has 1280 rows
    t["lora_unet_mid_block_attentions_0_proj_out.oft_blocks"] = torch.randn(4, 320).half()
    found = codes(tmp, t, meta, blocks=False)
    assert set(found) == {"size_mismatch", "broken_module"}
    mismatch = sorted(found["size_mismatch"].items)
    assert mismatch[0].startswith(MODULE)
    assert mismatch[1] == ("lora_unet_mid_block_attentions_0_proj_in (oft_blocks [4, 300, 300] (4 blocks of 300) do "
                           "not cover the 1280 rows (diffusion_model.middle_block.1.proj_in.weight of SD1.x))")
    assert sorted(found["broken_module"].items) == [
        "lora_te_text_model_encoder_layers_0_mlp_fc1 (down matrix missing)",
        "lora_unet_mid_block_attentions_0_proj_out (oft_blocks [4, 320] are neither [n, b, b] (OFT) nor "
        "[m, n, b, b] (BOFT))"]


def test_duplicate_targets(tmp):
    """kohya SD1 names with both lora_te_ and lora_te1_ prefixes write the same CLIP weight twice;
    diffusers to_q on a fused Flux qkv overlaps a whole-qkv module."""
    t, meta = clean_kohya()
    for k in list(t):
        if k.startswith("lora_te_text_model_encoder_layers_0_mlp_fc1."):
            t[k.replace("lora_te_", "lora_te1_")] = t[k].clone()
    found = codes(tmp, t, meta, blocks=False)
    assert set(found) == {"duplicate_target"}
    assert found["duplicate_target"].items == [
        "clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.weight: lora_te1_text_model_encoder_layers_0_mlp_fc1 "
        "and lora_te_text_model_encoder_layers_0_mlp_fc1"]
    flux = {"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.randn(2, 3072),
            "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.randn(3072, 2),
            "transformer.transformer_blocks.0.attn.to_k.lora_A.weight": torch.randn(2, 3072),
            "transformer.transformer_blocks.0.attn.to_k.lora_B.weight": torch.randn(3072, 2)}
    assert codes(tmp, flux, blocks=False) == {}  # disjoint row slices of one qkv weight
    flux["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"] = torch.randn(2, 3072)
    flux["lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight"] = torch.randn(9216, 2)
    found = codes(tmp, flux, blocks=False)
    assert set(found) == {"duplicate_target"} and len(found["duplicate_target"].items) == 2


def test_text_report_lists_warnings(tmp):
    t, meta = clean_kohya()
    t[f"{MODULE}.lora_up.weight"].zero_()
    path = save_tensors(os.path.join(tmp, "z.safetensors"), t, meta)
    text = inspect_lora(path).to_text()
    assert "health: 1 warning(s)" in text and "all-zero update" in text and MODULE in text
    assert "health: no problems found" in inspect_lora(path, blocks=False).to_text()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("size", [1, 7, 100_003])  # one element, a tail shorter than a vector, many vectors
def test_all_finite_finds_every_nonfinite_value(dtype, bad, size):
    from loralab.ops.health import all_finite
    x = torch.randn(size).to(dtype)
    assert all_finite(x)
    for pos in {0, size // 2, size - 1}:
        y = x.clone()
        y[pos] = bad
        assert not all_finite(y), (pos, y[pos])
    big = torch.full((5,), torch.finfo(dtype).max, dtype=dtype)  # the largest finite values are finite
    assert all_finite(big) and all_finite(-big) and all_finite(torch.zeros(0, 3, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_nan_and_inf_found_in_every_file_dtype(tmp, dtype):
    t, meta = clean_kohya()
    t = {k: v.to(dtype) for k, v in t.items()}
    t[f"{MODULE}.lora_up.weight"][-1, -1] = float("-inf")
    t["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"][0, -1] = float("nan")
    zero = "lora_unet_mid_block_attentions_0_proj_in"
    t[f"{zero}.lora_down.weight"].zero_()
    found = codes(tmp, t, meta)
    assert set(found) == {"nonfinite_values", "all_zero"}
    assert found["nonfinite_values"].items == ["lora_te_text_model_encoder_layers_0_mlp_fc1", MODULE]
    assert found["all_zero"].items == [zero]


def test_metadata_alpha_rounds_as_torch_does():
    """The header check rounds ss_network_alpha to the alpha tensor's dtype without torch."""
    from loralab.files.safetensors import round_to_dtype
    g = torch.Generator().manual_seed(0)
    values = torch.cat([torch.randn(2000, generator=g, dtype=torch.float64) * 10 ** float(e) for e in range(-8, 6)])
    values = [*values.tolist(), 0.3, 65504.0, 65520.0, 1e39, -1e39, float("inf"), float("nan"), 0.0, -0.0]
    for name, dtype in (("F16", torch.float16), ("BF16", torch.bfloat16), ("F32", torch.float32)):
        for v in values:
            want = float(torch.tensor(v, dtype=torch.float64).to(dtype).double())
            got = round_to_dtype(v, name)
            assert got == want or (got != got and want != want), (name, v, got, want)
    assert round_to_dtype(0.3, "F64") == 0.3 and round_to_dtype(3.7, "I32") == 3.7

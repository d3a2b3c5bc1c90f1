"""Tiny real ComfyUI encoders for training tests (the host harness has diffusion models only).

* VAE: ``comfy.sd.VAE`` holding ComfyUI's own ``AutoencoderKL`` (the real SD/Flux VAE key layout)
  built through its ``config`` argument with 32 base channels, one res block per level, four
  levels (8× downscale) and 4 (SD1.5/SDXL) or 16 (Flux) latent channels; random weights. ComfyUI's
  state-dict detection fixes the channel width at 128, hence the explicit config.
* Text encoders: ``comfy.sd.CLIP`` with each architecture's own ClipTarget (SD1.5:
  SD1Tokenizer/SD1ClipModel; SDXL: SDXLTokenizer/SDXLClipModel; Flux: FluxTokenizer/flux_clip), the
  real tokenizers, and the real model classes shrunk through ComfyUI's ``<name>_model_config``
  model options: CLIP-L and CLIP-G keep their widths (768, 1280) with 3 layers and a 64-wide MLP;
  T5-XXL keeps d_model 4096 with 1 layer, 2 heads of 32 and a 64-wide MLP (weights in bf16 to
  halve its 32128×4096 embedding). Outputs have the shapes the tiny models take: SD1.5 context
  [1, 77, 768]; SDXL [1, 77, 2048] + pooled 1280; Flux T5 [1, ≥256, 4096] + CLIP-L pooled 768.
* Wan and Qwen-Image: the real Wan 2.1 VAE (ComfyUI 0.3.64 fixes its width at 96; 16 latent channels, 8× space and
  4× time compression) with random weights, and the tiny Flux text encoders standing in for UMT5-XXL
  and Qwen2.5-VL (a 4096-wide context). :data:`WAN_MICRO` is a Wan 2.1 T2V diffusion model with the
  real key names (every Wan 2.2 A14B expert has that layout) at width 64, 4 blocks; :data:`QWEN_MICRO`
  a Qwen-Image one; :data:`SD35M_MICRO` an SD3.5 Medium one (with Flux's VAE and encoders).
* Z-Image: :data:`Z_IMAGE_MICRO` at width 256, 2 layers, with Flux's VAE (Z-Image's latent format is
  Flux's) and the tiny Flux encoders standing in for Qwen3-4B (a 4096-wide caption input).
* Chroma: :data:`CHROMA_MICRO` at width 64, 2 + 2 blocks, with Flux's VAE and encoders (Chroma
  reads T5 only; the CLIP-L pooled output goes unused).
* Flux.2 Klein 4B: :data:`KLEIN_MICRO` at width 128, 2 + 2 blocks, with Flux.2's VAE layout (32
  channels packed 2×2 and batch-normed into 128 at 16×, ComfyUI's ``batch_norm_latent``) and the
  tiny Flux encoders standing in for Qwen3-4B (a 4096-wide context).
"""
from __future__ import annotations

import os

import torch

CLIP_SMALL = {"num_hidden_layers": 3, "intermediate_size": 64}
T5_SMALL = {"num_layers": 1, "d_ff": 64, "num_heads": 2, "d_kv": 32}
LATENT_CHANNELS = {"sd15": 4, "sdxl": 4, "flux": 16, "wan": 16, "qwen": 16, "sd35m": 16, "zimage": 16,
                   "chroma": 16, "klein": 32}
#: make_tiny_models-style variant (model_config class, unet_config, model_base class, detectable, conditioning)
WAN_MICRO = ("WAN21_T2V", {"image_model": "wan2.1", "model_type": "t2v", "dim": 64, "ffn_dim": 96, "num_heads": 2,
                           "num_layers": 4, "in_dim": 16, "out_dim": 16, "patch_size": (1, 2, 2), "freq_dim": 256,
                           "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6},
             "WAN21", False, {"context": (8, 4096)})
#: Qwen-Image at width 64, 4 blocks, its text input 4096 wide (the tiny Flux encoders stand in for Qwen2.5-VL)
QWEN_MICRO = ("QwenImage", {"image_model": "qwen_image", "in_channels": 64, "num_layers": 4,
                            "num_attention_heads": 2, "attention_head_dim": 32, "joint_attention_dim": 4096,
                            "axes_dims_rope": (8, 12, 12)},
              "QwenImage", False, {"context": (8, 4096)})
#: SD3.5 Medium's layout (RMS q/k norms, a second x attention in block 0) at depth 2; pooled 768 wide (the tiny
#: Flux encoders' CLIP-L stands in for SD3's three encoders, T5's 4096-wide context included)
SD35M_MICRO = ("SD3", {"in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": 2, "num_patches": 4096, "pos_embed_max_size": 64,
                       "pos_embed_scaling_factor": None, "adm_in_channels": 768, "x_block_self_attn_layers": [0],
                       "qk_norm": "rms", "context_embedder_config": {"target": "torch.nn.Linear",
                                                                     "params": {"in_features": 4096, "out_features": 128}}},
               "SD3", False, {"context": (8, 4096), "pooled": 768})
#: Z-Image's released config (ComfyUI's ZImage class) at width 256 (its modulation needs 256), 2 layers, its
#: caption input 4096 wide
Z_IMAGE_MICRO = ("ZImage", {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 256, "cap_feat_dim": 4096,
                            "n_layers": 2, "qk_norm": True, "n_heads": 8, "n_kv_heads": 8, "axes_dims": [8, 12, 12],
                            "axes_lens": [1536, 512, 512], "rope_theta": 256.0, "ffn_dim_multiplier": 8.0 / 3.0,
                            "z_image_modulation": True, "time_scale": 1000.0, "pad_tokens_multiple": 32},
                 "Lumina2", False, {"context": (8, 4096)})
#: Chroma's released config (ComfyUI's Chroma class) at width 64, 2 double and 2 single blocks, T5's 4096-wide context
CHROMA_MICRO = ("Chroma", {"image_model": "chroma", "in_channels": 64, "out_channels": 64, "patch_size": 2,
                           "context_in_dim": 4096, "hidden_size": 64, "mlp_ratio": 4.0, "num_heads": 2, "depth": 2,
                           "depth_single_blocks": 2, "axes_dim": [8, 12, 12], "theta": 10000, "qkv_bias": True,
                           "in_dim": 64, "out_dim": 64, "hidden_dim": 32, "n_layers": 2},
                "Chroma", False, {"context": (8, 4096)})
#: Flux.2 Klein 4B's released config (ComfyUI's Flux2 class) at width 128 (head dim 64), 2 double and 2 single
#: blocks, its text input 4096 wide
KLEIN_MICRO = ("Flux2", {"image_model": "flux2", "axes_dim": [16, 16, 16, 16], "num_heads": 2, "mlp_ratio": 3.0,
                         "theta": 2000, "out_channels": 128, "global_modulation": True, "mlp_silu_act": True,
                         "qkv_bias": False, "ops_bias": False, "default_ref_method": "index", "ref_index_scale": 10.0,
                         "txt_ids_dims": [3], "patch_size": 1, "in_channels": 128, "hidden_size": 128,
                         "context_in_dim": 4096, "vec_in_dim": None, "depth": 2, "depth_single_blocks": 2,
                         "guidance_embed": False, "yak_mlp": False, "txt_norm": False},
               "Flux2", False, {"context": (8, 4096)})
ARCH_OF_VARIANT = {"sd15_micro": "sd15", "sdxl_micro": "sdxl", "flux_micro": "flux", "sd15": "sd15"}


def _fill(module: torch.nn.Module, seed: int) -> None:
    """Deterministic random weights in place (ComfyUI's ops leave them uninitialised). Large
    tensors are filled chunk by chunk from one random block of prime length, rolled per chunk:
    cheap in time and memory, and no two rows alike."""
    g = torch.Generator().manual_seed(seed)
    block = torch.randn(1_048_573, generator=g)
    shift = 0
    with torch.no_grad():
        for name, t in sorted(module.state_dict(keep_vars=True).items()):
            if not t.is_floating_point():
                continue
            if t.dim() >= 2:
                scale, base = (0.02 if "embedding" in name or name.endswith("shared.weight")
                               else 1 / max(1, t[0].numel()) ** 0.5), 0.0
            else:
                scale, base = 0.02, (1.0 if "norm" in name or "ln" in name else 0.0)
            flat = t.view(-1)
            for start in range(0, flat.numel(), block.numel()):
                piece = flat[start:start + block.numel()]
                shift += 7919
                piece.copy_(base + scale * block.roll(shift)[:piece.numel()])


def tiny_vae(arch: str, seed: int = 0):
    """A ComfyUI VAE (AutoencoderKL) with small channels for this architecture's latent size; Wan's own VAE for Wan."""
    import comfy.sd
    if arch in ("wan", "qwen"):  # Qwen-Image's VAE is Wan 2.1's
        from comfy.ldm.wan.vae import WanVAE
        template = WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                          temperal_downsample=[False, True, True], dropout=0.0)
        _fill(template, seed)
        return comfy.sd.VAE(sd={k: v.detach().clone() for k, v in template.state_dict().items()})
    from comfy.ldm.models.autoencoder import AutoencoderKL
    c = LATENT_CHANNELS[arch]
    packed = arch == "klein"  # Flux.2: the latent packed 2×2 and batch-normed (4·c channels at 16×)
    ddconfig = {"double_z": True, "z_channels": c, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 32,
                "ch_mult": [1, 2, 2, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0,
                **({"batch_norm_latent": True} if packed else {})}
    params = {"ddconfig": ddconfig, "embed_dim": c}
    template = AutoencoderKL(**params)
    _fill(template, seed)
    if packed:
        with torch.no_grad():
            template.bn.running_var.fill_(1.0)
    sd = {k: v.detach().clone() for k, v in template.state_dict().items()}
    vae = comfy.sd.VAE(sd=sd, config={"params": params})
    if packed:  # what ComfyUI's VAE detection sets for a state dict with bn.running_mean
        vae.latent_channels, vae.downscale_ratio, vae.upscale_ratio = 4 * c, 16, 16
    return vae


def tiny_clip(arch: str, seed: int = 0, real_widths: bool = False):
    """A ComfyUI CLIP with the architecture's real tokenizers and shrunken real text encoders;
    with ``real_widths`` the CLIPs keep their real MLP widths (3072, 5120) and T5 its 64 heads of
    64, so that every CLIP weight and T5's attention have their real shapes (what a
    text-encoder LoRA writes)."""
    import comfy.sd
    import comfy.sd1_clip
    import comfy.sdxl_clip
    import comfy.supported_models_base as smb
    import comfy.text_encoders.flux
    options = {"clip_l_model_config": {**CLIP_SMALL, **({"intermediate_size": 3072} if real_widths else {})},
               "dtype": torch.float32}
    if arch == "sd15":
        target = smb.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
    elif arch == "sdxl":
        target = smb.ClipTarget(comfy.sdxl_clip.SDXLTokenizer, comfy.sdxl_clip.SDXLClipModel)
        options["clip_g_model_config"] = {**CLIP_SMALL, **({"intermediate_size": 5120} if real_widths else {})}
    else:
        target = smb.ClipTarget(comfy.text_encoders.flux.FluxTokenizer,
                                comfy.text_encoders.flux.flux_clip(dtype_t5=torch.bfloat16))
        options["t5xxl_model_config"] = {**T5_SMALL, **({"num_heads": 64, "d_kv": 64} if real_widths else {})}
    clip = comfy.sd.CLIP(target=target, model_options=options)
    _fill(clip.cond_stage_model, seed)
    return clip


def write_dataset(folder: str, n: int = 4, size: tuple[int, int] = (64, 64), captions: list[str] | None = None,
                  seed: int = 0) -> str:
    """A folder of ``n`` small synthetic images with captions (a shared look, varied colours)."""
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    w, h = size
    for i in range(n):
        base = torch.rand(3, generator=g)
        yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
        ring = ((xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.09).float()
        img = base[None, None, :] * (1 - ring[..., None]) + torch.tensor([1.0, 0.9, 0.2]) * ring[..., None]
        img = (img + 0.05 * torch.randn(h, w, 3, generator=g)).clamp(0, 1)
        Image.fromarray((img.numpy() * 255).astype("uint8")).save(os.path.join(folder, f"img{i}.png"))
        text = captions[i % len(captions)] if captions else f"[trigger], a yellow ring on colour {i}"
        with open(os.path.join(folder, f"img{i}.txt"), "w", encoding="utf-8") as f:
            f.write(text)
    return folder


class LoRALabTestTinyEncoders:
    """Test-only node (registered by the training host tests): the tiny VAE and CLIP of an arch."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"arch": (list(LATENT_CHANNELS),), "seed": ("INT", {"default": 0, "min": 0})}}

    RETURN_TYPES = ("VAE", "CLIP")
    FUNCTION = "make"
    CATEGORY = "testing/loralab"

    def make(self, arch, seed):
        return tiny_vae(arch, seed), tiny_clip(arch, seed)


def schema_defaults(node_cls) -> dict:
    """Every widget input of a V3 node with its default value."""
    return {i.id: i.default for i in node_cls.GET_SCHEMA().inputs if getattr(i, "default", None) is not None}


class LoraKeyLog:
    """Collects ComfyUI's 'lora key not loaded' / 'NOT LOADED' warnings while active."""

    def __init__(self) -> None:
        import logging
        self.messages: list[str] = []
        self._logging = logging
        outer = self

        class Handler(logging.Handler):
            def emit(self, record):
                msg = record.getMessage()
                if "lora key not loaded" in msg or "NOT LOADED" in msg:
                    outer.messages.append(msg)
        self.handler = Handler(level=logging.WARNING)

    def __enter__(self):
        self._logging.getLogger().addHandler(self.handler)
        return self

    def __exit__(self, *exc):
        self._logging.getLogger().removeHandler(self.handler)


def core_lora_patches(model, lora_sd: dict):
    """Load a LoRA the way core's LoraLoaderModelOnly does; returns (patched model, warnings, patched keys)."""
    import comfy.lora
    import comfy.sd
    with LoraKeyLog() as log:
        patched, _ = comfy.sd.load_lora_for_models(model, None, lora_sd, 1.0, 0)
        key_map = comfy.lora.model_lora_keys_unet(model.model, {})
        patches = comfy.lora.load_lora(lora_sd, key_map)
    return patched, log.messages, patches


def assert_core_loads_trained_file(host, model, sd: dict, meta: dict, arch_id: str) -> list[str]:
    """A flow-model LoRA trained with the ``attention_mlp`` targets (``sd``, its metadata ``meta``) names
    its arch's ``ss_base_model_version`` and flow prediction, and core's loader patches ``model`` with
    it without a warning, one weight per module: exactly those targets of the model's layout, which
    it returns."""
    arch_mod = host.module("loralab.layouts.archs").arch(arch_id)
    assert meta["ss_base_model_version"] == arch_mod.ss_base_model_version
    assert meta["modelspec.prediction_type"] == "flow"
    _, warnings, patches = core_lora_patches(model, sd)
    modules = {k.rsplit(".", 1)[0] for k in sd if k.endswith(".alpha")}
    assert warnings == [] and len(patches) == len(modules)
    layout = host.module("nodes.host.models").model_layout(model)
    expected = host.module("loralab.train.network").select_targets(dict(layout.shapes), arch_id, "attention_mlp")
    assert sorted(patches) == sorted(expected)
    return expected


def write_stock_encoders(vae_folder: str, clip_folder: str, seed: int = 0) -> tuple[str, str]:
    """An SD1.x VAE and CLIP-L at their real sizes (83.7 M and 123 M parameters; random weights,
    fp16) as files that ComfyUI's stock VAELoader and CLIPLoader detect and load: what a run
    config names. Returns their paths (written once)."""
    import comfy.sd1_clip
    import comfy.utils
    from comfy.ldm.models.autoencoder import AutoencoderKL
    vae_path = os.path.join(vae_folder, "stock_sd_vae.safetensors")
    clip_path = os.path.join(clip_folder, "stock_clip_l.safetensors")
    if not os.path.exists(vae_path):
        os.makedirs(vae_folder, exist_ok=True)
        ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                    "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
        vae = AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
        _fill(vae, seed)
        comfy.utils.save_torch_file({k: v.half() for k, v in vae.state_dict().items()}, vae_path + ".tmp")
        os.replace(vae_path + ".tmp", vae_path)
    if not os.path.exists(clip_path):
        os.makedirs(clip_folder, exist_ok=True)
        clip = comfy.sd1_clip.SD1ClipModel(device="cpu", dtype=torch.float16)
        _fill(clip, seed)
        comfy.utils.save_torch_file({k: v.half() for k, v in clip.clip_l.transformer.state_dict().items()},
                                    clip_path + ".tmp")
        os.replace(clip_path + ".tmp", clip_path)
    return vae_path, clip_path

"""What a safetensors file that holds no LoRA tensors is instead, from its key names alone: a
checkpoint (or bare diffusion-model weights), a textual-inversion embedding, a VAE or a text
encoder, so that picking one as a LoRA says so instead of listing every key as unrecognized."""
from __future__ import annotations

import re

#: what the file looks like -> patterns of its key names (matched at the start of the key)
_KINDS: dict[str, re.Pattern[str]] = {
    # full checkpoints (SD1.x/SD2/SDXL/SD3/Flux single files) and bare diffusion models (UNet, MMDiT, Flux)
    "checkpoint": re.compile(r"(model\.diffusion_model\.|conditioner\.embedders\.|cond_stage_model\.|"
                             r"(model\.)?(input_blocks|middle_block|output_blocks|time_embed|label_emb|"
                             r"double_blocks|single_blocks|joint_blocks|x_embedder|context_embedder|"
                             r"final_layer|img_in|txt_in|time_in|vector_in|guidance_in)\.)"),
    # A1111 .safetensors embeddings (emb_params), SDXL ones (clip_l / clip_g), old string_to_param
    "textual-inversion embedding": re.compile(r"(emb_params|clip_[lg]|string_to_param|string_to_token)(\.|$)"),
    # LDM/Flux VAEs, also as first_stage_model.* and vae.* in other packagings; diffusers VAEs
    "VAE": re.compile(r"(first_stage_model\.|vae\.)?((encoder|decoder)\.(conv_|norm_out|down|up|mid)|"
                      r"quant_conv\.|post_quant_conv\.)"),
    # CLIP and T5 text encoders
    "text encoder": re.compile(r"(text_model\.|transformer\.text_model\.|encoder\.block\.|shared\.weight|"
                               r"text_projection\.|logit_scale)"),
}

def looks_like(keys: list[str]) -> str | None:
    """The kind of model file the tensor ``keys`` name (``"checkpoint"``, ``"textual-inversion
    embedding"``, ``"VAE"``, ``"text encoder"``), or None when most keys fit no kind. Call it for
    files where no LoRA tensor was recognized: a checkpoint has VAE and text-encoder keys too, so
    the kind with the most keys wins, checkpoint first on ties."""
    tensor_keys = [k for k in keys if k != "__metadata__"]
    if not tensor_keys:
        return None
    counts = {kind: sum(1 for k in tensor_keys if pattern.match(k)) for kind, pattern in _KINDS.items()}
    if any(k.startswith(("model.diffusion_model.", "first_stage_model.")) for k in tensor_keys):
        # a single-file checkpoint bundles a VAE and text encoders: their keys count for it
        counts["checkpoint"] = sum(1 for k in tensor_keys if any(p.match(k) for p in _KINDS.values()))
    kind = max(counts, key=lambda k: counts[k])
    return kind if counts[kind] * 2 >= len(tensor_keys) else None


#: kind -> what to do with such a file in ComfyUI instead
_USE = {"checkpoint": "load it with Load Checkpoint or Load Diffusion Model",
        "textual-inversion embedding": "use it in a prompt as embedding:<its name>",
        "VAE": "load it with Load VAE", "text encoder": "load it with Load CLIP"}


def use_instead(kind: str) -> str:
    """What to do with a file of this kind instead of loading it as a LoRA."""
    return _USE[kind]


def not_a_lora(kind: str) -> str:
    """The phrase a report uses for such a file: ``not a LoRA (looks like a checkpoint)``."""
    return f"not a LoRA (looks like a {kind})"

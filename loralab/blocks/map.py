"""Block maps as data: the absolute block id of every model key, per architecture family.

Ids follow the names LoRA Block Weight users know: SD1.x/SD2 and SDXL ``BASE`` (text encoders),
``IN00``.., ``M00``, ``OUT00``..; Flux ``CLIP``, ``T5``, ``IN`` (embedders), ``D00``.. (double
blocks), ``S00``.. (single blocks), ``OUT`` (final layer), Flux.2 the same with its three shared
modulation layers in ``IN``, Chroma the same with its distilled guidance layer in ``IN``;
HunyuanVideo ``IN`` (embedders and the text token refiner), ``D00``..``D19``,
``S00``..``S39``, ``OUT``, HunyuanImage 2.1 the same with its ByT5 glyph mapper in ``IN``, HunyuanVideo 1.5
``IN`` (with its ByT5 mapper, SigLIP projection and condition-type embedding), ``D00``..``D53``, ``OUT``; Lumina 2 ``IN`` (embedders, noise and context refiners), ``L00``..``L25``
(its layers), ``OUT`` (final norm and layer); HiDream-I1 ``IN`` (embedders and caption projections),
``D00``..``D15`` (double-stream blocks), ``S00``..``S31`` (single-stream blocks), ``OUT``; SD3/SD3.5 ``CLIP`` (CLIP-L and G),
``T5``, ``IN``, ``J00``.. (joint blocks), ``OUT``; Wan and Qwen-Image ``IN`` (patch, text, time
and image embedders), ``B00``.. (transformer blocks), ``OUT`` (head / final norm and projection), Wan's
variants the same with their condition embedders and encoders in ``IN`` (VACE's patch embedding, the camera
adapter, S2V's and HuMo's audio encoders, Animate's face and motion encoders, SCAIL's and WanDancer's
embedders), VACE's blocks ``V00``.. and WanDancer's global head in ``OUT``; the modules that inject a condition
between blocks (S2V's audio injector, Animate's face adapter, WanDancer's music injector) are ``OTHER``;
Z-Image ``IN`` (embedders, pad tokens), ``NR00``.. (noise refiner), ``CR00``.. (context refiner),
``L00``.. (layers), ``OUT`` (final layer); LTX-Video ``IN`` (embedders), ``B00``.. (transformer blocks),
``OUT``; LTX-2 the same with each block split in two: ``B00``.. its video part (with the audio-to-video
attention, which writes into the video stream), ``A00``.. its audio part (audio attentions and feed-forward,
the video-to-audio attention), and ``IN`` holding the text embeddings connectors.
A key no rule claims belongs to ``OTHER``, never silently to a block.
"""
from __future__ import annotations

import re
import weakref

from ..layouts import ModelLayout
from ..layouts.archs import arch

OTHER = "OTHER"

#: family -> ordered (pattern on the canonical key, block id template)
BLOCK_RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "unet": (
        (r"^(?:clip_l|clip_g|clip_h)\.", "BASE"),
        (r"^diffusion_model\.input_blocks\.(\d+)\.", "IN{:02d}"),
        (r"^diffusion_model\.middle_block\.", "M00"),
        (r"^diffusion_model\.output_blocks\.(\d+)\.", "OUT{:02d}"),
    ),
    "flux": (
        (r"^clip_l\.", "CLIP"),
        (r"^t5xxl\.", "T5"),
        (r"^diffusion_model\.(?:img_in|txt_in|time_in|vector_in|guidance_in|distilled_guidance_layer"
         r"|double_stream_modulation_img|double_stream_modulation_txt|single_stream_modulation)\.", "IN"),
        (r"^diffusion_model\.double_blocks\.(\d+)\.", "D{:02d}"),
        (r"^diffusion_model\.single_blocks\.(\d+)\.", "S{:02d}"),
        (r"^diffusion_model\.final_layer\.", "OUT"),
    ),
    "hunyuan_video": (
        (r"^diffusion_model\.(?:img_in|txt_in|time_in|vector_in|guidance_in|byt5_in|time_r_in|vision_in"
         r"|cond_type_embedding)\.", "IN"),
        (r"^diffusion_model\.double_blocks\.(\d+)\.", "D{:02d}"),
        (r"^diffusion_model\.single_blocks\.(\d+)\.", "S{:02d}"),
        (r"^diffusion_model\.final_layer\.", "OUT"),
    ),
    "hidream": (
        (r"^diffusion_model\.(?:t_embedder|p_embedder|x_embedder|caption_projection)\.", "IN"),
        (r"^diffusion_model\.double_stream_blocks\.(\d+)\.", "D{:02d}"),
        (r"^diffusion_model\.single_stream_blocks\.(\d+)\.", "S{:02d}"),
        (r"^diffusion_model\.final_layer\.", "OUT"),
    ),
    "lumina2": (
        (r"^diffusion_model\.(?:x_embedder|t_embedder|cap_embedder|noise_refiner|context_refiner)\.", "IN"),
        (r"^diffusion_model\.layers\.(\d+)\.", "L{:02d}"),
        (r"^diffusion_model\.(?:norm_final|final_layer)\.", "OUT"),
    ),
    "mmdit": (
        (r"^(?:clip_l|clip_g)\.", "CLIP"),
        (r"^t5xxl\.", "T5"),
        (r"^diffusion_model\.(?:pos_embed$|x_embedder\.|t_embedder\.|y_embedder\.|context_embedder\.)", "IN"),
        (r"^diffusion_model\.joint_blocks\.(\d+)\.", "J{:02d}"),
        (r"^diffusion_model\.final_layer\.", "OUT"),
    ),
    "wan": (
        (r"^diffusion_model\.(?:patch_embedding|text_embedding|time_embedding|time_projection|img_emb"
         r"|vace_patch_embedding|control_adapter|ref_conv|pose_patch_embedding|patch_embedding_pose"
         r"|patch_embedding_mask|patch_embedding_global|img_emb_refimage|casual_audio_encoder|audio_proj"
         r"|cond_encoder|frame_packer|trainable_cond_mask|face_encoder|motion_encoder|music_encoder"
         r"|music_projection)\.", "IN"),
        (r"^diffusion_model\.blocks\.(\d+)\.", "B{:02d}"),
        (r"^diffusion_model\.vace_blocks\.(\d+)\.", "V{:02d}"),
        (r"^diffusion_model\.(?:head|head_global)\.", "OUT"),
    ),
    "qwen_image": (
        (r"^diffusion_model\.(?:img_in|txt_in|txt_norm|time_text_embed)\.", "IN"),
        (r"^diffusion_model\.transformer_blocks\.(\d+)\.", "B{:02d}"),
        (r"^diffusion_model\.(?:norm_out|proj_out)\.", "OUT"),
    ),
    "z_image": (
        (r"^diffusion_model\.(?:x_embedder\.|cap_embedder\.|t_embedder\.|siglip_embedder\.|x_pad_token$"
         r"|cap_pad_token$|siglip_pad_token$)", "IN"),
        (r"^diffusion_model\.noise_refiner\.(\d+)\.", "NR{:02d}"),
        (r"^diffusion_model\.context_refiner\.(\d+)\.", "CR{:02d}"),
        (r"^diffusion_model\.siglip_refiner\.(\d+)\.", "SR{:02d}"),
        (r"^diffusion_model\.layers\.(\d+)\.", "L{:02d}"),
        (r"^diffusion_model\.final_layer\.", "OUT"),
    ),
    "ltxv": (
        (r"^diffusion_model\.(?:patchify_proj\.|adaln_single\.|caption_projection\.|keyframes_abs_pos_embedding$"
         r"|audio_patchify_proj\.|audio_adaln_single\.|audio_caption_projection\.|av_ca_\w+\."
         r"|video_embeddings_connector\.|audio_embeddings_connector\.)", "IN"),
        (r"^diffusion_model\.transformer_blocks\.(\d+)\.(?:audio_(?!to_video_attn\.)|video_to_audio_attn\."
         r"|scale_shift_table_a2v_ca_audio$)", "A{:02d}"),
        (r"^diffusion_model\.transformer_blocks\.(\d+)\.", "B{:02d}"),
        (r"^diffusion_model\.(?:proj_out\.|scale_shift_table$|audio_proj_out\.|audio_scale_shift_table$)", "OUT"),
    ),
}
_COMPILED = {fam: tuple((re.compile(p), t) for p, t in rules) for fam, rules in BLOCK_RULES.items()}

_NUMBERED = re.compile(r"(IN|M|OUT|D|S|J|B|V|NR|CR|SR|L|A)(\d+)")

#: the block-id families, in display order
FAMILY_ORDER: dict[str, tuple[str, ...]] = {
    "unet": ("BASE", "IN", "M", "OUT"),
    "flux": ("CLIP", "T5", "IN", "D", "S", "OUT"),
    "mmdit": ("CLIP", "T5", "IN", "J", "OUT"),
    "wan": ("IN", "B", "V", "OUT"),
    "qwen_image": ("IN", "B", "OUT"),
    "z_image": ("IN", "NR", "CR", "SR", "L", "OUT"),
    "hunyuan_video": ("IN", "D", "S", "OUT"),
    "lumina2": ("IN", "L", "OUT"),
    "hidream": ("IN", "D", "S", "OUT"),
    "ltxv": ("IN", "B", "A", "OUT"),
}


def block_of(key: str, family: str) -> str:
    """The absolute block id of a canonical model key (``OTHER`` if no block claims it)."""
    for pattern, template in _COMPILED[family]:
        m = pattern.match(key)
        if m:
            return template.format(*(int(g) for g in m.groups()))
    return OTHER


def split_block_id(block: str) -> tuple[str, int | None]:
    """``"IN04"`` -> ("IN", 4); ``"BASE"`` -> ("BASE", None)."""
    m = _NUMBERED.fullmatch(block)
    if not m:
        return block, None
    return m.group(1), int(m.group(2))


def block_sort_key(block: str, family: str) -> tuple[int, int]:
    """Order blocks as users read them (BASE, IN00.., M00, OUT00..; CLIP, T5, IN, D.., S.., OUT; IN, B.., OUT;
    IN, D.., S.., OUT)."""
    fam, num = split_block_id(block)
    order = FAMILY_ORDER[family]
    return (order.index(fam) if fam in order else len(order), -1 if num is None else num)


_LAYOUT_BLOCKS: "weakref.WeakKeyDictionary[ModelLayout, tuple[str, ...]]" = weakref.WeakKeyDictionary()


def layout_blocks(layout: ModelLayout) -> tuple[str, ...]:
    """Every absolute block id that has at least one weight in this layout, in display order."""
    if layout not in _LAYOUT_BLOCKS:
        family = layout.arch.family
        found = {block_of(k, family) for k in layout.shapes}
        found.discard(OTHER)
        _LAYOUT_BLOCKS[layout] = tuple(sorted(found, key=lambda b: block_sort_key(b, family)))
    return _LAYOUT_BLOCKS[layout]


def arch_family(arch_id: str) -> str:
    """The block-map family of an architecture id."""
    return arch(arch_id).family

// /loralab/lora_info answers shaped as loralab/ops/inspect.py documents them (schema 1): the panel's
// (SAMPLE, Summary.panel_dict) and the details (DETAILS, the parts of Summary.to_dict it adds).

export const dist = (pairs, byGroup = []) => ({
  summary: pairs.map(([v, n]) => `${v} ×${n}`).join(", "),
  values: pairs.map(([value, count]) => ({ value, count })),
  varies: pairs.length > 1,
  by_group: byGroup.map(([group, summary]) => ({ group, summary })),
});

export const SAMPLE = {
  schema: 1, name: "ohwx_woman_sdxl.safetensors", path: "ohwx_woman_sdxl.safetensors", file_size: 228458496,
  tensor_count: 2958, dtypes: { F16: 2958 },
  format: { id: "kohya", name: "kohya sd-scripts" },
  arch: { id: "sdxl", name: "SDXL", variant: null, metadata_claim: "sdxl" },
  algorithms: { LoRA: 722, LoCon: 264 },
  rank: dist([[32, 722], [16, 264]], [["unet linear", "32 ×722"], ["unet conv", "16 ×264"]]),
  alpha: dist([[16, 986]]),
  scale: dist([[0.5, 722], [1, 264]]),
  training: {
    trainer: "kohya sd-scripts 48d368fa55", steps: 1280, max_steps: 1280, epochs: 8, max_epochs: 10, resolution: "1024x1024",
    base_model: "/home/me/models/sd_xl_base_1.0.safetensors", base_model_version: "sdxl_base_v1-0",
    images: 25, train_images: 250, reg_images: 0, optimizer: "AdamW8bit", optimizer_args: "weight_decay=0.1",
    lr_scheduler: "cosine", learning_rate: 0.0001, unet_lr: 0.0001, text_encoder_lr: 0.00005,
    network_module: "lycoris.kohya", network_algo: "locon",
  },
  tags: {
    top: [["ohwx woman", 25], ["1girl", 23], ["solo", 22], ["long hair", 17], ["looking at viewer", 14], ["brown hair", 13],
      ["smile", 11], ["upper body", 9]].map(([tag, count]) => ({ tag, count })),
    distinct: 12, folders: 1, skipped: 0, problem: null,
  },
  triggers: [
    { word: "ohwx woman", kind: "class_tokens", source: 'ss_tag_frequency folder "10_ohwx woman"', count: null, images: null, likely: true },
    { word: "ohwx  Woman", kind: "tag", source: 'ss_tag_frequency["10_ohwx woman"]', count: 25, images: 25, likely: true },
    { word: "smile", kind: "tag", source: 'ss_tag_frequency["10_ohwx woman"]', count: 3, images: 25, likely: false },
  ],
  trigger_words: ["ohwx woman"],
  warnings: [{ code: "alpha_far", message: "alpha is far above rank in 4 modules", count: 4, items: ["a", "b", "c", "d"] }],
};

export const DETAILS = {
  ...SAMPLE,
  coverage: { modules: 4, mapped: 3, blocks: ["IN04", "OUT01"] },
  modules: [
    { module: "lora_te1_x", block: "BASE", target: "clip_l.x" }, { module: "lora_unet_out", block: "OUT01", target: "d.o" },
    { module: "lora_unet_in", block: "IN04", target: "d.i" }, { module: "lora_unet_gone", block: null, target: null },
  ],
  unmapped: [{ module: "lora_unet_gone", param: "weight", reason: "no such weight in SDXL" }],
  tag_frequency: [{ folder: "10_ohwx woman", images: 25, tags: [{ tag: "ohwx woman", count: 25 }, { tag: "1girl", count: 23 }] }],
  metadata: {
    kohya: { ss_network_dim: 32, ss_tag_frequency: "{broken", ss_dataset_dirs: { "10_ohwx woman": { img_count: 25 } } },
    modelspec: { architecture: "stable-diffusion-xl-v1-base/lora" },
    aitoolkit: {}, diffusers: { r: 4 }, other: { format: "pt" },
    errors: { ss_tag_frequency: "not valid JSON (Expecting value)" },
  },
};

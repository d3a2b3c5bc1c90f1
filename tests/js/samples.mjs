// A /loralab/lora_info answer shaped as loralab/inspect.py documents it (schema 1).

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
  training: { trainer: "kohya sd-scripts 48d368fa55", steps: 1280, max_steps: 1280, epochs: 8, max_epochs: 10, resolution: "1024x1024" },
  triggers: [
    { word: "ohwx woman", kind: "class_tokens", source: 'ss_tag_frequency folder "10_ohwx woman"', count: null, images: null, likely: true },
    { word: "ohwx  Woman", kind: "tag", source: 'ss_tag_frequency["10_ohwx woman"]', count: 25, images: 25, likely: true },
    { word: "smile", kind: "tag", source: 'ss_tag_frequency["10_ohwx woman"]', count: 3, images: 25, likely: false },
  ],
  trigger_words: ["ohwx woman"],
  warnings: [{ code: "alpha_far", message: "alpha is far above rank in 4 modules", count: 4, items: ["a", "b", "c", "d"] }],
};

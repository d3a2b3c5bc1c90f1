"""A kohya ``split_qkv`` Flux LoRA as kohya's ``state_dict`` writes it, with the parts it trained."""
import json

import torch

META = {"ss_network_module": "networks.lora_flux", "ss_network_dim": "16", "ss_network_alpha": "16.0",
        "ss_network_args": json.dumps({"train_blocks": "all", "split_qkv": "True"})}
QKV = "lora_unet_double_blocks_3_img_attn_qkv"
LINEAR1 = "lora_unet_single_blocks_7_linear1"
PROJ = "lora_unet_double_blocks_3_img_attn_proj"
D = torch.float64


def kohya_split_file(seed=0, alpha=16.0, r=16):
    """What kohya's state_dict writes for two split modules (and one plain one), with the parts it
    trained: ({key: tensor}, {module: (parts' ups, parts' downs)})."""
    g = torch.Generator().manual_seed(seed)
    tensors, parts = {}, {}
    for module, rows in ((QKV, (3072,) * 3), (LINEAR1, (3072, 3072, 3072, 12288))):
        ups = [torch.randn(n, r, generator=g, dtype=D) * 0.02 for n in rows]
        downs = [torch.randn(r, 3072, generator=g, dtype=D) * 0.02 for _ in rows]
        up = torch.zeros(sum(rows), r * len(rows), dtype=D)
        start = 0
        for i, u in enumerate(ups):
            up[start:start + u.shape[0], i * r:(i + 1) * r] = u
            start += u.shape[0]
        tensors.update({f"{module}.lora_up.weight": up, f"{module}.lora_down.weight": torch.cat(downs),
                        f"{module}.alpha": torch.tensor(alpha)})
        parts[module] = (ups, downs)
    tensors.update({f"{PROJ}.lora_up.weight": torch.randn(3072, r, generator=g, dtype=D),
                    f"{PROJ}.lora_down.weight": torch.randn(r, 3072, generator=g, dtype=D),
                    f"{PROJ}.alpha": torch.tensor(alpha)})
    return tensors, parts


def trained_delta(ups, downs, alpha=16.0, r=16):
    """kohya's forward: each part's up·down at alpha/r, the parts' outputs concatenated."""
    out = torch.empty(sum(u.shape[0] for u in ups), downs[0].shape[1], dtype=ups[0].dtype)
    start = 0
    for u, d in zip(ups, downs):  # written in place: full-size Flux modules
        torch.matmul(u, d, out=out[start:start + u.shape[0]])
        start += u.shape[0]
    return out.mul_(alpha / r)

"""Small real parts for engine training tests: image folders, deterministic stand-in encoders, and
a toy ε-prediction denoiser built on three real SD1.5-layout weight keys and a text encoder on one
real CLIP-L key (so the saved LoRA has real kohya names). The host tests train ComfyUI's own models; these keep the engine tests fast."""
from __future__ import annotations

import hashlib
import os
import struct
import zlib

import pytest
import torch
from PIL import Image

from loralab.layouts import ModelLayout
from loralab.train.cache import TensorCache
from loralab.train.dataset import DatasetSettings, build_dataset
from loralab.train.network import select_targets, select_text_encoder_targets
from loralab.train.run import TrainRun, TrainSettings

#: an SD1.5-layout UNet with 32 channels (the host's sd15_micro)
TOY_CONFIG = {"model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": [1, 1], "transformer_depth": [1, 0],
              "transformer_depth_output": [1, 1, 0, 0], "transformer_depth_middle": 1, "context_dim": 768,
              "use_linear_in_transformer": False, "in_channels": 4, "out_channels": 4, "adm_in_channels": None}
TOY_KEYS = {
    "conv_in": "diffusion_model.input_blocks.0.0.weight",  # [32, 4, 3, 3]
    "to_k": "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",  # [32, 768]
    "conv_out": "diffusion_model.out.2.weight",  # [4, 32, 3, 3]
}
#: the toy text encoder's one weight, a real CLIP-L key [768, 768]
TOY_TE_KEY = "clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
TOKENS = 4


@pytest.fixture(autouse=True)
def one_thread():
    """Training tests run torch single-threaded: on a shared 2-core machine OpenMP threads that
    wait for each other make tiny steps many times slower than one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_image(path: str, width: int, height: int, seed: int = 0, mode: str = "RGB") -> str:
    """A smooth random-coloured image (a gradient between two colours, seeded)."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.rand(3, generator=g), torch.rand(3, generator=g)
    ramp = torch.linspace(0, 1, width)[None, :, None].expand(height, width, 1)
    wave = 0.5 + 0.5 * torch.sin(torch.linspace(0, 6.28 * (1 + seed % 3), height))[:, None, None]
    arr = ((a * (1 - ramp) + b * ramp) * (0.7 + 0.3 * wave)).clamp(0, 1)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray((arr.numpy() * 255).astype("uint8")).convert(mode).save(path)
    return path


def write_caption(image_path: str, text: str, ext: str = ".txt") -> None:
    with open(os.path.splitext(image_path)[0] + ext, "w", encoding="utf-8") as f:
        f.write(text)


def png_header_only(path: str, width: int, height: int) -> str:
    """A PNG whose header claims width×height but whose data is a few bytes (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) +
                chunk(b"IEND", b""))
    return path


class FakeEncoders:
    """Deterministic stand-ins for a VAE (8× average pooling + a brightness channel) and a text
    encoder (token embeddings from hashes); they count their calls."""

    def __init__(self) -> None:
        self.images = 0
        self.texts = 0

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        self.images += 1
        x = pixels[0].permute(2, 0, 1)
        pooled = torch.nn.functional.avg_pool2d(x[None], 8)[0] * 2 - 1
        return torch.cat([pooled, pooled.mean(0, keepdim=True)])

    def encode_text(self, text: str) -> dict[str, torch.Tensor]:
        self.texts += 1
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        g = torch.Generator().manual_seed(seed)
        return {"cross_attn": torch.randn(1, TOKENS, 768, generator=g), "pooled_output": torch.randn(1, 768, generator=g)}


def toy_layout() -> ModelLayout:
    return ModelLayout.from_config("sd1", TOY_CONFIG)


def toy_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    shapes = toy_layout().shapes
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key in (*TOY_KEYS.values(), TOY_TE_KEY):
        shape = tuple(shapes[key])
        fan_in = 1
        for s in shape[1:]:
            fan_in *= s
        out[key] = torch.randn(shape, generator=g) / fan_in ** 0.5
    return out


class ToyModel:
    """An ε-prediction denoiser: conv(4→32) + text projection → SiLU → conv(32→4), with the
    run's network patched into its weights; ComfyUI's calculate_input / calculate_denoised.

    With ``dtype`` fp16 it is a CPU stand-in of an fp16-loaded model: weights and the whole
    forward in fp16. ``out_gain`` scales the output convolution: a small gain gives the small
    activation gradients of a deep diffusion model (SD's are 10⁻⁹..10⁻⁵)."""

    kind = "eps"
    sigma_data = 1.0
    device = torch.device("cpu")

    def __init__(self, seed: int = 0, dtype: torch.dtype = torch.float32, out_gain: float = 1.0) -> None:
        self.dtype = dtype
        self.weights = {k: (v * out_gain if k == TOY_KEYS["conv_out"] else v).to(dtype)
                        for k, v in toy_weights(seed).items()}
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        alpha_bar = torch.cumprod(1 - betas, 0)
        self.sigmas = ((1 - alpha_bar) / alpha_bar).sqrt().float()
        self.network = None

    def weight(self, name: str) -> torch.Tensor:
        key = TOY_KEYS.get(name, name)
        w = self.weights[key]
        if self.network is not None and key in self.network.lr_mults:
            return dict(self.network.items())[key](w)
        return w

    def latent_in(self, latents: torch.Tensor) -> torch.Tensor:
        return latents * 0.5

    def encode_text(self, text: str) -> dict[str, torch.Tensor]:
        """The toy text encoder: :class:`FakeEncoders`' token embeddings plus their projection by
        the CLIP-L weight (with the run's network patched in)."""
        emb = FakeEncoders().encode_text(text)
        w = self.weight(TOY_TE_KEY).float()
        return {k: v + v @ w.T for k, v in emb.items()}

    def denoise(self, x, sigma, conds):
        x, sigma = x.to(self.dtype), sigma.to(self.dtype)
        s = sigma.reshape(-1, 1, 1, 1)
        xc = x / (s * s + 1).sqrt()
        ctx = torch.stack([c["cross_attn"][0] for c in conds]).mean(1).to(self.dtype)
        h = torch.nn.functional.conv2d(xc, self.weight("conv_in"), padding=1)
        h = h + (ctx @ self.weight("to_k").T)[:, :, None, None] + 0.1 * sigma.log().reshape(-1, 1, 1, 1)
        eps = torch.nn.functional.conv2d(torch.nn.functional.silu(h), self.weight("conv_out"), padding=1)
        return x - eps * s


CAPTIONS = ["red, round", "blue, square", "green, tall", "yellow, wide"]


def make_dataset(root, cache, size=64, **kw):
    """Four captioned ``size``² images (written once) as a dataset encoded by :class:`FakeEncoders`."""
    if not os.path.isdir(root):
        for i, cap in enumerate(CAPTIONS):
            write_caption(write_image(os.path.join(root, f"{i}.png"), size, size, seed=i), cap)
    enc = FakeEncoders()
    s = DatasetSettings(resolution=size, min_side=64, max_side=size, **kw)
    return build_dataset(root, s, TensorCache(cache), encode_image=enc.encode_image, encode_text=enc.encode_text,
                         encoders={"vae": "toy-vae", "clip": "toy-clip"})


def make_run(dataset, model, validation=None, **kw):
    settings = TrainSettings(**{"rank": 4, "alpha": 4.0, "targets": "all_linear_convs", "learning_rate": 1e-3,
                                "total_steps": 40, "seed": 3, "batch_size": 2, **kw})
    shapes = {k: tuple(v.shape) for k, v in model.weights.items()}
    targets = select_targets(shapes, "sd1", settings.targets)
    if settings.text_encoder_lr > 0:
        targets.update(select_text_encoder_targets(shapes, "sd1", settings.targets))
    run = TrainRun.create(settings, dataset, shapes, targets, {"arch": "sd1", "kind": "eps", "fingerprint": "toy-1"},
                          layout=toy_layout(), base_weight=model.weights.__getitem__, validation=validation)
    return run


def train(run, model, steps, **kw):
    model.network = run.network
    return run.train(model, steps, **kw)

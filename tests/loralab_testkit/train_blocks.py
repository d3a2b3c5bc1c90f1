"""A toy transformer for the memory-mode tests: a stack of residual MLP blocks over image tokens,
with layers that behave like ComfyUI's cast layers (the weight cast to the input's dtype at use,
then the weight functions: the run's modules). Its keys, targets and the estimate's description
of it (:func:`toy_cost`) are exact for this structure."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from loralab.train.memory import BlockCost, ModelCost
from loralab.train.network import build_network
from loralab.train.run import TrainRun, TrainSettings

#: elements autograd keeps per token inside a block: fc1's input (d), SiLU's input (4d), fc2's input (4d)
ACTIVATIONS_PER_WIDTH = 9


class CastLinear(nn.Linear):
    """nn.Linear whose weight is cast to the input's dtype at use, then passed through
    ``weight_function`` (as ComfyUI's cast layers do with ``add_weight_wrapper``)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__(n_in, n_out)
        self.weight_function: list = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype)
        for f in self.weight_function:
            w = f(w)
        return F.linear(x, w, self.bias.to(x.dtype))


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1 = CastLinear(width, 4 * width)
        self.fc2 = CastLinear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.silu(self.fc1(x)))


class ToyTransformer(nn.Module):
    """ε-prediction over 4-channel latents: patch embedding, ``depth`` blocks, projection out.
    The TrainModel protocol is on :class:`BlockModel`."""

    def __init__(self, width: int = 64, depth: int = 4, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.proj_in = CastLinear(4, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(depth))
        self.proj_out = CastLinear(width, 4)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.proj_in(x.flatten(2).transpose(1, 2))
        for block in self.blocks:
            t = block(t)
        return self.proj_out(t).transpose(1, 2).reshape(b, c, h, w)


class BlockModel:
    """The engine's TrainModel over a :class:`ToyTransformer` computing in ``dtype``."""

    kind = "eps"
    sigma_data = 1.0
    device = torch.device("cpu")

    def __init__(self, net: ToyTransformer, dtype: torch.dtype = torch.float32) -> None:
        self.net = net
        self.dtype = dtype
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        alpha_bar = torch.cumprod(1 - betas, 0)
        self.sigmas = ((1 - alpha_bar) / alpha_bar).sqrt().float()

    def latent_in(self, latents: torch.Tensor) -> torch.Tensor:
        return latents[:, :4]

    def denoise(self, x, sigma, conds):
        s = sigma.reshape(-1, 1, 1, 1)
        eps = self.net((x / (s * s + 1).sqrt()).to(self.dtype)).float()
        return x - eps * s


#: the toy's weights are named as a diffusion model's are (``diffusion_model.<module path>``)
PREFIX = "diffusion_model."


def _shapes(net: ToyTransformer) -> dict[str, tuple[int, ...]]:
    return {PREFIX + k: tuple(v.shape) for k, v in net.named_parameters()}


def _module(net: ToyTransformer, key: str) -> torch.nn.Module:
    return net.get_submodule(key.removeprefix(PREFIX).rsplit(".", 1)[0])


def block_targets(net: ToyTransformer) -> dict[str, float]:
    """Every block's fc1 and fc2 weight (by diffusion-model key) with multiplier 1."""
    return {f"{PREFIX}blocks.{i}.{fc}.weight": 1.0 for i in range(len(net.blocks)) for fc in ("fc1", "fc2")}


def attach(net: ToyTransformer, run: TrainRun) -> None:
    """Put the run's modules into the layers' weight functions."""
    for key, module in run.network.items():
        _module(net, key).weight_function.append(module)


def block_run(net: ToyTransformer, dataset, **kw) -> TrainRun:
    settings = TrainSettings(**{"rank": 4, "alpha": 4.0, "learning_rate": 1e-3, "total_steps": 10, "seed": 1,
                                "batch_size": 2, **kw})
    run = TrainRun.create(settings, dataset, _shapes(net), block_targets(net), {"arch": "sd1", "kind": "eps"})
    attach(net, run)
    return run


def network_for(net: ToyTransformer, rank: int = 4) -> object:
    """A LoRA network over the toy's block targets with nonzero up factors (gradients reach every factor)."""
    network = build_network(_shapes(net), block_targets(net), "lora", rank, float(rank), torch.Generator().manual_seed(5))
    with torch.no_grad():
        for _, m in network.items():
            m.up.normal_(0, 0.02, generator=torch.Generator().manual_seed(7))
    for key, module in network.items():
        _module(net, key).weight_function.append(module)
    return network


def toy_cost(net: ToyTransformer, tokens: int, rank: int) -> ModelCost:
    """The estimate's description of the toy at ``tokens`` tokens per sample (fp32 as loaded)."""
    blocks = []
    for block in net.blocks:
        weights = [block.fc1.weight, block.fc2.weight]
        numel = sum(w.numel() for w in weights)
        width = block.fc1.in_features
        blocks.append(BlockCost(weight_numel=numel, weight_bytes=numel * 4,
                                other_bytes=(block.fc1.bias.numel() + block.fc2.bias.numel()) * 4,
                                target_numel=numel, largest_target=max(w.numel() for w in weights),
                                activations=ACTIVATIONS_PER_WIDTH * width * tokens, boundary=width * tokens))
    other = sum(p.numel() * 4 for n, p in net.named_parameters() if not n.startswith("blocks."))
    return ModelCost(tuple(blocks), other, 4)

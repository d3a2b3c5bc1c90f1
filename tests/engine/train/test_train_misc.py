"""Loss-curve pictures, gradient checkpointing, optimizer state round trips and availability."""
import pytest
import torch
from torch import nn

from loralab.errors import TrainingError
from loralab.train.grad_checkpoint import checkpoint_blocks, gradient_checkpointing
from loralab.train.losscurve import render_loss_curve, smooth
from loralab.train.optim import available_optimizers, load_optimizer_state, make_optimizer, optimizer_state


def test_smoothing_is_a_debiased_ema():
    assert smooth([2.0]) == [2.0]
    assert smooth([1.0, 3.0], beta=0.5) == pytest.approx([1.0, (0.25 + 1.5) / 0.75])


@pytest.mark.parametrize("losses", [[], [0.5], [1.0, 0.8, 0.9, 0.5, 0.4] * 20, [0.3] * 5])
def test_loss_curve_image(losses):
    img = render_loss_curve(losses)
    assert img.shape == (360, 640, 3) and img.dtype.name == "uint8"
    smooth_colour = (img == [20, 60, 160]).all(axis=-1).sum()
    assert (smooth_colour > 0) == bool(losses)
    assert (img == 0).all(axis=-1).sum() > 100  # axes and labels are drawn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 6)

    def forward(self, x, scale=1.0):
        return torch.tanh(self.lin(x)) * scale


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(Block(), nn.ModuleList([Block(), Block()]), Block())
    blocks = checkpoint_blocks(model)
    assert len(blocks) == 4 and all(isinstance(b, Block) for b in blocks)

    def run():
        model.zero_grad()
        x = torch.randn(3, 6, generator=torch.Generator().manual_seed(1))
        h = model[0](x)
        for b in model[1]:
            h = b(h, scale=0.5)
        model[2](h).sum().backward()
        return [p.grad.clone() for p in model.parameters()]
    plain = run()
    with gradient_checkpointing(model) as n:
        assert n == 4 and "forward" in model[0].__dict__
        checkpointed = run()
    assert "forward" not in model[0].__dict__
    assert all(torch.allclose(a, b) for a, b in zip(plain, checkpointed))


class InPlaceBlock(nn.Module):
    """Adds to its input in place, as ComfyUI's Flux blocks do: an input without grad leaves the
    forward pass carrying grad, unless the block works on a copy."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 6)

    def forward(self, x):
        x += self.lin(torch.nn.functional.layer_norm(x, (6,)))
        return x * 2


def test_gradient_checkpointing_of_a_block_that_updates_an_input_without_grad():
    torch.manual_seed(0)
    block = InPlaceBlock()

    def run():
        block.zero_grad()
        x = torch.randn(3, 6, generator=torch.Generator().manual_seed(1))  # e.g. from an untrained input layer
        block(x).sum().backward()
        return [p.grad.clone() for p in block.parameters()]
    plain = run()
    with gradient_checkpointing(nn.ModuleList([block])):
        checkpointed = run()
    assert all(torch.allclose(a, b) for a, b in zip(plain, checkpointed))


def test_optimizer_state_round_trip_and_missing_packages():
    p = nn.Parameter(torch.randn(4, 3))
    opt = make_optimizer("adamw", [{"params": [p], "lr_mult": 0.5}], 1e-2, 0.01)
    assert opt.param_groups[0]["lr"] == 5e-3
    p.grad = torch.randn(4, 3)
    opt.step()
    tensors, meta = optimizer_state(opt)
    assert set(tensors) == {"optim.0.step", "optim.0.exp_avg", "optim.0.exp_avg_sq"}
    q = nn.Parameter(p.detach().clone())
    other = make_optimizer("adamw", [{"params": [q], "lr_mult": 0.5}], 1e-2, 0.01)
    load_optimizer_state(other, tensors, meta)
    p.grad = q.grad = torch.ones(4, 3)
    opt.step()
    other.step()
    assert torch.equal(p, q)
    assert "adamw" in available_optimizers()
    missing = [n for n in ("adamw8bit", "prodigy", "adafactor") if n not in available_optimizers()]
    for name in missing:
        with pytest.raises(TrainingError, match="needs the .* package, which is not installed"):
            make_optimizer(name, [{"params": [p]}], 1e-3, 0.0)

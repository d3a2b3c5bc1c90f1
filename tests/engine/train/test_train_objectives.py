"""Training targets, inputs and weights against the textbook formulas, on known tensors."""
import math

import pytest
import torch

from loralab.errors import TrainingError
from loralab.train.objectives import (loss_weights, noisy_input, prediction_target, raw_output, sample_noise, snr)

X0 = torch.tensor([[[[1.0, 2.0], [-0.5, 0.25]]]])  # [1, 1, 2, 2]
EPS = torch.tensor([[[[0.5, -1.0], [2.0, 0.0]]]])


def _comfy_denoised(kind, x, sigma, out, sd=1.0):
    """ComfyUI's calculate_denoised, written out from comfy/model_sampling.py's formulas."""
    s = sigma.reshape(-1, 1, 1, 1)
    if kind in ("eps", "flow"):
        return x - out * s
    return x * sd ** 2 / (s ** 2 + sd ** 2) - out * s * sd / (s ** 2 + sd ** 2) ** 0.5


def test_eps_known_values():
    sigma = torch.tensor([2.0])
    x = noisy_input("eps", X0, EPS, sigma)
    assert torch.equal(x, torch.tensor([[[[2.0, 0.0], [3.5, 0.25]]]]))
    assert torch.equal(prediction_target("eps", X0, EPS, sigma), EPS)
    # a perfect model's denoised estimate is x0; the raw output recovered from it is ε
    assert torch.allclose(raw_output("eps", x, sigma, X0), EPS, atol=1e-6)


def test_v_is_alpha_eps_minus_sigma_x0_in_ddpm_terms():
    for s in (0.03, 1.0, 14.6):
        sigma = torch.tensor([s])
        alpha_bar = 1.0 / (1.0 + s * s)  # σ² = (1 − ᾱ)/ᾱ
        v = math.sqrt(alpha_bar) * EPS - math.sqrt(1 - alpha_bar) * X0
        assert torch.allclose(prediction_target("v", X0, EPS, sigma), v, atol=1e-6)
    sigma = torch.tensor([1.0])
    got = prediction_target("v", X0, EPS, sigma)
    assert got[0, 0, 0, 0].item() == pytest.approx((0.5 - 1.0) / math.sqrt(2), abs=1e-7)


@pytest.mark.parametrize("kind,sd", [("eps", 1.0), ("v", 1.0), ("v", 0.5), ("flow", 1.0)])
def test_targets_round_trip_through_comfy_denoised(kind, sd):
    """The target fed through ComfyUI's own denoise formula gives x0, and raw_output inverts it."""
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(3, 4, 5, 5, generator=g)
    noise = torch.randn(3, 4, 5, 5, generator=g)
    sigma = torch.tensor([0.05, 0.7, 0.99]) if kind == "flow" else torch.tensor([0.03, 1.3, 9.0])
    x = noisy_input(kind, x0, noise, sigma)
    tgt = prediction_target(kind, x0, noise, sigma, sd)
    den = _comfy_denoised(kind, x, sigma, tgt, sd)
    assert torch.allclose(den, x0, atol=1e-5)
    assert torch.allclose(raw_output(kind, x, sigma, den, sd), tgt, atol=1e-4)


def test_flow_known_values():
    t = torch.tensor([0.25])
    x = noisy_input("flow", X0, EPS, t)
    assert torch.allclose(x, 0.75 * X0 + 0.25 * EPS)
    assert torch.equal(prediction_target("flow", X0, EPS, t), EPS - X0)


def test_snr_is_alpha_bar_over_one_minus_alpha_bar():
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2  # SD's schedule
    alpha_bar = torch.cumprod(1 - betas, 0)
    sigmas = ((1 - alpha_bar) / alpha_bar).sqrt()
    assert torch.allclose(snr("eps", sigmas), alpha_bar / (1 - alpha_bar), rtol=1e-9)
    assert torch.allclose(snr("flow", torch.tensor([0.25])), torch.tensor([9.0], dtype=torch.float64))


def test_min_snr_gamma_weights():
    sigma = torch.tensor([0.5, 0.25, 2.0])  # SNR 4, 16, 0.25
    assert torch.allclose(loss_weights("eps", sigma, 5.0), torch.tensor([1.0, 5 / 16, 1.0]))
    assert torch.allclose(loss_weights("v", sigma, 5.0), torch.tensor([4 / 5, 5 / 17, 0.25 / 1.25]))
    assert torch.allclose(loss_weights("eps", sigma, 2.0), torch.tensor([0.5, 2 / 16, 1.0]))
    assert torch.equal(loss_weights("eps", sigma, 0.0), torch.ones(3))
    assert torch.equal(loss_weights("flow", sigma, 0.0), torch.ones(3))
    with pytest.raises(TrainingError, match="min-SNR"):
        loss_weights("flow", sigma, 5.0)


def test_noise_offset_adds_one_shift_per_sample_and_channel():
    shape = (2, 3, 4, 4)
    plain = sample_noise(shape, torch.Generator().manual_seed(7))
    assert torch.equal(plain, torch.randn(shape, generator=torch.Generator().manual_seed(7)))
    g = torch.Generator().manual_seed(7)
    base = torch.randn(shape, generator=g)
    shift = torch.randn((2, 3, 1, 1), generator=g)
    offset = sample_noise(shape, torch.Generator().manual_seed(7), noise_offset=0.1)
    assert torch.allclose(offset - plain, (0.1 * shift).expand(shape), atol=1e-6)
    assert torch.equal(base, plain)


def test_unknown_kind_is_refused():
    with pytest.raises(TrainingError, match="unknown prediction type"):
        prediction_target("x0", X0, EPS, torch.tensor([1.0]))

"""Timestep samplers: their distributions, checked statistically with fixed seeds.

Tolerances: N = 100 000 draws; means within 5 standard errors; Kolmogorov–Smirnov distance under
2/sqrt(N) (the 0.1 % critical value is 1.95/sqrt(N)); standard deviations of logits within 0.01
(their standard error is about 0.003 at these scales)."""
import math

import pytest
import torch

from loralab.errors import TrainingError
from loralab.train.timesteps import FLOW_T_MIN, sample_discrete_sigmas, sample_flow_sigmas, shift_t

N = 100_000


def _gen(seed=1234):
    return torch.Generator().manual_seed(seed)


def _ks_uniform(t):
    s, _ = torch.sort(t.double())
    emp = torch.arange(1, len(s) + 1, dtype=torch.float64) / len(s)
    return float((emp - s).abs().max())


def _logit(t):
    t = t.double()
    return torch.log(t / (1 - t))


def test_discrete_timesteps_are_uniform_over_the_schedule():
    table = torch.arange(1000, dtype=torch.float32) * 0.01 + 0.03
    sig = sample_discrete_sigmas(table, N, _gen())
    idx = torch.round((sig - 0.03) / 0.01).long()
    assert torch.allclose(table[idx], sig)
    assert abs(idx.double().mean().item() - 499.5) < 5 * 288.7 / math.sqrt(N)
    counts = torch.bincount(idx // 100, minlength=10).double()
    assert float((counts - N / 10).abs().max()) < 5 * math.sqrt(N / 10 * 0.9)
    assert idx.min() == 0 and idx.max() == 999


def test_uniform_flow_times():
    t = sample_flow_sigmas("uniform", N, _gen())
    assert float(t.min()) >= FLOW_T_MIN and float(t.max()) <= 1.0
    assert _ks_uniform(t) < 2 / math.sqrt(N)


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_sigmoid_flow_times_have_normal_logits(scale):
    t = sample_flow_sigmas("sigmoid", N, _gen(), sigmoid_scale=scale)
    z = _logit(t)
    assert abs(z.mean().item()) < 5 * scale / math.sqrt(N)
    assert z.std().item() == pytest.approx(scale, abs=0.01)


def test_shift_maps_sigmoid_draws_toward_noise():
    base = sample_flow_sigmas("sigmoid", N, _gen(), sigmoid_scale=1.0)
    shifted = sample_flow_sigmas("shift", N, _gen(), sigmoid_scale=1.0, shift=3.0)
    assert torch.allclose(shifted, shift_t(base, 3.0).clamp(FLOW_T_MIN, 1.0))
    assert shifted.median().item() == pytest.approx(3 / 4, abs=0.005)  # median of sigmoid(N(0,1)) is 1/2
    assert shift_t(torch.tensor([0.0, 0.5, 1.0]), 3.0).tolist() == [0.0, 0.75, 1.0]


def test_logit_normal_flow_times():
    t = sample_flow_sigmas("logit_normal", N, _gen(), logit_mean=0.5, logit_std=0.8)
    z = _logit(t)
    assert z.mean().item() == pytest.approx(0.5, abs=5 * 0.8 / math.sqrt(N))
    assert z.std().item() == pytest.approx(0.8, abs=0.01)


def test_same_seed_same_draws_and_unknown_method():
    assert torch.equal(sample_flow_sigmas("shift", 16, _gen(5)), sample_flow_sigmas("shift", 16, _gen(5)))
    with pytest.raises(TrainingError, match="unknown timestep sampling"):
        sample_flow_sigmas("cosmic", 4, _gen())


def test_flux_shift_follows_the_image_size():
    from loralab.train.timesteps import flux_mu, image_tokens
    assert image_tokens(32, 32) == 256 and image_tokens(128, 128) == 4096 and image_tokens(64, 96) == 1536
    assert flux_mu(256) == pytest.approx(0.5) and flux_mu(4096) == pytest.approx(1.15)
    assert flux_mu(1024) == pytest.approx(0.63)  # 512² images: 0.5 + 0.65·768/3840
    for tokens in (256, 1024, 4096):
        t = sample_flow_sigmas("sigmoid", 64, torch.Generator().manual_seed(5), sigmoid_scale=1.3)
        shifted = sample_flow_sigmas("flux_shift", 64, torch.Generator().manual_seed(5), sigmoid_scale=1.3,
                                     tokens=tokens)
        mu = flux_mu(tokens)
        # Flux's time shift with σ = 1: e^μ / (e^μ + (1/t − 1))
        expected = (math.exp(mu) / (math.exp(mu) + (1 / t.double() - 1))).float().clamp(1e-3, 1.0)
        assert torch.allclose(shifted, expected, rtol=1e-6, atol=0)
    half = torch.tensor([0.0])  # sigmoid(0) = 0.5: the median draw
    assert float(shift_t(torch.sigmoid(half), math.exp(flux_mu(1024)))) == pytest.approx(0.65249, abs=1e-5)


@pytest.mark.parametrize("shift", [1.15, 3.0, 8.0])
def test_model_shift_uses_the_models_own_sampling_shift(shift):
    """ComfyUI's flow sampling maps t to σ = k·t / (1 + (k − 1)·t) with the model's shift k (SD3 3,
    Wan 8, Qwen-Image 1.15); model_shift draws training levels through that same map."""
    t = sample_flow_sigmas("sigmoid", 64, _gen(7), sigmoid_scale=1.0)
    drawn = sample_flow_sigmas("model_shift", 64, _gen(7), model_shift=shift)
    expected = (shift * t.double() / (1 + (shift - 1) * t.double())).float().clamp(1e-3, 1.0)
    assert torch.allclose(drawn, expected, rtol=1e-6, atol=0)
    assert float(drawn.median()) > float(t.median()) or shift < 1.2  # a shift > 1 moves toward noise


def test_model_shift_without_a_model_shift_is_refused():
    with pytest.raises(TrainingError, match="needs the model's sampling shift") as err:
        sample_flow_sigmas("model_shift", 4, _gen())
    assert "sigmoid" in err.value.hint

"""Adapter math against independent, straightforward computations on small tensors."""
import math

import pytest
import torch

from loralab.adapters import Diff, LoHa, LoKr, LoRA, SetWeight, gram_fro_norm

torch.manual_seed(0)
D = torch.float64


def r(*shape):
    return torch.randn(*shape, dtype=D)


def loop_matmul(a, b):
    """Matrix product by explicit summation (no BLAS, no einsum)."""
    out = torch.zeros(a.shape[0], b.shape[1], dtype=D)
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            out[i, j] = sum(a[i, k] * b[k, j] for k in range(a.shape[1]))
    return out


def test_lora_linear():
    up, down = r(5, 3), r(3, 7)
    a = LoRA(up=up, down=down, alpha=1.5)
    assert a.rank == 3 and a.scale == 0.5
    assert torch.allclose(a.delta(dtype=D), 0.5 * loop_matmul(up, down))
    assert LoRA(up=up, down=down).scale == 1.0  # missing alpha: alpha = rank


def test_locon_conv_kernel_in_down():
    up, down = r(4, 2, 1, 1), r(2, 3, 3, 3)
    a = LoRA(up=up, down=down, alpha=4.0)
    ref = torch.zeros(4, 3, 3, 3, dtype=D)
    for o in range(4):
        for i in range(3):
            for h in range(3):
                for w in range(3):
                    ref[o, i, h, w] = sum(up[o, k, 0, 0] * down[k, i, h, w] for k in range(2))
    assert torch.allclose(a.delta((4, 3, 3, 3), D), 2.0 * ref)


def test_lora_tucker_mid():
    up, mid, down = r(4, 2, 1, 1), r(2, 2, 3, 3), r(2, 5, 1, 1)
    a = LoRA(up=up, down=down, mid=mid, alpha=2.0)
    ref = torch.zeros(4, 5, 3, 3, dtype=D)
    for o in range(4):
        for i in range(5):
            for h in range(3):
                for w in range(3):
                    ref[o, i, h, w] = sum(up[o, m, 0, 0] * mid[m, n, h, w] * down[n, i, 0, 0]
                                          for m in range(2) for n in range(2))
    assert a.in_numel == 45
    assert torch.allclose(a.delta((4, 5, 3, 3), D), ref)


def test_loha_plain_and_low_rank_form():
    w1a, w1b, w2a, w2b = r(6, 3), r(3, 5), r(6, 3), r(3, 5)
    a = LoHa(w1a=w1a, w1b=w1b, w2a=w2a, w2b=w2b, alpha=1.0)
    ref = (1 / 3) * loop_matmul(w1a, w1b) * loop_matmul(w2a, w2b)
    assert torch.allclose(a.delta(dtype=D), ref)
    b, aa = a.low_rank(D)
    assert b.shape == (6, 9) and aa.shape == (9, 5)
    assert torch.allclose(b @ aa, ref)


def test_loha_tucker():
    t1, w1a, w1b = r(2, 2, 3, 3), r(2, 4), r(2, 5)
    t2, w2a, w2b = r(2, 2, 3, 3), r(2, 4), r(2, 5)
    a = LoHa(w1a=w1a, w1b=w1b, w2a=w2a, w2b=w2b, t1=t1, t2=t2, alpha=2.0)

    def rebuild(t, wa, wb):
        out = torch.zeros(4, 5, 3, 3, dtype=D)
        for p in range(4):
            for q in range(5):
                for h in range(3):
                    for w in range(3):
                        out[p, q, h, w] = sum(t[i, j, h, w] * wb[j, q] * wa[i, p] for i in range(2) for j in range(2))
        return out
    ref = rebuild(t1, w1a, w1b) * rebuild(t2, w2a, w2b)
    assert a.out_features == 4 and a.in_numel == 45
    assert torch.allclose(a.delta((4, 5, 3, 3), D), ref)


def test_lokr_decomposed_w2():
    w1, w2a, w2b = r(2, 3), r(4, 2), r(2, 5)
    a = LoKr(w1=w1, w2a=w2a, w2b=w2b, alpha=1.0)
    w2 = loop_matmul(w2a, w2b)
    ref = torch.zeros(8, 15, dtype=D)
    for i in range(2):
        for j in range(3):
            ref[i * 4:(i + 1) * 4, j * 5:(j + 1) * 5] = w1[i, j] * w2
    assert a.scale == 0.5 and not a.full_dimension
    assert torch.allclose(a.delta(dtype=D), 0.5 * ref)


def test_lokr_full_dimension_ignores_alpha():
    w1, w2 = r(2, 2), r(3, 3)
    a = LoKr(w1=w1, w2=w2, alpha=1e9)  # LyCORIS stores a huge alpha here; producers ignore it
    assert a.full_dimension and a.scale == 1.0
    assert torch.allclose(a.delta(dtype=D), torch.kron(w1, w2))


def test_lokr_conv():
    w1, w2 = r(2, 2), r(3, 4, 3, 3)
    a = LoKr(w1=w1, w2=w2)
    d = a.delta((6, 8, 3, 3), D)
    for i in range(2):
        for j in range(2):
            assert torch.allclose(d[i * 3:(i + 1) * 3, j * 4:(j + 1) * 4], w1[i, j] * w2)


def test_lokr_w1_decomposed_rank_divides_alpha():
    a = LoKr(w1a=r(2, 2), w1b=r(2, 3), w2=r(4, 5), alpha=1.0)
    assert a.rank == 2 and a.scale == 0.5


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_dora_output_axis(strength):
    w, up, down = r(6, 5), r(6, 2), r(2, 5)
    mag = r(6, 1).abs() + 0.5
    a = LoRA(up=up, down=down, alpha=1.0, dora_scale=mag)
    merged = w + 0.5 * up @ down
    norms = torch.sqrt((merged ** 2).sum(dim=1, keepdim=True))
    factor = mag / (norms + torch.finfo(D).eps)
    factor = strength * (factor - 1) + 1
    assert torch.allclose(a.apply_to(w, strength), merged * factor)
    assert a.needs_base


def test_dora_input_axis():
    w, up, down = r(6, 5), r(6, 2), r(2, 5)
    mag = r(1, 5).abs() + 0.5
    a = LoRA(up=up, down=down, dora_scale=mag)
    merged = w + up @ down
    norms = torch.sqrt((merged ** 2).sum(dim=0, keepdim=True))
    assert torch.allclose(a.apply_to(w), merged * mag / (norms + torch.finfo(D).eps))


def test_diff_and_set():
    w = r(4, 3)
    d = Diff(diff=r(4, 3))
    assert torch.allclose(d.apply_to(w, 2.0), w + 2 * d.diff)
    s = SetWeight(value=r(4, 3))
    assert torch.allclose(s.apply_to(w), s.value)
    with pytest.raises(ValueError):
        s.delta(dtype=D)


@pytest.mark.parametrize("make", [
    lambda: LoRA(up=r(300, 8), down=r(8, 200), alpha=4.0),
    lambda: LoRA(up=r(12, 4, 1, 1), down=r(4, 6, 1, 1), mid=r(4, 4, 3, 3), alpha=2.0),
    lambda: LoHa(w1a=r(40, 4), w1b=r(4, 30), w2a=r(40, 4), w2b=r(4, 30), alpha=2.0),
    lambda: LoHa(w1a=r(4, 8), w1b=r(4, 6), w2a=r(4, 8), w2b=r(4, 6), t1=r(4, 4, 3, 3), t2=r(4, 4, 3, 3)),
    lambda: LoKr(w1=r(4, 4), w2a=r(20, 3), w2b=r(3, 10), alpha=1.5),
    lambda: LoKr(w1a=r(4, 2), w1b=r(2, 4), w2=r(5, 6, 3, 3), alpha=1.0),
])
def test_norm_from_factors_equals_dense(make):
    a = make()
    dense = float(a.delta_flat(D).norm())
    assert math.isclose(a.fro_norm(), dense, rel_tol=1e-10)


def test_gram_norm_of_zero_update_is_zero():
    assert gram_fro_norm(torch.zeros(5, 2), torch.ones(2, 3)) == 0.0

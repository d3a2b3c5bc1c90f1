"""Optimizers beyond plain AdamW: torch's fused AdamW where the factors are on a CUDA GPU, and
bitsandbytes' 8-bit AdamW where it is installed (skipped, saying why, where not)."""
import importlib.util

import pytest
import torch

from loralab.train.checkpoint import restore_run, write_state
from loralab.train.optim import make_optimizer
from loralab_testkit.train_toys import ToyModel, make_dataset, make_run, train


def _groups(device):
    return [{"params": [torch.nn.Parameter(torch.ones(4, device=device))], "lr_mult": 1.0}]


def test_adamw_on_the_cpu_is_not_fused():
    opt = make_optimizer("adamw", _groups("cpu"), 1e-3, 0.01)
    assert not opt.defaults["fused"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fused AdamW needs a CUDA GPU (none here)")
def test_adamw_on_cuda_is_fused_and_steps_as_unfused():
    fused = make_optimizer("adamw", _groups("cuda"), 1e-3, 0.01)
    assert fused.defaults["fused"]
    plain = torch.optim.AdamW(_groups("cuda"), lr=1e-3, weight_decay=0.01)
    for opt in (fused, plain):
        p = opt.param_groups[0]["params"][0]
        p.grad = torch.linspace(-1, 1, 4, device="cuda")
        opt.step()
    a, b = fused.param_groups[0]["params"][0], plain.param_groups[0]["params"][0]
    assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None,
                    reason="adamw8bit needs the bitsandbytes package (not installed here)")
def test_adamw8bit_trains_and_resumes_exactly(tmp_path):
    ds = make_dataset(str(tmp_path / "data"), str(tmp_path / "cache"))
    model = ToyModel()
    run = make_run(ds, model, optimizer="adamw8bit", total_steps=4)
    train(run, model, 2)
    path = write_state(str(tmp_path / "state.loralab-state"), run)
    train(run, model, 2)
    resumed = restore_run(make_run(ds, ToyModel(), optimizer="adamw8bit", total_steps=4), path)
    train(resumed, model, 2)
    assert resumed.losses == run.losses and run.losses[-1] < run.losses[0] * 1.5
    assert all(torch.equal(a, b) for a, b in zip(run.params(), resumed.params()))

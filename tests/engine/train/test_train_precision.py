"""Training precision: which dtype a setting computes in, the dynamic loss scaler, and on a CPU
stand-in of an fp16-loaded model that loss scaling keeps the gradients fp32 gives (unscaled fp16
loses most of them), and that a loss-scaled run resumes bit for bit."""
import pytest
import torch

from loralab.errors import TrainingError
from loralab.train.checkpoint import restore_run, write_state
from loralab.train.precision import LossScaler, compute_dtype
from loralab_testkit.train_toys import ToyModel, make_dataset, make_run, train

#: the stand-in's output gain: activation gradients of 10⁻⁹..10⁻⁶, as deep in a diffusion model
GAIN = 1e-4


def test_precision_settings_resolve_to_dtypes():
    assert compute_dtype("auto", "cpu") == torch.float32
    assert compute_dtype("auto", "meta") == torch.float16  # a device without bf16 support
    assert [compute_dtype(p, "cpu") for p in ("bf16", "fp16", "fp32")] == [torch.bfloat16, torch.float16,
                                                                              torch.float32]
    with pytest.raises(TrainingError, match="unknown precision 'fp8'"):
        compute_dtype("fp8", "cpu")


def _params(n=2):
    out = []
    for _ in range(n):
        p = torch.nn.Parameter(torch.zeros(3))
        p.grad = torch.tensor([1.0, -2.0, 3.0]) * 8.0
        out.append(p)
    return out


def test_loss_scaler_unscales_exactly_skips_non_finite_and_grows():
    scaler = LossScaler(scale=8.0, growth_interval=2)
    params = _params()
    assert scaler.unscale(params) and torch.equal(params[0].grad, torch.tensor([1.0, -2.0, 3.0]))
    assert (scaler.scale, scaler.good_steps) == (8.0, 1)
    assert scaler.unscale(_params()) and (scaler.scale, scaler.good_steps) == (16.0, 0)  # 2 good steps: doubles
    bad = _params()
    bad[1].grad[0] = float("inf")
    assert not scaler.unscale(bad) and torch.equal(bad[0].grad, torch.tensor([8.0, -16.0, 24.0]))  # untouched
    assert (scaler.scale, scaler.good_steps, scaler.skipped) == (8.0, 0, 1)
    assert LossScaler.from_json(scaler.to_json()) == scaler
    with pytest.raises(ValueError, match="not a power of two"):
        LossScaler.from_json({**scaler.to_json(), "scale": 3.0})


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fp16")
    return make_dataset(str(tmp / "data"), str(tmp / "cache"), size=256)


def _gradients(ds, dtype, precision, scale=None):
    model = ToyModel(dtype=dtype, out_gain=GAIN)
    run = make_run(ds, model, precision=precision, batch_size=1)
    if scale is not None:
        run.scaler.scale = scale
    model.network = run.network
    with torch.enable_grad():
        loss, finite = run.compute_gradients(model)
    assert finite
    # the ups' gradients (the downs' are zero while the ups start at zero)
    return {k: p.grad.clone() for k, p in run.network.named_parameters() if k.endswith(".up")}


def _cosine(a, b):
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def test_fp16_gradients_match_fp32_with_loss_scaling_only(big):
    ref = _gradients(big, torch.float32, "fp32")
    scaled = _gradients(big, torch.float16, "fp16")  # the scaler's starting scale, 2¹⁶
    unscaled = _gradients(big, torch.float16, "fp16", scale=1.0)
    bf16 = _gradients(big, torch.bfloat16, "bf16")
    assert min(_cosine(ref[k], scaled[k]) for k in ref) >= 0.999
    assert min(_cosine(ref[k], bf16[k]) for k in ref) >= 0.999
    assert min(_cosine(ref[k], unscaled[k]) for k in ref) < 0.9
    lost = [float(((unscaled[k] == 0) & (ref[k] != 0)).float().mean()) for k in ref]
    assert max(lost) > 0.5  # most of a module's gradient values rounded to zero


def test_loss_scaled_run_skips_overflowing_steps_and_resumes_bit_exact(big, tmp_path):
    def fresh():
        model = ToyModel(dtype=torch.float16, out_gain=GAIN)
        run = make_run(big, model, precision="fp16", batch_size=1)
        run.scaler = LossScaler(scale=2.0 ** 24, growth_interval=2)  # overflows first, then backs off and grows
        return run, model
    straight, model = fresh()
    before = {k: v.clone() for k, v in straight.network.state_tensors().items()}
    train(straight, model, 1)
    assert straight.step == 1 and straight.scaler.skipped == 1 and straight.scaler.scale == 2.0 ** 23
    assert all(torch.equal(before[k], v) for k, v in straight.network.state_tensors().items())  # skipped step
    train(straight, model, 7)
    half, _ = fresh()
    train(half, model, 4)
    path = write_state(str(tmp_path / "half.loralab-state"), half)
    resumed = restore_run(fresh()[0], path)
    assert resumed.scaler == half.scaler
    train(resumed, model, 4)
    assert resumed.scaler == straight.scaler and straight.scaler.skipped >= 1
    a, b = straight.network.state_tensors(), resumed.network.state_tensors()
    assert all(torch.equal(a[k], b[k]) for k in a) and straight.losses == resumed.losses

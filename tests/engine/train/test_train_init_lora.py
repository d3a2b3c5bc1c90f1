"""Starting a run from an existing LoRA file: the factors, rank and alpha come from the file, and
a file that does not fit the run's targets is refused naming the module."""
import pytest
import torch

from loralab.errors import TrainingError
from loralab.files.safetensors import load_tensors, save_tensors
from loralab.train.checkpoint import save_lora_file
from loralab.train.network import InitLoRA, select_targets
from loralab.train.run import TrainRun, TrainSettings
from loralab_testkit.train_toys import TOY_KEYS, ToyModel, make_dataset, make_run, toy_layout, train


@pytest.fixture
def trained(tmp_path):
    ds = make_dataset(str(tmp_path / "data"), str(tmp_path / "cache"))
    model = ToyModel()
    run = make_run(ds, model, rank=4, alpha=2.0, save_dtype="fp32")
    train(run, model, 3)
    path = save_lora_file(run, str(tmp_path / "start.safetensors"), title="start")
    return ds, model, run, path, tmp_path


def _start(ds, model, init, **kw):
    settings = TrainSettings(**{"rank": 16, "alpha": 16.0, "targets": "all_linear_convs", "seed": 9, **kw})
    shapes = {k: tuple(v.shape) for k, v in model.weights.items()}
    return TrainRun.create(settings, ds, shapes, select_targets(shapes, "sd1", settings.targets),
                           {"arch": "sd1", "kind": "eps", "fingerprint": "toy-1"}, layout=toy_layout(), init=init)


def _read(path, algorithm="lora", targets=None):
    targets = targets or {k: 1.0 for k in TOY_KEYS.values()}
    return InitLoRA.read(path, toy_layout(), targets, algorithm)


def test_a_run_starts_from_the_files_factors_rank_and_alpha(trained):
    ds, model, source, path, _ = trained
    run = _start(ds, model, _read(path))
    assert (run.settings.rank, run.settings.alpha, run.settings.init_lora) == (4, 2.0, "start.safetensors")
    a, b = run.network.state_tensors(), source.network.state_tensors()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert run.step == 0
    train(run, model, 2)  # and it trains on


def _edited(path, tmp, change):
    tensors = load_tensors(path)
    change(tensors)
    out = str(tmp / f"edited{len(list(tmp.iterdir()))}.safetensors")
    save_tensors(out, tensors)
    return out


def test_files_that_do_not_fit_are_refused_naming_the_module(trained):
    ds, model, _, path, tmp = trained
    conv_in = "lora_unet_conv_in"
    missing = _edited(path, tmp, lambda t: [t.pop(k) for k in list(t) if k.startswith(conv_in)])
    with pytest.raises(TrainingError, match=r"no module for 1 of the run's 3 targets \(first: "
                                            r"diffusion_model\.input_blocks\.0\.0\.weight\)"):
        _read(missing)
    with pytest.raises(TrainingError, match=f"{conv_in}.*not among the run's targets"):
        _read(path, targets={TOY_KEYS["to_k"]: 1.0, TOY_KEYS["conv_out"]: 1.0})
    misshapen = _edited(path, tmp, lambda t: t.update({f"{conv_in}.lora_up.weight": torch.zeros(16, 4, 1, 1)}))
    with pytest.raises(TrainingError, match=f"module {conv_in} lands on no weight of this model: size"):
        _read(misshapen)
    mixed = _edited(path, tmp, lambda t: t.update({"lora_unet_conv_out.alpha": torch.tensor(1.0)}))
    with pytest.raises(TrainingError, match=r"module lora_unet_\w+ has rank 4 and alpha [12], other modules rank 4 "
                                            r"and alpha [12]; a run has one rank and alpha"):
        _read(mixed)
    with pytest.raises(TrainingError, match="algorithm lora, locon, dora, not loha"):
        _read(path, algorithm="loha")
    with pytest.raises(TrainingError, match="has no DoRA magnitude but the run's algorithm is dora"):
        _read(path, algorithm="dora")
    with pytest.raises(TrainingError) as err:
        _read(mixed)
    assert mixed in str(err.value)

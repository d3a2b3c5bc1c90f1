"""Training interruption (reliability issue; the training runs themselves are the training issue's):
a Cancel and a killed process each leave a checkpoint the run resumes from, and a process killed
while writing a checkpoint leaves the previous one intact and nothing partial.

Runs on the training tests' toy model and helpers (loralab_testkit.train_toys).
"""
from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import textwrap

import pytest

checkpoint = pytest.importorskip("loralab.train.checkpoint", reason="waits for loralab.train (training branch)")
toys = pytest.importorskip("loralab_testkit.train_toys")

from loralab.files.atomic import TEMP_SUFFIX  # noqa: E402
from loralab_testkit import REPO  # noqa: E402

TESTS = os.path.join(REPO, "tests")


@pytest.fixture
def setup(tmp_path):
    ds = toys.make_dataset(str(tmp_path / "data"), str(tmp_path / "cache"))
    return ds, toys.ToyModel(), tmp_path


def _weights(run):
    return {k: v.clone() for k, v in run.network.state_tensors().items()}


def _same(a, b):
    return a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_cancel_leaves_a_checkpoint_that_resumes_exactly(setup):
    ds, model, tmp = setup
    one_go = toys.make_run(ds, model)
    toys.train(one_go, model, 6)
    run = toys.make_run(ds, model)
    assert toys.train(run, model, 6, should_stop=lambda: run.step >= 3)  # the user pressed Cancel
    lora_path, state_path = checkpoint.save_checkpoint(run, str(tmp / "out"), periodic=False)
    resumed = checkpoint.restore_run(toys.make_run(ds, model), state_path)
    assert resumed.step == 3 and os.path.isfile(lora_path)
    toys.train(resumed, model, 3)
    assert _same(_weights(resumed), _weights(one_go)) and resumed.losses == one_go.losses


CHILD = """
import shutil, sys, time
sys.path[:0] = [{repo!r}, {tests!r}]
import loralab.files.safetensors as sio
from loralab.train.checkpoint import save_checkpoint
from loralab_testkit.train_toys import ToyModel, make_dataset, make_run, train
real_copy = shutil.copyfileobj

def copy(src, dst, length=0):
    if ".loralab-state." in str(src.name) and "step000004" in str(src.name):  # the spool of step 4's state
        dst.write(src.read(256))
        dst.flush()
        print("mid-write", flush=True)
        time.sleep(120)
    real_copy(src, dst, length)
sio.shutil.copyfileobj = copy
ds = make_dataset({data!r}, {cache!r})
model = ToyModel()
run = make_run(ds, model, save_every=2, keep_last=0, name="run")
train(run, model, 10, on_step=lambda r, loss: r.step % 2 == 0 and save_checkpoint(r, {out!r}))
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
def test_killed_while_saving_leaves_the_previous_checkpoint_resumable(setup):
    ds, model, tmp = setup
    out = str(tmp / "out")
    code = CHILD.format(repo=REPO, tests=TESTS, data=str(tmp / "data"), cache=str(tmp / "cache"), out=out)
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        line = p.stdout.readline()
        assert line.strip() == "mid-write", p.stderr.read()
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    states = sorted(glob.glob(os.path.join(out, "*" + checkpoint.STATE_EXTENSION)))
    assert [os.path.basename(s) for s in states] == ["run_step000002.loralab-state"], os.listdir(out)
    finished = {n for n in os.listdir(out) if not n.endswith(TEMP_SUFFIX)}
    assert finished == {"run_step000002.safetensors", "run_step000002.loralab-state", "run_step000004.safetensors"}
    resumed = checkpoint.restore_run(toys.make_run(ds, model, save_every=2, keep_last=0, name="run"), states[0])
    assert resumed.step == 2
    one_go = toys.make_run(ds, model, save_every=2, keep_last=0, name="run")
    toys.train(one_go, model, 4)
    toys.train(resumed, model, 2)
    assert _same(_weights(resumed), _weights(one_go))

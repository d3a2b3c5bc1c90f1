"""Data-parallel training (torch.distributed, gloo on the CPU) on the toy model: two processes that
torchrun starts train the LoRA one process trains at the same global batch, resume bit-exactly,
and agree with each other; the split of a batch over processes."""
import os
import subprocess
import sys

import torch

from loralab.files.safetensors import load_tensors
from loralab.train.distributed import SINGLE, World, init_world
from loralab_testkit import REPO
from loralab_testkit import ddp_worker
from loralab_testkit.train_toys import ToyModel, make_dataset, make_run, train

WORKER = os.path.join(REPO, "tests", "loralab_testkit", "ddp_worker.py")


def torchrun(mode: str, out: str, nproc: int = 2) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests")]), OMP_NUM_THREADS="1",
               CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           WORKER, mode, out]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_two_processes_train_the_single_process_run_and_resume_bit_exactly(tmp_path):
    out = str(tmp_path)
    torchrun("straight", out)
    torchrun("resume", out)
    ranks = [load_tensors(os.path.join(out, f"straight_rank{r}.safetensors")) for r in (0, 1)]
    resumed = [load_tensors(os.path.join(out, f"resumed_rank{r}.safetensors")) for r in (0, 1)]
    # the processes hold the same run
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    assert all(torch.equal(resumed[0][k], resumed[1][k]) for k in resumed[0])
    # 2 steps, checkpoint, 2 more steps in new processes == 4 steps straight, bit for bit
    assert ranks[0].keys() == resumed[0].keys()
    assert all(torch.equal(ranks[0][k], resumed[0][k]) for k in ranks[0])
    for r in (0, 1):
        grads = load_tensors(os.path.join(out, f"grads_rank{r}.safetensors"))
        assert grads["both"].tolist() == [3.0, 3.0] and grads["one"].tolist() == [1.0, 1.0, 1.0]
    # only the main process wrote the checkpoint: one LoRA and one state
    assert sorted(os.path.splitext(f)[1] for f in os.listdir(os.path.join(out, "ckpt"))) == [".loralab-state",
                                                                                             ".safetensors"]
    # one process at the same global batch trains the same LoRA
    ds = make_dataset(os.path.join(out, "data"), os.path.join(out, "cache"), **ddp_worker.DATASET)
    model = ToyModel()
    single = make_run(ds, model, **ddp_worker.RUN)
    start = {k: v.clone() for k, v in single.network.state_tensors().items()}
    train(single, model, 4)
    mine = single.network.state_tensors()
    worst = max(float((mine[k] - ranks[0][k]).abs().max()) for k in mine)
    moved = max(float((mine[k] - start[k]).abs().max()) for k in mine)
    print(f"largest difference to one process: {worst:.2e} (training moved the weights by up to {moved:.2e})")
    assert worst <= 1e-6 and moved > 1e-3, (worst, moved)


def test_a_batch_splits_into_contiguous_shares_that_cover_it():
    for n in range(0, 9):
        for size in (1, 2, 3, 4):
            shares = [list(World(r, size).share(n)) for r in range(size)]
            assert sum(shares, []) == list(range(n))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1
            assert [len(s) for s in shares] == sorted((len(s) for s in shares), reverse=True)
    assert list(World(1, 2).share(1)) == [] and list(SINGLE.share(5)) == [0, 1, 2, 3, 4]


def test_without_torchrun_the_world_is_one_process(monkeypatch):
    for key in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    world = init_world()
    assert (world.rank, world.size, world.main) == (0, 1, True)
    assert world.sum(2.5) == 2.5 and world.any(True) and not world.any(False)


def test_a_process_with_no_share_computes_nothing_and_the_shares_sum_to_the_batch(tmp_path):
    ds = make_dataset(str(tmp_path / "data"), str(tmp_path / "cache"))
    model = ToyModel()
    run = make_run(ds, model)
    model.network = run.network
    from loralab.train.run import batch_loss
    whole = batch_loss(model, ds, run.settings, [0, 1, 2], torch.Generator().manual_seed(1))
    parts = [batch_loss(model, ds, run.settings, [0, 1, 2], torch.Generator().manual_seed(1),
                        share=World(r, 2).share(3)) for r in (0, 1)]
    assert abs(float((parts[0] + parts[1]).detach()) - float(whole.detach())) < 1e-6
    assert batch_loss(model, ds, run.settings, [0], torch.Generator().manual_seed(1), share=range(0)) is None

"""Memory modes on a toy transformer: block swap and CPU-offloaded checkpointing change no bit of
the gradients or of a trained run; fp8-stored base weights give exactly the loss of weights
rounded through fp8, and the bf16 loss within fp8's rounding; the resident part of a model is
what lies outside its swapped blocks, and its original data is put back untouched."""
import pytest
import torch

from loralab.train.base_weights import FP8, fp8_round, stored_in_fp8
from loralab.train.block_swap import block_swap, resident_on
from loralab.train.grad_checkpoint import gradient_checkpointing
from loralab_testkit.train_blocks import BlockModel, ToyTransformer, block_run, network_for
from loralab_testkit.train_toys import make_dataset


def _x(width_tokens=16, batch=2, seed=0):
    return torch.randn(batch, 4, 4, width_tokens // 4, generator=torch.Generator().manual_seed(seed))


def _grads(net, network, x, dtype=torch.float32):
    loss = (net(x.to(dtype)).float() ** 2).mean()
    loss.backward()
    grads = [p.grad.clone() for p in network.parameters()]
    network.zero_grad(set_to_none=True)
    return loss.detach(), grads


def _weights(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("count", [1, 2, 5])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_block_swap_gives_bit_identical_gradients(count, checkpointing):
    net = ToyTransformer(width=32, depth=6)
    network = network_for(net)
    before = _weights(net)
    x = _x()
    with gradient_checkpointing(net, checkpointing):
        loss, grads = _grads(net, network, x)
    with gradient_checkpointing(net, checkpointing), block_swap(list(net.blocks), count, "cpu", "cpu") as swap:
        assert all(net.blocks[i].fc1.weight.numel() == 0 for i in range(count))  # out until used
        assert net.blocks[count].fc1.weight.numel() > 0
        swapped_loss, swapped_grads = _grads(net, network, x)
        assert all(net.blocks[i].fc2.weight.numel() == 0 for i in range(1, count))
    assert torch.equal(loss, swapped_loss)
    assert all(torch.equal(a, b) for a, b in zip(grads, swapped_grads))
    assert swap.peak_resident <= 2
    ins = [i for d, i in swap.moves if d == "in"]
    # forward brings each swapped block in once; backward brings each in again, last first
    assert ins == list(range(count)) + list(reversed(range(count)))
    assert all(torch.equal(v, _weights(net)[k]) for k, v in before.items())  # all back, unchanged


def test_a_swapped_block_used_out_of_turn_fails_loudly():
    net = ToyTransformer(width=16, depth=3)
    with block_swap(list(net.blocks), 2, "cpu", "cpu"):
        with pytest.raises((RuntimeError, NotImplementedError)):
            net.blocks[1].forward(torch.randn(1, 4, 16))  # bypasses the hooks: its weights are out


def test_block_swap_puts_the_original_data_back_where_it_was():
    net = ToyTransformer(width=16, depth=4)
    network = network_for(net)
    before = {k: (v.data_ptr(), v.device) for k, v in net.state_dict().items()}
    with block_swap(list(net.blocks), 3, "cpu", "cpu"):
        assert net.blocks[0].fc1.weight.numel() == 0
        _grads(net, network, _x())
    assert {k: (v.data_ptr(), v.device) for k, v in net.state_dict().items()} == before  # the originals, not copies


def test_resident_on_counts_all_but_the_swapped_blocks_and_leaves_the_originals():
    net = ToyTransformer(width=16, depth=4)
    net.register_buffer("scale", torch.ones(3))
    net.shared = net.proj_in  # one module reached twice is placed (and counted) once
    away = ("blocks.0.", "blocks.1.", "shared.")
    before = {k: v.data_ptr() for k, v in net.state_dict().items()}
    with resident_on(net, "cpu", list(net.blocks[:2])) as resident:
        state = net.state_dict()
        assert {k: v.data_ptr() for k, v in state.items()} == before  # already there: nothing copied
        assert resident == sum(v.numel() * v.element_size() for k, v in state.items() if not k.startswith(away))
        assert resident < sum(v.numel() * v.element_size() for k, v in state.items() if not k.startswith("shared."))
    assert {k: v.data_ptr() for k, v in net.state_dict().items()} == before


def test_training_with_block_swap_is_bit_identical(tmp_path):
    ds = make_dataset(str(tmp_path / "data"), str(tmp_path / "cache"))
    runs = []
    for swapped in (0, 3):
        net = ToyTransformer(width=32, depth=4)
        run = block_run(net, ds)
        with gradient_checkpointing(net, swapped > 0), block_swap(list(net.blocks), swapped, "cpu", "cpu"):
            run.train(BlockModel(net), 3)
        runs.append(run)
    plain, swapped = runs
    assert plain.losses == swapped.losses and len(plain.losses) == 3
    assert all(torch.equal(a, b) for a, b in zip(plain.params(), swapped.params()))
    assert plain.params()[1].abs().sum() > 0  # the up factors moved


def test_offloaded_checkpointing_gives_the_gradients_of_plain_checkpointing():
    net = ToyTransformer(width=32, depth=4)
    network = network_for(net)
    x = _x()
    loss, grads = _grads(net, network, x)
    with gradient_checkpointing(net) as wrapped:
        ck_loss, ck_grads = _grads(net, network, x)
    with gradient_checkpointing(net, offload=True):
        off_loss, off_grads = _grads(net, network, x)
    assert wrapped == 6  # proj_in, 4 blocks, proj_out
    assert torch.equal(ck_loss, off_loss) and torch.equal(loss, off_loss)
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(ck_grads, off_grads, grads))


def test_offloaded_checkpointing_keeps_block_inputs_on_the_cpu(monkeypatch):
    """What checkpointing saves for backward goes through save_on_cpu's pack hook."""
    import loralab.train.grad_checkpoint as gc
    packed = []

    class Recording(gc.save_on_cpu):
        def __init__(self, pin_memory=False):
            super().__init__(pin_memory)
            pack = self.pack_hook

            def record(t):
                packed.append(tuple(t.shape))
                return pack(t)
            self.pack_hook = record

    monkeypatch.setattr(gc, "save_on_cpu", Recording)
    net = ToyTransformer(width=32, depth=4)
    network = network_for(net)
    with gradient_checkpointing(net, offload=True):
        _grads(net, network, _x())
    assert (2, 16, 32) in packed  # a block input: batch 2, 16 tokens, width 32
    assert not any(s == (2, 16, 128) for s in packed)  # nothing from inside a block (recomputed)


def test_fp8_storage_places_each_module_where_asked_and_puts_the_originals_back():
    net = ToyTransformer(width=16, depth=3).to(torch.bfloat16)
    before = {k: (v.data_ptr(), v.dtype) for k, v in net.state_dict().items()}
    asked = []

    def place(module):
        asked.append(module)
        return "cpu"
    with stored_in_fp8(net, "cpu", where=lambda m: m is not net.blocks[0].fc1, place=place) as converted:
        assert converted == 7 and net.blocks[0].fc1.weight.dtype == torch.bfloat16  # not where asked
        assert net.blocks[1].fc1.weight.dtype == FP8 and net.blocks[1].fc1.weight.data_ptr() != before[
            "blocks.1.fc1.weight"][0]
        assert net.blocks[0].fc1 not in asked and net.blocks[1].fc1 in asked
    assert {k: (v.data_ptr(), v.dtype) for k, v in net.state_dict().items()} == before  # the originals themselves


def test_fp8_stored_base_equals_fp8_rounded_weights_and_bf16_within_fp8_rounding():
    def bf16_net():
        net = ToyTransformer(width=64, depth=4).to(torch.bfloat16)
        return net, network_for(net)

    x = _x(width_tokens=32)
    base, base_net = bf16_net()
    base_net.set_output_dtype(torch.bfloat16)
    bf16_loss, bf16_grads = _grads(base, base_net, x, torch.bfloat16)

    rounded, rounded_net = bf16_net()
    rounded_net.set_output_dtype(torch.bfloat16)
    with torch.no_grad():
        for p in rounded.parameters():
            if p.dim() >= 2:
                p.copy_(fp8_round(p))
    rounded_loss, rounded_grads = _grads(rounded, rounded_net, x, torch.bfloat16)

    stored, stored_net = bf16_net()
    stored_net.set_output_dtype(torch.bfloat16)
    originals = _weights(stored)
    with stored_in_fp8(stored) as converted:
        assert converted == 10 and stored.blocks[0].fc1.weight.dtype == FP8
        fp8_loss, fp8_grads = _grads(stored, stored_net, x, torch.bfloat16)
    assert all(torch.equal(v, _weights(stored)[k]) for k, v in originals.items())  # restored bit for bit
    assert stored.blocks[0].fc1.weight.dtype == torch.bfloat16

    # stored in fp8, upcast at use == rounded through fp8 explicitly: exactly (e4m3 ⊂ bf16)
    assert torch.equal(fp8_loss, rounded_loss)
    assert all(torch.equal(a, b) for a, b in zip(fp8_grads, rounded_grads))
    # against bf16: every weight moves by at most u = 2⁻⁴ of itself (e4m3 keeps 3 mantissa bits,
    # round to nearest), so no layer's output moves by more than u relative to Σ|W||x|; on this toy
    # the loss moves by 2.1 % (measured), under u
    rel = float((fp8_loss - bf16_loss).abs() / bf16_loss)
    assert 0 < rel < 2 ** -4, rel
    cos = torch.nn.functional.cosine_similarity(torch.cat([g.flatten() for g in fp8_grads]).float(),
                                                torch.cat([g.flatten() for g in bf16_grads]).float(), dim=0)
    assert cos > 0.99, float(cos)  # measured 0.9989

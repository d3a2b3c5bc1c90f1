"""Block swap: the first N blocks of a model wait on an offload device (the CPU) and are brought
to the training device just before they compute, forward and backward.

A swapped block's parameters and buffers keep their data on the offload device; while the block
is out they hold an empty (zero-element) placeholder, so a block used without being brought in
fails loudly instead of computing on the wrong data. Module hooks drive it: before block i computes
forward, every other swapped block goes out, block i comes in and the next swapped block starts
streaming in; after it, block i goes out. In backward, the gradient reaching block i's output
brings block i back (blocks after it go out) and starts streaming the swapped block before it.
Autograd keeps the parameters themselves for backward, so their data is back in place when their
backward runs. On CUDA the copies run on a side stream, overlapped with compute; elsewhere they
are plain copies (with the CPU as both devices, real copies all the same, so tests exercise the
whole path). Only frozen tensors may live in swapped blocks: the trained factors are outside.
On exit every tensor is back where it was, its original data where that was on the offload device.

:func:`resident_on` is the other half: the rest of the model on the training device while the
swapped blocks wait, so a model loaded on the offload device never has to fit the device whole.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from ..errors import TrainingError


def _in_backward() -> bool:
    return torch._C._current_graph_task_id() != -1


def _tensors(block: nn.Module) -> list[tuple[nn.Module, str, bool]]:
    out = []
    for module in block.modules():
        out += [(module, name, True) for name, p in module._parameters.items() if p is not None]
        out += [(module, name, False) for name, b in module._buffers.items() if b is not None]
    return out


class BlockSwap:
    """Swaps ``blocks[:count]`` (in execution order) between ``device`` and ``offload``."""

    def __init__(self, blocks: Sequence[nn.Module], count: int, device: torch.device | str,
                 offload: torch.device | str = "cpu") -> None:
        self.blocks = list(blocks)
        self.count = max(0, min(count, len(self.blocks)))
        self.device, self.offload = torch.device(device), torch.device(offload)
        self.cuda = self.device.type == "cuda"
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.slots = [_tensors(b) for b in self.blocks[:self.count]]
        self.home: list[list[torch.Tensor]] = []
        #: the device each swapped tensor was on when the swap started, where close puts it back
        self.origin: list[list[torch.device]] = []
        self.resident: dict[int, tuple[list[torch.Tensor], Any]] = {}
        #: (``in`` | ``out``, block index) for every move, in order (tests and benchmarks read it)
        self.moves: list[tuple[str, int]] = []
        self.peak_resident = 0
        self.handles: list[Any] = []

    def _get(self, slot: tuple[nn.Module, str, bool]) -> torch.Tensor:
        module, name, is_param = slot
        return module._parameters[name] if is_param else module._buffers[name]

    def _set(self, slot: tuple[nn.Module, str, bool], value: torch.Tensor) -> None:
        module, name, is_param = slot
        if is_param:
            module._parameters[name].data = value
        else:
            module._buffers[name] = value

    def start(self) -> None:
        """Move the swapped blocks' data to the offload device (data already there stays as it
        is, unless it must be pinned) and install the hooks."""
        pin = self.cuda and self.offload.type == "cpu"
        for i, slots in enumerate(self.slots):
            home, origin = [], []
            for slot in slots:
                t = self._get(slot)
                if t.requires_grad:
                    raise TrainingError(f"block {i} holds a trained tensor ({slot[1]}); only frozen blocks swap")
                h = t.detach().to(self.offload)
                home.append(h.pin_memory() if pin else h)
                origin.append(t.device)
                self._set(slot, t.new_empty(0))
            self.home.append(home)
            self.origin.append(origin)
        for i, block in enumerate(self.blocks):
            self.handles.append(block.register_forward_pre_hook(self._pre_forward(i)))
            self.handles.append(block.register_forward_hook(self._post_forward(i)))

    def close(self) -> None:
        """Remove the hooks and put every swapped block's data back on the device it came from."""
        for h in self.handles:
            h.remove()
        self.handles = []
        if self.cuda:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
        for slots, home, origin in zip(self.slots, self.home, self.origin):
            for slot, h, device in zip(slots, home, origin):
                self._set(slot, h if h.device == device and not _pinned(h) else h.to(device, copy=True))
        self.resident.clear()
        self.home, self.origin = [], []

    def _fetch(self, i: int) -> None:
        """Start bringing swapped block ``i`` in (nothing when it is in or not swapped)."""
        if not 0 <= i < self.count or i in self.resident:
            return
        self.moves.append(("in", i))
        if self.cuda:
            with torch.cuda.stream(self.stream):
                copies = [h.to(self.device, non_blocking=True) for h in self.home[i]]
                event = torch.cuda.Event()
                event.record(self.stream)
        else:
            copies, event = [h.to(self.device, copy=True) for h in self.home[i]], None
        self.resident[i] = (copies, event)
        self.peak_resident = max(self.peak_resident, len(self.resident))

    def _use(self, i: int) -> None:
        if not 0 <= i < self.count:
            return
        self._fetch(i)
        copies, event = self.resident[i]
        if event is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(event)
            for c in copies:
                c.record_stream(stream)
        for slot, c in zip(self.slots[i], copies):
            self._set(slot, c)

    def _evict(self, i: int) -> None:
        if i not in self.resident:
            return
        self.moves.append(("out", i))
        for slot, h in zip(self.slots[i], self.home[i]):
            self._set(slot, torch.empty(0, dtype=h.dtype, device=self.device))
        del self.resident[i]

    def _pre_forward(self, i: int):
        def hook(module: nn.Module, args: tuple) -> None:
            if _in_backward():  # recomputed by gradient checkpointing: already brought in
                self._use(i)
                return
            for j in [j for j in self.resident if j != i]:
                self._evict(j)
            self._use(i)
            self._fetch(i + 1)
        return hook

    def _post_forward(self, i: int):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if _in_backward():
                return
            if torch.is_grad_enabled():
                for t in _output_tensors(output):
                    if t.requires_grad:
                        t.register_hook(self._on_output_grad(i))
            self._evict(i)
        return hook

    def _on_output_grad(self, i: int):
        def hook(grad: torch.Tensor) -> None:
            for j in [j for j in self.resident if j > i]:
                self._evict(j)
            self._use(i)
            self._fetch(min(i, self.count) - 1)
        return hook


def _pinned(t: torch.Tensor) -> bool:
    return t.device.type == "cpu" and t.is_pinned()


def _output_tensors(output: Any) -> list[torch.Tensor]:
    if torch.is_tensor(output):
        return [output]
    if isinstance(output, (list, tuple)):
        return [t for o in output for t in _output_tensors(o)]
    if isinstance(output, dict):
        return [t for o in output.values() for t in _output_tensors(o)]
    return []


@contextlib.contextmanager
def block_swap(blocks: Sequence[nn.Module], count: int, device: torch.device | str,
               offload: torch.device | str = "cpu") -> Iterator[BlockSwap]:
    """Swap ``blocks[:count]`` for the length of the block (see :class:`BlockSwap`)."""
    swap = BlockSwap(blocks, count, device, offload)
    if swap.count:
        swap.start()
    try:
        yield swap
    finally:
        if swap.count:
            swap.close()


@contextlib.contextmanager
def resident_on(model: nn.Module, device: torch.device | str, away: Sequence[nn.Module] = ()) -> Iterator[int]:
    """Within the block, every parameter and buffer of ``model`` outside the ``away`` modules (the
    swapped blocks) is on ``device``: those elsewhere are copied there and their originals put back
    on exit, untouched. Yields the bytes of ``model`` on ``device`` (the resident base weights)."""
    device = torch.device(device)
    skip = {id(m) for block in away for m in block.modules()}
    seen: set[int] = set()
    moved: list[tuple[nn.Module, str, bool, torch.Tensor]] = []
    resident = 0
    try:
        with torch.no_grad():
            for m in model.modules():
                if id(m) in skip:
                    continue
                for is_param, tensors in ((True, m._parameters), (False, m._buffers)):
                    for name, t in tensors.items():
                        if t is None or id(t) in seen:
                            continue
                        seen.add(id(t))
                        if t.device != device:
                            original = t.data if is_param else t
                            placed = original.to(device)
                            if is_param:
                                t.data = placed
                            else:
                                tensors[name] = placed
                            moved.append((m, name, is_param, original))
                        resident += t.numel() * t.element_size()
        yield resident
    finally:
        with torch.no_grad():
            for m, name, is_param, original in reversed(moved):
                if is_param:
                    m._parameters[name].data = original
                else:
                    m._buffers[name] = original

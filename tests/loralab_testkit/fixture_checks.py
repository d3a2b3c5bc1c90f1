"""Engine checks of a fixture LoRA shared by the model family tests: how much of it ComfyUI's own
loader patches (emulated by host_targets) while we map all of it, and which blocks a block spec zeroes."""
from __future__ import annotations

from loralab.blocks.spec import parse_block_weights
from loralab.formats.host_keys import NEWEST, HostRules, host_targets
from loralab.lora import Lora
from loralab.ops.apply import plan_application
from loralab_testkit import FixtureSource, fixture


def assert_host_loads(name: str, expected: int | str, rules: HostRules = NEWEST) -> None:
    """The host of ``rules`` patches ``expected`` of the fixture's keys ("all", "none" or a count),
    and the engine maps every one of them."""
    lora = Lora(FixtureSource(name))
    keys = list(fixture("loras", name)["tensors"])
    loaded = [k for k, t in host_targets(keys, lora.layout, rules=rules).items() if t is not None]
    assert len(loaded) == {"all": len(keys), "none": 0}.get(expected, expected)
    assert not list(lora.unmapped()) and not lora.unrecognized and not lora.orphans


def assert_spec_zeroes(name: str, spec: str, zeroed: set[str], arch_id: str | None = None) -> None:
    """Applied with ``spec`` on its own arch (or ``arch_id``), the fixture's patches in the blocks
    ``zeroed`` are zeroed and no other, nothing left unapplied."""
    lora = Lora(FixtureSource(name))
    arch_id = arch_id or lora.detection.arch
    plan = plan_application(lora, parse_block_weights(spec, arch_id), 1.0, 1.0, model_arch=arch_id,
                            clip_connected=False)
    assert {p.block for p in plan.zero} == zeroed
    assert not {p.block for p in plan.patches} & zeroed and plan.patches
    assert not plan.not_applied

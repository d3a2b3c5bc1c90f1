"""What the frontend learns about every LoRA Lab input from the host's ``/object_info``: each has a
tooltip that says what it does; seeds have no control-after-generate (nothing reruns unasked);
rarely changed inputs are advanced on every host (0.3.64's V3 inputs lack the flag: the same key
goes through ``extra_dict``), and never a socket or a required input without a default."""
from __future__ import annotations

import pytest

from host.workflow_kit import object_info

#: inputs not marked advanced (the loader's a, b and seed are not: the frontend shows each while the
#: block-weight spec uses it)
SHOWN = {
    "LoRALabTrain": {"model", "dataset", "algorithm", "rank", "alpha", "targets", "blocks", "optimizer",
                     "learning_rate", "lr_scheduler", "steps", "batch_size", "name", "save_every", "fits_in",
                     "clip", "validation", "validation_every", "sample_prompts", "sample_every"},
    "LoRALabLoader": {"model", "clip", "lora_name", "strength_model", "strength_clip", "block_weights", "a", "b",
                      "seed"},
}


@pytest.fixture(scope="module")
def ours(host) -> dict:
    info = object_info(host)
    pack = [cls.GET_SCHEMA().node_id for module in host.module("nodes").NODE_MODULES for cls in module.NODES]
    assert len(pack) >= 16 and set(pack) <= set(info)
    return {node_id: info[node_id] for node_id in pack}


def _inputs(node: dict):
    for section in ("required", "optional"):
        for name, spec in node["input"].get(section, {}).items():
            yield section, name, spec[0], (spec[1] if len(spec) > 1 else {})


def test_every_input_has_a_tooltip(ours):
    missing = [f"{node_id}.{name}" for node_id, node in ours.items() for _, name, _, opts in _inputs(node)
               if len(str(opts.get("tooltip") or "").strip()) < 12]
    assert not missing, f"inputs without a tooltip: {', '.join(missing)}"


def test_no_seed_changes_by_itself(ours):
    seeds = [(node_id, opts) for node_id, node in ours.items() for _, name, kind, opts in _inputs(node)
             if kind == "INT" and name in ("seed", "noise_seed")]
    assert len(seeds) >= 6
    assert all(opts.get("control_after_generate") is False for _, opts in seeds), seeds


def test_advanced_inputs_on_every_host(ours):
    flagged = 0
    for node_id, node in ours.items():
        for section, name, kind, opts in _inputs(node):
            if "advanced" in opts:
                assert opts["advanced"] is True, (node_id, name)
                assert "default" in opts, (node_id, name)  # a widget that has a value (optional: older prompts run)
                flagged += 1
    assert flagged >= 30
    for node_id, shown in SHOWN.items():
        visible = {name for _, name, _, opts in _inputs(ours[node_id]) if not opts.get("advanced")}
        assert visible == shown, (node_id, visible ^ shown)


def test_spec_token_inputs_are_marked(ours):
    """The inputs only specs with their token read (the frontend shows them while a spec does)."""
    marked = {(node_id, name) for node_id, node in ours.items() for _, name, _, opts in _inputs(node)
              if opts.get("loralab_spec_token")}
    assert marked == {(n, t) for n in ("LoRALabLoader", "LoRALabStack", "LoRALabWanPair") for t in ("a", "b", "seed")}

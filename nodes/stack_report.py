"""Stack Report: how the LoRAs of a stack interfere per absolute block (thin node over
loralab.ops.interference), with proposed block-weight specs to wire into the LoRA Stack."""
from __future__ import annotations

import json
from typing import Any

from comfy_api.latest import io, ui

from ..loralab.errors import SpecError
from ..loralab.lora import Lora
from ..loralab.ops.inputs import MergeInput
from ..loralab.ops.interference import Thresholds, stack_report
from .common import CATEGORY, advanced, display_name, node_id, unlisted
from .host.folders import lora_names, picked_lora, picked_stamp
from .host.models import effective_weights, model_layout
from .host.progress import progress_callback
from .inspect import _image
from .loader import NONE, SPEC_TOOLTIP, STACK_SLOTS


class LoRALabStackReport(io.ComfyNode):
    """Per block: each LoRA's strength, each pair's cosine, subspace overlap and sign conflict; the
    blocks where two fight; block-weight specs that separate them, one output per Stack slot."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        names = [NONE, *lora_names()]
        slots: list[io.Input] = []
        for i in range(1, STACK_SLOTS + 1):
            slots += [
                io.Combo.Input(f"lora_name_{i}", options=names, default=NONE,
                               tooltip=f"the LoRA in the Stack's slot {i}; None skips this slot"),
                io.Float.Input(f"strength_{i}", default=1.0, min=-100.0, max=100.0, step=0.01,
                               tooltip=f"LoRA {i}'s weight (the Stack's strength_model)"),
                io.String.Input(f"block_weights_{i}", default="", multiline=True, tooltip=SPEC_TOOLTIP),
            ]
        return io.Schema(
            node_id=node_id("StackReport"), display_name=display_name("Stack Report"), category=f"{CATEGORY}/Inspect",
            description="Compares the LoRAs of a stack per absolute block: how strongly each changes the model, "
                        "the cosine of each pair's ΔW, the overlap of their dominant subspaces and their sign "
                        "conflict, all from the factors. Names the blocks where two fight and proposes block weights "
                        "that separate them: wire proposed_block_weights_N into the LoRA Stack's block_weights_N.",
            inputs=[
                *slots,
                advanced(io.Float.Input("cos_threshold", default=0.1, min=0.0, max=1.0, step=0.01,
                                        tooltip="a pair fights on a block whose cosine is ≤ −this (0.1 is usual)")),
                advanced(io.Float.Input("overlap_threshold", default=0.5, min=0.0, max=1.0, step=0.01,
                                        tooltip="... or whose subspace overlap is ≥ this with strengths within "
                                                "balance (0.5 is usual)")),
                advanced(io.Float.Input("balance", default=0.25, min=0.0, max=1.0, step=0.01,
                                        tooltip="overlap fights need the weaker block strength ≥ this × the stronger "
                                                "one (0.25 is usual)")),
                advanced(io.Float.Input("lower", default=0.0, min=-10.0, max=10.0, step=0.01,
                                        tooltip="the proposal multiplies the weaker LoRA's block weight by this where "
                                                "it fights (0 turns it off there)")),
                advanced(io.Int.Input("samples", default=4096, min=1, max=1 << 24,
                                      tooltip="entries per weight the sign-conflict estimate reads (4096 is usual)")),
                advanced(io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=False,
                                      tooltip="seed of the sampled entries (any number)")),
                io.Model.Input("model", optional=True,
                               tooltip="the base model: adds relative strength |ΔW|/|W| and maps the LoRAs onto its "
                                       "exact layout"),
            ],
            outputs=[
                io.String.Output("report", display_name="report"),
                io.String.Output("json", display_name="json"),
                io.Image.Output("cosine_map", display_name="cosine_map"),
                *[io.String.Output(f"proposed_{i}", display_name=f"proposed_block_weights_{i}",
                                   tooltip=f"proposed block weights of slot {i}: wire into the Stack's "
                                           f"block_weights_{i}") for i in range(1, STACK_SLOTS + 1)],
            ],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, **kwargs: Any) -> bool | str:
        chosen = {f"lora_name_{i}": kwargs.get(f"lora_name_{i}") for i in range(1, STACK_SLOTS + 1)}
        return unlisted(chosen, [NONE, *lora_names()])

    @classmethod
    def fingerprint_inputs(cls, **kwargs: Any) -> Any:
        """Size and modification time of every LoRA picked: a changed file is compared again."""
        return tuple(picked_stamp(kwargs.get(f"lora_name_{i}")) for i in range(1, STACK_SLOTS + 1))

    @classmethod
    def execute(cls, cos_threshold: float, overlap_threshold: float, balance: float, lower: float, samples: int,
                seed: int, model=None, **slots: Any) -> io.NodeOutput:
        layout = model_layout(model) if model is not None else None
        used = [i for i in range(1, STACK_SLOTS + 1) if slots.get(f"lora_name_{i}", NONE) not in (NONE, "", None)]
        if not used:
            raise SpecError("no LoRA chosen: pick at least one lora_name", key="lora_name_1")
        inputs = [MergeInput(Lora.open(picked_lora(slots[f"lora_name_{i}"]), layout), slots[f"strength_{i}"],
                             slots[f"block_weights_{i}"], title=slots[f"lora_name_{i}"]) for i in used]
        base = effective_weights(model, layout) if model is not None else None
        thresholds = Thresholds(samples, seed, 0.9, cos_threshold, overlap_threshold, balance, lower)
        report = stack_report(inputs, base=base, thresholds=thresholds, progress=progress_callback())
        data = report.to_dict()
        for n, i in enumerate(used):
            data["loras"][n]["slot"] = i
        text = report.to_text()
        proposals = {i: spec for i, spec in zip(used, report.proposals)}
        specs = [proposals.get(i, slots.get(f"block_weights_{i}", "")) for i in range(1, STACK_SLOTS + 1)]
        return io.NodeOutput(text, json.dumps(data, ensure_ascii=False, allow_nan=False), _image(report.heat_map()),
                             *specs, ui=ui.PreviewText(text))


NODES = [LoRALabStackReport]

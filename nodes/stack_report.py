"""Stack Report: how the LoRAs of a stack interfere per absolute block (thin node over
loralab.ops.interference), with proposed block weights to wire into the LoRA Stack."""
from __future__ import annotations

import json
from typing import Any

from comfy_api.latest import io, ui

from ..loralab.errors import SpecError
from ..loralab.lora import Lora
from ..loralab.ops.inputs import MergeInput
from ..loralab.ops.interference import Thresholds, stack_report
from . import stack_rows
from .common import CATEGORY, advanced, display_name, node_id
from .host.folders import lora_names, picked_lora, picked_stamp
from .host.models import effective_weights, model_layout
from .host.progress import progress_callback
from .inspect import _image


class LoRALabStackReport(io.ComfyNode):
    """Per block: each LoRA's strength, each pair's cosine, subspace overlap and sign conflict; the
    blocks where two fight; block-weight specs that separate them, for the Stack's rows."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("StackReport"), display_name=display_name("Stack Report"), category=f"{CATEGORY}/Inspect",
            description="Compares the LoRAs of a stack per absolute block: how strongly each changes the model, "
                        "the cosine of each pair's ΔW, the overlap of their dominant subspaces and their sign "
                        "conflict, all from the factors. Names the blocks where two fight and proposes block weights "
                        "that separate them: wire proposed_block_weights into the LoRA Stack's block_weights.",
            inputs=[
                stack_rows.rows_input("the LoRAs to compare, as in the Stack's rows (give it the same rows): on/off, "
                                      "the file, its weight (the Stack's strength_model) and block weights",
                                      lora_names()),
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
                io.String.Output("proposed", display_name="proposed_block_weights",
                                 tooltip="the proposed block weights of every row, in row order (a JSON list): wire "
                                         "into the LoRA Stack's block_weights; rows that are off or never lowered "
                                         "keep their own"),
            ],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, loras: str | None = None) -> bool | str:
        return stack_rows.check_rows(loras, lora_names())

    @classmethod
    def fingerprint_inputs(cls, loras: str = "", **kwargs: Any) -> Any:
        """Size and modification time of the LoRA of every row that is on: a changed file is compared again."""
        try:
            rows = stack_rows.numbered_on(stack_rows.parse_rows(loras))
        except SpecError:
            return loras  # validation refuses it before anything runs
        return tuple(picked_stamp(row.lora) for _, row in rows)

    @classmethod
    def execute(cls, loras: str, cos_threshold: float, overlap_threshold: float, balance: float, lower: float,
                samples: int, seed: int, model=None) -> io.NodeOutput:
        layout = model_layout(model) if model is not None else None
        rows = stack_rows.parse_rows(loras)
        used = stack_rows.numbered_on(rows)
        if not used:
            raise SpecError("no LoRA on: add a row with + Add LoRA (or turn one on)", key=stack_rows.ROWS)
        inputs = [MergeInput(Lora.open(picked_lora(row.lora), layout), row.strength_model, row.block_weights,
                             title=row.lora) for _, row in used]
        base = effective_weights(model, layout) if model is not None else None
        thresholds = Thresholds(samples, seed, 0.9, cos_threshold, overlap_threshold, balance, lower)
        report = stack_report(inputs, base=base, thresholds=thresholds, progress=progress_callback())
        data = report.to_dict()
        for entry, (n, _) in zip(data["loras"], used):
            entry["row"] = n
        text = report.to_text()
        proposed = stack_rows.proposal(rows, {n: spec for (n, _), spec in zip(used, report.proposals)})
        return io.NodeOutput(text, json.dumps(data, ensure_ascii=False, allow_nan=False), _image(report.heat_map()),
                             proposed, ui=ui.PreviewText(text))


NODES = [LoRALabStackReport]

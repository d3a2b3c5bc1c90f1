"""Extract a LoRA from a fine-tuned model and its base: for each weight, the best low-rank
approximation of the difference, one weight at a time.

Small layers get a full SVD; large ones a randomized SVD with power iterations (Halko et al.),
which finds the leading singular values of a fine-tune's difference to high accuracy at a
fraction of the cost. Differences smaller than ``min_diff`` (relative to the base weight) are
skipped and counted.
"""
from __future__ import annotations

import json
import math
import os
import zlib

import torch

from .. import __version__
from ..adapters import Diff, LoRA
from ..errors import ArchMismatchError, LoRALabError
from ..formats.model_weights import ModelWeights
from ..formats.writer import kohya_tensors, lora_metadata
from ..layouts import DIFFUSION_PREFIX, Target
from .lowrank import RankRule, dense_svd, select_rank
from .results import MergeResult, ModuleReport, Progress, dense_dtype


def _extractable(key: str, shape: tuple[int, ...], text_encoders: bool, one_dim: bool) -> bool:
    """Weights a LoRA can carry: diffusion-model weights; text-encoder linear layers when asked;
    biases and norms (as full differences) when asked."""
    if key.startswith(DIFFUSION_PREFIX):
        pass
    elif not text_encoders or ".encoder." not in key or "relative_attention_bias" in key:
        return False
    return len(shape) >= 2 or one_dim


def extract(tuned: ModelWeights, base: ModelWeights, rule: RankRule, *, text_encoders: bool = False,
            min_diff: float = 1e-4, bias_and_norms: bool = False, exact: bool = False, power_iters: int = 2,
            seed: int = 0, dtype: torch.dtype = torch.float16, title: str = "extracted",
            progress: Progress | None = None) -> MergeResult:
    """A LoRA approximating ``tuned`` − ``base`` at the ranks ``rule`` chooses.

    ``text_encoders`` includes the text encoders' linear layers; ``bias_and_norms`` stores bias and
    norm differences as full diffs (ComfyUI reads them; kohya does not); ``exact`` forces a full
    SVD for every layer. A weight whose difference has Frobenius norm ≤ ``min_diff`` × the base
    weight's is skipped.
    """
    layout = base.layout
    if tuned.layout.arch.id != layout.arch.id:
        raise ArchMismatchError(f"the tuned model is {tuned.layout.arch.name}, the base {layout.arch.name}",
                                path=tuned.label)
    wanted = [k for k in layout.shapes if _extractable(k, layout.shapes[k], text_encoders, bias_and_norms)]
    keys = [k for k in wanted if k in base and k in tuned]
    tensors: dict[str, torch.Tensor] = {}
    reports: list[ModuleReport] = []
    skipped = [f"{k} (its shape differs from {layout.arch.name}'s in {w.label})"
               for w in (base, tuned) for k in w.mismatched if k in wanted]
    skipped += [f"{k} (only in {(base if k in base else tuned).label})"
                for k in wanted if (k in base) != (k in tuned)]
    skipped += [f"{len(w.unused)} keys of {w.label} name no weight of {layout.arch.name} (VAE, text encoders in the "
                f"OpenCLIP layout, ...), e.g. {w.unused[0]}" for w in (base, tuned) if w.unused]
    for done, key in enumerate(keys, 1):
        work = dense_dtype(math.prod(layout.shapes[key]))
        b = base.get(key).to(work)
        d = tuned.get(key).to(work) - b
        dn, bn = float(d.norm()), float(b.norm())
        if not (math.isfinite(dn) and math.isfinite(bn)):
            bad = tuned if not bool(torch.isfinite(d + b).all()) else base
            raise LoRALabError("this weight holds NaN or infinite values", path=bad.label, key=key,
                               hint="the model file is damaged")
        if dn == 0 or dn <= min_diff * bn:
            skipped.append(f"{key} (difference {dn / bn if bn else 0:.2e} of the weight, below {min_diff:g})")
        elif d.dim() < 2:
            tensors.update(kohya_tensors([(Target(key), Diff(diff=d))], layout, dtype))
            reports.append(ModuleReport(key, 1, None, None, 1.0, "diff"))
        else:
            m = d.reshape(d.shape[0], -1)
            gen = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{key}".encode()))
            svd = dense_svd(m, rule, exact=exact, power_iters=power_iters, generator=gen)
            k = select_rank(svd, rule)
            up, down = svd.factors(k)
            tensors.update(kohya_tensors([(Target(key), LoRA(up=up, down=down, alpha=float(k)))], layout, dtype))
            reports.append(ModuleReport(key, 1, min(m.shape), k, svd.kept_energy(k), "dense"))
        if progress is not None:
            progress(done, len(keys))
    recipe = {"tool": f"LoRA Lab {__version__}", "method": "extract", "rank": rule.to_dict(),
              "min_diff": min_diff, "text_encoders": text_encoders, "bias_and_norms": bias_and_norms,
              "exact_svd": exact, "power_iters": power_iters, "seed": seed,
              "tuned": os.path.basename(tuned.label), "base": os.path.basename(base.label),
              "dtype": str(dtype).replace("torch.", "")}
    meta = lora_metadata(layout.arch.id, tensors, title=title,
                         extra={"loralab.recipe": json.dumps(recipe, ensure_ascii=False)})
    return MergeResult(tensors, meta, reports, skipped, layout.arch.id, "extract", rule)


__all__ = ["extract"]

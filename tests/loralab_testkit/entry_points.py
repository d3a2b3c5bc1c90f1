"""Every engine entry point that reads a file a user names, as one function of a path, for the
hostile-file matrix (:mod:`loralab_testkit.malformed` × :data:`ENTRY_POINTS`).

An entry point returns its findings (warnings and reasons, as text) or raises a
:class:`~loralab.errors.LoRALabError`. Anything else it raises is a crash. Entry points of
capabilities built on other branches name the engine module and function they call in
``requires``; until those exist the matrix skips them, naming what is missing, and they join the
matrix by themselves when the module lands. Adding a capability is one function and one line in
:data:`ENTRY_POINTS`.

``cd tests && PYTHONPATH=.. python -m loralab_testkit.entry_points`` prints the matrix's outcomes
as a table.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import signal
import threading
import traceback
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from .malformed import ACCEPTED, CASES, WARNING, Case

#: outcome of an entry point that may refuse a well-formed file it cannot use (with a LoRALabError)
ANY_ERROR = "LoRALabError (any)"
#: seconds one entry point may spend on one corpus file (the corpus files are tiny; this catches hangs)
CELL_SECONDS = 60.0


class CliRefused(Exception):
    """``loralab inspect`` exited with status 1; the text is what it printed to stderr."""


@dataclass(frozen=True)
class EntryPoint:
    """One way a user's file enters the engine."""

    name: str
    run: Callable[[str, str], list[str]]  # (path, scratch folder) -> findings
    requires: tuple[str, ...] = ()  # "module" or "module:attribute" that must exist for it to run
    sees: Callable[[], frozenset[str]] = field(default=lambda: frozenset())  # WARNING levels it must report
    transforms: bool = False  # may refuse a well-formed file it cannot use, with a LoRALabError naming it
    refusal: str | None = None  # the one outcome it gives every file it refuses (it wraps the reader's errors)
    refuses_all: bool = False  # no corpus file is its kind of file: every one is refused with ``refusal``
    by_name: bool = False  # takes a name from the loras list: other extensions are refused before reading

    def missing(self) -> list[str]:
        """What of ``requires`` does not exist (yet)."""
        out = []
        for req in self.requires:
            module, _, attr = req.partition(":")
            try:
                mod = importlib.import_module(module)
            except ModuleNotFoundError:
                out.append(module)
                continue
            if attr and not hasattr(mod, attr):
                out.append(f"{module}.{attr}")
        return list(dict.fromkeys(out))


def _has(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError:
        return False
    return True


def _strict_json(obj: object) -> None:
    """What a route would send: strict JSON (NaN and Infinity are not JSON; browsers refuse them)."""
    json.dumps(obj, allow_nan=False, default=str)


# --- the entry points -----------------------------------------------------------------------------

def read_header(path: str, scratch: str) -> list[str]:
    from loralab.files.safetensors import read_header as read
    read(path)
    return []


def tensor_get(path: str, scratch: str) -> list[str]:
    from loralab.files.safetensors import SafetensorsFile
    with SafetensorsFile(path) as f:
        for key in f.keys():
            t = f.get(key)
            assert tuple(t.shape) == f.info(key).shape
            if t.numel() == 1:
                f.scalar(key)
    return []


def load_tensors(path: str, scratch: str) -> list[str]:
    from loralab.files.safetensors import load_tensors as load
    load(path)
    return []


def _findings(obj: object) -> list[str]:
    """Warnings and not-mapped reasons of a summary, report, lora or plan, as text."""
    out = [str(w) for w in getattr(obj, "warnings", [])]
    out += [u.get("reason", "") if isinstance(u, dict) else str(getattr(u, "reason", u))
            for u in getattr(obj, "unmapped", [])]
    return out


def lora_adapters(path: str, scratch: str) -> list[str]:
    """Lora.open, then every entry's adapter and its math; a mapped one applied to a zero weight."""
    from loralab.errors import LoraFormatError
    from loralab.lora import Lora
    with Lora.open(path) as lora:
        for item in lora.items:
            e = item.entry
            if not e.supported:
                try:
                    lora.adapter(e)
                except LoraFormatError as err:
                    assert os.path.basename(path) in str(err) and e.module in str(err), str(err)
                else:
                    raise AssertionError(f"adapter() built an entry with a problem: {e.problem}")
                continue
            adapter = lora.adapter(e)
            if e.kind != "set":
                adapter.fro_norm()
            if item.mapped and item.target.rows is None:
                adapter.apply_to(torch.zeros(lora.layout.shapes[item.target.key]))
        return [m.reason or "" for m in lora.unmapped()] + list(lora.detection.warnings)


def inspect_summary(path: str, scratch: str) -> list[str]:
    from loralab.ops.inspect import summarize
    s = summarize(path)
    s.to_text()
    _strict_json(s.to_dict())
    return _findings(s)


def _cli(*args: str) -> str:
    """``loralab inspect ARGS`` in-process: its stdout, or :class:`CliRefused` with its stderr."""
    from loralab.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["inspect", *args])
    if status != 0:
        raise CliRefused(err.getvalue())
    assert not err.getvalue(), err.getvalue()
    return out.getvalue()


def inspect_cli(path: str, scratch: str) -> list[str]:
    """``loralab inspect FILE`` as text, then as JSON (its findings); the survivor test also runs
    it as a real process."""
    _cli(path)

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")
    (report,) = json.loads(_cli("--json", path), parse_constant=refuse)
    return [json.dumps(w) for w in report.get("warnings", [])] + [u.get("reason", "") for u in report.get("unmapped", [])]


def inspect_report(path: str, scratch: str) -> list[str]:
    """The full inspection: block strengths and tensor health (reads every tensor) and hashes."""
    from loralab.ops.inspect import inspect_lora
    report = inspect_lora(path, blocks=True, hashes=True)
    report.to_text()
    _strict_json(report.to_dict())
    return _findings(report) + _findings(report.summary)


def file_hashes(path: str, scratch: str) -> list[str]:
    from loralab.files.hashes import file_hashes as hashes
    hashes(path)
    return []


def addnet_hash(path: str, scratch: str) -> list[str]:
    from loralab.files.hashes import addnet_hash as hashes
    hashes(path)
    return []


def apply_plan(path: str, scratch: str) -> list[str]:
    """Plan applying the file to a model of its own architecture (SD1.x when it has none), then
    build every patched entry and apply it to a zero weight."""
    from loralab.ops.apply import plan_application
    from loralab.blocks.spec import parse_block_weights
    from loralab.layouts import layout_for
    from loralab.lora import Lora
    with Lora.open(path) as probe:
        arch = probe.detection.arch or "sd1"
    with Lora.open(path, layout_for(arch)) as lora:
        plan = plan_application(lora, parse_block_weights("", arch), 1.0, 1.0, model_arch=arch, clip_connected=True)
        for p in plan.patches:
            adapter = lora.adapter(p.item.entry)
            if p.item.target.rows is None:
                adapter.apply_to(torch.zeros(lora.layout.shapes[p.key]), p.strength)
        plan.report()
        return [plan.refused.text if plan.refused else ""] + [n.reason for n in plan.not_applied] + list(plan.notes)


def coverage(path: str, scratch: str) -> list[str]:
    """The coverage doctor for the file on an SDXL model known from a checkpoint's header alone."""
    from loralab.ops.coverage import ModelFile, diagnose_files
    from . import sparse_model_file
    model = ModelFile.read(sparse_model_file(os.path.join(scratch, "sdxl.safetensors"), [("sdxl", "model.diffusion_model.")]))
    cov = diagnose_files(path, model, clip_connected=False)
    _strict_json(cov.to_dict())
    cov.to_text()
    return [n.reason for n in cov.not_applied] + ([cov.cause.text] if cov.cause else [])


def merge(path: str, scratch: str) -> list[str]:
    """The file merged with itself (SVD, rank 2), saved and read back."""
    from loralab.ops.lowrank import RankRule
    from loralab.ops.merge import MergeInput, merge as merge_loras
    from loralab.files.safetensors import read_header as read
    result = merge_loras([MergeInput.open(path), MergeInput.open(path, weight=0.5)], "svd", RankRule("fixed", 2))
    result.report()
    read(result.save(os.path.join(scratch, "merged.safetensors")))
    return list(result.skipped)


def resize(path: str, scratch: str) -> list[str]:
    from loralab.ops.lowrank import RankRule
    from loralab.ops.merge import MergeInput, resize as resize_lora
    from loralab.files.safetensors import read_header as read
    result = resize_lora(MergeInput.open(path), RankRule("fixed", 1))
    read(result.save(os.path.join(scratch, "resized.safetensors")))
    return list(result.skipped)


def extract(path: str, scratch: str) -> list[str]:
    """The file as both the tuned and the base model of an extraction (read with SD1.x's layout: a
    LoRA file fits no model, and guessing would rightly refuse it)."""
    from loralab.ops.extract import extract as extract_lora
    from loralab.layouts import layout_for
    from loralab.ops.lowrank import RankRule
    from loralab.formats.model_weights import ModelWeights
    layout = layout_for("sd1")
    with ModelWeights.open(path, layout) as tuned, ModelWeights.open(path, layout) as base:
        return list(extract_lora(tuned, base, RankRule("fixed", 1)).skipped)


def bake(path: str, scratch: str) -> list[str]:
    """The file baked into a zero state dict of the weights it targets."""
    from loralab.ops.bake import bake as bake_into
    from loralab.layouts import layout_for
    from loralab.lora import Lora
    from loralab.ops.merge import MergeInput
    with Lora.open(path) as probe:
        layout = probe.layout or layout_for("sd1")
        keys = {m.target.key for m in probe.mapped()}
    state = {k: torch.zeros(layout.shapes[k]) for k in keys}
    bake_into(state, [MergeInput.open(path)], layout=layout)
    return []


def train_read_state(path: str, scratch: str) -> list[str]:
    """Resuming a training run from the file as its state (no corpus file is one)."""
    from loralab.train.checkpoint import read_state
    read_state(path)
    return []


def _summary_sees() -> frozenset[str]:
    return frozenset({"header", "alpha"} if _has("loralab.ops.health") else {"header"})


ENTRY_POINTS: list[EntryPoint] = [
    EntryPoint("read_header", read_header),
    EntryPoint("tensor_get", tensor_get),
    EntryPoint("load_tensors", load_tensors),
    EntryPoint("lora_adapters", lora_adapters, sees=lambda: frozenset({"header"})),
    EntryPoint("inspect_summary", inspect_summary, sees=_summary_sees),
    EntryPoint("inspect_cli", inspect_cli, sees=_summary_sees, refusal="CliRefused"),
    EntryPoint("inspect_report", inspect_report, ("loralab.ops.inspect:inspect_lora",),
               sees=lambda: frozenset({"header", "alpha", "values"})),
    EntryPoint("file_hashes", file_hashes, ("loralab.files.hashes:file_hashes",)),
    EntryPoint("addnet_hash", addnet_hash, ("loralab.files.hashes:addnet_hash",)),
    EntryPoint("apply_plan", apply_plan, ("loralab.ops.apply:plan_application",), transforms=True),
    EntryPoint("coverage", coverage, ("loralab.ops.coverage:diagnose_files",)),
    EntryPoint("merge", merge, ("loralab.ops.merge:merge", "loralab.ops.merge:MergeInput", "loralab.ops.lowrank:RankRule"),
               transforms=True),
    EntryPoint("resize", resize, ("loralab.ops.merge:resize", "loralab.ops.lowrank:RankRule"), transforms=True),
    EntryPoint("extract", extract, ("loralab.ops.extract:extract", "loralab.formats.model_weights:ModelWeights"),
               transforms=True),
    EntryPoint("bake", bake, ("loralab.ops.bake:bake", "loralab.ops.merge:MergeInput"), transforms=True),
    EntryPoint("train_read_state", train_read_state, ("loralab.train.checkpoint:read_state",),
               refusal="CheckpointError", refuses_all=True),
]


def available() -> list[EntryPoint]:
    return [ep for ep in ENTRY_POINTS if not ep.missing()]


# --- expectations and observations ----------------------------------------------------------------

def expected_outcomes(case: Case, ep: EntryPoint) -> frozenset[str]:
    """What ``ep`` may do with ``case``'s file."""
    if ep.refuses_all or case.is_error:
        return frozenset({ep.refusal or case.expect})
    if case.expect == WARNING:  # must report what it reads; reporting more is never wrong
        out = {WARNING} if case.level in ep.sees() else {WARNING, ACCEPTED}
    else:
        out = {ACCEPTED}
    if ep.transforms:
        out.add(ANY_ERROR)
    return frozenset(out)


def matches(outcome: str, expected: frozenset[str]) -> bool:
    if outcome in expected:
        return True
    if ANY_ERROR not in expected:
        return False
    import loralab.errors as errors
    cls = getattr(errors, outcome, None)
    return isinstance(cls, type) and issubclass(cls, errors.LoRALabError)


class Hang(BaseException):
    """An entry point ran past its time limit (a BaseException, so `except Exception` cannot hide it)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`Hang` in the main thread after ``seconds`` (no limit off the main thread or
    without ``setitimer``)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(*_: object) -> None:
        raise Hang(f"no answer after {seconds:g} s")
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Observation:
    """What one entry point did with one file: the outcome, and the message or findings."""

    outcome: str  # an error class name, ACCEPTED, WARNING, or "CRASH <type>" / "HANG"
    detail: str

    def to_json(self) -> dict:
        return {"outcome": self.outcome, "detail": self.detail}


def is_refusal(e: BaseException, ep: EntryPoint) -> bool:
    """A LoRALabError (of any copy of the engine: the host imports it under the pack's name), or
    the entry point's own way of refusing (``ep.refusal``: a CLI exit status, an HTTP 4xx)."""
    return type(e).__name__ == ep.refusal or any(c.__name__ == "LoRALabError" for c in type(e).__mro__)


def observe(ep: EntryPoint, case: Case, path: str, scratch: str, *, catch_crashes: bool = False) -> Observation:
    """Run ``ep`` on ``case``'s file. A LoRALabError (or a CLI refusal) is an outcome; anything
    else propagates (or, with ``catch_crashes``, becomes a ``CRASH`` outcome with its traceback)."""
    try:
        with time_limit(CELL_SECONDS):
            findings = ep.run(path, scratch)
    except Hang as e:
        if not catch_crashes:
            raise
        return Observation("HANG", str(e))
    except Exception as e:
        if is_refusal(e, ep):
            return Observation(type(e).__name__, str(e))
        if not catch_crashes:
            raise
        return Observation(f"CRASH {type(e).__name__}", "".join(traceback.format_exception(e))[-3000:])
    text = "\n".join(findings).lower().replace(case.name, "")  # a report names the file: not a finding
    if case.expect == WARNING and case.problem in text:
        return Observation(WARNING, text)
    return Observation(ACCEPTED, text)


def problems_with(case: Case, ep: EntryPoint, path: str, obs: Observation) -> list[str]:
    """Why an observation is wrong (empty when it is right)."""
    expected = expected_outcomes(case, ep)
    out = []
    if not matches(obs.outcome, expected):
        out.append(f"{ep.name} on {case.name}: got {obs.outcome}, expected {' or '.join(sorted(expected))}: "
                   f"{obs.detail[:1500]}")
    elif obs.outcome not in (ACCEPTED, WARNING):
        problem = ".safetensors" if ep.by_name and case.extension != ".safetensors" else case.problem
        if os.path.basename(path) not in obs.detail:
            out.append(f"{ep.name} on {case.name}: the error does not name the file: {obs.detail[:300]}")
        if case.is_error and problem not in obs.detail.lower():
            out.append(f"{ep.name} on {case.name}: the error does not say {problem!r}: {obs.detail[:300]}")
        if "Traceback" in obs.detail:
            out.append(f"{ep.name} on {case.name}: a traceback reached the user: {obs.detail[:300]}")
    return out


def run_matrix(paths: dict[str, str], scratch: str, entry_points: list[EntryPoint] | None = None
               ) -> dict[str, dict[str, dict]]:
    """Every available entry point on every corpus file in ``paths`` (case name -> path), crashes
    caught: {case: {entry point: observation}}."""
    out: dict[str, dict[str, dict]] = {}
    for case in (c for c in CASES if c.name in paths):
        row = out.setdefault(case.name, {})
        for ep in available() if entry_points is None else entry_points:
            folder = os.path.join(scratch, f"{case.name}-{ep.name}")
            os.makedirs(folder, exist_ok=True)
            row[ep.name] = observe(ep, case, paths[case.name], folder, catch_crashes=True).to_json()
    return out


def table(results: dict[str, dict[str, dict]]) -> str:
    """A Markdown table of cases × entry points (skipped entry points listed below it)."""
    names = [ep.name for ep in ENTRY_POINTS if any(ep.name in row for row in results.values())]
    short = {"SafetensorsError": "SE", "PickleRefusedError": "PR", "CheckpointError": "CE", "CliRefused": "exit 1",
             ACCEPTED: "ok", WARNING: "warn"}
    lines = ["| case | expected | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 2)]
    for case in CASES:
        row = results[case.name]
        expect = short.get(case.expect, case.expect) + (f" ({case.level})" if case.level else "")
        lines.append(f"| {case.name} | {expect} | "
                     + " | ".join(short.get(row[n]["outcome"], row[n]["outcome"]) for n in names) + " |")
    skipped = [f"{ep.name} (needs {', '.join(ep.missing())})" for ep in ENTRY_POINTS if ep.missing()]
    if skipped:
        lines.append("\nnot yet plugged in: " + "; ".join(skipped))
    return "\n".join(lines)


if __name__ == "__main__":
    import tempfile

    from .malformed import write_corpus
    with tempfile.TemporaryDirectory() as d:
        print(table(run_matrix(write_corpus(os.path.join(d, "corpus")), os.path.join(d, "scratch"))))

"""Hostile, broken and odd files (loralab_testkit.malformed) through every engine entry point
(loralab_testkit.entry_points): a clear LoRALabError naming the file and the problem, or the
file handled; never another exception, a hang, or memory in proportion to what a header claims.

The whole matrix runs once in a child process, as a server would meet these files one after the
other: under an address-space limit, with a time limit per file and for the whole run. Each cell
is then its own test here. Entry points of capabilities not merged yet are skipped, naming the
module they wait for.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tracemalloc

import pytest

from loralab.errors import LoRALabError
from loralab.files.safetensors import MAX_HEADER_BYTES, SafetensorsFile, read_header
from loralab_testkit import REPO
from loralab_testkit.entry_points import ENTRY_POINTS, problems_with
from loralab_testkit.malformed import ACCEPTED, CASES, MARKER, WARNING, write_corpus

TESTS = os.path.join(REPO, "tests")
#: address space the child may add to what it holds after importing everything (the corpus needs
#: a few MiB; a reader that trusted a declared length would need a TiB)
CHILD_EXTRA_ADDRESS_SPACE = 3 << 30
CHILD_SECONDS = 600

CHILD = """
import json, os, resource, sys
sys.path[:0] = [{repo!r}, {tests!r}]
from loralab_testkit.entry_points import available, run_matrix
ready = available()  # import every entry point's modules before measuring
for ep in ready:
    for req in ep.requires:
        __import__(req.partition(":")[0])
import torch
torch.zeros(4) @ torch.zeros(4)
with open("/proc/self/status") as f:
    vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + {extra}, vm + {extra}))
paths = json.loads(sys.stdin.read())
results = run_matrix(paths, {scratch!r}, ready)
again = run_matrix({{"control_valid_lora": paths["control_valid_lora"]}}, {scratch!r} + "-again", ready)
print(json.dumps({{"results": results, "again": again.get("control_valid_lora", {{}}), "limit": vm + {extra}}}))
"""


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, str]:
    return write_corpus(str(tmp_path_factory.mktemp("corpus")))


@pytest.fixture(scope="session")
def child_run(corpus, tmp_path_factory) -> dict:
    """Every available entry point on every corpus file, in one child process."""
    if not os.path.exists("/proc/self/status"):
        pytest.skip("the child measures its address space through /proc (Linux)")
    scratch = str(tmp_path_factory.mktemp("scratch"))
    code = CHILD.format(repo=REPO, tests=TESTS, extra=CHILD_EXTRA_ADDRESS_SPACE, scratch=scratch)
    r = subprocess.run([sys.executable, "-X", "faulthandler", "-c", textwrap.dedent(code)],
                       input=json.dumps(corpus), capture_output=True, text=True, timeout=CHILD_SECONDS)
    assert r.returncode == 0, f"the child died (status {r.returncode}):\n{r.stderr[-5000:]}"
    return json.loads(r.stdout)


def test_one_process_survives_the_whole_corpus_and_still_answers(child_run, corpus):
    crashes = [f"{ep} on {case}: {obs['outcome']}\n{obs['detail']}" for case, row in child_run["results"].items()
               for ep, obs in row.items() if obs["outcome"].startswith(("CRASH", "HANG"))]
    assert not crashes, "\n\n".join(crashes)
    from loralab_testkit.entry_points import Observation
    control = next(c for c in CASES if c.name == "control_valid_lora")
    by_name = {ep.name: ep for ep in ENTRY_POINTS}
    assert child_run["again"]
    for name, obs in child_run["again"].items():  # answers as it did before the corpus (e.g. not a state file)
        assert problems_with(control, by_name[name], corpus[control.name], Observation(**obs)) == []
    assert not os.path.exists(os.path.join(os.path.dirname(corpus["pickle_renamed"]), MARKER)), "a pickle was loaded"


@pytest.mark.parametrize("ep", ENTRY_POINTS, ids=lambda ep: ep.name)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_entry_point_on_case(child_run, corpus, case, ep):
    missing = ep.missing()
    if missing:
        pytest.skip(f"{ep.name} waits for {', '.join(missing)}")
    obs = child_run["results"][case.name][ep.name]
    from loralab_testkit.entry_points import Observation
    assert problems_with(case, ep, corpus[case.name], Observation(**obs)) == []


def test_corpus_is_what_the_issue_asks_for():
    malformed = [c for c in CASES if c.is_error]
    assert len(malformed) >= 30
    assert {c.expect for c in malformed} == {"SafetensorsError", "PickleRefusedError"}
    assert {c.level for c in CASES if c.expect == WARNING} == {"header", "alpha", "values"}
    assert any(c.expect == ACCEPTED and "zero_size" in c.name for c in CASES)
    assert len({c.name for c in CASES}) == len(CASES)


# --- memory: nothing is allocated by a declared length ----------------------------------------------

@pytest.mark.parametrize("case", [c for c in CASES if c.memory_risky], ids=lambda c: c.name)
def test_declared_sizes_are_never_allocated(corpus, case):
    tracemalloc.start()
    try:
        with pytest.raises(LoRALabError):
            SafetensorsFile(corpus[case.name])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes traced for a file of {os.path.getsize(corpus[case.name])} bytes"


def test_header_over_the_cap_is_refused_before_it_is_read(tmp):
    path = os.path.join(tmp, "big.safetensors")
    with open(path, "wb") as f:
        f.write((MAX_HEADER_BYTES + 1).to_bytes(8, "little") + b"{")
        f.truncate(MAX_HEADER_BYTES + 64)  # sparse
    tracemalloc.start()
    try:
        with pytest.raises(LoRALabError, match="exceeds"):
            read_header(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


# --- the command line as a real process -------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "loralab", "inspect", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=CHILD_SECONDS)


def test_cli_over_the_whole_corpus(corpus):
    """One ``loralab inspect`` over every file: exit 1, one clean error line per refused file, a
    report per accepted one, no traceback, nothing a terminal would act on."""
    names = [c.name for c in CASES]
    r = _cli(*(corpus[n] for n in names))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    errors = r.stderr.splitlines()
    assert all(line.startswith("error: ") for line in errors), r.stderr[-2000:]
    for c in CASES:
        name = os.path.basename(corpus[c.name])
        if c.is_error:
            line = next((ln for ln in errors if name in ln), "")
            assert c.problem in line.lower(), f"{c.name}: {line}"
        else:
            assert name in r.stdout, c.name
    assert len(errors) == sum(c.is_error for c in CASES)
    for text in (r.stdout, r.stderr):
        assert not any(ch in text for ch in "\x00\x07\x1b\u202e"), "raw control characters reached the terminal"


def test_cli_json_is_strict_json(corpus):
    accepted = [corpus[c.name] for c in CASES if not c.is_error]
    r = _cli("--json", *accepted)
    assert r.returncode == 0, r.stderr[-2000:]

    def no_constants(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")
    reports = json.loads(r.stdout, parse_constant=no_constants)
    assert len(reports) == len(accepted)

"""Hostile names and hostile files in the real ComfyUI.

* Every hostile name (escapes, absolute, drive, UNC and device forms, streams, look-alikes, control
  characters) is refused by the pack's one resolver (nodes/host/folders.lora_path), and by every
  LoRA Lab node input that takes a file name: none of them is in ComfyUI's listing of the loras
  folders. What that listing holds through a symlink (a file or folder elsewhere, as users link
  LoRAs from another drive) is read, as core's loaders read it.
* The corpus of loralab_testkit.malformed, put into the loras folder, through the host entry
  points: the ``/loralab/lora_info`` and ``/loralab/coverage`` routes (a 4xx JSON answer naming the
  file and the problem, no server path, strict JSON when it answers 200) and the loader node's ``apply_lora``; afterwards
  the server still answers. Host entry points that are not merged yet are skipped, naming them.
"""
from __future__ import annotations

import json
import os
import urllib.parse

import pytest

from loralab_testkit.entry_points import EntryPoint, Observation, observe, problems_with
from loralab_testkit.malformed import ACCEPTED, CASES, HOSTILE_NAMES, MARKER, case, write_corpus

ROUTE = "/loralab/lora_info"
CORPUS_FOLDER = "hostile"


@pytest.fixture(scope="module")
def loras(host) -> str:
    return host.folder("loras")


@pytest.fixture(scope="module")
def corpus(loras) -> dict[str, str]:
    """The corpus, written into loras/hostile/: case name -> absolute path."""
    return write_corpus(os.path.join(loras, CORPUS_FOLDER))


@pytest.fixture(scope="module")
def outside(host, loras) -> str:
    """A valid LoRA in a folder beside the loras folder, linked into it as a file
    (``linked.safetensors``) and through a linked folder (``linked_folder/secret.safetensors``)."""
    folder = os.path.join(os.path.dirname(loras), "elsewhere")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "secret.safetensors")
    case("control_valid_lora").build(path)
    os.symlink(path, os.path.join(loras, "linked.safetensors"))
    os.symlink(folder, os.path.join(loras, "linked_folder"))
    return path


@pytest.fixture(scope="module")
def escapes(host, loras, outside) -> list[str]:
    """Names that would reach the LoRA outside the loras folder without being listed."""
    return [*HOSTILE_NAMES, "../elsewhere/secret.safetensors", "linked_folder/../../elsewhere/secret.safetensors",
            outside]


def _relative(loras: str, path: str) -> str:
    return os.path.relpath(path, loras).replace(os.sep, "/")


def test_lora_path_refuses_every_hostile_name(host, escapes):
    lora_path = host.module("nodes.host.folders").lora_path
    for name in escapes:
        with pytest.raises(Exception) as e:
            lora_path(name)
        assert type(e.value).__name__ == "UnsafeNameError", (name, e.value)


def test_names_comfyui_lists_through_symlinks_are_offered_and_read(host, outside):
    """As core's loaders do: a linked file and a file in a linked folder are listed and resolve to the file."""
    folders = host.module("nodes.host.folders")
    listed = host.folder_paths.get_filename_list("loras")
    for name in ("linked.safetensors", "linked_folder/secret.safetensors"):
        assert name in listed and name in folders.lora_names()
        assert folders.lora_path(name) == os.path.realpath(outside)


def test_lora_path_resolves_names_inside(host, loras, corpus):
    lora_path = host.module("nodes.host.folders").lora_path
    path = corpus["control_valid_lora"]
    assert lora_path(_relative(loras, path)) == os.path.realpath(path)


def test_lora_path_refuses_what_lora_names_does_not_list(host, loras, corpus):
    """A pickle in the loras folder is never offered, and its name, sent anyway, is refused."""
    folders = host.module("nodes.host.folders")
    for name in ("pickle_as_ckpt", "garbage_as_pt"):
        rel = _relative(loras, corpus[name])
        assert rel not in folders.lora_names()
        with pytest.raises(Exception) as e:
            folders.lora_path(rel)
        assert type(e.value).__name__ == "UnsafeNameError" and ".safetensors" in str(e.value)


# --- node inputs that name files ------------------------------------------------------------------

def _file_inputs(host) -> list[tuple[str, str, list]]:
    """(node id, input name, options) of every LoRA Lab node input whose options name model files."""
    files = set(host.folder_paths.get_filename_list("loras"))
    out = []
    for node_id, cls in host.nodes.NODE_CLASS_MAPPINGS.items():
        if not node_id.startswith("LoRALab"):
            continue
        for section in cls.INPUT_TYPES().values():
            for name, spec in section.items():
                options = spec[0] if isinstance(spec, (list, tuple)) and spec else None
                if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict):
                    options = spec[1].get("options", options)
                if isinstance(options, list) and files & set(options):
                    out.append((node_id, name, options))
    return out


def test_node_file_inputs_refuse_hostile_names(host, corpus, escapes):
    """ComfyUI validates a combo against its options; every file-name input of the pack is a combo
    (a free text field naming a file to read would bypass that)."""
    inputs = _file_inputs(host)
    if not inputs:
        pytest.skip("no LoRA Lab node takes a file name yet (loader, merge, inspect nodes)")
    for node_id, name, options in inputs:
        for hostile in escapes:
            assert hostile not in options
            prompt = {"1": {"class_type": node_id, "inputs": {name: hostile}}}
            ok, errors, _ = host.loop.run_until_complete(host.execution.validate_inputs("hostile", prompt, "1", {}))
            assert not ok
            # ComfyUI 0.3.64 checks V1 list combos itself ("value_not_in_list"), V3 COMBOs not at all:
            # V3 nodes check their file names in validate_inputs ("custom_validation_failed")
            assert any(e["type"] in ("value_not_in_list", "custom_validation_failed")
                       and e["extra_info"]["input_name"] == name for e in errors), (node_id, name, hostile, errors)


# --- host entry points, on the corpus -------------------------------------------------------------

class RouteRefused(Exception):
    """The route answered 4xx; the text is its body."""


def _route_handler(host):
    for r in host.server.routes:
        if getattr(r, "path", None) == ROUTE and getattr(r, "method", "") == "GET":
            return r.handler
    return None


def _get(host, handler, name: str, more: str = "") -> tuple[int, str]:
    from aiohttp.test_utils import make_mocked_request
    query = urllib.parse.quote(name, safe="", errors="surrogatepass")  # what a client can send for any text
    request = make_mocked_request("GET", f"{ROUTE}?name={query}{more}")
    response = host.loop.run_until_complete(handler(request))
    return response.status, response.text


def _strict(text: str) -> object:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def _route_entry_point(host, loras: str) -> EntryPoint | None:
    handler = _route_handler(host)
    if handler is None:
        return None

    def run(path: str, scratch: str) -> list[str]:
        findings = []
        for details in ("", "&details=1"):  # the panel's answer, then the whole summary
            status, text = _get(host, handler, _relative(loras, path), details)
            body = _strict(text)
            assert 200 <= status < 500, f"{status}: {text[:500]}"  # a 5xx is the server failing, not refusing
            if status != 200:
                raise RouteRefused(f"{status}: {text}")
            findings += [json.dumps(w) for w in body.get("warnings", [])]
            findings += [u.get("reason", "") for u in body.get("unmapped", [])]
        return findings
    health = _has(host, "loralab.ops.health")
    return EntryPoint("lora_info_route", run, sees=lambda: frozenset({"header", "alpha"} if health else {"header"}),
                      refusal="RouteRefused", by_name=True)


COVERAGE_ROUTE = "/loralab/coverage"
DOCTOR_MODEL = "hostile_doctor_sdxl.safetensors"


def _coverage_entry_point(host, loras: str) -> EntryPoint | None:
    """The coverage route, each corpus file as the LoRA, on an SDXL checkpoint's header."""
    handler = next((r.handler for r in host.server.routes
                    if getattr(r, "path", None) == COVERAGE_ROUTE and getattr(r, "method", "") == "GET"), None)
    if handler is None:
        return None
    from aiohttp.test_utils import make_mocked_request
    from loralab_testkit import sparse_model_file
    model = os.path.join(host.folder("checkpoints"), DOCTOR_MODEL)
    if not os.path.exists(model):
        sparse_model_file(model, [("sdxl", "model.diffusion_model.")])

    def run(path: str, scratch: str) -> list[str]:
        query = urllib.parse.urlencode({"lora": _relative(loras, path), "model": DOCTOR_MODEL, "kind": "checkpoints"},
                                       errors="surrogatepass")
        response = host.loop.run_until_complete(handler(make_mocked_request("GET", f"{COVERAGE_ROUTE}?{query}")))
        body = _strict(response.text)
        assert 200 <= response.status < 500, f"{response.status}: {response.text[:500]}"
        if response.status != 200:
            raise RouteRefused(f"{response.status}: {response.text}")
        assert host.base not in response.text
        return [g["reason"] for g in body["groups"]] + ([body["cause"]["text"]] if body["cause"] else [])
    return EntryPoint("coverage_route", run, refusal="RouteRefused", by_name=True)


def _loader_entry_point(host, loras: str, tiny_models) -> EntryPoint | None:
    try:
        apply_lora = host.module("nodes.loader").apply_lora
    except (ModuleNotFoundError, AttributeError):
        return None
    tiny_models.setup_comfy()
    model = tiny_models.build_patcher("sd15_micro")

    def run(path: str, scratch: str) -> list[str]:
        _, _, info = apply_lora(model, None, _relative(loras, path), 1.0, 1.0, "", 1.0, 1.0, 0, ("hostile", 0))
        return [info]
    return EntryPoint("loader_apply_lora", run, transforms=True, by_name=True)


def _resize_entry_point(host, loras: str) -> EntryPoint | None:
    """The Resize LoRA node (the merge nodes' way of reading a picked file) to rank 2, not saved."""
    try:
        node = host.module("nodes.merge").LoRALabResize
    except (ModuleNotFoundError, AttributeError):
        return None

    def run(path: str, scratch: str) -> list[str]:
        _, _, report = node.execute(_relative(loras, path), "fixed", 2, 0.95, "", "auto").args
        return [report]
    return EntryPoint("merge_resize_node", run, transforms=True, by_name=True)


def _has(host, module: str) -> bool:
    try:
        host.module(module)
    except ModuleNotFoundError:
        return False
    return True


HOST_ENTRY_POINTS = ["lora_info_route", "coverage_route", "loader_apply_lora", "merge_resize_node"]
WAITS_FOR = {"lora_info_route": f"the {ROUTE} route (inspect branch)",
             "coverage_route": f"the {COVERAGE_ROUTE} route",
             "loader_apply_lora": "nodes/loader.py apply_lora (loader branch)",
             "merge_resize_node": "nodes/merge.py LoRALabResize (merge branch)"}


@pytest.fixture(scope="module")
def host_results(host, loras, corpus, request) -> dict[str, tuple[EntryPoint, dict[str, Observation]] | None]:
    """Each host entry point on every corpus file, in one go (as one server meets them), then the
    valid control file once more: it must still be answered."""
    makers = {"lora_info_route": lambda: _route_entry_point(host, loras),
              "coverage_route": lambda: _coverage_entry_point(host, loras),
              "loader_apply_lora": lambda: _loader_entry_point(host, loras, request.getfixturevalue("tiny_models")),
              "merge_resize_node": lambda: _resize_entry_point(host, loras)}
    out: dict[str, tuple[EntryPoint, dict[str, Observation]] | None] = {}
    for name in HOST_ENTRY_POINTS:
        ep = makers[name]()
        if ep is None:
            out[name] = None
            continue
        row = {c.name: observe(ep, c, corpus[c.name], "", catch_crashes=True) for c in CASES}
        row[AGAIN] = observe(ep, case("control_valid_lora"), corpus["control_valid_lora"], "", catch_crashes=True)
        out[name] = (ep, row)
    return out


AGAIN = "(control again)"


def _results(host_results, ep_name: str) -> tuple[EntryPoint, dict[str, Observation]]:
    got = host_results[ep_name]
    if got is None:
        pytest.skip(f"waits for {WAITS_FOR[ep_name]}")
    return got


@pytest.mark.parametrize("ep_name", HOST_ENTRY_POINTS)
@pytest.mark.parametrize("c", CASES, ids=lambda c: c.name)
def test_host_entry_point_on_case(host_results, corpus, ep_name, c):
    ep, row = _results(host_results, ep_name)
    assert problems_with(c, ep, corpus[c.name], row[c.name]) == []


@pytest.mark.parametrize("ep_name", HOST_ENTRY_POINTS)
def test_host_still_answers_after_the_corpus(host_results, corpus, ep_name):
    _, row = _results(host_results, ep_name)
    assert row[AGAIN].outcome == ACCEPTED, row[AGAIN].detail
    assert not os.path.exists(os.path.join(os.path.dirname(corpus["pickle_renamed"]), MARKER)), "a pickle was loaded"


def test_route_refuses_hostile_names_without_disclosing_paths(host, loras, escapes, corpus):
    handler = _route_handler(host)
    if handler is None:
        pytest.skip(f"waits for {WAITS_FOR['lora_info_route']}")
    for name in escapes:
        status, text = _get(host, handler, name)
        assert 400 <= status < 500, (name, status, text[:300])
        _strict(text)
        assert host.base in name or host.base not in text, f"the answer to {name!r} shows a server path"
    for c in CASES:
        if c.is_error:
            status, text = _get(host, handler, _relative(loras, corpus[c.name]))
            assert host.base not in text, f"the answer for {c.name} shows a server path: {text[:300]}"
    assert _get(host, handler, _relative(loras, corpus["control_valid_lora"]))[0] == 200

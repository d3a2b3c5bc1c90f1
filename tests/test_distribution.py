"""What the Comfy registry (``comfy node validate``/``publish``) and ComfyUI Manager read, checked
without either: pyproject.toml's registry fields, the version everywhere it is written,
requirements.txt against the imports, no exec/eval in anything shipped, license, changelog and
node ids. The install itself is simulated against the real ComfyUI in tests/host/test_install.py."""
from __future__ import annotations

import ast
import os
import re
import xml.etree.ElementTree as ET
from urllib.parse import urlparse

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from loralab import __version__
from loralab_testkit import REPO
from loralab_testkit.pack import (HOST_TORCH, imported_distributions, node_defs, pyproject, read, requirement_lines,
                                   requirements, third_party_imports, tracked_files)

#: semver.org's regular expression for a version (the registry wants X.Y.Z)
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
                    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
                    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$")
#: the registry's node id rules: letters, digits, - _ . ; no two special characters in a row; starts
#: with a letter; under 100 characters
REGISTRY_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_.][A-Za-z0-9]+)*$")
ICON_TYPES = (".svg", ".png", ".jpg", ".jpeg", ".gif")


# --- pyproject.toml -------------------------------------------------------------------------------

def registry_name_problems(name: str) -> list[str]:
    """Why the registry would refuse ``name`` as a node id (empty when it would not)."""
    problems = []
    if not REGISTRY_NAME.match(name):
        problems.append("letters, digits and single - _ . only, starting with a letter")
    if len(name) >= 100:
        problems.append("under 100 characters")
    if "comfy" in name.lower():
        problems.append("no 'ComfyUI'/'comfy' in the name (the registry strips such prefixes)")
    return problems


@pytest.mark.parametrize("name, ok", [("lora-lab", True), ("lora_lab.x", True), ("ComfyUI-lora", False),
                                      ("9lives", False), ("lora--lab", False), ("-lora", False), ("a" * 100, False)])
def test_registry_name_rules(name, ok):
    assert (registry_name_problems(name) == []) is ok


def test_pyproject_has_what_the_registry_reads():
    project, comfy = pyproject()["project"], pyproject()["tool"]["comfy"]
    assert registry_name_problems(project["name"]) == []
    assert SEMVER.match(project["version"]), project["version"]
    assert project["description"].strip()
    assert project["requires-python"].startswith(">=")
    repository = urlparse(project["urls"]["Repository"])
    assert repository.scheme == "https" and repository.netloc == "github.com" and repository.path.count("/") == 2
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", comfy["PublisherId"]), comfy["PublisherId"]
    assert comfy["DisplayName"].strip()
    for classifier in project.get("classifiers", []):  # the registry reads OS and accelerator classifiers
        if classifier.startswith("Operating System :: "):
            assert classifier.split(" :: ", 1)[1].startswith(("Microsoft", "POSIX", "MacOS", "OS Independent"))


def test_license_is_a_file_the_repository_ships():
    license = pyproject()["project"]["license"]
    assert isinstance(license, dict) and set(license) == {"file"}, \
        'the registry reads license = {file = "LICENSE"} or {text = "..."}, not a bare string'
    assert license["file"] in tracked_files()
    assert read(license["file"]).startswith("MIT License")
    assert "MIT" in read("README.md").rsplit("## License", 1)[1]


def test_icon_is_a_shipped_image_within_the_registry_limits():
    icon = urlparse(pyproject()["tool"]["comfy"]["Icon"])
    repository = urlparse(pyproject()["project"]["urls"]["Repository"]).path.strip("/")
    assert icon.scheme == "https" and icon.netloc == "raw.githubusercontent.com"
    owner, repo, branch, path = icon.path.strip("/").split("/", 3)
    assert f"{owner}/{repo}" == repository, "the icon must come from this repository"
    assert path in tracked_files(), f"{path} is not in the repository"
    assert path.lower().endswith(ICON_TYPES)
    if path.endswith(".svg"):
        root = ET.parse(os.path.join(REPO, path)).getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert int(root.get("width")) <= 800 and int(root.get("height")) <= 400
        assert not [e for e in root.iter() if e.tag.endswith("script") or any(a.startswith("on") for a in e.attrib)]


# --- version --------------------------------------------------------------------------------------

def changelog_releases(text: str) -> list[str]:
    """Versions of the release headings (``## [1.2.3] - date``), newest first; Unreleased left out."""
    return [v for v in re.findall(r"^## \[([^\]]+)\]", text, re.M) if v.lower() != "unreleased"]


def test_one_version_everywhere():
    version = pyproject()["project"]["version"]
    assert __version__ == version, "loralab/__init__.py and pyproject.toml disagree"
    releases = changelog_releases(read("CHANGELOG.md"))
    assert releases and releases[0] == version, f"CHANGELOG.md's newest entry is {releases[:1]}, not {version}"
    assert len(releases) == len(set(releases))


def test_changelog_releases_are_read_newest_first():
    text = "# Changelog\n## [Unreleased]\n## [0.2.0] - 2026-12-01\n### Added\n## [0.1.0] - 2026-11-28\n"
    assert changelog_releases(text) == ["0.2.0", "0.1.0"]


# --- requirements ---------------------------------------------------------------------------------

def test_requirements_are_pep508_and_never_torch():
    lines = requirement_lines()
    assert lines, "requirements.txt lists nothing"
    for line in lines:
        assert not line.startswith("-"), f"{line!r}: options and -e lines do not belong in what Manager installs"
        req = Requirement(line)
        assert req.url is None, f"{line!r}: a URL requirement"
        assert canonicalize_name(req.name) not in HOST_TORCH, f"{line!r}: torch comes from ComfyUI; listing it " \
            "lets pip replace the user's (CUDA) build"
        assert req.specifier, f"{line!r}: give the lowest version the pack works with"


def test_requirements_txt_and_pyproject_dependencies_agree():
    def normal(reqs):
        return sorted((canonicalize_name(r.name), sorted(r.extras), str(r.specifier), str(r.marker)) for r in reqs)
    declared = [Requirement(d) for d in pyproject()["project"]["dependencies"]]
    assert normal(declared) == normal(requirements())


def test_requirements_are_exactly_what_the_shipped_code_imports():
    imported = imported_distributions()
    declared = {canonicalize_name(r.name) for r in requirements()}
    assert imported - declared == {"torch"}, f"imported but not declared: {sorted(imported - declared - {'torch'})}"
    assert declared - imported == set(), f"declared but never imported: {sorted(declared - imported)}"


def test_third_party_imports_are_found():
    src = "import os\nimport numpy as np\nfrom PIL import Image\nfrom . import x\nfrom ..loralab import y\n"
    assert third_party_imports(src, "x.py") == {"numpy", "PIL"}


# --- what the registry's security check flags -------------------------------------------------------

def exec_eval_calls(source: str, filename: str) -> list[str]:
    """Calls of the exec/eval builtins (ruff S102/S307, which ``comfy node validate`` runs)."""
    out = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Call):
            f = node.func
            builtin = isinstance(f, ast.Attribute) and getattr(f.value, "id", "") == "builtins"
            name = f.id if isinstance(f, ast.Name) else f"builtins.{f.attr}" if builtin else ""
            if name.removeprefix("builtins.") in ("exec", "eval"):
                out.append(f"{filename}:{node.lineno}: {name}()")
    return out


JS_DYNAMIC_CODE = re.compile(r"(?<![\w.$])eval\s*\(|\bnew\s+Function\s*\(|\bset(?:Timeout|Interval)\s*\(\s*[\"'`]")


@pytest.mark.parametrize("code, flagged", [("exec(s)", True), ("eval(s)", True), ("builtins.eval(s)", True),
                                           ("model.eval()", False), ("page.eval('x')", False), ("'eval(s)'", False)])
def test_exec_eval_scanner(code, flagged):
    assert bool(exec_eval_calls(code, "x.py")) is flagged


def test_no_exec_or_eval_in_any_python_file_the_repository_ships():
    found = [hit for p in tracked_files() if p.endswith(".py") for hit in exec_eval_calls(read(p), p)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("code, flagged", [("eval(x)", True), ("new Function('a', b)", True),
                                           ("setTimeout('go()', 1)", True), ("setTimeout(() => go(), 1)", False),
                                           ("page.eval(x)", False), ("retrieval(x)", False)])
def test_js_dynamic_code_pattern(code, flagged):
    assert bool(JS_DYNAMIC_CODE.search(code)) is flagged


def test_frontend_runs_no_strings_as_code():
    found = [f"{p}:{n}" for p in tracked_files() if p.startswith("js/") and p.endswith(".js")
             for n, line in enumerate(read(p).splitlines(), 1) if JS_DYNAMIC_CODE.search(line)]
    assert not found, found


# --- nodes ----------------------------------------------------------------------------------------

def test_every_node_id_is_prefixed_and_unique():
    defs = node_defs()
    assert len(defs) >= 16
    for d in defs:
        assert re.fullmatch(r"LoRALab[A-Z][A-Za-z0-9]*", d.node_id), d
        assert d.display_name.endswith(" (LoRA Lab)"), d
        assert d.class_name == d.node_id, f"{d.class_name}: the class is named for its node id"
    assert len({d.node_id for d in defs}) == len(defs)
    assert len({d.display_name for d in defs}) == len(defs)


def test_pack_declares_its_frontend_and_entry_point():
    tree = ast.parse(read("__init__.py"))
    assigned = {t.id: n.value for n in tree.body if isinstance(n, ast.Assign) for t in n.targets}
    assert isinstance(assigned["WEB_DIRECTORY"], ast.Constant)
    web = assigned["WEB_DIRECTORY"].value.removeprefix("./")
    assert any(p.startswith(web + "/") and p.endswith(".js") for p in tracked_files())
    assert any(isinstance(n, ast.ImportFrom) and any(a.name == "comfy_entrypoint" for a in n.names)
               for n in tree.body)

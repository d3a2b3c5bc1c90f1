"""The README's node reference and command-line reference cannot fall behind the code: every node
the pack defines and every ``loralab`` sub-command, option and choice is documented, nothing
documented is gone, and every link inside the README leads to a heading. (The inputs and outputs
of each node are held to the README against the real ComfyUI in tests/host/test_install.py.)"""
from __future__ import annotations

import argparse
import re

import pytest

from loralab.cli import build_parser
from loralab_testkit.pack import Section, markdown_sections, node_defs, read, section_tree

NODE_HEADING = re.compile(r"^(.+) — `(LoRALab\w+)`$")


def _readme() -> list[Section]:
    return markdown_sections(read("README.md"))


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _text(sections: list[Section]) -> str:
    return "\n".join(f"{s.title}\n{s.body}" for s in sections)


def test_every_node_has_its_reference_entry():
    documented = {m.group(2): m.group(1) for s in section_tree(_readme(), "Node reference")
                  if s.level == 4 and (m := NODE_HEADING.match(s.title))}
    defined = {d.node_id: d.display_name for d in node_defs()}
    assert set(documented) - set(defined) == set(), "the README documents nodes the pack no longer has"
    assert set(defined) - set(documented) == set(), "nodes without a README reference entry"
    assert documented == defined, "display names in the README differ from the nodes'"


def test_every_subcommand_option_and_choice_is_documented():
    cli = _text(section_tree(_readme(), "Command line"))
    headings = {s.title for s in section_tree(_readme(), "Command line")}
    for name, parser in _subcommands().items():
        assert any(h.startswith(f"`loralab {name} ") for h in headings), f"loralab {name} has no README entry"
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for option in action.option_strings:
                assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", cli), f"loralab {name} {option}"
            for choice in action.choices or ():
                assert f"{choice}" in cli, f"loralab {name}: choice {choice!r} of {action.dest}"


def test_readme_links_inside_lead_to_headings():
    text = read("README.md")
    anchors = {s.anchor for s in markdown_sections(text)}
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert links
    assert [a for a in links if a not in anchors] == []


@pytest.mark.parametrize("title, anchor", [("Train a LoRA (quick start)", "train-a-lora-quick-start"),
                                           ("Merge, resize and extract", "merge-resize-and-extract"),
                                           ("Block-weight specs", "block-weight-specs")])
def test_anchor_is_githubs(title, anchor):
    assert Section(2, title, "").anchor == anchor


def test_sections_skip_code_blocks():
    sections = markdown_sections("# A\ntext\n```\n# not a heading\n```\n## B\nmore\n")
    assert [(s.level, s.title) for s in sections] == [(1, "A"), (2, "B")]
    assert "# not a heading" in sections[0].body
    assert [s.title for s in section_tree(sections, "A")] == ["A", "B"]

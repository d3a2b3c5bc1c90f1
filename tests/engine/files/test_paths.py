"""Untrusted names are resolved inside their folder or refused."""
import os

import pytest

from loralab.errors import UnsafeNameError
from loralab.files.paths import check_relative_name, resolve_in_folder, sanitize_output_name, unused_path
from loralab_testkit.malformed import HOSTILE_NAMES


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "loras" / "sub").mkdir(parents=True)
    (tmp_path / "loras" / "a.safetensors").write_bytes(b"x")
    (tmp_path / "loras" / "sub" / "b.safetensors").write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("s")
    return tmp_path


def test_resolves_inside(folder):
    root = str(folder / "loras")
    assert resolve_in_folder(root, "a.safetensors") == os.path.realpath(os.path.join(root, "a.safetensors"))
    assert resolve_in_folder(root, "sub/b.safetensors").endswith(os.path.join("sub", "b.safetensors"))
    assert resolve_in_folder(root, "sub\\b.safetensors").endswith(os.path.join("sub", "b.safetensors"))


@pytest.mark.parametrize("name", [
    "../secret.txt", "sub/../../secret.txt", "..\\secret.txt", "/etc/passwd", "\\\\server\\share\\x",
    "//server/share/x", "C:\\Windows\\win.ini", "c:secret", "a.safetensors\x00.png", "", "   ", "\n", None, 5,
])
def test_refused(folder, name):
    with pytest.raises(UnsafeNameError):
        resolve_in_folder(str(folder / "loras"), name)


def test_symlink_escaping_folder_is_refused(folder):
    os.symlink(folder / "secret.txt", folder / "loras" / "link.safetensors")
    with pytest.raises(UnsafeNameError) as e:
        resolve_in_folder(str(folder / "loras"), "link.safetensors")
    assert "outside" in str(e.value)


def test_symlink_inside_folder_is_fine(folder):
    os.symlink(folder / "loras" / "a.safetensors", folder / "loras" / "alias.safetensors")
    assert resolve_in_folder(str(folder / "loras"), "alias.safetensors").endswith("a.safetensors")


def test_missing_file(folder):
    with pytest.raises(UnsafeNameError):
        resolve_in_folder(str(folder / "loras"), "nope.safetensors")


@pytest.mark.parametrize("raw,expected", [
    ("my lora", "my lora.safetensors"),
    ("style/v2.safetensors", "style/v2.safetensors"),
    ("../../evil", "evil.safetensors"),
    ("<script>alert(1)</script>", "_script_alert(1)_/script_.safetensors"),
    ("a:b*c?.safetensors", "a_b_c_.safetensors"),
    ("CON", "_CON.safetensors"),
    ("", "lora.safetensors"),
    ("...", "lora.safetensors"),
    ("a\x00b", "ab.safetensors"),
])
def test_sanitize_output_name(raw, expected):
    assert sanitize_output_name(raw) == expected
    check_relative_name(sanitize_output_name(raw))


def test_unused_path_counts_up(folder):
    root = str(folder / "loras")
    assert unused_path(root, "new.safetensors").endswith("new.safetensors")
    assert unused_path(root, "a.safetensors").endswith("a_00001.safetensors")


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_are_refused(folder, name):
    with pytest.raises(UnsafeNameError):
        resolve_in_folder(str(folder / "loras"), name)
    with pytest.raises(UnsafeNameError):
        unused_path(str(folder / "loras"), name)


@pytest.mark.parametrize("name", ["a.safetensors", "sub/b.safetensors", "./a.safetensors", "sub//b.safetensors"])
def test_accepted_forms(folder, name):
    assert resolve_in_folder(str(folder / "loras"), name).startswith(os.path.realpath(folder / "loras"))


def test_unicode_names_that_stay_inside_are_fine(folder):
    (folder / "loras" / "スタイル（v2）.safetensors").write_bytes(b"x")
    (folder / "loras" / "a：b.safetensors").write_bytes(b"x")  # fullwidth colon is an ordinary character
    assert resolve_in_folder(str(folder / "loras"), "スタイル（v2）.safetensors").endswith("（v2）.safetensors")
    assert resolve_in_folder(str(folder / "loras"), "a：b.safetensors").endswith("a：b.safetensors")


def test_symlinked_subfolder_escaping_is_refused_for_writes_too(folder):
    os.symlink(folder, folder / "loras" / "up")
    with pytest.raises(UnsafeNameError):
        resolve_in_folder(str(folder / "loras"), "up/secret.txt")
    with pytest.raises(UnsafeNameError):
        unused_path(str(folder / "loras"), "up/new.safetensors")


def test_unused_path_skips_dangling_symlinks(folder):
    os.symlink(folder / "nowhere", folder / "loras" / "dangling.safetensors")
    assert unused_path(str(folder / "loras"), "dangling.safetensors").endswith("dangling_00001.safetensors")


@pytest.mark.parametrize("raw,expected", [
    ("NUL .safetensors", "_NUL.safetensors"),
    ("com¹", "_com¹.safetensors"),
    ("a.safetensors:evil", "a.safetensors_evil.safetensors"),
    ("C:\\Users\\x\\lora", "C_/Users/x/lora.safetensors"),
    ("\\\\?\\C:\\x", "_/C_/x.safetensors"),
    ("name. . .", "name.safetensors"),
    ("a／..／b", "a_.._b.safetensors"),
    ("é" * 150, "é" * 94 + ".safetensors"),
])
def test_sanitize_windows_forms(raw, expected):
    assert sanitize_output_name(raw) == expected
    check_relative_name(sanitize_output_name(raw))


# --- invariants over any text ----------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

NAME_CHARS = st.one_of(st.characters(), st.sampled_from(list("/\\.: \x00\u2025\uff0e\uff0f\u2044CONULPT1¹$é")))
names = st.text(NAME_CHARS, max_size=300)


@settings(max_examples=500, deadline=None)
@given(names, st.sampled_from([".safetensors", ".json", ""]))
def test_sanitized_names_are_always_acceptable_and_stable(raw, ext):
    out = sanitize_output_name(raw, ext)
    parts = check_relative_name(out)  # never refused by our own check
    assert out.endswith(ext) and "\\" not in out and ":" not in out
    for p in parts:
        assert p == p.strip(" .")
        assert len(p.encode("utf-8")) <= 200
    assert sanitize_output_name(out, ext) == out


@settings(max_examples=300, deadline=None)
@given(names)
def test_check_never_lets_a_name_out_of_its_folder(raw):
    try:
        parts = check_relative_name(raw)
    except UnsafeNameError:
        return
    root = os.path.realpath("/srv/loras")
    joined = os.path.normpath(os.path.join(root, *parts))
    assert os.path.commonpath([root, joined]) == root and joined != root
    assert ".." not in parts and all(":" not in p and "\x00" not in p for p in parts)


@settings(max_examples=60, deadline=None)
@given(names)
def test_unused_path_is_new_and_inside(tmp_path_factory, raw):
    root = tmp_path_factory.mktemp("out")
    rel = sanitize_output_name(raw)
    first = unused_path(str(root), rel)
    assert first.startswith(os.path.realpath(root) + os.sep) and not os.path.lexists(first)
    os.makedirs(os.path.dirname(first), exist_ok=True)
    open(first, "wb").close()
    second = unused_path(str(root), rel)
    assert second != first and not os.path.lexists(second) and os.path.dirname(second) == os.path.dirname(first)
    assert len(os.path.basename(second).encode("utf-8")) <= 255

"""Untrusted names are resolved inside their folder or refused."""
import os

import pytest

from loralab.errors import UnsafeNameError
from loralab.paths import check_relative_name, resolve_in_folder, sanitize_output_name, unused_path


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

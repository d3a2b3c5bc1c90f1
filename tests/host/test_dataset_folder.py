"""Dataset folders: inside ComfyUI's input folder always; absolute paths only on a loopback-only server."""
import os

import pytest


@pytest.fixture
def listen(host):
    from comfy.cli_args import args
    old = args.listen
    yield lambda value: setattr(args, "listen", value)
    args.listen = old


def test_relative_folder_resolves_inside_input(host):
    ds = host.module("nodes.dataset")
    assert ds.dataset_folder("my_set") == os.path.join(os.path.realpath(host.folder_paths.get_input_directory()), "my_set")
    errors = host.module("loralab.errors")
    for bad in ("../secrets", "a/../../b", "C:\\x", "x\x00y"):
        with pytest.raises(errors.UnsafeNameError):
            ds.dataset_folder(bad)


def test_absolute_folder_only_when_serving_this_machine(host, listen, tmp_path):
    ds = host.module("nodes.dataset")
    errors = host.module("loralab.errors")
    for local in ("127.0.0.1", "localhost", "::1", "127.0.0.1,::1"):
        listen(local)
        assert ds.dataset_folder(str(tmp_path)) == str(tmp_path)
    for exposed in ("0.0.0.0", "192.168.1.5", "127.0.0.1,0.0.0.0", "::"):
        listen(exposed)
        with pytest.raises(errors.UnsafeNameError) as e:
            ds.dataset_folder(str(tmp_path))
        assert "network address" in str(e.value)

"""``loralab library`` end to end: scan (headers, then hashes), a second scan that reads nothing,
list with the arch and search filters, duplicates, an import, and the refusals."""
import json
import os
import shutil
import subprocess
import sys

from loralab_testkit import REPO, materialize


def run(*args, cache=None):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    if cache:
        env["XDG_CACHE_HOME"] = cache
    return subprocess.run([sys.executable, "-m", "loralab", "library", *args], capture_output=True, text=True,
                          env=env, cwd=REPO)


def test_library_scan_list_dupes_import(tmp):
    loras = os.path.join(tmp, "loras")
    materialize("kohya_sdxl_lora", os.path.join(loras, "xl.safetensors"), rank=2, seed=1)
    materialize("kohya_sd15_lora", os.path.join(loras, "sd.safetensors"), rank=2, seed=2)
    shutil.copy(os.path.join(loras, "sd.safetensors"), os.path.join(loras, "sd copy.safetensors"))
    db = os.path.join(tmp, "db", "lib.sqlite")
    r = run("scan", loras, "--db", db, "-q")
    assert r.returncode == 0, r.stderr
    assert "3 files: 3 new, 0 changed, 0 unchanged, 0 gone" in r.stdout and "3 files hashed" in r.stdout
    assert "sd copy.safetensors: same tensor data" in r.stdout
    r = run("scan", loras, "--db", db, "-q")
    assert "3 files: 0 new, 0 changed, 3 unchanged, 0 gone" in r.stdout and "0 files hashed" in r.stdout

    r = run("list", "--db", db, "--arch", "sdxl", "--json")
    (xl,) = json.loads(r.stdout)
    assert xl["name"] == "xl.safetensors" and xl["arch"] == "sdxl" and len(xl["hashes"]["autov3"]) == 12
    r = run("list", "--db", db, "--search", "OHWX woman")
    assert r.returncode == 0 and r.stdout.count("trigger words: ohwx woman") == 3 and "3 files" in r.stdout

    r = run("dupes", "--db", db, "--json")
    assert json.loads(r.stdout) == [[os.path.join(loras, "sd copy.safetensors"), os.path.join(loras, "sd.safetensors")]]
    r = run("dupes", "--db", db)
    assert "1 groups of duplicates" in r.stdout and "(2 files" in r.stdout

    sha = xl["hashes"]["sha256"]
    export = os.path.join(tmp, "xl.metadata.json")
    with open(export, "w", encoding="utf-8") as f:
        json.dump({"file_name": "xl", "model_name": "Sharp XL", "sha256": sha,
                   "civitai": {"trainedWords": ["sharpxl"]}}, f)
    r = run("import", export, "--db", db)
    assert r.returncode == 0 and "1 models read; 1 files of the library named" in r.stdout
    r = run("list", "--db", db, "--search", "sharpxl")
    assert "xl.safetensors" in r.stdout and "LoRA Manager: Sharp XL" in r.stdout and "1 files" in r.stdout


def test_library_default_index_and_refusals(tmp):
    loras = os.path.join(tmp, "loras")
    materialize("kohya_sd15_lora", os.path.join(loras, "a.safetensors"), rank=2)
    r = run("scan", loras, "--no-hash", "-q", cache=os.path.join(tmp, "cache"))
    assert r.returncode == 0 and "files hashed" not in r.stdout
    assert os.path.isfile(os.path.join(tmp, "cache", "loralab", "library.sqlite"))
    r = run("list", cache=os.path.join(tmp, "cache"))
    assert "(not hashed)" in r.stdout
    r = run("scan", os.path.join(tmp, "nowhere"), "--db", os.path.join(tmp, "x.sqlite"))
    assert r.returncode == 2 and "not a folder" in r.stderr
    r = run("import", os.path.join(tmp, "missing.json"), "--db", os.path.join(tmp, "x.sqlite"))
    assert r.returncode == 1 and "cannot be read" in r.stderr
    r = run()
    assert r.returncode == 2

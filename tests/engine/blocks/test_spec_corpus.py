"""The frontend's spec editor (js/lib/spec.js) agrees with THE parser (loralab/block_weights.py).

This test builds tests/js/spec_corpus.json from the Python parser: the editor catalog of each
arch and a list of specs, each with the weight of every block (or the error message). The JS
tests (``node --test tests/js/``) parse the same specs and must get the same weights and the same
messages. The test fails when the checked-in corpus is out of date; rewrite it with
``LORALAB_WRITE_CORPUS=1 python -m pytest tests/test_spec_corpus.py``.

Where node is installed, the other direction is checked too: the specs the editor writes from
slider positions (serialiseSpec) parse in Python to exactly those positions.
"""
import json
import os
import random
import shutil
import subprocess

import pytest
from loralab_testkit import REPO

from loralab.blocks.catalog import block_catalog
from loralab.blocks.spec import VECTOR_FORMS, load_presets, parse_block_weights
from loralab.blocks.map import OTHER
from loralab.errors import SpecError

CORPUS = os.path.join(REPO, "tests", "js", "spec_corpus.json")
ARCHS = ("sd1", "sd2", "sdxl", "sdxl_refiner", "flux", "sd3", "sd35l", "wan21_t2v_1_3b", "qwen_image", "flux2_klein_4b", "z_image",
         "chroma", "hunyuan_video", "lumina2", "hidream", "ltxv", "ltx2",
         "hunyuan_video15")
PARAMS = {"a": 0.25, "b": -0.5, "x": 0.7}

HANDWRITTEN = {
    "sd1": [
        "", "   ", "ALL", "all", " none ", "OUTALL", "ins", "ALL0.5", "FLUX-SINGLE", "SDXL-INALL", "NOSUCHPRESET",
        "0.75", "-0", "+1", ".5", "5.", "1e-3", "1E2", "1_000", "1__0", "_1", "0x10", "inf", "-Infinity", "nan",
        "1e999", "A", "x", "r", "Z", "it's", 'say "hi"', "IN04",
        "IN04-IN08=0.5, M00=1, OUT=0, default=0.2", "in04-08=0.5", "IN4-8=0.5", "IN04 - IN08 = 0.5",
        "IN04-OUT05=1", "OUT04-OUT02=1", "IN-5=1", "IN12=1", "IN00-IN11=0", "IN03=0; IN03=1",
        "BASE=0", "BASE1=1", "M=0.5", "M00=0.5", "M01=1", "OTHER=0", "OUT=0, default=0", "Q=1", "D=1",
        "IN04=abc", "IN04=nan", "IN04=inf", "IN04 0.5", "IN04=1=2", "=1", "IN04=", "default=", "DEFAULT = 0.3",
        "IN04=0.5,,", ",", ";", "IN04=1_0", "IN04=1__0", "IN04='x'", "IN04\t=\t0.5", "IN04\u200b=1",
        "\u3000IN04=0.5\u3000", "IN04=0.5\x1c", "\ufeffIN04=0.5", "IN04=R, IN05=u, IN06=X, IN07=a, IN08=B",
        "default=A", "default=R", "OUT=U",
        "1,1,1", "0,1,2,3,4,5,6,7,8,9,10,11", "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,Z", "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,",
        ",".join(["R", "U", "X", "A", "B"] + ["1"] * 12), ",".join(f"{i / 10:g}" for i in range(17)),
        ",".join(str(i) for i in range(26)),
    ],
    "sdxl": [
        "OUTALL", "SDXL-MIDALL", "MIDD", "0,1,2,3,4,5,6,7,8,9,10,11", ",".join(str(i) for i in range(20)),
        ",".join(["1"] * 17), "IN09=1", "IN00-IN08=0, OUT=1", "OUT08=0.5", "OUT09=0.5",
    ],
    "flux": [
        "FLUX-SINGLE", "flux-dbl-mid", "NONE", "OUTALL", "D0-6=1, S=0.3, default=0", "s=0; s5=2\nd03-d04=0.5",
        "D19=1", "S37=0", "S38=0", "IN=0", "IN1=0", "OUT=0", "CLIP=0, T5=0", "D=0", "D", "S", "OTHER",
        "d00-d18=0.5", "D5-D3=1", "D-3=1", "D03-S05=1", ",".join(["0"] * 19 + ["1"] * 38),
        ",".join(["0.1", "0.2", "0.3"] + ["0"] * 19 + ["1"] * 38 + ["0.4"]), ",".join(["1"] * 20),
    ],
    "sd2": ["OUTS", "IN11=0", ",".join(["0.5"] * 26)],
    "sdxl_refiner": ["ALL", "OUTALL", ",".join(["0"] * 26), ",".join(["0"] * 17), "IN11=0.5, OUT=0"],
    "sd3": ["J=0, J0-5=1", "J24=1", "j23=0.5", "D=1", "NONE", "1,1,1", "CLIP=0, T5=0, IN=0.5, OUT=0"],
    "sd35l": ["J30-37=0, default=0.5", "J38=1", "FLUX-SINGLE", "ALL0.5"],
    "flux2_klein_4b": ["FLUX2-SINGLE", "FLUX2-BLOCKS-ONLY", "FLUX-SINGLE", "FLUX-DBL-TAIL", "D4=0", "D5=0", "S19=0.5",
                       "S20=1", "CLIP=0", "IN=0, D=0.5", ",".join(["1"] * 57)],
    "z_image": ["ZIMAGE-LATE", "ZIMAGE-LAYERS-ONLY", "NR01=0", "NR02=0", "CR=0.5", "L0-29=0.5", "L30=1", "nr0-1=0",
                "NR0-CR1=1", "SR=0", "B=0"],
    "chroma": ["FLUX-DOUBLE", "D18=0, S37=0.5", "D19=1", "S38=1", "CLIP=0", "T5=0, IN=0.5", ",".join(["0"] * 57),
               ",".join(["0.5", "0"] + ["1"] * 57 + ["0.25"]), ",".join(["1"] * 61)],
    "hunyuan_video": ["HUNYUAN-DOUBLE", "HUNYUAN-DBL-TAIL", "D19=0, S39=0.5", "D20=1", "S40=1", "T5=0",
                      "IN=0, OUT=0", "FLUX-DBL-FRONT", ",".join(["1"] * 57)],
    "ltxv": ["LTXV-LATE", "LTXV-BLOCKS-ONLY", "B27=0", "B28=1", "A=0", "IN=0, OUT=0.5"],
    "ltx2": ["LTX2-AUDIO-ONLY", "LTX2-VIDEO-ONLY", "A00-47=0.5, B47=0", "A48=1", "b3-a1=1", "LTXV-EARLY", "D=0"],
    "hidream": ["HIDREAM-SINGLE", "FLUX-DBL-TAIL", "D15=0, S31=0.5", "D16=1", "S32=1", "IN=0", "L=0"],
    "hunyuan_video15": ["HUNYUAN15-LATE", "HUNYUAN15-BLOCKS-ONLY", "HUNYUAN-SINGLE", "HUNYUAN-DOUBLE", "D53=0.5",
                        "D54=1", "S=0", "S00=1", "IN=0, OUT=0", "d00-17=0, D18-D35=0.5", ",".join(["1"] * 57)],
    "lumina2": ["LUMINA-LATE", "L00-05=0.5", "L25=0", "L26=1", "l3-l1=1", "B=0", "D=0", "IN=0, OUT=0.5", "L"],
}


def _random_value(rng: random.Random) -> str:
    return rng.choice(["0", "1", "0.5", "-0.25", "1.5", "2", ".75", "1e-1", "R", "U", "X", "A", "B", "0.3"])


def _random_specs(arch_id: str, catalog: dict, n: int, seed: int) -> list[str]:
    """Readable specs and vectors drawn over the arch's real families, ranges and blocks."""
    rng = random.Random(seed)
    fams = [f for f in catalog["families"]]
    specs = []
    for _ in range(n):
        if rng.random() < 0.2 and VECTOR_FORMS.get(arch_id):
            length = rng.choice(sorted(VECTOR_FORMS[arch_id]))
            specs.append(",".join(_random_value(rng) for _ in range(length)))
            continue
        items = []
        for _ in range(rng.randint(1, 5)):
            fam = rng.choice(fams)
            members = [b for b, num in fam["blocks"] if num is not None]
            kind = rng.random()
            if kind < 0.2:
                lhs = fam["name"].lower() if rng.random() < 0.3 else fam["name"]
            elif kind < 0.35:
                lhs = "default"
            elif members and kind < 0.7:
                i, j = sorted(rng.sample(range(len(members)), 2)) if len(members) > 1 else (0, 0)
                lo, hi = members[i], members[j]
                lhs = f"{lo}-{hi}" if rng.random() < 0.5 else f"{lo}-{int(hi[len(fam['name']):])}"
            else:
                lhs = rng.choice([b for b, _ in fam["blocks"]])
            items.append(f"{lhs}={_random_value(rng)}")
        specs.append(rng.choice([", ", ",", "; ", "\n"]).join(items))
    return specs


def _python_result(spec: str, arch_id: str, blocks: list[str], presets: dict) -> dict:
    try:
        bw = parse_block_weights(spec, arch_id, presets=presets, **PARAMS)
    except SpecError as e:
        return {"weights": None, "error": e.problem}
    return {"weights": [bw.weight(b) for b in blocks], "error": None}


def build_corpus() -> dict:
    presets = load_presets()
    catalogs = {a: block_catalog(a, presets) for a in ARCHS}
    cases = []
    for i, arch_id in enumerate(ARCHS):
        specs = HANDWRITTEN.get(arch_id, []) + _random_specs(arch_id, catalogs[arch_id], 60, seed=i)
        for spec in specs:
            blocks = catalogs[arch_id]["blocks"] + [OTHER]
            cases.append({"arch": arch_id, "spec": spec, **_python_result(spec, arch_id, blocks, presets)})
    return {"generated_by": "tests/test_spec_corpus.py", "params": PARAMS, "catalogs": catalogs, "cases": cases}


def render(corpus: dict) -> str:
    """The corpus as stable JSON text, one case per line."""
    head = {k: v for k, v in corpus.items() if k != "cases"}
    lines = [json.dumps(c, ensure_ascii=True) for c in corpus["cases"]]
    return (json.dumps(head, ensure_ascii=True)[:-1] + ', "cases": [\n' + ",\n".join(lines) + "\n]}\n")


def test_corpus_is_up_to_date():
    text = render(build_corpus())
    if os.environ.get("LORALAB_WRITE_CORPUS"):
        with open(CORPUS, "w", encoding="utf-8") as f:
            f.write(text)
    assert os.path.isfile(CORPUS), "tests/js/spec_corpus.json is missing: run with LORALAB_WRITE_CORPUS=1"
    with open(CORPUS, encoding="utf-8") as f:
        assert f.read() == text, "tests/js/spec_corpus.json is out of date: run with LORALAB_WRITE_CORPUS=1"


def test_corpus_covers_errors_tokens_and_every_form():
    corpus = build_corpus()
    cases = corpus["cases"]
    assert sum(c["error"] is not None for c in cases) >= 40
    assert sum(c["error"] is None for c in cases) >= 200
    for arch_id in ARCHS:
        lengths = {len(c["spec"].split(",")) for c in cases
                   if c["arch"] == arch_id and c["error"] is None and "=" not in c["spec"] and "," in c["spec"]}
        assert set(VECTOR_FORMS.get(arch_id, {})) <= lengths, arch_id
    assert any("R" in c["spec"] and c["error"] is None for c in cases)


SERIALISE_SCRIPT = """
import { readFileSync } from "node:fs";
import { serialiseSpec, OTHER } from "./js/lib/spec.js";
const corpus = JSON.parse(readFileSync("tests/js/spec_corpus.json", "utf8"));
const out = [];
for (const c of corpus.cases) {
  if (!c.weights) continue;
  const cat = corpus.catalogs[c.arch];
  const blocks = [...cat.blocks, OTHER];
  const values = Object.fromEntries(blocks.map((b, i) => [b, c.weights[i]]));
  out.push({ arch: c.arch, weights: c.weights, spec: serialiseSpec(values, cat) });
}
process.stdout.write(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_specs_the_editor_writes_parse_back_in_python():
    out = subprocess.run(["node", "--input-type=module", "-e", SERIALISE_SCRIPT], cwd=REPO,
                         capture_output=True, text=True, check=True, timeout=60)
    written = json.loads(out.stdout)
    assert len(written) >= 200
    presets = load_presets()
    blocks_of = {a: block_catalog(a, presets)["blocks"] + [OTHER] for a in ARCHS}
    for case in written:
        blocks = blocks_of[case["arch"]]
        bw = parse_block_weights(case["spec"], case["arch"], presets=presets)
        assert [bw.weight(b) for b in blocks] == case["weights"], case["spec"]

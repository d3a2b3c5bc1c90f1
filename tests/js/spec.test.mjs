// js/lib/spec.js agrees with loralab/block_weights.py on every spec of the corpus (weights and
// error messages), and the specs it writes from slider positions read back to those positions.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import test from "node:test";

import { OTHER, RANDOM_RANGES, SpecError, TOKEN_INPUTS, isRandom, parseSpec, pyRepr, resolveValue, serialiseSpec, specFits, specInputs } from "../../js/lib/spec.js";

const corpus = JSON.parse(readFileSync(new URL("./spec_corpus.json", import.meta.url), "utf8"));
const params = corpus.params;
const catalogs = corpus.catalogs;

function blocksOf(arch) {
  return [...catalogs[arch].blocks, OTHER];
}

test("the corpus is not trivial", () => {
  assert.ok(corpus.cases.length > 300);
  assert.ok(corpus.cases.filter((c) => c.error).length > 40);
});

test("every corpus spec parses to the Python weights, or fails with the Python message", () => {
  const failures = [];
  for (const c of corpus.cases) {
    const cat = catalogs[c.arch];
    let got;
    try {
      got = parseSpec(c.spec, cat);
    } catch (e) {
      if (!(e instanceof SpecError)) throw e;
      if (c.error !== e.message) failures.push(`${c.arch} ${JSON.stringify(c.spec)}: JS error ${JSON.stringify(e.message)}, Python ${JSON.stringify(c.error)}`);
      continue;
    }
    if (c.error) {
      failures.push(`${c.arch} ${JSON.stringify(c.spec)}: JS parsed it, Python said ${JSON.stringify(c.error)}`);
      continue;
    }
    blocksOf(c.arch).forEach((b, i) => {
      const v = got.values[b];
      const py = c.weights[i];
      if (isRandom(v)) {
        const [lo, hi] = RANDOM_RANGES[v];
        if (!(py >= lo && py < hi)) failures.push(`${c.arch} ${JSON.stringify(c.spec)} ${b}: token ${v}, Python ${py}`);
      } else if (resolveValue(v, params) !== py) {
        failures.push(`${c.arch} ${JSON.stringify(c.spec)} ${b}: JS ${v}, Python ${py}`);
      }
    });
  }
  assert.deepEqual(failures, []);
});

// a seeded generator, so failures reproduce
function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const SLIDER_VALUES = [0, 1, 0.5, 0.25, -0.5, 1.5, 0.05, 0.3, 0.35, 0.7, 1.25, -0.05];

function randomValues(arch, rand, tokens) {
  const pool = tokens ? [...SLIDER_VALUES, "A", "B", "X", "R", "U", 1e-7, 0.123456789] : SLIDER_VALUES;
  const base = pool[Math.floor(rand() * pool.length)];
  return Object.fromEntries(blocksOf(arch).map((b) => [b, rand() < 0.6 ? base : pool[Math.floor(rand() * pool.length)]]));
}

test("slider positions -> spec -> the same positions, and the spec is a fixed point", () => {
  const rand = rng(7);
  for (const arch of Object.keys(catalogs)) {
    for (let i = 0; i < 200; i++) {
      const values = randomValues(arch, rand, i % 3 === 0);
      const spec = serialiseSpec(values, catalogs[arch]);
      const back = parseSpec(spec, catalogs[arch]);
      assert.deepEqual(back.values, values, `${arch}: ${spec}`);
      assert.equal(serialiseSpec(back.values, catalogs[arch]), spec);
    }
  }
});

test("canonical specs are compact: default, whole families, ranges, block by block random tokens", () => {
  const sdxl = catalogs.sdxl;
  const flux = catalogs.flux;
  const set = (cat, fill, changes) => ({ ...Object.fromEntries([...cat.blocks, OTHER].map((b) => [b, fill])), ...changes });
  assert.equal(serialiseSpec(set(sdxl, 1, {}), sdxl), "");
  assert.equal(serialiseSpec(set(sdxl, 0.5, {}), sdxl), "default=0.5");
  assert.equal(serialiseSpec(set(sdxl, 1, { IN04: 0.5, IN05: 0.5, IN06: 0.5, M00: 0 }), sdxl), "IN04-IN06=0.5, M00=0");
  const outs = Object.fromEntries(sdxl.families.find((f) => f.name === "OUT").blocks.map(([b]) => [b, 0]));
  assert.equal(serialiseSpec(set(sdxl, 1, outs), sdxl), "OUT=0");
  assert.equal(serialiseSpec(set(flux, 0, { D00: 1, D01: 1, D02: 1, T5: 1 }), flux), "T5=1, D00-D02=1, default=0");
  assert.equal(serialiseSpec(set(sdxl, 1, { IN01: "R", IN02: "R", OUT03: "A" }), sdxl), "IN01=R, IN02=R, OUT03=A");
  assert.equal(serialiseSpec(set(sdxl, 1, { BASE: 0, OTHER: 0 }), sdxl), "BASE=0, OTHER=0");
});

test("presets and vectors become explicit weights for every block", () => {
  const outall = parseSpec("outall", catalogs.sd1);
  assert.equal(outall.kind, "preset");
  assert.equal(outall.values.IN01, 0);
  assert.equal(outall.values.OUT03, 1);
  assert.equal(outall.values.IN00, 1); // LBW's 17 values leave IN00 alone
  const vec = parseSpec(["R", "U", "X", "A", "B", ...Array(12).fill("1")].join(","), catalogs.sd1);
  assert.deepEqual([vec.values.BASE, vec.values.IN01, vec.values.IN02, vec.values.IN04, vec.values.IN05], ["R", "U", "X", "A", "B"]);
  assert.equal(resolveValue(vec.values.IN04, { a: 0.3 }), 0.3);
  assert.equal(resolveValue(vec.values.BASE, {}), null);
});

test("pyRepr quotes like Python", () => {
  assert.equal(pyRepr("IN04"), "'IN04'");
  assert.equal(pyRepr("it's"), '"it\'s"');
  assert.equal(pyRepr(`it's "x"`), `'it\\'s "x"'`);
  assert.equal(pyRepr("a\u200bb\tc\\"), "'a\\u200bb\\tc\\\\'");
  assert.equal(pyRepr("\x01\u{1F600}\u{E0001}"), "'\\x01\u{1F600}\\U000e0001'");
});

test("specFits: the archs whose grammar accepts a spec (the editor's choice before a LoRA is known)", () => {
  const fitting = (spec) => Object.keys(catalogs).filter((arch) => specFits(spec, catalogs[arch]));
  // double/single stream DiTs; S=0 alone: Flux.2 Klein has single blocks too (but no D05, D06)
  assert.deepEqual(fitting("FLUX-DOUBLE"), ["flux", "flux2_klein_4b", "chroma", "hunyuan_video", "hidream"]);
  assert.deepEqual(fitting("D0-6=1, S=0.3"), ["flux", "chroma", "hunyuan_video", "hidream"]);
  assert.deepEqual(fitting("A=0, B40-47=0.5"), ["ltx2"]);  // LTX-2's audio part of a block
  assert.deepEqual(fitting("L13-25=0.5"), ["z_image", "lumina2"]);  // Z-Image's layers L00..L29, Lumina 2's L00..L25
  assert.deepEqual(fitting("HUNYUAN-DBL-TAIL"), ["hunyuan_video"]);  // D19 exists in HunyuanVideo only
  assert.deepEqual(fitting(Array(57).fill("1").join(",")), ["flux", "chroma"]);
  assert.deepEqual(fitting(Array(60).fill("1").join(",")), ["chroma"]);
  assert.deepEqual(fitting(Array(12).fill("0").join(",")), ["sdxl"]);
  assert.deepEqual(fitting(Array(17).fill("0").join(",")), ["sd1", "sd2"]);
  assert.ok(fitting("SDXL-OUTALL").includes("sdxl") && !fitting("SDXL-OUTALL").includes("flux"));
  assert.deepEqual(fitting("OUT=0.5, nonsense"), []);
  assert.equal(fitting("").length, Object.keys(catalogs).length);
});

test("specInputs: the token inputs a spec reads, from its text, while it is typed too", () => {
  assert.deepEqual(specInputs(""), []);
  assert.deepEqual(specInputs(null), []);
  assert.deepEqual(specInputs("ALL"), []);
  assert.deepEqual(specInputs("IN04-IN08=0.5, OUT=0"), []);
  assert.deepEqual(specInputs("1,0,A"), ["a"]);  // a vector still being typed (3 of 12 values)
  assert.deepEqual(specInputs("1,0,A,B,"), ["a", "b"]);
  assert.deepEqual(specInputs("r"), ["seed"]);
  assert.deepEqual(specInputs("B"), ["b"]);
  assert.deepEqual(specInputs(" IN04 = u ; OUT=b\nM00=A"), ["a", "b", "seed"]);
  assert.deepEqual(specInputs("X"), []);  // X is the constant 1: no input
  assert.deepEqual(specInputs("a=1, b=0.5"), []);  // names before '=' are blocks, not tokens
  assert.deepEqual(specInputs("AB, BA, RU, 1A"), []);
  assert.deepEqual(specInputs("OUT=R, default=U"), ["seed"]);
});

test("specInputs never hides an input the parser reads: the tokens among every parsed spec's values", () => {
  let withTokens = 0;
  let overridden = 0;
  for (const c of corpus.cases) {
    let parsed;
    try {
      parsed = parseSpec(c.spec, catalogs[c.arch]);
    } catch (e) {
      if (e instanceof SpecError) continue;
      throw e;
    }
    const read = new Set(Object.values(parsed.values).map((v) => TOKEN_INPUTS[v]).filter(Boolean));
    const shown = specInputs(c.spec);
    assert.ok([...read].every((n) => shown.includes(n)), `${c.arch} ${JSON.stringify(c.spec)}: reads ${[...read]}, shows ${shown}`);
    // more only where a later item overrides a token's block ("IN06=A, IN06-10=.75"): the text names it
    if (shown.length > read.size) overridden += 1;
    if (read.size) withTokens += 1;
  }
  assert.ok(withTokens > 20 && overridden < withTokens / 4, `${withTokens} with tokens, ${overridden} overridden`);
});

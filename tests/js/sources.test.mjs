// Static checks over js/ (everything in it is served and loaded by the browser): no markup
// sinks or string evaluation anywhere, pure modules free of DOM globals and app imports, and
// host modules imported only through the frontend's shims.
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { join, relative } from "node:path";
import test from "node:test";
import { fileURLToPath } from "node:url";

const JS = fileURLToPath(new URL("../../js/", import.meta.url));

function files(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith(".js") ? [join(dir, e.name)] : []);
}

const sources = files(JS).map((path) => ({ name: relative(JS, path), text: readFileSync(path, "utf8") }));

test("no markup sinks or string evaluation in js/", () => {
  const sink = /inner(HTML)|outer(HTML)|insertAdjacent(HTML)|document\.write|\beval\s*\(|new\s+Function\b|srcdoc|setAttribute\(\s*["']on|\.on[a-z]+\s*=\s*["'`]/;
  for (const { name, text } of sources) assert.doesNotMatch(text, sink, name);
});

test("pure modules in js/lib touch no page globals and import only each other", () => {
  const libs = sources.filter((s) => s.name.startsWith("lib/"));
  assert.ok(libs.length >= 6);
  for (const { name, text } of libs) {
    const code = text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
    assert.doesNotMatch(code, /\b(document|window|navigator|globalThis|localStorage)\b/, name);
    for (const m of text.matchAll(/from\s+["']([^"']+)["']/g)) assert.match(m[1], /^\.\/[a-z_]+\.js$/, `${name} imports ${m[1]}`);
  }
});

test("host modules come only through the frontend's shims; nothing node-only is served", () => {
  for (const { name, text } of sources) {
    for (const m of text.matchAll(/from\s+["']([^"']+)["']/g)) {
      assert.ok(/^\.\.?\//.test(m[1]), `${name} imports ${m[1]}`);
      if (m[1].includes("scripts/")) assert.match(m[1], /^\.\.\/\.\.\/scripts\/(app|api)\.js$/, name);
    }
  }
});

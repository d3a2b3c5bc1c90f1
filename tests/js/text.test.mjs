// text.js: invisible characters become visible escapes, long strings are cut by code point.
import assert from "node:assert/strict";
import test from "node:test";

import { displayText, hasInvisible, reveal, str, truncate } from "../../js/lib/text.js";

test("reveal writes bidi, zero-width and control characters as escapes", () => {
  assert.equal(reveal("a\u202Eb\u200Bc\u0000d"), "a⟨U+202E⟩b⟨U+200B⟩c⟨U+0000⟩d");
  assert.equal(reveal("x\ny\tz"), "x⟨U+000A⟩y⟨U+0009⟩z");
  assert.equal(reveal("x\ny\tz\u2066", { multiline: true }), "x\ny\tz⟨U+2066⟩");
  assert.equal(reveal("\uD800"), "⟨U+D800⟩");
  assert.equal(reveal("עברית 中文 😀 👩‍👩‍👧"), "עברית 中文 😀 👩⟨U+200D⟩👩⟨U+200D⟩👧");
});

test("hasInvisible", () => {
  assert.equal(hasInvisible("plain <b>"), false);
  assert.equal(hasInvisible("oh\u200Bwx"), true);
  assert.equal(hasInvisible(null), false);
});

test("truncate counts code points and marks the cut", () => {
  assert.equal(truncate("abcdef", 4), "abc…");
  assert.equal(truncate("abc", 3), "abc");
  assert.equal(truncate("😀😀😀😀", 3), "😀😀…");
  assert.equal(displayText("A".repeat(100000), 10), "AAAAAAAAA…");
});

test("str", () => {
  assert.equal(str(null), "");
  assert.equal(str(undefined), "");
  assert.equal(str(5), "5");
  assert.equal(str({}), "[object Object]");
});

import { test } from "node:test";
import assert from "node:assert/strict";
import { isJsonObject } from "../src/api/files/json-object-check.js";
import { prng } from "./helpers/prng.js";

// What the fast check must agree with: JSON.parse of the bytes' UTF-8 decoding, giving a
// non-null, non-array object.
function parsesToObject(buf: Uint8Array, start = 0, end = buf.length): boolean {
  try {
    const value: unknown = JSON.parse(Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).toString("utf8", start, end));
    return value !== null && typeof value === "object" && !Array.isArray(value);
  } catch {
    return false;
  }
}

function check(bytes: Buffer, expected: boolean, label: string): void {
  assert.equal(parsesToObject(bytes), expected, `JSON.parse disagrees with the table: ${label}`);
  assert.equal(isJsonObject(bytes, 0, bytes.length), expected, label);
  // The same bytes at every alignment inside a larger buffer, fenced by bytes that would
  // complete or spoil them, and as a plain Uint8Array.
  for (let pad = 0; pad < 8; pad++) {
    for (const fence of ['"', "}", "x", "\\"]) {
      const f = Buffer.from(fence.repeat(8));
      const big = Buffer.concat([f.subarray(0, pad), bytes, f]);
      assert.equal(isJsonObject(big, pad, pad + bytes.length), expected, `${label} (at ${pad}, fenced by ${fence})`);
    }
    const plain = new Uint8Array(new ArrayBuffer(pad + bytes.length + (pad % 3)), pad, bytes.length);
    plain.set(bytes);
    assert.equal(isJsonObject(plain, 0, plain.length), expected, `${label} (Uint8Array at ${pad})`);
  }
}

const VALID = [
  "{}",
  " {} ",
  "\t\r\n {\t\r\n}\t\r\n ",
  '{"a":1}',
  '{"":""}',
  '{"a":{"b":{"c":[]}}}',
  '{"a":[1,2,3,{"b":null}]}',
  '{"a":[[],[[]],{}]}',
  '{"a":true,"b":false,"c":null}',
  '{ "a" : [ 1 , 2 ] , "b" : { } }',
  '{"a":1,"a":2}',
  '{"__proto__":{"x":1}}',
  '{"n":0}',
  '{"n":-0}',
  '{"n":-0.0}',
  '{"n":0.5}',
  '{"n":-12.345e-6}',
  '{"n":1E+5}',
  '{"n":1e5}',
  '{"n":1e-0}',
  '{"n":0e0}',
  '{"n":1e999}',
  '{"n":-1e999}',
  '{"n":123456789012345678901234567890}',
  '{"s":"\\"\\\\\\/\\b\\f\\n\\r\\t"}',
  '{"s":"\\u0000\\u00e9\\uD83D\\uDE00\\uDEAD\\uffff\\uABCD"}',
  '{"s":"a\\\\"}',
  '{"s":"\\\\\\""}',
  '{"s":"\\"","t":"\\\\"}',
  '{"s":"é中😀"}',
  '{"s":"\u007f"}',
  '{"s":"\u2028\u2029"}',
  '{"long":"' + "lorem ipsum dolor ".repeat(50) + '"}',
  '{"k":"' + "x".repeat(1000) + '\\n' + "y".repeat(37) + '"}',
];

const INVALID = [
  "",
  " ",
  "\t\r\n",
  "[]",
  "[{}]",
  "null",
  "true",
  "1",
  '"{}"',
  "{",
  "}",
  "{}}",
  "{}{}",
  "{},",
  "{} x",
  "{}\f",
  "\u00a0{}",
  "\ufeff{}",
  "{}\u00a0",
  "{\u00a0}",
  "{,}",
  '{"a"}',
  '{"a":}',
  '{"a":1,}',
  '{"a":1,,"b":2}',
  '{"a" 1}',
  '{"a"::1}',
  '{a:1}',
  "{'a':1}",
  '{1:1}',
  '{null:1}',
  '{"a":[1,]}',
  '{"a":[,1]}',
  '{"a":[1 2]}',
  '{"a":[}',
  '{"a":{]}',
  '{"a":[1}',
  '{"a":{"b":1]}',
  '{"a":01}',
  '{"a":-01}',
  '{"a":00}',
  '{"a":1.}',
  '{"a":.5}',
  '{"a":-}',
  '{"a":-.5}',
  '{"a":+1}',
  '{"a":1e}',
  '{"a":1e+}',
  '{"a":1E-}',
  '{"a":1.e5}',
  '{"a":0x10}',
  '{"a":NaN}',
  '{"a":Infinity}',
  '{"a":-Infinity}',
  '{"a":1_000}',
  '{"a":tru}',
  '{"a":True}',
  '{"a":nul}',
  '{"a":fals}',
  '{"a":falsy}',
  '{"a":truex}',
  '{"a":undefined}',
  '{"a":"b}',
  '{"a":"b\\"}',
  '{"a":"\\x41"}',
  '{"a":"\\a"}',
  '{"a":"\\v"}',
  '{"a":"\\0"}',
  '{"a":"\\e"}',
  '{"a":"\\ "}',
  '{"a":"\\\n"}',
  '{"a":"\\\'"}',
  '{"a":"\\u12"}',
  '{"a":"\\u12g4"}',
  '{"a":"\\u"}',
  '{"a":"\\U0041"}',
  '{"a":"\\u{41}"}',
  '{"a":"tab\there"}',
  '{"a":"nl\nhere"}',
  '{"a":"cr\rhere"}',
  '{"a":"nul\u0000here"}',
  '{"a":"\u001f"}',
  '{"a\n":1}',
  '{"a":"b"/*c*/}',
  '{"a":"b"}//',
  '{"a":é}',
  '{"' + "x".repeat(1000) + "\u0001" + '":1}',
  '{"' + "x".repeat(1000),
  "{\u0000}",
  "{}\u0000",
  "\u0000{}",
  "{\u000b}",
];

test("valid objects are accepted", () => {
  for (const text of VALID) check(Buffer.from(text), true, JSON.stringify(text));
});

test("everything else is refused", () => {
  for (const text of INVALID) check(Buffer.from(text), false, JSON.stringify(text));
});

test("bytes that are not UTF-8 pass inside strings and fail outside them", () => {
  const cases: [number[], boolean][] = [
    [[0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d], true], // {"a":"\xff"}
    [[0x7b, 0x22, 0xc3, 0x22, 0x3a, 0x31, 0x7d], true], // {"\xc3":1}: a cut sequence, then the quote
    [[0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xe4, 0xb8, 0x22, 0x7d], true], // {"a":"\xe4\xb8"}
    [[0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xed, 0xa0, 0x80, 0x22, 0x7d], true], // an encoded surrogate
    [[0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xc0, 0x80, 0x22, 0x7d], true], // an overlong NUL
    [[0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0x5c, 0xc3, 0xa9, 0x22, 0x7d], false], // {"a":"\é"}
    [[0x7b, 0xff, 0x7d], false],
    [[0xff, 0x7b, 0x7d], false],
    [[0x7b, 0x7d, 0xff], false],
    [[0x7b, 0x7d, 0xc2, 0xa0], false],
    [[0x7b, 0x22, 0x61, 0x22, 0x3a, 0x31, 0xc3, 0xa9, 0x7d], false],
  ];
  for (const [bytes, expected] of cases) check(Buffer.from(bytes), expected, Buffer.from(bytes).toString("hex"));
});

test("nesting 100k deep is checked without overflowing the stack", () => {
  const depth = 100_000;
  const deep = Buffer.from('{"a":' + "[".repeat(depth) + "]".repeat(depth) + "}");
  assert.equal(isJsonObject(deep, 0, deep.length), true);
  const objects = Buffer.from('{"a":'.repeat(depth) + "1" + "}".repeat(depth));
  assert.equal(isJsonObject(objects, 0, objects.length), true);
  const mixed = Buffer.from('{"a":' + '[{"b":'.repeat(depth) + "null" + "}]".repeat(depth) + "}");
  assert.equal(isJsonObject(mixed, 0, mixed.length), true);
  const unclosed = Buffer.from('{"a":' + "[".repeat(depth) + "]".repeat(depth - 1) + "}");
  assert.equal(isJsonObject(unclosed, 0, unclosed.length), false);
  const crossed = Buffer.from('{"a":' + "[".repeat(depth) + "]".repeat(depth - 1) + "}]");
  assert.equal(isJsonObject(crossed, 0, crossed.length), false);
  const extra = Buffer.from('{"a":' + "[".repeat(depth) + "]".repeat(depth + 1) + "}");
  assert.equal(isJsonObject(extra, 0, extra.length), false);
  const arrays = Buffer.from("[".repeat(depth) + "]".repeat(depth));
  assert.equal(isJsonObject(arrays, 0, arrays.length), false);
});

const CHARS = ["a", "b", "Z", " ", "0", "é", "中", "😀", "\u2028", "\u007f", '"', "\\", "/", "\n", "\t", "\u0001", "\u001f", "\ud800", "\udc00", "{", "}", "[", "]", ":", ","];
const NUMBERS = ["0", "-0", "-0.0", "1", "-1", "12", "3.25", "-0.5e-3", "1e5", "1E+21", "2e-7", "9007199254740993", "1.5E308", "1e999", "0.000001"];
const MUTATION_BYTES = Buffer.from('{}[]",:\\ 0123456789eE+-.tfnu\u0000\u0001\t\n\r\u001f\u007f', "latin1");
const HIGH_BYTES = [0x80, 0xa0, 0xbf, 0xc3, 0xe2, 0xed, 0xf0, 0xff];

test("agrees with JSON.parse on 200k random, mutated lines", () => {
  const rnd = prng(20240611);
  const int = (n: number): number => Math.floor(rnd() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const ws = (): string => (rnd() < 0.8 ? "" : pick([" ", "\t", "\r\n", "  ", "\n"]));

  function str(): string {
    let s = "";
    const n = rnd() < 0.05 ? int(200) : int(12);
    for (let k = 0; k < n; k++) s += pick(CHARS);
    let out = JSON.stringify(s);
    // Escapes JSON.stringify never writes.
    if (rnd() < 0.2) out = out.slice(0, -1) + pick(["\\/", "\\u00e9", "\\uD83D\\uDE00", "\\b", "\\f", "\\uABCD", "\\u0022"]) + '"';
    return out;
  }

  function value(depth: number): string {
    const r = rnd();
    if (depth < 5 && r < 0.25) {
      const n = int(5);
      const parts: string[] = [];
      for (let k = 0; k < n; k++) parts.push(ws() + str() + ws() + ":" + ws() + value(depth + 1) + ws());
      return "{" + parts.join(",") + ws() + "}";
    }
    if (depth < 5 && r < 0.45) {
      const n = int(5);
      const parts: string[] = [];
      for (let k = 0; k < n; k++) parts.push(ws() + value(depth + 1) + ws());
      return "[" + parts.join(",") + ws() + "]";
    }
    if (r < 0.65) return str();
    if (r < 0.8) return rnd() < 0.5 ? pick(NUMBERS) : JSON.stringify((rnd() - 0.5) * 10 ** int(30));
    return pick(["true", "false", "null"]);
  }

  function topLevel(): string {
    if (rnd() < 0.1) return value(0);
    const n = int(6);
    const parts: string[] = [];
    for (let k = 0; k < n; k++) parts.push(ws() + str() + ws() + ":" + ws() + value(1) + ws());
    return ws() + "{" + parts.join(",") + ws() + "}" + ws();
  }

  function mutate(bytes: Buffer): Buffer {
    const kind = int(5);
    const at = int(bytes.length + 1);
    const b = Buffer.of(rnd() < 0.85 ? MUTATION_BYTES[int(MUTATION_BYTES.length)]! : pick(HIGH_BYTES));
    const before = bytes.subarray(0, at);
    if (kind === 0) return Buffer.concat([before, bytes.subarray(at + 1)]);
    if (kind === 1) return Buffer.concat([before, b, bytes.subarray(at)]);
    if (kind === 2) return Buffer.concat([before, b, bytes.subarray(at + 1)]);
    if (kind === 3) return before;
    const from = int(bytes.length);
    return Buffer.concat([before, bytes.subarray(from, from + int(8)), bytes.subarray(at)]);
  }

  // JSON.parse throws on most cases: keep its errors cheap.
  const stackTraceLimit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  let accepted = 0;
  let refused = 0;
  const cases = 200_000;
  try {
    for (let n = 0; n < cases; n++) {
      let bytes: Buffer = Buffer.from(topLevel());
      const mutations = rnd() < 0.3 ? 0 : 1 + int(3);
      for (let k = 0; k < mutations; k++) bytes = mutate(bytes);
      // Lay the line at a random offset of a larger buffer, amid random bytes: a slice of
      // Node's pool, or all of an ArrayBuffer of its own, which may end short of a word.
      const pad = int(8);
      const size = pad + bytes.length + int(8);
      const big = rnd() < 0.25 ? Buffer.from(new ArrayBuffer(size)) : Buffer.allocUnsafe(size);
      for (let k = 0; k < pad; k++) big[k] = MUTATION_BYTES[int(MUTATION_BYTES.length)]!;
      bytes.copy(big, pad);
      for (let k = pad + bytes.length; k < big.length; k++) big[k] = MUTATION_BYTES[int(MUTATION_BYTES.length)]!;
      const expected = parsesToObject(big, pad, pad + bytes.length);
      const got = isJsonObject(big, pad, pad + bytes.length);
      if (got !== expected) {
        assert.fail(`case ${n}: isJsonObject says ${got}, JSON.parse says ${expected}, for ${JSON.stringify(bytes.toString("latin1"))}`);
      }
      if (expected) accepted++;
      else refused++;
    }
  } finally {
    Error.stackTraceLimit = stackTraceLimit;
  }
  // Both answers were well exercised.
  assert.ok(accepted > cases / 5 && refused > cases / 5, `accepted ${accepted}, refused ${refused}`);
});

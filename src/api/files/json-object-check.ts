// A byte-level check that a range of bytes is exactly one JSON object, as JSON.parse of the
// bytes' UTF-8 decoding would find it: no values are built, nothing is decoded. It exists
// because JSON.parse is the largest CPU cost of checking an upload line by line.
//
// Bytes of 0x80 and above are accepted inside strings and rejected outside them: malformed
// UTF-8 decodes to U+FFFD, which JSON.parse takes inside a string and refuses elsewhere, and
// the decoder never swallows an ASCII byte into a malformed sequence, so the structure seen
// here is the structure JSON.parse sees. Nesting is tracked with an explicit stack, so any
// depth is checked without recursion.

const TAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;
const SPACE = 0x20;
const QUOTE = 0x22;
const COMMA = 0x2c;
const MINUS = 0x2d;
const PLUS = 0x2b;
const DOT = 0x2e;
const ZERO = 0x30;
const NINE = 0x39;
const COLON = 0x3a;
const LBRACKET = 0x5b;
const BACKSLASH = 0x5c;
const RBRACKET = 0x5d;
const LBRACE = 0x7b;
const RBRACE = 0x7d;
const LOWER_E = 0x65;

// For each byte after a backslash: 1 for a one-character escape, 2 for \u, 0 for none.
const ESCAPE = new Uint8Array(256);
for (const c of '"\\/bfnrt') ESCAPE[c.charCodeAt(0)] = 1;
ESCAPE["u".charCodeAt(0)] = 2;

// 1 for the bytes of a hexadecimal digit.
const HEX = new Uint8Array(256);
for (const c of "0123456789abcdefABCDEF") HEX[c.charCodeAt(0)] = 1;

// The kind of each open container, one byte per level. The check is synchronous and never
// re-entered, so one stack serves every call; a call that nests deeper grows a copy of its
// own, so that the memory of one deep line is not held after it.
const IN_OBJECT = 1;
const IN_ARRAY = 2;
const SHARED_STACK = new Uint8Array(1024);

function isWs(c: number): boolean {
  return c === SPACE || c === LF || c === CR || c === TAB;
}

function skipWs(buf: Uint8Array, i: number, end: number): number {
  while (i < end && isWs(buf[i]!)) i++;
  return i;
}

// 1 for the bytes that end a plain run inside a string: the quote, the backslash and the
// control characters, which a string may not hold raw.
const STRING_STOP = new Uint8Array(256);
for (let c = 0; c < SPACE; c++) STRING_STOP[c] = 1;
STRING_STOP[QUOTE] = 1;
STRING_STOP[BACKSLASH] = 1;

// Strings are scanned four bytes at a time through an Int32Array over the bytes' whole
// ArrayBuffer. The view is kept for the next call (lines are mostly cut from the same
// chunk) but only weakly, so that it never keeps a large buffer alive. An ArrayBuffer of
// 2 GiB or more gets no words (the index arithmetic below is 32-bit) and is scanned
// bytewise.
let cachedWords: WeakRef<Int32Array> | undefined;
const NO_WORDS = new Int32Array(0);
const MAX_WORDS_BYTES = 0x7fffff00;

function wordsOf(buffer: ArrayBufferLike): Int32Array {
  if (buffer.byteLength > MAX_WORDS_BYTES) return NO_WORDS;
  let words = cachedWords?.deref();
  if (words === undefined || words.buffer !== buffer) {
    words = new Int32Array(buffer, 0, buffer.byteLength >>> 2);
    cachedWords = new WeakRef(words);
  }
  return words;
}

// Whether a word read from an Int32Array holds its lowest-addressed byte in its low bits.
const LITTLE_ENDIAN = new Uint8Array(new Int32Array([1]).buffer)[0] === 1;

// Per byte offset k of a position in its word: the top bits of the k bytes before it, which
// the search below treats as plain.
const BEFORE = new Int32Array([0, 0x80, 0x8080, 0x808080]);

// The index of the first stop byte at or after i, or an index at or past end where there
// is none before end. words views buf's ArrayBuffer, and off is buf's offset in it.
function findStop(buf: Uint8Array, i: number, end: number, words: Int32Array, off: number): number {
  if (LITTLE_ENDIAN) {
    // A word at a time. Per byte x of a word, with m = x & 0x7f: m + 0x60 < 0x80 iff
    // m < 0x20, (m ^ 0x22) + 0x7f < 0x80 iff m == 0x22, (m ^ 0x5c) + 0x7f < 0x80 iff
    // m == 0x5c, and no sum carries into the next byte. So a byte is a stop byte iff its
    // top bit is clear in x and in all three sums, and `plain` has the top bit of each
    // byte set iff that byte is not a stop byte.
    let j = (off + i) >> 2;
    const last = Math.min(words.length, (off + end + 3) >> 2);
    if (j < last) {
      let w = words[j]!;
      let m = w & 0x7f7f7f7f;
      let plain = ((m + 0x60606060) & ((m ^ 0x22222222) + 0x7f7f7f7f) & ((m ^ 0x5c5c5c5c) + 0x7f7f7f7f)) | w | BEFORE[(off + i) & 3]!;
      if ((plain & 0x80808080) === (0x80808080 | 0)) {
        // Two words a turn while both are plain, then the one that stops the run.
        j++;
        while (j + 1 < last) {
          const v = words[j]!;
          const u = words[j + 1]!;
          const n = v & 0x7f7f7f7f;
          const k = u & 0x7f7f7f7f;
          const vPlain = ((n + 0x60606060) & ((n ^ 0x22222222) + 0x7f7f7f7f) & ((n ^ 0x5c5c5c5c) + 0x7f7f7f7f)) | v;
          const uPlain = ((k + 0x60606060) & ((k ^ 0x22222222) + 0x7f7f7f7f) & ((k ^ 0x5c5c5c5c) + 0x7f7f7f7f)) | u;
          if ((vPlain & uPlain & 0x80808080) !== (0x80808080 | 0)) break;
          j += 2;
        }
        for (; j < last; j++) {
          w = words[j]!;
          m = w & 0x7f7f7f7f;
          plain = ((m + 0x60606060) & ((m ^ 0x22222222) + 0x7f7f7f7f) & ((m ^ 0x5c5c5c5c) + 0x7f7f7f7f)) | w;
          if ((plain & 0x80808080) !== (0x80808080 | 0)) break;
        }
      }
      if (j < last) {
        const stops = ~plain & 0x80808080;
        return j * 4 - off + ((31 - Math.clz32(stops & -stops)) >> 3);
      }
      // Past end, or into the last bytes of the ArrayBuffer, short of a whole word.
      i = j * 4 - off;
    }
  }
  while (i < end && STRING_STOP[buf[i]!] === 0) i++;
  return i;
}

// Given i just past an opening quote, the index just past the closing quote, or -1 where
// the string is malformed or runs past end.
function scanString(buf: Uint8Array, i: number, end: number, words: Int32Array, off: number): number {
  for (;;) {
    i = findStop(buf, i, end, words, off);
    if (i >= end) return -1;
    const c = buf[i]!;
    if (c === QUOTE) return i + 1;
    if (c !== BACKSLASH) return -1;
    if (i + 1 >= end) return -1;
    const kind = ESCAPE[buf[i + 1]!]!;
    if (kind === 1) {
      i += 2;
    } else if (kind === 2) {
      if (i + 6 > end) return -1;
      if ((HEX[buf[i + 2]!]! & HEX[buf[i + 3]!]! & HEX[buf[i + 4]!]! & HEX[buf[i + 5]!]!) === 0) return -1;
      i += 6;
    } else {
      return -1;
    }
  }
}

// Given i at the first byte of a number, the index just past it, or -1.
function scanNumber(buf: Uint8Array, i: number, end: number): number {
  if (buf[i] === MINUS) i++;
  if (i >= end) return -1;
  let c = buf[i]!;
  if (c === ZERO) {
    i++;
  } else if (c > ZERO && c <= NINE) {
    i++;
    while (i < end && (c = buf[i]!) >= ZERO && c <= NINE) i++;
  } else {
    return -1;
  }
  if (i < end && buf[i] === DOT) {
    i++;
    const first = i;
    while (i < end && (c = buf[i]!) >= ZERO && c <= NINE) i++;
    if (i === first) return -1;
  }
  if (i < end && (buf[i]! | 0x20) === LOWER_E) {
    i++;
    if (i < end && ((c = buf[i]!) === PLUS || c === MINUS)) i++;
    const first = i;
    while (i < end && (c = buf[i]!) >= ZERO && c <= NINE) i++;
    if (i === first) return -1;
  }
  return i;
}

// Whether bytes [i, i + 4) are the four bytes of `word`, given as one big-endian integer.
function matches4(buf: Uint8Array, i: number, end: number, word: number): boolean {
  return i + 4 <= end && ((buf[i]! << 24) | (buf[i + 1]! << 16) | (buf[i + 2]! << 8) | buf[i + 3]!) === word;
}

const TRUE = 0x74727565; // "true"
const NULL = 0x6e756c6c; // "null"
const ALSE = 0x616c7365; // "alse", after the f of "false"

/**
 * Whether bytes [start, end) of buf are exactly one JSON object (RFC 8259, as JSON.parse
 * reads the bytes' UTF-8 decoding), with JSON whitespace allowed around it.
 */
export function isJsonObject(buf: Uint8Array, start: number, end: number): boolean {
  if (end > buf.length) end = buf.length;
  if (start < 0) start = 0;
  const words = wordsOf(buf.buffer);
  const off = buf.byteOffset;
  let i = skipWs(buf, start, end);
  if (i >= end || buf[i] !== LBRACE) return false;
  let stack = SHARED_STACK;
  let depth = 0;

  for (;;) {
    // A value is expected at i, whitespace already skipped.
    if (i >= end) return false;
    const c = buf[i]!;
    if (c === QUOTE) {
      i = scanString(buf, i + 1, end, words, off);
      if (i < 0) return false;
    } else if (c === LBRACE || c === LBRACKET) {
      if (depth === stack.length) {
        const grown = new Uint8Array(stack.length * 2);
        grown.set(stack);
        stack = grown;
      }
      i = skipWs(buf, i + 1, end);
      if (c === LBRACE) {
        if (i < end && buf[i] === RBRACE) {
          i++;
        } else {
          stack[depth++] = IN_OBJECT;
          // The first key, its colon, then on to its value.
          if (i >= end || buf[i] !== QUOTE) return false;
          i = scanString(buf, i + 1, end, words, off);
          if (i < 0) return false;
          i = skipWs(buf, i, end);
          if (i >= end || buf[i] !== COLON) return false;
          i = skipWs(buf, i + 1, end);
          continue;
        }
      } else if (i < end && buf[i] === RBRACKET) {
        i++;
      } else {
        stack[depth++] = IN_ARRAY;
        continue;
      }
    } else if (c === MINUS || (c >= ZERO && c <= NINE)) {
      i = scanNumber(buf, i, end);
      if (i < 0) return false;
    } else if (c === 0x74) {
      if (!matches4(buf, i, end, TRUE)) return false;
      i += 4;
    } else if (c === 0x6e) {
      if (!matches4(buf, i, end, NULL)) return false;
      i += 4;
    } else if (c === 0x66) {
      if (!matches4(buf, i + 1, end, ALSE)) return false;
      i += 5;
    } else {
      return false;
    }

    // A value ended at i: close containers, or find the comma before the next value.
    for (;;) {
      i = skipWs(buf, i, end);
      if (depth === 0) return i === end;
      if (i >= end) return false;
      const d = buf[i]!;
      const kind = stack[depth - 1];
      if (d === COMMA) {
        i = skipWs(buf, i + 1, end);
        if (kind === IN_OBJECT) {
          if (i >= end || buf[i] !== QUOTE) return false;
          i = scanString(buf, i + 1, end, words, off);
          if (i < 0) return false;
          i = skipWs(buf, i, end);
          if (i >= end || buf[i] !== COLON) return false;
          i = skipWs(buf, i + 1, end);
        }
        break;
      }
      if ((d === RBRACE && kind === IN_OBJECT) || (d === RBRACKET && kind === IN_ARRAY)) {
        depth--;
        i++;
        continue;
      }
      return false;
    }
  }
}

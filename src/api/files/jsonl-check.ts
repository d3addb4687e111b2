// Checks, while the bytes stream past, that every line is a JSON object: the rule OpenAI
// applies to fine-tune uploads. It only looks; the bytes go on unchanged.
import { Transform, type TransformCallback } from "node:stream";
import { isJsonObject } from "./json-object-check.js";

// A longer line is held no further: it is reported instead of buffered without bound.
const MAX_LINE_BYTES = 64 * 1024 * 1024;
const NEWLINE = 0x0a;

export interface JsonlProblem {
  readonly line: number;
  readonly reason: string;
}

export class JsonlCheck extends Transform {
  problem: JsonlProblem | undefined;
  lines = 0;
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.problem === undefined) this.scan(chunk);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    if (this.problem === undefined && this.pendingBytes > 0) this.checkLine(Buffer.concat(this.pending), true);
    this.pending = [];
    cb();
  }

  private scan(chunk: Buffer): void {
    let start = 0;
    let nl = chunk.indexOf(NEWLINE, start);
    while (nl !== -1 && this.problem === undefined) {
      const piece = chunk.subarray(start, nl);
      const line = this.pendingBytes > 0 ? Buffer.concat([...this.pending, piece]) : piece;
      this.pending = [];
      this.pendingBytes = 0;
      this.checkLine(line, false);
      start = nl + 1;
      nl = chunk.indexOf(NEWLINE, start);
    }
    if (this.problem !== undefined || start >= chunk.length) return;
    this.pendingBytes += chunk.length - start;
    if (this.pendingBytes > MAX_LINE_BYTES) {
      this.problem = { line: this.lines + 1, reason: `is longer than ${MAX_LINE_BYTES} bytes` };
      this.pending = [];
      return;
    }
    // Copy: the chunk's memory is reused by the producer.
    this.pending.push(Buffer.from(chunk.subarray(start)));
  }

  private checkLine(line: Buffer, last: boolean): void {
    this.lines++;
    let end = line.length;
    if (end > 0 && line[end - 1] === 0x0d) end--;
    // The fast byte-level check passes the lines JSON.parse would; on any it refuses,
    // JSON.parse decides, and words the problem.
    if (isJsonObject(line, 0, end)) return;
    const text = line.toString("utf8", 0, end);
    if (text.trim() === "") {
      // A last line with nothing on it is just the file's closing newline.
      if (!last) this.problem = { line: this.lines, reason: "is empty" };
      return;
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      this.problem = { line: this.lines, reason: `is not valid JSON (${(err as Error).message})` };
      return;
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      this.problem = { line: this.lines, reason: "is not a JSON dictionary" };
    }
  }
}

// Blob storage for uploaded files, checkpoints and adapters. Two implementations share one
// contract: an object becomes visible only once its whole stream is written, so a crash
// mid-write leaves nothing at the key (only a partial that discard() removes).
import { createHash } from "node:crypto";
import { Transform, type Readable, type TransformCallback } from "node:stream";

export interface BlobWriteResult {
  readonly bytes: number;
  readonly sha256: string;
}

export class BlobNotFoundError extends Error {
  constructor(readonly key: string) {
    super(`blob not found: ${key}`);
  }
}

export interface BlobStore {
  readonly kind: "fs" | "s3";
  init(): Promise<void>;
  /** Streams body to key; visible only when complete. Rejects (leaving nothing) on a body error. */
  put(key: string, body: Readable): Promise<BlobWriteResult>;
  /** A stream of the object's bytes; rejects with BlobNotFoundError if absent. */
  get(key: string): Promise<Readable>;
  exists(key: string): Promise<boolean>;
  /** Removes the object, idempotently. */
  delete(key: string): Promise<void>;
  /** Removes what a dead writer of key left behind: its partial data and the object itself. */
  discard(key: string): Promise<void>;
}

/** Counts and hashes the bytes that pass through it. */
export class Digest extends Transform {
  bytes = 0;
  private readonly hash = createHash("sha256");

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    this.hash.update(chunk);
    cb(null, chunk);
  }

  result(): BlobWriteResult {
    return { bytes: this.bytes, sha256: this.hash.digest("hex") };
  }
}

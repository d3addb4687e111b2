// The embedded default: a folder. Writes go to .partial/ and are renamed into place after
// fsync, so a reader never sees a half-written object.
import { createWriteStream } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import type { Readable } from "node:stream";
import { BlobNotFoundError, Digest, type BlobStore, type BlobWriteResult } from "./blob-store.js";

const SAFE_KEY = /^[A-Za-z0-9][A-Za-z0-9._\-/]*$/;

export class FsBlobStore implements BlobStore {
  readonly kind = "fs" as const;
  private readonly partialDir: string;

  constructor(private readonly root: string) {
    this.partialDir = path.join(root, ".partial");
  }

  async init(): Promise<void> {
    await fs.mkdir(this.partialDir, { recursive: true });
  }

  private objectPath(key: string): string {
    if (!SAFE_KEY.test(key) || key.includes("..")) throw new Error(`unsafe blob key: ${key}`);
    return path.join(this.root, key);
  }

  private partialPath(key: string): string {
    return path.join(this.partialDir, encodeURIComponent(key));
  }

  async put(key: string, body: Readable): Promise<BlobWriteResult> {
    const final = this.objectPath(key);
    const partial = this.partialPath(key);
    const digest = new Digest();
    const out = createWriteStream(partial, { flags: "w", highWaterMark: 1 << 20 });
    try {
      await pipeline(body, digest, out);
      const fh = await fs.open(partial, "r");
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fs.mkdir(path.dirname(final), { recursive: true });
      await fs.rename(partial, final);
    } catch (err) {
      await fs.rm(partial, { force: true });
      throw err;
    }
    return digest.result();
  }

  async get(key: string): Promise<Readable> {
    const p = this.objectPath(key);
    try {
      // Opened first so that a missing blob is an error here, not on the stream later.
      const fh = await fs.open(p, "r");
      return fh.createReadStream({ highWaterMark: 1 << 20, autoClose: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new BlobNotFoundError(key);
      throw err;
    }
  }

  async exists(key: string): Promise<boolean> {
    try {
      await fs.access(this.objectPath(key));
      return true;
    } catch {
      return false;
    }
  }

  async delete(key: string): Promise<void> {
    await fs.rm(this.objectPath(key), { force: true });
  }

  async discard(key: string): Promise<void> {
    await fs.rm(this.partialPath(key), { force: true });
    await this.delete(key);
  }
}

// Fine-tunes' adapters unpacked from the blob store into a local (or shared) folder, for an engine
// to load: downloaded once, each folder appearing whole or not at all (written beside, renamed).
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { sha256Hex } from "../../ids.js";
import type { BlobStore } from "../../storage/blob-store.js";
import type { AdapterRef } from "./index.js";

// ft: names are ft:BASE:PROJECT:SUFFIX:ID[:ckpt-step-N]; anything else is hashed.
const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9:._-]*$/;

/** "id": the folder is named by the model id (what vLLM's filesystem resolver looks up);
 *  "hash": by a hash of it (the in-process engine's private cache). */
export type FolderNaming = "id" | "hash";

export class AdapterCache {
  private readonly unpacking = new Map<string, Promise<string>>();

  constructor(
    private readonly blobs: BlobStore,
    readonly root: string,
    private readonly naming: FolderNaming,
  ) {}

  folder(id: string): string {
    const name = this.naming === "id" && SAFE_ID.test(id) && !id.includes("..") ? id : sha256Hex(id).slice(0, 32);
    return path.join(this.root, name);
  }

  /** The adapter's folder, downloaded first if it is not there yet. */
  unpack(ref: AdapterRef): Promise<string> {
    let entry = this.unpacking.get(ref.id);
    if (!entry) {
      entry = this.download(ref);
      this.unpacking.set(ref.id, entry);
      entry.finally(() => this.unpacking.delete(ref.id)).catch(() => undefined);
    }
    return entry;
  }

  async remove(id: string): Promise<void> {
    await fs.rm(this.folder(id), { recursive: true, force: true });
  }

  private async download(ref: AdapterRef): Promise<string> {
    const dir = this.folder(ref.id);
    if (await fs.stat(dir).then(() => true, () => false)) return dir;
    const tmp = path.join(this.root, `.tmp-${randomBytes(6).toString("hex")}`);
    await fs.mkdir(tmp, { recursive: true });
    try {
      for (const name of ref.files) {
        const body = await this.blobs.get(ref.blobPrefix + name);
        const out = await fs.open(path.join(tmp, name), "w");
        try {
          for await (const chunk of body) await out.write(chunk as Buffer);
          await out.sync();
        } finally {
          await out.close();
        }
      }
      await fs.rename(tmp, dir).catch(async (err: NodeJS.ErrnoException) => {
        // Another request (or process) unpacked it first: theirs is as good as ours.
        if (err.code !== "ENOTEMPTY" && err.code !== "EEXIST") throw err;
      });
      return dir;
    } finally {
      await fs.rm(tmp, { recursive: true, force: true });
    }
  }
}

import path from "node:path";
import type { Config } from "../config.js";
import type { BlobStore } from "./blob-store.js";
import { FsBlobStore } from "./fs-blob-store.js";
import { S3BlobStore } from "./s3-blob-store.js";

export * from "./blob-store.js";
export * from "./db.js";

export function createBlobStore(config: Config): BlobStore {
  return config.s3 ? new S3BlobStore(config.s3) : new FsBlobStore(path.join(config.dataDir, "blobs"));
}
export * from "./data-dir-lock.js";

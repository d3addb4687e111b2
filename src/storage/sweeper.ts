// Removes what nobody will come back for: uploads whose server died (their lease lapsed) and
// files past their expires_at. Runs at start-up and then periodically; safe on every replica.
import type { Logger } from "pino";
import { nowSeconds } from "../ids.js";
import type { BlobStore } from "./blob-store.js";
import type { Db } from "./db.js";
import { endUpload, listLapsedUploads, takeExpiredFiles } from "./repos/files.js";

export async function sweepOnce(db: Db, blobs: BlobStore, log: Logger): Promise<{ uploads: number; files: number }> {
  let uploads = 0;
  for (const up of await listLapsedUploads(db, Date.now())) {
    // Blob first: if we die between the two, the row is still there to try again.
    await blobs.discard(up.blobKey);
    await endUpload(db, up.id);
    uploads++;
  }
  const expired = await takeExpiredFiles(db, nowSeconds());
  for (const f of expired) await blobs.delete(f.blobKey);
  if (uploads + expired.length > 0) log.info({ uploads, files: expired.length }, "swept abandoned uploads and expired files");
  return { uploads, files: expired.length };
}

export function startSweeper(db: Db, blobs: BlobStore, log: Logger, everyMs: number): () => Promise<void> {
  let running: Promise<unknown> = Promise.resolve();
  const tick = () => {
    running = sweepOnce(db, blobs, log).catch((err: unknown) => log.warn({ err }, "sweep failed"));
  };
  tick();
  const timer = setInterval(tick, everyMs);
  timer.unref();
  return async () => {
    clearInterval(timer);
    await running;
  };
}

// Removes what nobody will come back for: uploads whose server died (their lease lapsed),
// files past their expires_at, and the Uploads API's expired uploads and dead parts. Runs at
// start-up and then periodically; safe on every replica.
import type { Logger } from "pino";
import { nowSeconds } from "../ids.js";
import type { BlobStore } from "./blob-store.js";
import type { Db } from "./db.js";
import { endUpload, listLapsedUploads, takeExpiredFiles } from "./repos/files.js";
import * as uploadsRepo from "./repos/uploads.js";

/**
 * The Uploads API's leftovers: completes whose server died (undone: the half-written file blob
 * discarded, then the row back to pending), pending uploads past their hour (expired), and the
 * part blobs of every upload that has ended.
 */
async function sweepUploads(db: Db, blobs: BlobStore): Promise<number> {
  let n = 0;
  for (const up of await uploadsRepo.listLapsedCompletes(db, Date.now())) {
    // Blob first, then row: a lapsed lease is never renewed, so the dead attempt cannot commit,
    // and a new complete (same file id, same key) can start only once the row is pending.
    if (up.fileId) await blobs.discard(`files/${up.fileId}`);
    if (await uploadsRepo.undoComplete(db, up.id, up.completeLeaseExpiresAt!)) n++;
  }
  n += (await uploadsRepo.expireUploads(db, nowSeconds())).length;
  for (const part of await uploadsRepo.listDeadParts(db)) {
    await blobs.discard(part.blobKey);
    await uploadsRepo.deletePart(db, part.id);
    n++;
  }
  for (const { id, fileId } of await uploadsRepo.listOrphanFileIds(db)) {
    await blobs.discard(`files/${fileId}`);
    await uploadsRepo.clearFileId(db, id);
  }
  return n;
}

export async function sweepOnce(db: Db, blobs: BlobStore, log: Logger): Promise<{ uploads: number; files: number; uploadsApi: number }> {
  let uploads = 0;
  for (const up of await listLapsedUploads(db, Date.now())) {
    // Blob first: if we die between the two, the row is still there to try again.
    await blobs.discard(up.blobKey);
    await endUpload(db, up.id);
    uploads++;
  }
  const expired = await takeExpiredFiles(db, nowSeconds());
  for (const f of expired) await blobs.delete(f.blobKey);
  const uploadsApi = await sweepUploads(db, blobs);
  if (uploads + expired.length + uploadsApi > 0) {
    log.info({ uploads, files: expired.length, uploadsApi }, "swept abandoned uploads and expired files");
  }
  return { uploads, files: expired.length, uploadsApi };
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

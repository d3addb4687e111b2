// Uploads (the Uploads API) and their parts. Every status change is one guarded UPDATE, and
// the File row is inserted in the same transaction that marks its upload completed.
import { and, asc, eq, gte, inArray, isNotNull, lt, sql } from "drizzle-orm";
import type { Db } from "../db.js";
import { files, uploadParts, uploads } from "../schema.js";
import type { FileRow, NewFile } from "./files.js";

export type UploadRow = typeof uploads.$inferSelect;
export type NewUpload = typeof uploads.$inferInsert;
export type PartRow = typeof uploadParts.$inferSelect;

export async function insertUpload(db: Db, row: NewUpload): Promise<UploadRow> {
  const [out] = await db.insert(uploads).values(row).returning();
  return out!;
}

export async function getUpload(db: Db, projectId: string, id: string): Promise<UploadRow | undefined> {
  const [row] = await db
    .select()
    .from(uploads)
    .where(and(eq(uploads.id, id), eq(uploads.projectId, projectId)));
  return row;
}

export async function getFileOf(db: Db, upload: UploadRow): Promise<FileRow | undefined> {
  if (upload.status !== "completed" || upload.fileId === null) return undefined;
  const [row] = await db.select().from(files).where(eq(files.id, upload.fileId));
  return row;
}

/**
 * Records a part before its bytes arrive, only while the upload is pending and unexpired (one
 * INSERT ... SELECT, so it cannot slip in after a cancel or the expiry sweep).
 */
export async function beginPart(db: Db, uploadId: string, part: { id: string; blobKey: string; createdAt: number }): Promise<boolean> {
  const result = await db.execute(sql`
    insert into ${uploadParts} (id, upload_id, blob_key, created_at)
    select ${part.id}, ${uploadId}, ${part.blobKey}, ${part.createdAt}
    from ${uploads}
    where ${uploads.id} = ${uploadId} and ${uploads.status} = 'pending' and ${uploads.expiresAt} > ${part.createdAt}
    returning id`);
  return (result as unknown as { rows: unknown[] }).rows.length === 1;
}

/** Marks a part received; false when the part row was swept meanwhile (its blob is the caller's to drop). */
export async function endPart(db: Db, partId: string, bytes: number): Promise<boolean> {
  const rows = await db.update(uploadParts).set({ bytes }).where(eq(uploadParts.id, partId)).returning({ id: uploadParts.id });
  return rows.length === 1;
}

export async function deletePart(db: Db, partId: string): Promise<void> {
  await db.delete(uploadParts).where(eq(uploadParts.id, partId));
}

export async function listParts(db: Db, uploadId: string): Promise<PartRow[]> {
  return db.select().from(uploadParts).where(eq(uploadParts.uploadId, uploadId)).orderBy(asc(uploadParts.createdAt));
}

/** Bytes of the parts received so far (a part still streaming counts as nothing yet). */
export async function receivedBytes(db: Db, uploadId: string): Promise<number> {
  const [row] = await db
    .select({ n: sql<string>`coalesce(sum(${uploadParts.bytes}), 0)` })
    .from(uploadParts)
    .where(eq(uploadParts.uploadId, uploadId));
  return Number(row?.n ?? 0);
}

/** pending → completing under a lease; the file id is chosen once and kept across retries. */
export async function beginComplete(db: Db, id: string, fileId: string, leaseExpiresAt: number, nowSec: number): Promise<UploadRow | undefined> {
  const [row] = await db
    .update(uploads)
    .set({ status: "completing", fileId: sql`coalesce(${uploads.fileId}, ${fileId})`, completeLeaseExpiresAt: leaseExpiresAt })
    .where(and(eq(uploads.id, id), eq(uploads.status, "pending"), sql`${uploads.expiresAt} > ${nowSec}`))
    .returning();
  return row;
}

// A complete's lease value is also its attempt's token: renew, finish and undo compare it, and
// a lease that has lapsed is never renewed. So once the sweeper has seen a lapsed lease, nothing
// of that attempt can commit a File or move the upload, and the sweeper discards the attempt's
// blob before putting the upload back to pending; a later complete (same file id, same blob key)
// can then never have its blob discarded under it.

/** Extends a live lease held by `lease`; the new lease, or undefined when it was lost. */
export async function renewComplete(db: Db, id: string, lease: number, nextLease: number, nowMs: number): Promise<number | undefined> {
  const rows = await db
    .update(uploads)
    .set({ completeLeaseExpiresAt: nextLease })
    .where(and(eq(uploads.id, id), eq(uploads.status, "completing"), eq(uploads.completeLeaseExpiresAt, lease), gte(uploads.completeLeaseExpiresAt, nowMs)))
    .returning({ id: uploads.id });
  return rows.length === 1 ? nextLease : undefined;
}

/** The File row and `completed`, together; undefined if the attempt's lease was lost meanwhile. */
export async function finishComplete(db: Db, id: string, lease: number, nowMs: number, file: NewFile): Promise<FileRow | undefined> {
  return db.transaction(async (tx) => {
    const done = await tx
      .update(uploads)
      .set({ status: "completed", completeLeaseExpiresAt: null })
      .where(
        and(
          eq(uploads.id, id),
          eq(uploads.status, "completing"),
          eq(uploads.fileId, file.id),
          eq(uploads.completeLeaseExpiresAt, lease),
          gte(uploads.completeLeaseExpiresAt, nowMs),
        ),
      )
      .returning({ id: uploads.id });
    if (done.length === 0) return undefined;
    const [row] = await tx.insert(files).values(file).returning();
    return row;
  });
}

/**
 * completing → pending for the attempt holding `lease`: the attempt itself after a failed check
 * (only while its lease is live, `liveAt`), or the sweeper after the lease lapsed (`liveAt`
 * undefined). The caller discards the attempt's blob first.
 */
export async function undoComplete(db: Db, id: string, lease: number, liveAt?: number): Promise<UploadRow | undefined> {
  const conds = [eq(uploads.id, id), eq(uploads.status, "completing"), eq(uploads.completeLeaseExpiresAt, lease)];
  if (liveAt !== undefined) conds.push(gte(uploads.completeLeaseExpiresAt, liveAt));
  const [row] = await db
    .update(uploads)
    .set({ status: "pending", completeLeaseExpiresAt: null })
    .where(and(...conds))
    .returning();
  return row;
}

export async function cancelUpload(db: Db, id: string): Promise<UploadRow | undefined> {
  const [row] = await db
    .update(uploads)
    .set({ status: "cancelled" })
    .where(and(eq(uploads.id, id), eq(uploads.status, "pending")))
    .returning();
  return row;
}

/** Pending uploads past their expiry, marked expired. */
export async function expireUploads(db: Db, nowSec: number): Promise<UploadRow[]> {
  return db
    .update(uploads)
    .set({ status: "expired" })
    .where(and(eq(uploads.status, "pending"), lt(uploads.expiresAt, nowSec + 1)))
    .returning();
}

export async function listLapsedCompletes(db: Db, nowMs: number, limit = 100): Promise<UploadRow[]> {
  return db
    .select()
    .from(uploads)
    .where(and(eq(uploads.status, "completing"), lt(uploads.completeLeaseExpiresAt, nowMs)))
    .limit(limit);
}

/** Parts nobody will use again: those of uploads that are completed, cancelled or expired. */
export async function listDeadParts(db: Db, limit = 100): Promise<PartRow[]> {
  const rows = await db
    .select({ part: uploadParts })
    .from(uploadParts)
    .innerJoin(uploads, eq(uploadParts.uploadId, uploads.id))
    .where(inArray(uploads.status, ["completed", "cancelled", "expired"]))
    .limit(limit);
  return rows.map((r) => r.part);
}

/** Ended uploads that may hold a leftover file blob of an undone complete (they have no File). */
export async function listOrphanFileIds(db: Db, limit = 100): Promise<{ id: string; fileId: string }[]> {
  const rows = await db
    .select({ id: uploads.id, fileId: uploads.fileId })
    .from(uploads)
    .where(and(inArray(uploads.status, ["cancelled", "expired"]), isNotNull(uploads.fileId)))
    .limit(limit);
  return rows.map((r) => ({ id: r.id, fileId: r.fileId! }));
}

export async function clearFileId(db: Db, id: string): Promise<void> {
  await db
    .update(uploads)
    .set({ fileId: null })
    .where(and(eq(uploads.id, id), inArray(uploads.status, ["cancelled", "expired"])));
}

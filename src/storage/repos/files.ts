// Files and uploads in flight. A file row is written in the same transaction that removes its
// upload row, so a file is either fully there (row + blob) or not at all.
import { and, asc, desc, eq, gt, isNull, lt, or, type SQL } from "drizzle-orm";
import type { Db } from "../db.js";
import { fileUploads, files } from "../schema.js";

export type FileRow = typeof files.$inferSelect;
type DbOrTx = Db | Parameters<Parameters<Db["transaction"]>[0]>[0];
export type NewFile = Omit<typeof files.$inferInsert, "seq">;

function live(projectId: string, nowSec: number): SQL {
  return and(eq(files.projectId, projectId), or(isNull(files.expiresAt), gt(files.expiresAt, nowSec)))!;
}

export async function beginUpload(db: Db, id: string, blobKey: string, leaseExpiresAt: number, nowSec: number) {
  await db.insert(fileUploads).values({ id, blobKey, leaseExpiresAt, createdAt: nowSec });
}

export async function renewUpload(db: Db, id: string, leaseExpiresAt: number): Promise<void> {
  await db.update(fileUploads).set({ leaseExpiresAt }).where(eq(fileUploads.id, id));
}

export async function endUpload(db: Db, id: string): Promise<void> {
  await db.delete(fileUploads).where(eq(fileUploads.id, id));
}

/** Makes an upload a file: one transaction, so a crash leaves either the upload or the file. */
export async function commitUpload(db: Db, uploadId: string, file: NewFile): Promise<FileRow> {
  return db.transaction(async (tx) => {
    const gone = await tx.delete(fileUploads).where(eq(fileUploads.id, uploadId)).returning({ id: fileUploads.id });
    // The sweeper took it (our lease lapsed): its blob is being discarded, so no file.
    if (gone.length === 0) throw new Error(`upload ${uploadId} lost its lease before commit`);
    const [row] = await tx.insert(files).values(file).returning();
    return row!;
  });
}

export async function listLapsedUploads(db: Db, nowMs: number, limit = 100) {
  return db.select().from(fileUploads).where(lt(fileUploads.leaseExpiresAt, nowMs)).limit(limit);
}

export async function getFile(db: Db, projectId: string, id: string, nowSec: number): Promise<FileRow | undefined> {
  const [row] = await db
    .select()
    .from(files)
    .where(and(eq(files.id, id), live(projectId, nowSec)));
  return row;
}

export interface ListFilesQuery {
  readonly purpose: string | undefined;
  readonly limit: number;
  readonly order: "asc" | "desc";
  readonly afterSeq: number | undefined;
}

/** One page plus one row, so the caller can tell has_more without a count. */
export async function listFiles(db: Db, projectId: string, q: ListFilesQuery, nowSec: number): Promise<FileRow[]> {
  const conds: SQL[] = [live(projectId, nowSec)];
  if (q.purpose !== undefined) conds.push(eq(files.purpose, q.purpose));
  if (q.afterSeq !== undefined) conds.push(q.order === "desc" ? lt(files.seq, q.afterSeq) : gt(files.seq, q.afterSeq));
  return db
    .select()
    .from(files)
    .where(and(...conds))
    .orderBy(q.order === "desc" ? desc(files.seq) : asc(files.seq))
    .limit(q.limit + 1);
}

/** The cursor row of a project, expired or not (a cursor may outlive its file's expiry). */
export async function getFileSeq(db: Db, projectId: string, id: string): Promise<number | undefined> {
  const [row] = await db
    .select({ seq: files.seq })
    .from(files)
    .where(and(eq(files.id, id), eq(files.projectId, projectId)));
  return row?.seq;
}

export async function deleteFile(db: Db, projectId: string, id: string, nowSec: number): Promise<FileRow | undefined> {
  const [row] = await db
    .delete(files)
    .where(and(eq(files.id, id), live(projectId, nowSec)))
    .returning();
  return row;
}

/** Expired files, removed from the table (their blobs are the caller's to delete). */
export async function takeExpiredFiles(db: Db, nowSec: number, limit = 100): Promise<FileRow[]> {
  const expired = await db.select({ id: files.id }).from(files).where(lt(files.expiresAt, nowSec + 1)).limit(limit);
  const out: FileRow[] = [];
  for (const { id } of expired) {
    const [row] = await db.delete(files).where(eq(files.id, id)).returning();
    if (row) out.push(row);
  }
  return out;
}

/** Inserts a file whose blob the server wrote itself (a result file), ending its upload lease. */
export async function insertOwnFile(db: DbOrTx, uploadId: string, file: NewFile): Promise<FileRow> {
  await db.delete(fileUploads).where(eq(fileUploads.id, uploadId));
  const [row] = await db.insert(files).values(file).returning();
  return row!;
}

// Checkpoint permissions: which other projects may train from and chat with a fine-tuned model
// or checkpoint. A grant is a row; revoking deletes it, and every lookup of a model by another
// project (getModel in repo.ts) reads the table, so a revoke holds from the next request on.
import { and, asc, desc, eq, gt, isNull, lt, type SQL } from "drizzle-orm";
import { randomAlnum } from "../ids.js";
import type { Db } from "../storage/db.js";
import { checkpointPermissions, models } from "../storage/schema.js";

export type PermissionRow = typeof checkpointPermissions.$inferSelect;

export const newPermissionId = () => `cp_${randomAlnum(24)}`;

/** A live model of any project (the admin sees them all). */
export async function getAnyModel(db: Db, id: string) {
  const [row] = await db
    .select()
    .from(models)
    .where(and(eq(models.id, id), isNull(models.deletedAt)));
  return row;
}

/** Grants each project; an existing grant is kept and returned as it is. */
export async function grant(db: Db, modelId: string, projectIds: readonly string[], nowSec: number): Promise<PermissionRow[]> {
  return db.transaction(async (tx) => {
    const out: PermissionRow[] = [];
    for (const projectId of projectIds) {
      await tx.insert(checkpointPermissions).values({ id: newPermissionId(), modelId, projectId, createdAt: nowSec }).onConflictDoNothing();
      const [row] = await tx
        .select()
        .from(checkpointPermissions)
        .where(and(eq(checkpointPermissions.modelId, modelId), eq(checkpointPermissions.projectId, projectId)));
      out.push(row!);
    }
    return out;
  });
}

export interface ListPermissionsQuery {
  readonly projectId: string | undefined;
  readonly afterSeq: number | undefined;
  readonly limit: number;
  readonly order: "ascending" | "descending";
}

/** One page plus one row, so the caller can tell has_more without a count. */
export async function listPermissions(db: Db, modelId: string, q: ListPermissionsQuery): Promise<PermissionRow[]> {
  const conds: SQL[] = [eq(checkpointPermissions.modelId, modelId)];
  if (q.projectId !== undefined) conds.push(eq(checkpointPermissions.projectId, q.projectId));
  const desc_ = q.order === "descending";
  if (q.afterSeq !== undefined) conds.push(desc_ ? lt(checkpointPermissions.seq, q.afterSeq) : gt(checkpointPermissions.seq, q.afterSeq));
  return db
    .select()
    .from(checkpointPermissions)
    .where(and(...conds))
    .orderBy(desc_ ? desc(checkpointPermissions.seq) : asc(checkpointPermissions.seq))
    .limit(q.limit + 1);
}

export async function getPermissionSeq(db: Db, modelId: string, id: string): Promise<number | undefined> {
  const [row] = await db
    .select({ seq: checkpointPermissions.seq })
    .from(checkpointPermissions)
    .where(and(eq(checkpointPermissions.modelId, modelId), eq(checkpointPermissions.id, id)));
  return row?.seq;
}

export async function revoke(db: Db, modelId: string, id: string): Promise<boolean> {
  const rows = await db
    .delete(checkpointPermissions)
    .where(and(eq(checkpointPermissions.modelId, modelId), eq(checkpointPermissions.id, id)))
    .returning({ id: checkpointPermissions.id });
  return rows.length > 0;
}

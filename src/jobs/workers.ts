// Worker identities. A worker authenticates with a token of its own (never a user's API key);
// tokens are stored as sha256 hashes like API keys.
import { eq } from "drizzle-orm";
import { newId, nowSeconds, sha256Hex } from "../ids.js";
import type { Db } from "../storage/db.js";
import { workers } from "../storage/schema.js";

export interface Worker {
  readonly id: string;
  readonly name: string;
}

/** Creates a worker and returns its token, shown once. */
export async function createWorker(db: Db, name: string): Promise<{ worker: Worker; token: string }> {
  const token = newId.workerToken();
  const worker = { id: newId.worker(), name };
  await db.insert(workers).values({ ...worker, tokenHash: sha256Hex(token), createdAt: nowSeconds() });
  return { worker, token };
}

export async function findWorkerByToken(db: Db, token: string): Promise<Worker | undefined> {
  const [row] = await db
    .select({ id: workers.id, name: workers.name })
    .from(workers)
    .where(eq(workers.tokenHash, sha256Hex(token)));
  return row;
}

export async function touchWorker(db: Db, id: string): Promise<void> {
  await db.update(workers).set({ lastSeenAt: nowSeconds() }).where(eq(workers.id, id));
}

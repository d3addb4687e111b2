// Projects and their API keys. Keys are stored as sha256 hashes; lookups go by hash.
import { eq } from "drizzle-orm";
import { newApiKeySecret, newId, nowSeconds, sha256Hex } from "../../ids.js";
import type { Db } from "../db.js";
import { apiKeys, projects } from "../schema.js";

export const DEFAULT_PROJECT = "default";

export interface Project {
  readonly id: string;
  readonly name: string;
}

/** The project named `name`, created if missing (idempotent under races: the name is unique). */
export async function ensureProject(db: Db, name: string): Promise<Project> {
  await db
    .insert(projects)
    .values({ id: newId.project(), name, createdAt: nowSeconds() })
    .onConflictDoNothing({ target: projects.name });
  const [row] = await db.select().from(projects).where(eq(projects.name, name));
  if (!row) throw new Error(`project ${name} vanished after insert`);
  return { id: row.id, name: row.name };
}

/** Creates a key for the project (creating the project too) and returns its secret, once. */
export async function createApiKey(db: Db, projectName: string): Promise<{ secret: string; project: Project }> {
  const project = await ensureProject(db, projectName);
  const secret = newApiKeySecret();
  await db.insert(apiKeys).values({
    id: newId.apiKey(),
    projectId: project.id,
    keyHash: sha256Hex(secret),
    hint: `${secret.slice(0, 10)}...${secret.slice(-4)}`,
    createdAt: nowSeconds(),
  });
  return { secret, project };
}

export async function findProjectByKeyHash(db: Db, keyHash: string): Promise<Project | undefined> {
  const [row] = await db
    .select({ id: projects.id, name: projects.name })
    .from(apiKeys)
    .innerJoin(projects, eq(apiKeys.projectId, projects.id))
    .where(eq(apiKeys.keyHash, keyHash));
  return row;
}

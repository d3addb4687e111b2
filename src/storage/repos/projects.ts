// Projects and their API keys. Keys are stored as sha256 hashes; lookups go by hash.
import { eq, or } from "drizzle-orm";
import { newApiKeySecret, newId, nowSeconds, sha256Hex } from "../../ids.js";
import type { Db } from "../db.js";
import { adminKeys, apiKeys, projects } from "../schema.js";

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

const hint = (secret: string) => `${secret.slice(0, 10)}...${secret.slice(-4)}`;

/** Creates a key for the project (creating the project too) and returns its secret, once. */
export async function createApiKey(db: Db, projectName: string): Promise<{ secret: string; project: Project }> {
  const project = await ensureProject(db, projectName);
  const secret = newApiKeySecret();
  await db.insert(apiKeys).values({
    id: newId.apiKey(),
    projectId: project.id,
    keyHash: sha256Hex(secret),
    hint: hint(secret),
    createdAt: nowSeconds(),
  });
  return { secret, project };
}

/** Creates an admin key (no project: it manages checkpoint permissions) and returns its secret, once. */
export async function createAdminKey(db: Db): Promise<{ secret: string }> {
  const secret = newApiKeySecret("admin");
  await db.insert(adminKeys).values({ id: newId.apiKey(), keyHash: sha256Hex(secret), hint: hint(secret), createdAt: nowSeconds() });
  return { secret };
}

export async function isAdminKeyHash(db: Db, keyHash: string): Promise<boolean> {
  const [row] = await db.select({ id: adminKeys.id }).from(adminKeys).where(eq(adminKeys.keyHash, keyHash));
  return row !== undefined;
}

/** A project by its id (proj_...) or by the name `openft keys create --project NAME` gave it. */
export async function findProject(db: Db, idOrName: string): Promise<Project | undefined> {
  const [row] = await db
    .select({ id: projects.id, name: projects.name })
    .from(projects)
    .where(or(eq(projects.id, idOrName), eq(projects.name, idOrName)));
  return row;
}

export async function findProjectByKeyHash(db: Db, keyHash: string): Promise<Project | undefined> {
  const [row] = await db
    .select({ id: projects.id, name: projects.name })
    .from(apiKeys)
    .innerJoin(projects, eq(apiKeys.projectId, projects.id))
    .where(eq(apiKeys.keyHash, keyHash));
  return row;
}

// The database: a Postgres server through `pg` when DATABASE_URL is set, otherwise PGlite in
// the data dir. Both are driven through the same drizzle schema; migrations run at start-up.
import fs from "node:fs/promises";
import path from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { drizzle as drizzlePg } from "drizzle-orm/node-postgres";
import { migrate as migratePg } from "drizzle-orm/node-postgres/migrator";
import type { PgDatabase, PgQueryResultHKT } from "drizzle-orm/pg-core";
import { drizzle as drizzlePglite } from "drizzle-orm/pglite";
import { migrate as migratePglite } from "drizzle-orm/pglite/migrator";
import pg from "pg";
import { projectRoot } from "../project-root.js";
import { acquireDataDirLock } from "./data-dir-lock.js";
import * as schema from "./schema.js";

export type Schema = typeof schema;
export type Db = PgDatabase<PgQueryResultHKT, Schema>;

export interface Database {
  readonly db: Db;
  readonly kind: "postgres" | "pglite";
  /** Applies every migration not yet applied. */
  migrate(): Promise<void>;
  close(): Promise<void>;
}

/** migrations/ at the repository root. */
export function migrationsFolder(): string {
  return path.join(projectRoot(), "migrations");
}

// Postgres replicas may start together: a session-level advisory lock serialises migration.
const MIGRATION_LOCK = 7_305_118_001;

async function openPostgres(url: string): Promise<Database> {
  const pool = new pg.Pool({ connectionString: url, max: 10 });
  const db = drizzlePg(pool, { schema }) as unknown as Db;
  const migrate = async () => {
    // Replicas may start together. An advisory lock is held by a session, so lock, migrate and
    // unlock all run on one dedicated connection.
    const client = await pool.connect();
    try {
      await client.query("select pg_advisory_lock($1)", [MIGRATION_LOCK]);
      try {
        await migratePg(drizzlePg(client), { migrationsFolder: migrationsFolder() });
      } finally {
        await client.query("select pg_advisory_unlock($1)", [MIGRATION_LOCK]);
      }
    } finally {
      client.release();
    }
  };
  return { db, kind: "postgres", migrate, close: () => pool.end() };
}

async function openPglite(dataDir: string, command: string): Promise<Database> {
  const dir = path.join(dataDir, "pglite");
  await fs.mkdir(dir, { recursive: true });
  // Held until close() or the process's end: no second process may open these files.
  const release = acquireDataDirLock(dataDir, command);
  let client: PGlite;
  try {
    client = await PGlite.create(dir);
  } catch (err) {
    release();
    throw err;
  }
  const db = drizzlePglite(client, { schema });
  // PGlite is one connection in one process, and the lock keeps other processes out.
  const migrate = async () => migratePglite(db, { migrationsFolder: migrationsFolder() });
  const close = async () => {
    await client.close();
    release();
  };
  return { db: db as unknown as Db, kind: "pglite", migrate, close };
}

/** `command` ("openft serve", ...) names the holder of the PGlite data dir's lock to a second opener. */
export async function openDatabase(opts: { url: string | undefined; dataDir: string; command?: string }): Promise<Database> {
  return opts.url ? openPostgres(opts.url) : openPglite(opts.dataDir, opts.command ?? `node (pid ${process.pid})`);
}

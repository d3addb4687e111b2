// How the command line reaches the database. PostgreSQL admits any number of processes. PGlite
// admits one (src/storage/data-dir-lock.ts): a command waits while another short command holds
// the data dir, goes through a running server's admin endpoint where it can, and otherwise
// refuses, so that no command ever prints a key written to a database that another process
// then overwrites.
import fs from "node:fs/promises";
import type { Config } from "./config.js";
import { adminCall } from "./api/admin/endpoint.js";
import { DataDirBusyError, openDatabase, type Database, type Db } from "./storage/index.js";

export const SERVE_COMMAND = "openft serve";
// Longer than any short command holds the data dir (opening PGlite and migrating take seconds),
// and than a server takes from taking the lock to publishing its admin endpoint.
const WAIT_MS = 60_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function openStorage(config: Config, command: string): Promise<Database> {
  await fs.mkdir(config.dataDir, { recursive: true });
  const database = await openDatabase({ url: config.database.url, dataDir: config.dataDir, command });
  try {
    await database.migrate();
  } catch (err) {
    await database.close();
    throw err;
  }
  return database;
}

/** Opens the database, waiting while another command (not a server) holds the data dir. */
export async function openStorageWaiting(config: Config, command: string, onServer?: (pid: number) => Promise<boolean>): Promise<Database | undefined> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    try {
      return await openStorage(config, command);
    } catch (err) {
      if (!(err instanceof DataDirBusyError) || Date.now() > deadline) throw err;
      if (err.holder.command === SERVE_COMMAND) {
        if (!onServer) throw err;
        if (await onServer(err.holder.pid)) return undefined;
      }
      await sleep(250);
    }
  }
}

/**
 * One secret per name, made in the database directly or, while a server holds an embedded
 * database, by that server through `route`.
 */
export async function createSecrets(
  config: Config,
  command: string,
  names: string[],
  route: string,
  create: (db: Db, name: string) => Promise<string>,
): Promise<string[]> {
  const out: string[] = [];
  const viaServer = async (pid: number) => {
    // Only once the server answers for the first name are the others asked for.
    const first = await adminCall(config.dataDir, pid, route, names[0]!);
    if (first === undefined) return false;
    out.push(first);
    for (const name of names.slice(1)) {
      const secret = await adminCall(config.dataDir, pid, route, name);
      if (secret === undefined) throw new Error(`the server (pid ${pid}) stopped answering`);
      out.push(secret);
    }
    return true;
  };
  const database = await openStorageWaiting(config, command, viaServer);
  if (!database) return out;
  try {
    for (const name of names) out.push(await create(database.db, name));
  } finally {
    await database.close();
  }
  return out;
}

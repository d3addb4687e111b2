// One process at a time in a PGlite data dir. PGlite is a whole Postgres inside one process with
// no shared-memory coordination: a second process writing the same files corrupts them (seen:
// `openft keys create` beside a server, then a kill -9, and every later start aborted). So whoever
// opens the database first creates `<data dir>/pglite.lock`, holds it for its whole life and
// removes it on exit. Node has no flock without a native addon, so the lock is a file made
// atomically (link(2) of a fully written temp file, which fails if the lock exists) naming its
// holder: pid, the holder's start time in /proc and the boot id. A lock left by a killed process
// is stale when that pid is gone, or now belongs to a process that started at another time (pid
// reuse), or was written before the last boot; it is then taken over.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

export interface LockHolder {
  readonly pid: number;
  /** Field 22 of /proc/PID/stat (clock ticks after boot); null where /proc is missing. */
  readonly started: string | null;
  readonly boot: string | null;
  /** What the holder runs: "openft serve", "openft migrate", ... */
  readonly command: string;
}

export class DataDirBusyError extends Error {
  constructor(
    readonly holder: LockHolder,
    readonly dataDir: string,
  ) {
    super(`the data dir ${dataDir} is in use by \`${holder.command}\` (pid ${holder.pid}); its embedded database (PGlite) admits one process at a time`);
  }
}

export const LOCK_FILE = "pglite.lock";

function readOr<T>(file: string, fallback: T): string | T {
  try {
    return fs.readFileSync(file, "utf8");
  } catch {
    return fallback;
  }
}

function startTime(pid: number | "self"): string | null {
  const stat = readOr(`/proc/${pid}/stat`, null);
  // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
  return stat === null ? null : (stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? null);
}

function bootId(): string | null {
  const id = readOr("/proc/sys/kernel/random/boot_id", null);
  return id === null ? null : id.trim();
}

function alive(holder: LockHolder): boolean {
  const boot = bootId();
  if (holder.boot && boot && holder.boot !== boot) return false;
  try {
    process.kill(holder.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ESRCH") return false;
  }
  const started = holder.started === null ? null : startTime(holder.pid);
  return started === null || started === holder.started;
}

function parse(text: string): LockHolder | undefined {
  try {
    const h = JSON.parse(text) as LockHolder;
    return Number.isInteger(h.pid) && h.pid > 0 ? h : undefined;
  } catch {
    return undefined;
  }
}

/** The live holder of the data dir's lock, if any. */
export function lockHolder(dataDir: string): LockHolder | undefined {
  const text = readOr(path.join(dataDir, LOCK_FILE), null);
  const holder = text === null ? undefined : parse(text);
  return holder && alive(holder) ? holder : undefined;
}

/** Moves a stale lock aside; puts it back when it changed meanwhile (someone else took over). */
function takeOver(file: string, seen: string): void {
  const aside = `${file}.stale-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    fs.renameSync(file, aside);
  } catch {
    return; // gone already: someone else took it over first
  }
  if (readOr(aside, null) !== seen) {
    try {
      fs.linkSync(aside, file);
    } catch {
      // A third process holds the lock now; the one we moved is someone's live lock that lost
      // the race. Its holder still believes it holds the lock, which the release check tolerates.
    }
  }
  fs.rmSync(aside, { force: true });
}

function tryCreate(file: string, body: string): boolean {
  const tmp = `${file}.${process.pid}-${randomBytes(4).toString("hex")}`;
  fs.writeFileSync(tmp, body, { mode: 0o600 });
  try {
    fs.linkSync(tmp, file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw err;
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

/** Takes the data dir's lock or throws DataDirBusyError; returns the release function. */
export function acquireDataDirLock(dataDir: string, command: string): () => void {
  const file = path.join(dataDir, LOCK_FILE);
  const me: LockHolder = { pid: process.pid, started: startTime("self"), boot: bootId(), command };
  const body = JSON.stringify(me);
  for (let tries = 0; tries < 10; tries++) {
    if (tryCreate(file, body)) {
      const release = () => {
        if (readOr(file, null) === body) fs.rmSync(file, { force: true });
        process.removeListener("exit", release);
      };
      process.on("exit", release);
      return release;
    }
    const seen = readOr(file, null);
    if (seen === null) continue;
    const holder = parse(seen);
    if (holder && alive(holder)) throw new DataDirBusyError(holder, dataDir);
    // An unparseable lock cannot be half written (it appears whole by link), so it is stale.
    takeOver(file, seen);
  }
  throw new Error(`could not take the lock ${file}`);
}

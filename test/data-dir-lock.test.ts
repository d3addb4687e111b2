// `openft keys create` and `openft workers create` beside a running server: the printed secret
// works at once and after kill -9 rounds, and every row is still there (on PGlite they go
// through the server's admin endpoint: one process per data dir). On PGlite a second server or
// `migrate` beside a server refuses, and a lock left by a killed process, or naming a pid that
// now belongs to another process, is taken over.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { spawnSync } from "node:child_process";
import os from "node:os";
import { toFile } from "openai";
import { acquireDataDirLock, DataDirBusyError, lockHolder } from "../src/storage/data-dir-lock.js";
import { queryRows } from "./helpers/storage.js";
import { BACKEND, startServer, type TestServer } from "./helpers/server.js";

test("the lock: a live holder refuses a second one; a dead holder's lock is taken over", async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "openft-lock-"));
  try {
    const release = acquireDataDirLock(dir, "first");
    assert.throws(() => acquireDataDirLock(dir, "second"), (err: unknown) => err instanceof DataDirBusyError && err.holder.command === "first");
    release();
    assert.equal(lockHolder(dir), undefined);
    const dead = spawnSync(process.execPath, ["-e", ""]).pid!;
    await fs.writeFile(path.join(dir, "pglite.lock"), JSON.stringify({ pid: dead, started: "0", boot: null, command: "killed" }));
    assert.equal(lockHolder(dir), undefined, "a dead pid holds nothing");
    const again = acquireDataDirLock(dir, "third");
    assert.equal(lockHolder(dir)?.command, "third");
    again();
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

const claimStatus = async (server: TestServer, token: string) =>
  (await fetch(`${server.url}/internal/v1/claim`, { method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: '{"wait_seconds":0}' })).status;

describe("the CLI beside a running server", () => {
  let server: TestServer;
  const keys: string[] = [];
  const files: string[] = [];

  before(async () => {
    server = await startServer();
  });
  after(async () => server.dispose());

  const newKeyWorks = async (project: string) => {
    const key = (await server.cli("keys", "create", "--project", project)).trim();
    assert.match(key, /^sk-openft-[A-Za-z0-9]{40}$/);
    const file = await server.client(key).files.create({ file: await toFile(Buffer.from('{"a":1}\n'), `${project}.jsonl`), purpose: "user_data" });
    keys.push(key);
    files.push(file.id);
  };

  test("keys create prints a key that works at once; workers create a token that works", async () => {
    await newKeyWorks("beside-0");
    const token = (await server.cli("workers", "create", "--name", "w-beside")).trim();
    assert.equal(await claimStatus(server, token), 204);
    assert.equal(await claimStatus(server, "wt-not-a-token"), 401);
  });

  test("kill -9 rounds: every key still works and every row is there", async () => {
    for (let round = 1; round <= 3; round++) {
      await newKeyWorks(`beside-${round}`);
      await server.kill();
      await server.restart();
      for (const [i, key] of keys.entries()) {
        const listed = (await server.client(key).files.list()).data.map((f) => f.id);
        assert.deepEqual(listed, [files[i]], `round ${round}: key ${i} and its project's file`);
      }
    }
    await server.stop();
    const rows = await queryRows(server, "select p.name from api_keys k join projects p on p.id = k.project_id where p.name like 'beside-%' order by p.name");
    assert.deepEqual(rows.map((r) => r.name), ["beside-0", "beside-1", "beside-2", "beside-3"]);
    assert.equal((await queryRows(server, "select count(*)::int as n from files"))[0]!.n, 4);
    await server.restart();
  });
});

// PostgreSQL admits any number of servers (replicas): this holds for the embedded database only.
if (BACKEND === "embedded") describe("one process per embedded data dir", () => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });
  after(async () => server.dispose());

  test("a second server and migrate beside a server refuse with a clear message", async () => {
    const busy = new RegExp(`in use by \`openft serve\` \\(pid ${server.proc.pid}\\).*stop the server first`);
    await assert.rejects(server.cli("serve", "--port", "0"), (err: Error) => /exited 1/.test(err.message) && busy.test(err.message));
    await assert.rejects(server.cli("migrate"), (err: Error) => /exited 1/.test(err.message) && busy.test(err.message));
    assert.equal((await server.client().files.list()).data.length, 0, "the server still answers");
  });

  test("a lock naming a live pid that started at another time (pid reuse) is taken over", async () => {
    await server.kill();
    const lock = path.join(server.dataDir, "pglite.lock");
    const left = JSON.parse(await fs.readFile(lock, "utf8")) as { pid: number; started: string };
    assert.equal(left.pid, server.proc.pid, "kill -9 leaves the lock behind");
    // This test process is alive, but not the process that wrote the lock.
    await fs.writeFile(lock, JSON.stringify({ ...left, pid: process.pid, started: "1" }));
    await server.restart();
    const held = JSON.parse(await fs.readFile(lock, "utf8")) as { pid: number };
    assert.equal(held.pid, server.proc.pid);
    await server.stop();
    const left2 = await fs.readFile(lock, "utf8").catch(() => undefined);
    assert.equal(left2, undefined, `a clean stop removes the lock; server log:\n${server.log.slice(-4000)}`);
    await server.restart();
  });
});

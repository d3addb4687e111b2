// The lease a complete holds on its upload, on a real database and the real folder blob store
// (no server): a lapsed lease is never renewed and can never commit a File, and the sweeper
// discards the dead attempt's blob before the upload is pending again, so a new complete, which
// writes the same key, can never have its blob discarded under it. CI once saw that race as a
// 500 on the complete that followed a killed one.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { after, before, test } from "node:test";
import pino from "pino";
import { openDatabase, type Database } from "../src/storage/db.js";
import { FsBlobStore } from "../src/storage/fs-blob-store.js";
import { ensureProject } from "../src/storage/repos/projects.js";
import * as repo from "../src/storage/repos/uploads.js";
import { sweepOnce } from "../src/storage/sweeper.js";

let dir: string;
let database: Database;
let blobs: FsBlobStore;
let projectId: string;

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "openft-upload-lease-"));
  database = await openDatabase({ url: undefined, dataDir: path.join(dir, "data") });
  await database.migrate();
  blobs = new FsBlobStore(path.join(dir, "blobs"));
  await blobs.init();
  projectId = (await ensureProject(database.db, "lease-test")).id;
});
after(async () => {
  await database.close();
  await fs.rm(dir, { recursive: true, force: true });
});

async function newUpload(id: string): Promise<void> {
  const now = Math.floor(Date.now() / 1000);
  await repo.insertUpload(database.db, {
    id,
    projectId,
    filename: "x.bin",
    purpose: "user_data",
    bytes: 3,
    mimeType: "application/octet-stream",
    status: "pending",
    createdAt: now,
    expiresAt: now + 3600,
  });
}

const fileRow = (fileId: string) => ({
  id: fileId,
  projectId,
  filename: "x.bin",
  purpose: "user_data",
  bytes: 3,
  sha256: "0".repeat(64),
  blobKey: `files/${fileId}`,
  createdAt: Math.floor(Date.now() / 1000),
  expiresAt: null,
});

test("a live lease renews and finishes; a lapsed one does neither, and a stale token is refused", async () => {
  const { db } = database;
  await newUpload("upload_live");
  const now = Date.now();
  const started = (await repo.beginComplete(db, "upload_live", "file-live", now + 60_000, Math.floor(now / 1000)))!;
  const first = started.completeLeaseExpiresAt!;
  const renewed = await repo.renewComplete(db, "upload_live", first, now + 120_000, Date.now());
  assert.equal(renewed, now + 120_000);
  assert.equal(await repo.renewComplete(db, "upload_live", first, now + 180_000, Date.now()), undefined, "the old token no longer holds it");
  assert.equal(await repo.finishComplete(db, "upload_live", first, Date.now(), fileRow("file-live")), undefined);
  assert.ok(await repo.finishComplete(db, "upload_live", renewed!, Date.now(), fileRow("file-live")));

  await newUpload("upload_lapsed");
  const lapsed = (await repo.beginComplete(db, "upload_lapsed", "file-lapsed", Date.now() + 5, Math.floor(Date.now() / 1000)))!;
  await new Promise((r) => setTimeout(r, 20));
  const token = lapsed.completeLeaseExpiresAt!;
  assert.equal(await repo.renewComplete(db, "upload_lapsed", token, Date.now() + 60_000, Date.now()), undefined);
  assert.equal(await repo.finishComplete(db, "upload_lapsed", token, Date.now(), fileRow("file-lapsed")), undefined);
  assert.equal(await repo.undoComplete(db, "upload_lapsed", token, Date.now()), undefined, "the attempt may not undo a lapsed lease");
  const [row] = await db.execute(`select status from uploads where id = 'upload_lapsed'`).then((r) => (r as unknown as { rows: { status: string }[] }).rows);
  assert.equal(row!.status, "completing", "a lapsed complete stays the sweeper's to undo");
});

test("the sweeper discards a dead complete's blob while the upload is still completing, then makes it pending", async () => {
  const { db } = database;
  await newUpload("upload_dead");
  const dead = (await repo.beginComplete(db, "upload_dead", "file-dead", Date.now() + 5, Math.floor(Date.now() / 1000)))!;
  await blobs.put(`files/${dead.fileId!}`, Readable.from([Buffer.from("abc")]));
  await new Promise((r) => setTimeout(r, 20));

  // A spy on the real store: the upload's status at the moment its File blob is discarded.
  const statusAtDiscard: string[] = [];
  const discard = blobs.discard.bind(blobs);
  blobs.discard = async (key: string) => {
    if (key === `files/${dead.fileId!}`) statusAtDiscard.push((await repo.getUpload(db, projectId, "upload_dead"))!.status);
    await discard(key);
  };
  try {
    await sweepOnce(db, blobs, pino({ level: "silent" }));
  } finally {
    blobs.discard = discard;
  }
  assert.deepEqual(statusAtDiscard, ["completing"]);
  assert.equal(await blobs.exists(`files/${dead.fileId!}`), false);
  const after = (await repo.getUpload(db, projectId, "upload_dead"))!;
  assert.equal(after.status, "pending");
  assert.equal(after.fileId, dead.fileId, "the next complete writes the same File id");

  // The next complete holds a fresh lease: a second sweep leaves it and its blob alone.
  const next = (await repo.beginComplete(db, "upload_dead", "file-other", Date.now() + 60_000, Math.floor(Date.now() / 1000)))!;
  assert.equal(next.fileId, dead.fileId);
  await blobs.put(`files/${next.fileId!}`, Readable.from([Buffer.from("abc")]));
  await sweepOnce(db, blobs, pino({ level: "silent" }));
  assert.equal(await blobs.exists(`files/${next.fileId!}`), true);
  assert.ok(await repo.finishComplete(db, "upload_dead", next.completeLeaseExpiresAt!, Date.now(), fileRow(next.fileId!)));
});

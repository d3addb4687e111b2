// SIGKILL the server in the middle of POST /v1/uploads/{id}/complete: afterwards there is the
// File or nothing (never a File row without its bytes, nor bytes without a row), and a second
// complete makes exactly one File.
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, test } from "node:test";
import OpenAI, { toFile } from "openai";
import { partialBlobs, queryRows, visibleBlobs } from "./helpers/storage.js";
import { startServer, type TestServer } from "./helpers/server.js";

let server: TestServer;
before(async () => {
  // A short lease, so the sweeper undoes the dead complete within the test.
  server = await startServer({ env: { OPENFT_UPLOAD_LEASE_SECONDS: "2" } });
});
after(async () => server.dispose());

const PART = 16 * 1024 * 1024;
const fileBlobs = async () => (await visibleBlobs(server)).filter((k) => k.startsWith("files/"));

/** Completes, waiting out a complete the dead server still holds (409 until its lease lapses). */
async function completeWhenFree(client: OpenAI, id: string, partIds: string[]) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      return await client.uploads.complete(id, { part_ids: partIds });
    } catch (err) {
      if (!(err instanceof OpenAI.ConflictError) || Date.now() > deadline) throw err;
      await sleep(200);
    }
  }
}

test("a server killed during complete leaves the File or nothing; a second complete makes one File", async () => {
  const client = server.client();
  const parts = [Buffer.alloc(PART, "a"), Buffer.alloc(PART, "b"), Buffer.alloc(PART, "c")];
  const up = await client.uploads.create({ filename: "big.bin", purpose: "user_data", bytes: PART * 3, mime_type: "application/octet-stream" });
  const ids: string[] = [];
  for (const p of parts) ids.push((await client.uploads.parts.create(up.id, { data: await toFile(p, "p") })).id);

  const completing = client.uploads.complete(up.id, { part_ids: ids }).then(
    () => "completed",
    () => "failed",
  );
  // Kill as soon as the File's bytes start landing in the blob store.
  const deadline = Date.now() + 60_000;
  while (!(await partialBlobs(server)).some((k) => k.includes("files"))) {
    if (Date.now() > deadline) assert.fail("complete never started writing the File");
    await sleep(10);
  }
  await server.kill();
  const outcome = await completing;

  const files = await queryRows(server, "select id from files");
  const [row] = await queryRows(server, `select status, file_id from uploads where id = '${up.id}'`);
  if (files.length === 1) assert.equal(row!.status, "completed", "a File row only with a completed upload");
  else {
    assert.equal(files.length, 0);
    assert.equal(outcome, "failed");
    assert.notEqual(row!.status, "completed");
  }

  await server.restart();
  const again = await completeWhenFree(server.client(), up.id, ids);
  assert.equal(again.status, "completed");
  const listed = (await server.client().files.list()).data;
  assert.deepEqual(listed.map((f) => f.id), [again.file!.id], "exactly one File");
  if (files.length === 1) assert.equal(again.file!.id, files[0]!.id, "the File that survived the kill");
  const content = Buffer.from(await (await server.client().files.content(again.file!.id)).arrayBuffer());
  assert.ok(content.equals(Buffer.concat(parts)));
  // No File blob without its row, and nothing half-written, once the sweeper has been by.
  const settle = Date.now() + 20_000;
  while ((await partialBlobs(server)).length > 0 || (await visibleBlobs(server)).some((k) => k.startsWith("uploads/"))) {
    if (Date.now() > settle) assert.fail(`leftovers: ${(await partialBlobs(server)).join(",")} ${(await visibleBlobs(server)).join(",")}`);
    await sleep(200);
  }
  assert.deepEqual(await fileBlobs(), [`files/${again.file!.id}`]);
});

// SIGKILL the server in the middle of a large upload: after a restart there is no row and no
// blob for it, and the next upload works.
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, test } from "node:test";
import { toFile } from "openai";
import { partialBlobs, queryRows, visibleBlobs } from "./helpers/storage.js";
import { BACKEND, startServer, type TestServer } from "./helpers/server.js";

let server: TestServer;
before(async () => {
  // A short lease, so the sweeper may reclaim the dead upload within the test.
  server = await startServer({ env: { OPENFT_UPLOAD_LEASE_SECONDS: "2" } });
});
after(async () => server.dispose());

async function* slowBody(stop: AbortSignal): AsyncGenerator<Uint8Array> {
  const chunk = Buffer.alloc(1 << 20, "x");
  // Up to 256 MiB, slowly enough that the kill lands mid-upload.
  for (let i = 0; i < 256 && !stop.aborted; i++) {
    yield chunk;
    await sleep(20);
  }
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

test("an upload the client aborts leaves no row and no partial blob", async () => {
  const client = server.client();
  const before = (await client.files.list()).data.length;
  const abort = new AbortController();
  const stop = new AbortController();
  const upload = client.files
    .create({ file: slowBody(stop.signal) as never, purpose: "user_data" }, { signal: abort.signal })
    .then(
      () => "completed",
      () => "aborted",
    );
  await waitFor("a partial upload", async () => ((await partialBlobs(server)).length > 0 ? true : undefined));
  abort.abort();
  stop.abort();
  assert.equal(await upload, "aborted");
  // Discarded by the server that saw the abort (or, at the latest, by the sweeper).
  await waitFor("the partial to go", async () => ((await partialBlobs(server)).length === 0 ? true : undefined), 10_000);
  assert.equal((await client.files.list()).data.length, before);
});

test("a server killed mid-upload leaves no row and no blob, and the next upload works", async () => {
  const client = server.client();
  const kept = await client.files.create({ file: await toFile(Buffer.from('{"a":1}\n'), "kept.jsonl"), purpose: "fine-tune" });

  const stop = new AbortController();
  const upload = client.files
    .create({ file: slowBody(stop.signal) as never, purpose: "user_data" })
    .then(
      () => "completed",
      () => "failed",
    );
  // Wait until bytes are landing in the blob store, then kill.
  await waitFor("a partial upload", async () => ((await partialBlobs(server)).length > 0 ? true : undefined));
  await server.kill();
  stop.abort();
  assert.equal(await upload, "failed", "the upload cannot have completed");

  assert.deepEqual(await visibleBlobs(server), [`files/${kept.id}`], "no visible blob for the killed upload");
  const rows = await queryRows(server, "select id from files order by seq");
  assert.deepEqual(rows.map((r) => r.id), [kept.id], "no row for the killed upload");

  await server.restart();
  // The dead upload's lease lapses and the sweeper removes its partial data and its row.
  await waitFor("the sweeper", async () => ((await partialBlobs(server)).length === 0 ? true : undefined));
  if (BACKEND === "postgres-s3") {
    await waitFor("the upload row to go", async () =>
      (await queryRows(server, "select id from file_uploads")).length === 0 ? true : undefined,
    );
  }

  const next = await server.client().files.create({ file: await toFile(Buffer.from('{"b":2}\n'), "next.jsonl"), purpose: "fine-tune" });
  assert.equal(next.status, "processed");
  const listed = await server.client().files.list({ order: "asc" });
  assert.deepEqual(listed.data.map((f) => f.id), [kept.id, next.id]);
  assert.deepEqual(await visibleBlobs(server), [`files/${kept.id}`, `files/${next.id}`].sort());

  if (BACKEND === "embedded") {
    await server.stop();
    assert.deepEqual(await queryRows(server, "select id from file_uploads"), [], "no upload row left");
    await server.restart();
  }
});

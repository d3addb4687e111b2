// The Uploads API through the official Node SDK (`client.uploads`): parts in parallel and out of
// order, md5, the declared size, the line check, cancel and expiry; the File it makes is a File
// like any other (content, and a fine-tuning job accepts it). Nothing of a refused upload stays.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import OpenAI, { toFile } from "openai";
import { assertResponseMatches } from "./helpers/openapi.js";
import { partialBlobs, visibleBlobs } from "./helpers/storage.js";
import { startServer, type TestServer } from "./helpers/server.js";

const line = (i: number) => JSON.stringify({ messages: [{ role: "user", content: `q${i}` }, { role: "assistant", content: `a${i}` }] }) + "\n";
const jsonl = (n: number) => Buffer.from(Array.from({ length: n }, (_, i) => line(i)).join(""));
const md5 = (b: Buffer) => createHash("md5").update(b).digest("hex");

/** Splits `data` into n pieces (cutting mid-line on purpose). */
function split(data: Buffer, n: number): Buffer[] {
  const size = Math.ceil(data.length / n);
  return Array.from({ length: n }, (_, i) => data.subarray(i * size, (i + 1) * size));
}

type ApiErrorClass = new (...args: never[]) => InstanceType<typeof OpenAI.APIError>;

async function expectError(p: Promise<unknown>, cls: ApiErrorClass, param: string | null, re: RegExp) {
  const err = await p.then(
    () => assert.fail("expected an error"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof cls, `expected ${cls.name}, got ${String(err)}`);
  const e = err as InstanceType<typeof OpenAI.APIError>;
  assert.equal(e.param, param, e.message);
  assert.match(e.message, re);
  return e;
}

describe("the Uploads API", () => {
  let server: TestServer;
  let client: OpenAI;
  before(async () => {
    server = await startServer();
    client = server.client();
  });
  after(async () => server.dispose());

  const newUpload = (data: Buffer, filename = "train.jsonl", purpose: "fine-tune" | "user_data" = "fine-tune") =>
    client.uploads.create({ filename, purpose, bytes: data.length, mime_type: "text/jsonl" });

  test("parts sent in parallel and out of order are joined in part_ids order into a File", async () => {
    const data = jsonl(400);
    const pieces = split(data, 5);
    const up = await newUpload(data);
    assert.equal(up.object, "upload");
    assert.equal(up.status, "pending");
    assert.match(up.id, /^upload-/);
    assert.equal(up.expires_at - up.created_at, 3600);
    assert.equal(up.file, null);
    assertResponseMatches("post", "/v1/uploads", 200, up);
    // Sent last-first, all at once; the order is decided at complete.
    const sent = await Promise.all([...pieces.keys()].reverse().map(async (i) => ({ i, part: await client.uploads.parts.create(up.id, { data: await toFile(pieces[i]!, "p") }) })));
    for (const { part } of sent) {
      assert.equal(part.object, "upload.part");
      assert.equal(part.upload_id, up.id);
      assert.match(part.id, /^part_/);
      assertResponseMatches("post", "/v1/uploads/{upload_id}/parts", 200, part);
    }
    const ids = sent.sort((a, b) => a.i - b.i).map((s) => s.part.id);
    const done = await client.uploads.complete(up.id, { part_ids: ids, md5: md5(data) });
    assert.equal(done.status, "completed");
    assertResponseMatches("post", "/v1/uploads/{upload_id}/complete", 200, done);
    assert.equal(done.file!.bytes, data.length);
    assert.equal(done.file!.filename, "train.jsonl");
    assert.equal(done.file!.purpose, "fine-tune");
    const content = Buffer.from(await (await client.files.content(done.file!.id)).arrayBuffer());
    assert.ok(content.equals(data), "the File holds the parts in part_ids order");
    assert.equal((await client.files.retrieve(done.file!.id)).bytes, data.length);
    // A retried complete returns the same File; nothing is duplicated.
    const again = await client.uploads.complete(up.id, { part_ids: ids });
    assert.equal(again.file!.id, done.file!.id);
    // The parts are gone once the File exists.
    const blobs = await visibleBlobs(server);
    assert.ok(!blobs.some((k) => k.startsWith(`uploads/${up.id}/`)), blobs.join(","));
    assert.ok(blobs.includes(`files/${done.file!.id}`));
    // A fine-tuning job accepts it like any File (it fails later only for want of a model).
    await expectError(
      client.fineTuning.jobs.create({ model: "no-such-model", training_file: done.file!.id }),
      OpenAI.BadRequestError,
      "model",
      /not available/,
    );
  });

  test("md5 mismatch and a wrong total are refused; the upload stays pending and completes when right", async () => {
    const data = jsonl(50);
    const [a, b] = split(data, 2);
    const up = await newUpload(data);
    const pa = await client.uploads.parts.create(up.id, { data: await toFile(a!, "a") });
    const pb = await client.uploads.parts.create(up.id, { data: await toFile(b!, "b") });
    await expectError(client.uploads.complete(up.id, { part_ids: [pa.id, pb.id], md5: md5(Buffer.from("other")) }), OpenAI.BadRequestError, "md5", /md5/);
    await expectError(client.uploads.complete(up.id, { part_ids: [pa.id] }), OpenAI.BadRequestError, "part_ids", new RegExp(`add up to ${a!.length} bytes.*bytes=${data.length}`));
    await expectError(client.uploads.complete(up.id, { part_ids: [pa.id, "part_nope"] }), OpenAI.BadRequestError, "part_ids[1]", /No such part/);
    await expectError(client.uploads.complete(up.id, { part_ids: [pa.id, pa.id] }), OpenAI.BadRequestError, "part_ids[1]", /twice/);
    assert.deepEqual((await partialBlobs(server)).filter((k) => k.includes("files")), [], "no half-made File blob");
    const files = (await client.files.list()).data.length;
    const done = await client.uploads.complete(up.id, { part_ids: [pa.id, pb.id], md5: md5(data).toUpperCase() });
    assert.equal(done.status, "completed");
    assert.equal((await client.files.list()).data.length, files + 1);
  });

  test("complete runs the fine-tune line check of /v1/files, naming the line", async () => {
    const data = Buffer.concat([jsonl(3), Buffer.from("not json\n")]);
    const up = await newUpload(data);
    const p = await client.uploads.parts.create(up.id, { data: await toFile(data, "p") });
    await expectError(client.uploads.complete(up.id, { part_ids: [p.id] }), OpenAI.BadRequestError, "part_ids", /Line 4 is not valid JSON/);
    await expectError(newUpload(data, "train.txt"), OpenAI.BadRequestError, "filename", /Must be \.jsonl/);
    // Other purposes are not line-checked.
    const other = await newUpload(data, "notes.txt", "user_data");
    const q = await client.uploads.parts.create(other.id, { data: await toFile(data, "p") });
    assert.equal((await client.uploads.complete(other.id, { part_ids: [q.id] })).status, "completed");
  });

  test("bad create bodies name their field", async () => {
    await expectError(client.uploads.create({ filename: "a.jsonl", purpose: "fine-tune", bytes: 9 * 1024 ** 3, mime_type: "text/jsonl" }), OpenAI.BadRequestError, "bytes", /at most 8589934592 bytes/);
    await expectError(client.uploads.create({ filename: "a.jsonl", purpose: "nope" as "fine-tune", bytes: 1, mime_type: "text/jsonl" }), OpenAI.BadRequestError, "purpose", /./);
    await expectError(client.uploads.create({ filename: "a.jsonl", purpose: "fine-tune", bytes: 0, mime_type: "text/jsonl" }), OpenAI.BadRequestError, "bytes", /./);
    await expectError(client.uploads.parts.create("upload-nope", { data: await toFile(Buffer.from("x"), "p") }), OpenAI.NotFoundError, "upload_id", /No such Upload/);
  });

  test("a cancelled upload takes no parts and cannot complete; its parts are removed", async () => {
    const data = jsonl(10);
    const up = await newUpload(data);
    const p = await client.uploads.parts.create(up.id, { data: await toFile(data, "p") });
    const cancelled = await client.uploads.cancel(up.id);
    assert.equal(cancelled.status, "cancelled");
    assertResponseMatches("post", "/v1/uploads/{upload_id}/cancel", 200, cancelled);
    assert.equal((await client.uploads.cancel(up.id)).status, "cancelled", "cancel is idempotent");
    await expectError(client.uploads.parts.create(up.id, { data: await toFile(data, "p") }), OpenAI.BadRequestError, "upload_id", /is cancelled/);
    await expectError(client.uploads.complete(up.id, { part_ids: [p.id] }), OpenAI.BadRequestError, "upload_id", /is cancelled/);
    assert.ok(!(await visibleBlobs(server)).some((k) => k.startsWith(`uploads/${up.id}/`)));
  });
});

describe("an upload past its expiry", () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ env: { OPENFT_UPLOADS_EXPIRY_SECONDS: "2", OPENFT_UPLOAD_LEASE_SECONDS: "2" } });
  });
  after(async () => server.dispose());

  test("is expired: no parts, no complete, and the sweeper removes its parts", async () => {
    const client = server.client();
    const data = jsonl(10);
    const up = await client.uploads.create({ filename: "t.jsonl", purpose: "fine-tune", bytes: data.length, mime_type: "text/jsonl" });
    assert.equal(up.expires_at - up.created_at, 2);
    const p = await client.uploads.parts.create(up.id, { data: await toFile(data, "p") });
    assert.ok((await visibleBlobs(server)).some((k) => k.startsWith(`uploads/${up.id}/`)));
    await sleep(3000);
    await expectError(client.uploads.parts.create(up.id, { data: await toFile(data, "p") }), OpenAI.BadRequestError, "upload_id", /is expired/);
    await expectError(client.uploads.complete(up.id, { part_ids: [p.id] }), OpenAI.BadRequestError, "upload_id", /is expired/);
    const deadline = Date.now() + 20_000;
    while ((await visibleBlobs(server)).some((k) => k.startsWith(`uploads/${up.id}/`))) {
      if (Date.now() > deadline) assert.fail("the expired upload's parts were not swept");
      await sleep(200);
    }
    assert.equal((await client.files.list()).data.length, 0);
  });
});

// The Files API through the official `openai` npm client (retries off), against the real server.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import OpenAI, { toFile } from "openai";
import { assertResponseMatches } from "./helpers/openapi.js";
import { startServer, type TestServer } from "./helpers/server.js";

const line = (i: number) => JSON.stringify({ messages: [{ role: "user", content: `q${i}` }, { role: "assistant", content: `a${i}` }] });
const jsonl = (n: number) => Array.from({ length: n }, (_, i) => line(i)).join("\n") + "\n";

async function expectApiError(p: Promise<unknown>, status: number): Promise<InstanceType<typeof OpenAI.APIError>> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof OpenAI.APIError, `expected an APIError, got ${String(err)}`);
    assert.equal(err.status, status, err.message);
    // The envelope always carries all four keys.
    const inner = err.error as Record<string, unknown>;
    assert.deepEqual(Object.keys(inner).sort(), ["code", "message", "param", "type"]);
    assert.match(err.requestID ?? "", /^req_/);
    assert.equal(err.headers?.get("x-should-retry"), status >= 500 || status === 429 ? null : "false");
    return err;
  }
  assert.fail(`expected HTTP ${status}`);
}

describe("files", () => {
  let server: TestServer;
  let client: OpenAI;
  let other: OpenAI;

  before(async () => {
    server = await startServer({ projects: ["other"] });
    client = server.client();
    other = server.client(server.projectKeys.other);
  });
  after(async () => server.dispose());

  test("upload, retrieve, content byte for byte, delete, then 404", async () => {
    const body = jsonl(12);
    const { data: created, response } = await client.files
      .create({ file: await toFile(Buffer.from(body), "train.jsonl"), purpose: "fine-tune" })
      .withResponse();
    assertResponseMatches("post", "/v1/files", 200, created);
    assert.match(response.headers.get("x-request-id") ?? "", /^req_/);
    assert.match(created.id, /^file-[A-Za-z0-9]{24}$/);
    assert.equal(created.object, "file");
    assert.equal(created.bytes, Buffer.byteLength(body));
    assert.equal(created.filename, "train.jsonl");
    assert.equal(created.purpose, "fine-tune");
    assert.equal(created.status, "processed");
    assert.ok(Math.abs(created.created_at - Date.now() / 1000) < 60);

    const got = await client.files.retrieve(created.id);
    assertResponseMatches("get", "/v1/files/{file_id}", 200, got);
    assert.deepEqual(got, created);

    const content = await client.files.content(created.id);
    assert.equal(content.headers.get("content-type"), "application/octet-stream");
    assert.equal(Buffer.from(await content.arrayBuffer()).toString(), body);

    const deleted = await client.files.delete(created.id);
    assertResponseMatches("delete", "/v1/files/{file_id}", 200, deleted);
    assert.deepEqual(deleted, { id: created.id, object: "file", deleted: true });
    const err = await expectApiError(client.files.retrieve(created.id), 404);
    assert.ok(err instanceof OpenAI.NotFoundError);
    assert.equal(err.param, "id");
    assert.equal(err.error && (err.error as { message: string }).message, `No such File object: ${created.id}`);
    await expectApiError(client.files.content(created.id), 404);
    await expectApiError(client.files.delete(created.id), 404);
  });

  test("binary content survives byte for byte", async () => {
    const bytes = Buffer.from(Array.from({ length: 70_000 }, (_, i) => (i * 131 + 7) % 256));
    const created = await client.files.create({ file: await toFile(bytes, "blob.bin"), purpose: "user_data" });
    const content = await client.files.content(created.id);
    assert.ok(Buffer.from(await content.arrayBuffer()).equals(bytes));
  });

  test("list: auto-pagination over more than two pages, order, purpose filter, cursors", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) {
      const f = await other.files.create({ file: await toFile(Buffer.from(jsonl(1)), `p${i}.jsonl`), purpose: "fine-tune" });
      ids.push(f.id);
    }
    const v = await other.files.create({ file: await toFile(Buffer.from("x"), "a.txt"), purpose: "assistants" });

    const seen: string[] = [];
    for await (const f of other.files.list({ limit: 3, purpose: "fine-tune" })) seen.push(f.id);
    assert.deepEqual(seen, [...ids].reverse(), "newest first, each exactly once");

    const asc: string[] = [];
    for await (const f of other.files.list({ limit: 2, order: "asc" })) asc.push(f.id);
    assert.deepEqual(asc, [...ids, v.id]);

    type RawList = { data: Array<{ id: string }>; first_id: string | null; last_id: string | null; has_more: boolean };
    const page = (await (await other.files.list({ limit: 3 }).asResponse()).json()) as RawList;
    assertResponseMatches("get", "/v1/files", 200, page);
    assert.equal(page.data.length, 3);
    assert.equal(page.has_more, true);
    assert.equal(page.first_id, page.data[0]!.id);
    assert.equal(page.last_id, page.data[2]!.id);

    const assistants = await other.files.list({ purpose: "assistants" });
    assert.deepEqual(assistants.data.map((f) => f.id), [v.id]);
    assert.equal(assistants.has_more, false);

    const empty = (await (await other.files.list({ purpose: "vision" }).asResponse()).json()) as RawList;
    assert.deepEqual(empty, { object: "list", data: [], first_id: null, last_id: null, has_more: false });
  });

  test("another project's files answer 404 exactly like ids that never existed", async () => {
    const mine = await client.files.create({ file: await toFile(Buffer.from(jsonl(2)), "mine.jsonl"), purpose: "fine-tune" });
    const theirs = await expectApiError(other.files.retrieve(mine.id), 404);
    const never = await expectApiError(other.files.retrieve("file-doesnotexist000000000"), 404);
    assert.equal(theirs.error && (theirs.error as { message: string }).message, `No such File object: ${mine.id}`);
    assert.equal(theirs.param, never.param);
    assert.equal(theirs.code, never.code);
    await expectApiError(other.files.content(mine.id), 404);
    await expectApiError(other.files.delete(mine.id), 404);
    for await (const f of other.files.list()) assert.notEqual(f.id, mine.id);
    assert.equal((await client.files.retrieve(mine.id)).id, mine.id, "still there for its owner");
  });

  test("expires_after sets expires_at; batch files expire after 30 days by default", async () => {
    const f = await client.files.create({
      file: await toFile(Buffer.from(jsonl(1)), "e.jsonl"),
      purpose: "fine-tune",
      expires_after: { anchor: "created_at", seconds: 3600 },
    });
    assert.equal(f.expires_at, f.created_at + 3600);
    const b = await client.files.create({ file: await toFile(Buffer.from(jsonl(1)), "b.jsonl"), purpose: "batch" });
    assert.equal(b.expires_at, b.created_at + 30 * 24 * 3600);
    for (const seconds of [3599, 2_592_001]) {
      const err = await expectApiError(
        client.files.create({ file: await toFile(Buffer.from(jsonl(1)), "e.jsonl"), purpose: "fine-tune", expires_after: { anchor: "created_at", seconds } }),
        400,
      );
      assert.equal(err.param, "expires_after.seconds");
    }
  });

  test("bad uploads get a 400 naming the field or the line, and leave nothing behind", async () => {
    const before = (await client.files.list()).data.length;
    const cases: Array<[string, () => Promise<unknown>, string, RegExp]> = [
      ["missing purpose", async () => client.files.create({ file: await toFile(Buffer.from(jsonl(1)), "t.jsonl") } as never), "purpose", /purpose/],
      ["unknown purpose", async () => client.files.create({ file: await toFile(Buffer.from(jsonl(1)), "t.jsonl"), purpose: "nonsense" as never }), "purpose", /nonsense/],
      ["not .jsonl", async () => client.files.create({ file: await toFile(Buffer.from(jsonl(1)), "notes.txt"), purpose: "fine-tune" }), "file", /Must be \.jsonl/],
      ["bad JSON on line 3", async () => client.files.create({ file: await toFile(Buffer.from(`${line(1)}\n${line(2)}\n{"messages": [\n${line(4)}\n`), "t.jsonl"), purpose: "fine-tune" }), "file", /Line 3 is not valid JSON/],
      ["array on line 2", async () => client.files.create({ file: await toFile(Buffer.from(`${line(1)}\n[1,2]\n`), "t.jsonl"), purpose: "fine-tune" }), "file", /Line 2 is not a JSON dictionary/],
      ["empty line 2", async () => client.files.create({ file: await toFile(Buffer.from(`${line(1)}\n\n${line(3)}\n`), "t.jsonl"), purpose: "fine-tune" }), "file", /Line 2 is empty/],
      ["empty file", async () => client.files.create({ file: await toFile(Buffer.alloc(0), "t.jsonl"), purpose: "fine-tune" }), "file", /empty/],
    ];
    for (const [name, call, param, message] of cases) {
      const err = await expectApiError(call(), 400);
      assert.ok(err instanceof OpenAI.BadRequestError, name);
      assert.equal(err.param, param, name);
      assert.match(err.message, message, name);
    }
    assert.equal((await client.files.list()).data.length, before, "no rejected upload became a file");
  });

  test("a JSON line split across network chunks and CRLF line ends are fine", async () => {
    const big = JSON.stringify({ messages: [{ role: "user", content: "z".repeat(300_000) }] });
    const body = `${big}\r\n${line(2)}\r\n${big}`;
    const f = await client.files.create({ file: await toFile(Buffer.from(body), "crlf.jsonl"), purpose: "fine-tune" });
    assert.equal(f.bytes, Buffer.byteLength(body));
  });

  test("401 in OpenAI's envelope for a missing or wrong key", async () => {
    const wrong = server.client("sk-wrong-key-000000000");
    const err = await expectApiError(wrong.files.list(), 401);
    assert.ok(err instanceof OpenAI.AuthenticationError);
    assert.equal(err.code, "invalid_api_key");
    assert.ok(!err.message.includes("sk-wrong-key-000000000"), "the key is not echoed whole");
    // Paths the router normalises still need a key.
    for (const p of ["//v1/files", "/%761/files", "/v1//files", "/v1/files/"]) {
      const r = await server.fetch(`${server.url}${p}`);
      assert.equal(r.status, 401, p);
    }
    const res = await server.fetch(`${server.baseURL}/files`);
    assert.equal(res.status, 401);
    const body = (await res.json()) as { error: Record<string, unknown> };
    assertResponseMatches("get", "/v1/files", 401, body);
    assert.match(res.headers.get("x-request-id") ?? "", /^req_/);
  });

  test("unknown routes, bad query values and bad JSON bodies answer in the envelope", async () => {
    const h = { authorization: `Bearer ${server.apiKey}` };
    const unknown = await server.fetch(`${server.baseURL}/nothing/here`, { headers: h });
    assert.equal(unknown.status, 404);
    assert.deepEqual(Object.keys(((await unknown.json()) as { error: object }).error).sort(), ["code", "message", "param", "type"]);
    assert.match(unknown.headers.get("x-request-id") ?? "", /^req_/);

    const badLimit = await expectApiError(client.files.list({ limit: 0 }), 400);
    assert.equal(badLimit.param, "limit");
    const badOrder = await expectApiError(client.files.list({ order: "sideways" as never }), 400);
    assert.equal(badOrder.param, "order");
    const badAfter = await expectApiError(client.files.list({ after: "file-nope" }), 404);
    assert.equal(badAfter.param, "after");

    const notMultipart = await server.fetch(`${server.baseURL}/files`, { method: "POST", headers: { ...h, "content-type": "application/json" }, body: "{not json" });
    assert.equal(notMultipart.status, 400);
    assert.equal(notMultipart.headers.get("x-should-retry"), "false");
  });

  test("ids with raw or escaped colons reach the route whole", async () => {
    const h = { authorization: `Bearer ${server.apiKey}` };
    for (const p of ["file-a:b:c", "file-a%3Ab%3Ac", "file-a%3ab:c"]) {
      const res = await server.fetch(`${server.baseURL}/files/${p}`, { headers: h });
      assert.equal(res.status, 404, p);
      const body = (await res.json()) as { error: { message: string } };
      assert.equal(body.error.message, "No such File object: file-a:b:c", p);
    }
  });

  test("body-less DELETE with or without an empty JSON body", async () => {
    const a = await client.files.create({ file: await toFile(Buffer.from("a"), "a.txt"), purpose: "user_data" });
    const b = await client.files.create({ file: await toFile(Buffer.from("b"), "b.txt"), purpose: "user_data" });
    const h = { authorization: `Bearer ${server.apiKey}` };
    const withJson = await server.fetch(`${server.baseURL}/files/${a.id}`, { method: "DELETE", headers: { ...h, "content-type": "application/json" } });
    assert.equal(withJson.status, 200);
    const bare = await server.fetch(`${server.baseURL}/files/${b.id}`, { method: "DELETE", headers: h });
    assert.equal(bare.status, 200);
    assert.deepEqual(await bare.json(), { id: b.id, object: "file", deleted: true });
  });

  test("healthz and readyz", async () => {
    const health = await server.fetch(`${server.url}/healthz`);
    assert.equal(health.status, 200);
    assertResponseMatches("get", "/healthz", 200, await health.json());
    const ready = await server.fetch(`${server.url}/readyz`);
    assert.equal(ready.status, 200);
    assertResponseMatches("get", "/readyz", 200, await ready.json());
  });

  test("logs carry request ids and never the API key", () => {
    assert.match(server.log, /"reqId":"req_/);
    assert.ok(!server.log.includes(server.apiKey), "the key never reaches the log");
    assert.ok(!server.log.includes(server.projectKeys.other!), "nor a project key");
  });
});

describe("upload size limit", () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ env: { OPENFT_MAX_UPLOAD_BYTES: "4096" } });
  });
  after(async () => server.dispose());

  test("a file over the limit gets a clear 400 and leaves no file", async () => {
    const client = server.client();
    const err = await expectApiError(
      client.files.create({ file: await toFile(Buffer.from(jsonl(200)), "big.jsonl"), purpose: "fine-tune" }),
      400,
    );
    assert.equal(err.code, "file_too_large");
    assert.equal(err.param, "file");
    assert.match(err.message, /4096 bytes/);
    assert.deepEqual((await client.files.list()).data, []);
    const ok = await client.files.create({ file: await toFile(Buffer.from(jsonl(2)), "small.jsonl"), purpose: "fine-tune" });
    assert.equal(ok.status, "processed");
  });
});

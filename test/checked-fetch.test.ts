// The live openapi.yaml check of test/helpers/checked-fetch.ts can fail: a server double that
// answers outside the document (a wrong body, an undocumented status, a bad stream chunk, a stream
// without [DONE]) fails each request, and a conforming answer passes.
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import { checkedFetch, openApiViolations } from "./helpers/checked-fetch.js";

const CHUNK = { id: `chatcmpl-${"a".repeat(29)}`, object: "chat.completion.chunk", created: 1, model: "m", service_tier: "default", system_fingerprint: "fp_openft", choices: [] };

describe("checkedFetch against a non-conforming server double", () => {
  let serverDouble: http.Server;
  let client: OpenAI;
  before(async () => {
    serverDouble = http.createServer((req, res) => {
      const json = (status: number, body: unknown) => {
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify(body));
      };
      if (req.url === "/v1/files") return json(200, { object: "list", data: [{ id: "file-x" }], has_more: false });
      if (req.url === "/v1/models") return json(418, {});
      if (req.url === "/v1/models/m") return json(200, { id: "m", object: "model", created: 1, owned_by: "openft" });
      res.writeHead(200, { "content-type": "text/event-stream" });
      if (req.headers["x-case"] === "bad-chunk") res.end(`data: ${JSON.stringify({ id: "x" })}\n\ndata: [DONE]\n\n`);
      else if (req.headers["x-case"] === "no-done") res.end(`data: ${JSON.stringify(CHUNK)}\n\n`);
      else if (req.headers["x-case"] === "error-end") res.end(`data: ${JSON.stringify(CHUNK)}\n\ndata: ${JSON.stringify({ error: { message: "gone", type: "server_error", param: null, code: null } })}\n\n`);
      else res.end(`data: ${JSON.stringify(CHUNK)}\n\ndata: [DONE]\n\n`);
    });
    await new Promise<void>((resolve) => serverDouble.listen(0, "127.0.0.1", resolve));
    const { port } = serverDouble.address() as AddressInfo;
    client = new OpenAI({ apiKey: "k", baseURL: `http://127.0.0.1:${port}/v1`, maxRetries: 0, fetch: checkedFetch });
  });
  after(() => serverDouble.close());

  const fails = async (call: () => Promise<unknown>, pattern: RegExp) => {
    const before = openApiViolations().length;
    const err = await call().then(() => undefined, (e: unknown) => e as Error & { cause?: Error });
    assert.ok(err, "the request must fail");
    assert.match(err.cause?.message ?? err.message, pattern);
    assert.equal(openApiViolations().length, before + 1, "and be recorded for TestServer.dispose()");
  };
  const stream = (c: string) => async () => {
    const s = await client.chat.completions.create({ model: "m", messages: [{ role: "user", content: "hi" }], stream: true }, { headers: { "x-case": c } });
    for await (const chunk of s) void chunk;
  };

  test("a body that is not the documented schema", () => fails(() => client.files.list(), /GET \/v1\/files 200: the body does not match/));
  test("a status the operation does not document", () => fails(() => client.models.list(), /documents no 418 response for GET \/v1\/models/));
  test("a stream chunk that is not a ChatCompletionChunk", () => fails(stream("bad-chunk"), /chunk 1: ChatCompletionChunk/));
  test("a stream that ends without [DONE]", () => fails(stream("no-done"), /without data: \[DONE\]/));
  test("conforming answers pass", async () => {
    const before = openApiViolations().length;
    assert.equal((await client.models.retrieve("m")).id, "m");
    await stream("ok")();
    // An error event after the first chunk ends a stream without [DONE] (openapi.yaml): the SDK
    // raises it, and it is no violation.
    await assert.rejects(stream("error-end"), (e: unknown) => e instanceof OpenAI.APIError && /gone/.test(e.message));
    assert.equal(openApiViolations().length, before);
  });
});

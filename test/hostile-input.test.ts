// Hostile and malformed input against the real server (issue 10): whatever a client sends, the
// answer is a 4xx in OpenAI's envelope with x-request-id, never a 5xx and never fastify's or
// node's own error shape. Raw fetch, because the SDKs refuse to send most of this.
import assert from "node:assert/strict";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import OpenAI, { toFile } from "openai";
import pino from "pino";
import { ProtocolClient } from "../src/engine/worker/protocol-client.js";
import { Worker } from "../src/engine/worker/worker.js";
import { waitForStatus } from "./helpers/jobs.js";
import { startServer, type TestServer } from "./helpers/server.js";
import { buildGpt2ChatmlFolder } from "./helpers/tiny-models.js";
import { TrainerDouble } from "./helpers/trainer-double.js";

const MODEL = "tiny-llama-gpt2";
const LINE = JSON.stringify({ messages: [{ role: "user", content: "1+1?" }, { role: "assistant", content: "2" }] });
const JSONL = `${LINE}\n`.repeat(10);

interface Answer {
  status: number;
  headers: Headers;
  error: { message: string; type: string; param: string | null; code: string | null };
}

describe("hostile input", () => {
  let server: TestServer;
  let client: OpenAI;
  let fileId: string;
  let jobId: string;

  const call = async (method: string, url: string, init: { body?: string | Buffer; type?: string; headers?: Record<string, string>; token?: string } = {}): Promise<Answer> => {
    const headers: Record<string, string> = { authorization: `Bearer ${init.token ?? server.apiKey}`, ...init.headers };
    if (init.type) headers["content-type"] = init.type;
    const res = await fetch(`${server.url}${url}`, { method, headers, body: init.body });
    const text = await res.text();
    let error: Answer["error"];
    try {
      error = (JSON.parse(text) as { error: Answer["error"] }).error;
    } catch {
      assert.fail(`${method} ${url}: HTTP ${res.status} is not JSON: ${text.slice(0, 200)}`);
    }
    return { status: res.status, headers: res.headers, error };
  };
  /** The answer is `status` in the envelope (all four keys), with x-request-id. */
  const expectError = async (p: Promise<Answer>, status: number, param?: string | null): Promise<Answer> => {
    const a = await p;
    assert.equal(a.status, status, JSON.stringify(a.error));
    assert.ok(a.error && typeof a.error === "object", "the envelope");
    assert.deepEqual(Object.keys(a.error).sort(), ["code", "message", "param", "type"]);
    assert.equal(a.error.type, "invalid_request_error");
    assert.match(a.headers.get("x-request-id") ?? "", /^req_[A-Za-z0-9]+$/);
    if (param !== undefined) assert.equal(a.error.param, param, a.error.message);
    return a;
  };
  const json = (method: string, url: string, body: string, token?: string) => call(method, url, { body, type: "application/json", token });
  const multipart = (parts: string, boundary = "XyZ") => call("POST", "/v1/files", { body: parts, type: `multipart/form-data; boundary=${boundary}` });
  const field = (name: string, value: string, b = "XyZ") => `--${b}\r\ncontent-disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`;
  const filePart = (disposition: string, body = JSONL, b = "XyZ") =>
    `--${b}\r\ncontent-disposition: form-data; name="file"; ${disposition}\r\ncontent-type: application/jsonl\r\n\r\n${body}\r\n`;

  before(async () => {
    server = await startServer({ workers: ["w"] });
    await buildGpt2ChatmlFolder({ parent: server.env.OPENFT_MODELS_DIR });
    // Not a model: a folder with only config.json (defect 9).
    await mkdir(path.join(server.env.OPENFT_MODELS_DIR!, "half-model"), { recursive: true });
    await writeFile(path.join(server.env.OPENFT_MODELS_DIR!, "half-model", "config.json"), "{}");
    await server.stop();
    await server.restart(); // so that the broken folder is there at start
    client = server.client();
    fileId = (await client.files.create({ file: await toFile(Buffer.from(JSONL), "t.jsonl"), purpose: "fine-tune" })).id;
    jobId = (await client.fineTuning.jobs.create({ model: MODEL, training_file: fileId })).id;
  });
  after(async () => server.dispose());

  test("NUL in a path id answers 404 as any unknown id does", async () => {
    for (const url of [
      `/v1/files/file-a%00b`,
      `/v1/files/file-a%00b/content`,
      `/v1/fine_tuning/jobs/ftjob-a%00b`,
      `/v1/fine_tuning/jobs/ftjob-a%00b/events`,
      `/v1/fine_tuning/jobs/ftjob-a%00b/checkpoints`,
      `/v1/models/m%00`,
    ]) {
      await expectError(call("GET", url), 404);
    }
    await expectError(call("DELETE", `/v1/files/file-a%00b`), 404);
    await expectError(call("POST", `/v1/fine_tuning/jobs/ftjob-a%00b/cancel`), 404);
    await expectError(call("DELETE", `/v1/models/ft:m%00`), 404);
    const worker = server.workerTokens.w!;
    await expectError(json("POST", `/internal/v1/jobs/ftjob-a%00b/heartbeat`, "{}", worker), 404);
  });

  test("NUL in a query value or a JSON field answers 400 naming the param", async () => {
    await expectError(call("GET", `/v1/files?after=file-%00`), 400, "after");
    await expectError(call("GET", `/v1/files?purpose=fine%00tune`), 400, "purpose");
    await expectError(call("GET", `/v1/fine_tuning/jobs?after=x%00`), 400, "after");
    await expectError(call("GET", `/v1/fine_tuning/jobs?metadata[k]=v%00`), 400, "metadata[k]");
    await expectError(call("GET", `/v1/fine_tuning/jobs/${jobId}/events?after=x%00`), 400, "after");
    const job = (extra: Record<string, unknown>) => JSON.stringify({ model: MODEL, training_file: fileId, ...extra });
    await expectError(json("POST", "/v1/fine_tuning/jobs", job({ model: "tiny\u0000" })), 400, "model");
    await expectError(json("POST", "/v1/fine_tuning/jobs", job({ training_file: "file-\u0000" })), 400, "training_file");
    await expectError(json("POST", "/v1/fine_tuning/jobs", job({ validation_file: "file-\u0000" })), 400, "validation_file");
    await expectError(json("POST", "/v1/fine_tuning/jobs", job({ metadata: { "k\u0000": "v" } })), 400, "metadata");
    await expectError(json("POST", "/v1/fine_tuning/jobs", job({ metadata: { k: "v\u0000" } })), 400, "metadata.k");
    await expectError(json("POST", "/v1/chat/completions", JSON.stringify({ model: "m\u0000", messages: [{ role: "user", content: "hi" }] })), 400, "model");
    const worker = server.workerTokens.w!;
    await expectError(json("POST", `/internal/v1/jobs/${jobId}/fail`, JSON.stringify({ code: "c", message: "m\u0000" }), worker), 400, "message");
    await expectError(json("POST", `/internal/v1/jobs/${jobId}/fail`, JSON.stringify({ code: "c\u0000", message: "m" }), worker), 400, "code");
    assert.notEqual((await client.fineTuning.jobs.retrieve(jobId)).status, "failed", "the rejected /fail changed nothing");
  });

  test("lone UTF-16 surrogates in a stored string answer 400 naming the param", async () => {
    const body = (meta: string) => `{"model":"${MODEL}","training_file":"${fileId}","metadata":${meta}}`;
    await expectError(json("POST", "/v1/fine_tuning/jobs", body(`{"k":"\\ud800"}`)), 400, "metadata.k");
    await expectError(json("POST", "/v1/fine_tuning/jobs", body(`{"\\udc00":"v"}`)), 400, "metadata");
    await expectError(json("POST", "/v1/fine_tuning/jobs", `{"model":"${MODEL}","training_file":"${fileId}","suffix":"a\\ud800"}`), 400, "suffix");
    // A well-formed pair is text like any other.
    const ok = await json("POST", "/v1/fine_tuning/jobs", body(`{"k":"\\ud83d\\ude00"}`));
    assert.equal(ok.status, 200);
  });

  test("NUL in a multipart filename or field answers 400", async () => {
    const end = "--XyZ--\r\n";
    await expectError(multipart(field("purpose", "fine-tune") + filePart('filename="x\u0000.jsonl"') + end), 400, "file");
    await expectError(multipart(field("purpose", "fine-tune") + filePart("filename*=UTF-8''x%00.jsonl") + end), 400, "file");
    await expectError(multipart(field("purpose", "fine\u0000tune") + filePart('filename="x.jsonl"') + end), 400, "purpose");
  });

  test("malformed multipart answers 400 invalid_request_error", async () => {
    const whole = field("purpose", "fine-tune") + filePart('filename="x.jsonl"') + "--XyZ--\r\n";
    await expectError(call("POST", "/v1/files", { body: whole, type: "multipart/form-data" }), 400);
    await expectError(multipart(whole, "Other"), 400);
    // A body that ends before the closing boundary, on either blob store.
    await expectError(multipart(whole.slice(0, whole.length - 40)), 400);
    await expectError(multipart(field("purpose", "fine-tune") + `--XyZ\r\n\r\n${JSONL}\r\n--XyZ--\r\n`), 400);
    await expectError(multipart(`--XyZ\r\ncontent-disposition: form-data; name="file"; filename="x.jsonl"\r\nbroken header line\r\n\r\n${JSONL}\r\n--XyZ--\r\n`), 400);
  });

  test("a repeated multipart field answers 400 naming it, whatever the order", async () => {
    const end = "--XyZ--\r\n";
    const bad = await expectError(multipart(field("purpose", "batch") + filePart('filename="x.jsonl"') + field("purpose", "fine-tune") + end), 400, "purpose");
    assert.match(bad.error.message, /more than once/);
    await expectError(multipart(field("purpose", "fine-tune") + field("purpose", "fine-tune") + filePart('filename="x.jsonl"') + end), 400, "purpose");
  });

  test("long path parameters: unknown ids 404 in the envelope, absurd ones a 4xx in it", async () => {
    await expectError(call("GET", `/v1/files/file-${"a".repeat(150)}`), 404);
    await expectError(call("GET", `/v1/models/ft:${"a".repeat(300)}`), 404);
    await expectError(call("GET", `/v1/fine_tuning/jobs/ftjob-${"a".repeat(150)}/events`), 404);
    const absurd = await call("GET", `/v1/files/${"a".repeat(5000)}`);
    assert.ok(absurd.status >= 400 && absurd.status < 500, String(absurd.status));
    await expectError(Promise.resolve(absurd), absurd.status);
  });

  test("an ft: model with a 64-character suffix and its checkpoints: retrieve, use, delete", async () => {
    const suffix = "s".repeat(64);
    const job = await client.fineTuning.jobs.create({ model: MODEL, training_file: fileId, suffix, hyperparameters: { n_epochs: 3, batch_size: 1 } });
    const worker = new Worker({ client: new ProtocolClient(server.url, server.workerTokens.w!), runner: new TrainerDouble(), log: pino({ level: "silent" }), claimWaitSeconds: 1 });
    worker.start();
    let done;
    try {
      // The first queued job (created in before()) is claimed too; both run on the double.
      done = await waitForStatus(client, job.id, ["succeeded", "failed"], 60_000, 50);
    } finally {
      await worker.stop();
    }
    assert.equal(done.status, "succeeded", JSON.stringify(done.error));
    const name = done.fine_tuned_model!;
    const ckpt = (await client.fineTuning.jobs.checkpoints.list(job.id)).data[0]!.fine_tuned_model_checkpoint;
    assert.ok(name.length >= 100 && ckpt.length > 100, ckpt);
    for (const id of [name, ckpt]) {
      assert.equal((await client.models.retrieve(id)).id, id);
      const again = await client.fineTuning.jobs.create({ model: id, training_file: fileId });
      assert.equal(again.model, id);
      await client.fineTuning.jobs.cancel(again.id);
    }
    const escaped = await fetch(`${server.baseURL}/models/${encodeURIComponent(ckpt)}`, { headers: { authorization: `Bearer ${server.apiKey}` } });
    assert.equal(((await escaped.json()) as { id: string }).id, ckpt);
    assert.deepEqual(await client.models.delete(name), { id: name, object: "model", deleted: true });
    await expectError(call("GET", `/v1/models/${name}`), 404, "model");
    await expectError(json("POST", "/v1/chat/completions", JSON.stringify({ model: name, messages: [{ role: "user", content: "hi" }] })), 404, "model");
  });

  test("errors outside the router keep the envelope and x-request-id", async () => {
    await expectError(call("GET", "/v1/files/%E0%A4%A"), 400);
    await expectError(call("GET", "/v1/files", { headers: { "x-big": "a".repeat(20_000) } }), 431);
    await expectError(call("QUERY", "/v1/nowhere"), 404);
    const query = await expectError(call("QUERY", "/v1/files", { body: "{}", type: "application/json" }), 405);
    assert.equal(query.headers.get("allow"), "GET, HEAD, POST");
    await expectError(call("PUT", `/v1/files/${fileId}`), 405);
  });

  test("the server and openapi.yaml agree on what is valid", async () => {
    // A cursor is an id of the list's kind: malformed 400, well-formed but unknown 404.
    await expectError(call("GET", "/v1/files?after=0"), 400, "after");
    await expectError(call("GET", "/v1/fine_tuning/jobs?after=0"), 400, "after");
    await expectError(call("GET", "/v1/files?after=file-unknown"), 404, "after");
    await expectError(call("GET", "/v1/fine_tuning/jobs?after=ftjob-unknown"), 404, "after");
    await expectError(call("GET", `/v1/fine_tuning/jobs/${jobId}/checkpoints?after=ftckpt_unknown`), 404, "after");
    await expectError(call("GET", "/v1/fine_tuning/jobs?metadata[]=null"), 400, "metadata");
    await expectError(call("GET", "/v1/files?after[]=x"), 400, "after");
    await expectError(call("GET", "/v1/fine_tuning/jobs?after[]=x"), 400, "after");
    await expectError(call("GET", "/v1/files?purpose=bogus"), 400, "purpose");
    await expectError(json("POST", "/v1/fine_tuning/jobs", JSON.stringify({ model: MODEL, training_file: fileId, method: { type: "reinforcement" } })), 400, "method.type");
    // A tool message needs content and tool_call_id, by the spec as by the server.
    const tool = { model: "no-such-model", messages: [{ role: "user", content: "hi" }, { role: "tool", tool_call_id: "c1" }] };
    await expectError(json("POST", "/v1/chat/completions", JSON.stringify(tool)), 400, "messages[1].content");
  });

  test("a model folder that is not a complete model is not listed and answers a clear 4xx", async () => {
    const ids = (await client.models.list()).data.map((m) => m.id);
    assert.ok(ids.includes(MODEL));
    assert.ok(!ids.includes("half-model"), ids.join(","));
    const chat = await expectError(json("POST", "/v1/chat/completions", JSON.stringify({ model: "half-model", messages: [{ role: "user", content: "hi" }] })), 404, "model");
    const job = await expectError(json("POST", "/v1/fine_tuning/jobs", JSON.stringify({ model: "half-model", training_file: fileId })), 400, "model");
    for (const a of [chat, job]) {
      assert.match(a.error.message, /half-model.*not a complete model/);
      assert.ok(!a.error.message.includes(server.dataDir), a.error.message);
    }
    assert.equal((server.log.match(/"model":"half-model"/g) ?? []).length, 1, "logged once at start");
  });
});

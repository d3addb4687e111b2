// openapi.yaml itself, and the checker the other suites use against it: it must be able to fail.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import type { FastifyInstance } from "fastify";
import pino from "pino";
import { buildApp } from "../src/api/app.js";
import { toCheckpointObject, toEventObject, toJobObject } from "../src/api/fine-tuning/schema.js";
import { BaseModels } from "../src/jobs/base-models.js";
import { ServingRouter } from "../src/engine/serving/index.js";
import { insertJob, type CheckpointRow, type EventRow, type JobRow } from "../src/jobs/repo.js";
import { createWorker } from "../src/jobs/workers.js";
import { Wakeup } from "../src/jobs/wakeup.js";
import { openDatabase, type Db } from "../src/storage/db.js";
import { FsBlobStore } from "../src/storage/fs-blob-store.js";
import { ensureProject, type Project } from "../src/storage/repos/projects.js";
import {
  assertResponseMatches,
  assertSchemaMatches,
  documentedOperations,
  findOperation,
  findResponse,
  matchesSchema,
  openApiDocument,
  resolvePointer,
} from "./helpers/openapi.js";

const API_KEY = "sk-openapi-test-1234";

/** A real app (PGlite and a blob folder in a temporary directory) for `fn`; never listening. */
async function withApp<T>(
  fn: (app: FastifyInstance, db: Db, project: Project) => Promise<T>,
  onRoute?: (method: string, url: string) => void,
): Promise<T> {
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), "openft-openapi-"));
  const database = await openDatabase({ url: undefined, dataDir: tmp });
  try {
    await database.migrate();
    const blobs = new FsBlobStore(path.join(tmp, "blobs"));
    await blobs.init();
    const project = await ensureProject(database.db, "default");
    const app = await buildApp({
      db: database.db,
      blobs,
      log: pino({ level: "silent" }),
      apiKey: API_KEY,
      defaultProject: project,
      maxUploadBytes: 1024 * 1024,
      uploadLeaseMs: 60_000,
      uploads: { maxBytes: 8 * 1024 ** 3, expirySeconds: 3600 },
      ready: async () => {},
      baseModels: new BaseModels(path.join(tmp, "models")),
      onJobCreated: () => {},
      wakeup: new Wakeup(),
      workerLeaseMs: 60_000,
      serving: {
        router: new ServingRouter({
          onnx: { cacheDir: path.join(tmp, "serving"), mode: "fp32", threads: 1, maxBatch: 4, maxAdapters: 4, adapterDir: path.join(tmp, "serving", "adapters") },
          vllm: new Map(), vllmAdapterDir: path.join(tmp, "vllm-adapters"), vllmMaxLoraRank: 16, blobs,
        }),
        maxQueue: 16,
      },
      ...(onRoute ? { onRoute } : {}),
    });
    try {
      await app.ready();
      return await fn(app, database.db, project);
    } finally {
      await app.close();
    }
  } finally {
    await database.close();
    await fs.rm(tmp, { recursive: true, force: true });
  }
}

/**
 * Every (method, path template) the real app registers, as "get /v1/files/{file_id}" (fastify's
 * `:param` becomes `{param}`; HEAD routes fastify adds for GETs are left out by buildApp's hook).
 */
async function serverRoutes(): Promise<string[]> {
  const routes = new Set<string>();
  await withApp(async () => {}, (method, url) => routes.add(`${method.toLowerCase()} ${url.replace(/:([A-Za-z0-9_]+)/g, "{$1}")}`));
  return [...routes].sort();
}

const sampleFile = () => ({
  id: "file-BK7bzQj3FfZFXr7DbL6xJwfo",
  object: "file",
  bytes: 120,
  created_at: 1_760_000_000,
  expires_at: null,
  filename: "train.jsonl",
  purpose: "fine-tune",
  status: "processed",
  status_details: null,
});

const sampleError = () => ({
  error: { message: "No such File object: file-x", type: "invalid_request_error", param: "id", code: null },
});

function without(o: Record<string, unknown>, key: string): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([k]) => k !== key));
}

function collectRefs(node: unknown, out: string[] = []): string[] {
  if (Array.isArray(node)) for (const v of node) collectRefs(v, out);
  else if (node !== null && typeof node === "object") {
    for (const [k, v] of Object.entries(node)) {
      if (k === "$ref" && typeof v === "string") out.push(v);
      else collectRefs(v, out);
    }
  }
  return out;
}

test("openapi.yaml parses as OpenAPI 3.1 and every $ref resolves", () => {
  const doc = openApiDocument();
  assert.match(String(doc.openapi), /^3\.1\./);
  const refs = collectRefs(doc);
  assert.ok(refs.length > 0);
  for (const ref of refs) assert.doesNotThrow(() => resolvePointer(ref), ref);
});

test("the documented routes are exactly the server's", async () => {
  const served = await serverRoutes();
  const documented = documentedOperations().map((op) => `${op.method} ${op.path}`).sort();
  assert.ok(served.length > 0, "the server registered no routes");
  const undocumented = served.filter((r) => !documented.includes(r));
  const unserved = documented.filter((r) => !served.includes(r));
  assert.deepEqual(undocumented, [], "routes the server serves but openapi.yaml does not document");
  assert.deepEqual(unserved, [], "routes openapi.yaml documents but the server does not serve");
  assert.deepEqual(documented, served);
});

test("every operation has an operationId and responses; /v1 routes need the API key, /internal routes a worker token", () => {
  const ids = new Set<string>();
  for (const { method, path } of documentedOperations()) {
    const { operation } = findOperation(method, path);
    assert.equal(typeof operation.operationId, "string", `${method} ${path} has no operationId`);
    assert.ok(!ids.has(operation.operationId as string), `duplicate operationId ${String(operation.operationId)}`);
    ids.add(operation.operationId as string);
    const responses = operation.responses as Record<string, unknown> | undefined;
    assert.ok(responses && Object.keys(responses).length > 0, `${method} ${path} has no responses`);
    for (const status of Object.keys(responses)) {
      const response = findResponse(method, path, status === "default" ? 599 : Number(status));
      const headers = response.headers as Record<string, unknown> | undefined;
      assert.ok(headers?.["x-request-id"], `${method} ${path} ${status} does not document x-request-id`);
    }
    if (path.startsWith("/v1/")) {
      const scheme = path.includes("/permissions") ? "AdminKeyAuth" : "ApiKeyAuth";
      assert.deepEqual(operation.security, [{ [scheme]: [] }], `${method} ${path} security`);
      for (const status of [400, 401]) assert.doesNotThrow(() => findResponse(method, path, status));
    } else if (path.startsWith("/internal/")) {
      assert.deepEqual(operation.security, [{ WorkerTokenAuth: [] }], `${method} ${path} security`);
      assert.deepEqual(operation.tags, ["Worker protocol"], `${method} ${path} tags`);
      for (const status of [400, 401]) assert.doesNotThrow(() => findResponse(method, path, status));
    } else if (path === "/metrics") {
      // Open, or the metrics token when OPENFT_METRICS_TOKEN is set.
      assert.deepEqual(operation.security, [{}, { MetricsTokenAuth: [] }], `${method} ${path} security`);
    } else {
      assert.deepEqual(operation.security, [], `${method} ${path} needs no key`);
    }
  }
});

test("every JSON response schema compiles", () => {
  for (const { method, path } of documentedOperations()) {
    const { operation } = findOperation(method, path);
    for (const status of Object.keys(operation.responses as object)) {
      const code = Number(status);
      // Compiling happens on first use; an error here is a schema problem, a mismatch is fine.
      try {
        assertResponseMatches(method, path, code, {});
      } catch (err) {
        assert.match((err as Error).message, /does not match openapi\.yaml|expected a string or bytes body|documents no body/, `${method} ${path} ${status}`);
      }
    }
  }
});

test("a valid file object passes", () => {
  assertResponseMatches("get", "/v1/files/{file_id}", 200, sampleFile());
  assertResponseMatches("post", "/v1/files", 200, { ...sampleFile(), purpose: "batch", expires_at: 1_762_592_000 });
  assertResponseMatches("GET", "/v1/files", 200, {
    object: "list",
    data: [sampleFile()],
    first_id: "file-BK7bzQj3FfZFXr7DbL6xJwfo",
    last_id: "file-BK7bzQj3FfZFXr7DbL6xJwfo",
    has_more: false,
  });
  assertResponseMatches("get", "/v1/files", 200, { object: "list", data: [], first_id: null, last_id: null, has_more: false });
  assertResponseMatches("delete", "/v1/files/{file_id}", 200, { id: "file-x", object: "file", deleted: true });
  assertResponseMatches("get", "/v1/files/{file_id}/content", 200, Buffer.from("{}\n"));
  assertResponseMatches("get", "/healthz", 200, { status: "ok" });
  assertResponseMatches("get", "/readyz", 503, { status: "not_ready" });
  for (const status of [400, 401, 404, 500]) assertResponseMatches("get", "/v1/files/{file_id}", status, sampleError());
});

test("an extra property fails", () => {
  assert.throws(
    () => assertResponseMatches("get", "/v1/files/{file_id}", 200, { ...sampleFile(), sha256: "abc" }),
    /additionalProperty.*sha256/,
  );
  const nested = { object: "list", data: [{ ...sampleFile(), project_id: "proj_1" }], first_id: null, last_id: null, has_more: false };
  assert.throws(() => assertResponseMatches("get", "/v1/files", 200, nested), /\/data\/0.*project_id/);
  const err = sampleError();
  assert.throws(() => assertResponseMatches("get", "/v1/files", 401, { error: { ...err.error, status: 401 } }), /status/);
});

test("a missing key fails, null where the contract wants a value fails", () => {
  const noDetails = without(sampleFile(), "status_details");
  assert.throws(() => assertResponseMatches("get", "/v1/files/{file_id}", 200, noDetails), /status_details/);
  const noMore = without({ object: "list", data: [], first_id: null, last_id: null, has_more: false }, "has_more");
  assert.throws(() => assertResponseMatches("get", "/v1/files", 200, noMore), /has_more/);
  const noCode = without(sampleError().error, "code");
  assert.throws(() => assertResponseMatches("get", "/v1/files", 400, { error: noCode }), /code/);
  assert.throws(() => assertResponseMatches("get", "/v1/files/{file_id}", 200, { ...sampleFile(), bytes: null }), /bytes/);
  assert.throws(() => assertResponseMatches("get", "/v1/files/{file_id}", 200, { ...sampleFile(), status: "deleted" }), /status/);
  assert.throws(() => assertResponseMatches("delete", "/v1/files/{file_id}", 200, { id: "file-x", object: "file", deleted: false }), /deleted/);
  assert.throws(() => assertResponseMatches("get", "/v1/files/{file_id}/content", 200, { not: "bytes" }), /string or bytes/);
});

test("an undocumented route, method or status fails", () => {
  assert.throws(() => assertResponseMatches("post", "/v1/completions", 200, {}), /documents no POST \/v1\/completions/);
  assert.throws(() => assertResponseMatches("put", "/v1/files", 200, {}), /documents no PUT \/v1\/files/);
  assert.throws(() => assertResponseMatches("get", "/v1/models", 404, sampleError()), /no 404 response/);
  assert.throws(() => assertResponseMatches("get", "/healthz", 401, sampleError()), /no 401 response/);
});

// ---- Fine-tuning: the serializers' output against the documented schemas ----------------------

const NOW = 1_760_000_000;

/** A job row as the database holds it right after create (every hyperparameter still "auto"). */
function jobRow(over: Partial<JobRow> = {}): JobRow {
  return {
    id: "ftjob-I3ZxS2477o4IhMPQqH2PMKto",
    seq: 7,
    projectId: "proj_AbCdEfGhIjKlMnOpQrStUvWx",
    createdAt: NOW,
    model: "tiny-llama-gpt2",
    baseModel: "tiny-llama-gpt2",
    parentModel: null,
    trainingFile: "file-BK7bzQj3FfZFXr7DbL6xJwfo",
    validationFile: null,
    status: "validating_files",
    method: {
      type: "supervised",
      supervised: {
        hyperparameters: {
          n_epochs: "auto",
          batch_size: "auto",
          learning_rate_multiplier: "auto",
          lora_rank: "auto",
          lora_alpha: "auto",
          lora_dropout: "auto",
          quantization: "none",
        },
      },
    },
    suffix: null,
    seed: 42,
    metadata: null,
    integrations: [],
    error: null,
    fineTunedModel: null,
    finishedAt: null,
    trainedTokens: null,
    estimatedFinish: null,
    resultFiles: [],
    nExamples: null,
    epochTokens: null,
    fairRank: 0,
    attempts: 0,
    maxAttempts: 3,
    leaseOwner: null,
    leaseExpiresAt: null,
    createFingerprint: "0".repeat(64),
    ...over,
  };
}

const resolvedMethod = (hp: Record<string, number | string> = {}) => ({
  type: "supervised",
  supervised: {
    hyperparameters: { n_epochs: 8, batch_size: 1, learning_rate_multiplier: 2, lora_rank: 16, lora_alpha: 32, lora_dropout: 0.05, quantization: "none", ...hp },
  },
});

const JOB_ROUTES: Array<[string, string]> = [
  ["post", "/v1/fine_tuning/jobs"],
  ["get", "/v1/fine_tuning/jobs/{fine_tuning_job_id}"],
  ["post", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel"],
  ["post", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/pause"],
  ["post", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/resume"],
];

function assertJob(job: unknown): void {
  assertSchemaMatches("FineTuningJob", job);
  for (const [method, route] of JOB_ROUTES) assertResponseMatches(method, route, 200, job);
  assertResponseMatches("get", "/v1/fine_tuning/jobs", 200, { object: "list", data: [job], has_more: false });
}

test("toJobObject: a new job with every hyperparameter \"auto\" matches FineTuningJob", () => {
  const job = toJobObject(jobRow());
  assertJob(job);
  assert.deepEqual(job.error, { code: null, message: null, param: null });
  assert.deepEqual(job.hyperparameters, { batch_size: "auto", learning_rate_multiplier: "auto", n_epochs: "auto" });
  const schema = resolvePointer("#/components/schemas/FineTuningJob") as { required: string[]; properties: Record<string, unknown> };
  assert.deepEqual(Object.keys(job).sort(), [...schema.required].sort(), "every key the server sends is required, and no other");
  assert.deepEqual(Object.keys(schema.properties).sort(), [...schema.required].sort());
});

test("toJobObject: queued (hyperparameters resolved), running, paused and cancelled jobs match FineTuningJob", () => {
  const queued = toJobObject(
    jobRow({
      status: "queued",
      method: resolvedMethod({ lora_rank: 8, lora_alpha: 16, lora_dropout: 0, quantization: "nf4" }),
      validationFile: "file-JkuxKcmxbqpiLxzi9AtS9U",
      suffix: "my-sfx",
      metadata: { env: "prod", team: "a" },
      nExamples: 12,
      epochTokens: 480,
    }),
  );
  assertJob(queued);
  assert.deepEqual(queued.hyperparameters, { batch_size: 1, learning_rate_multiplier: 2, n_epochs: 8 });
  assertJob(toJobObject(jobRow({ status: "running", method: resolvedMethod({ learning_rate_multiplier: 0.05 }), estimatedFinish: NOW + 600, leaseOwner: "wrk_1" })));
  assertJob(toJobObject(jobRow({ status: "paused", method: resolvedMethod() })));
  assertJob(toJobObject(jobRow({ status: "cancelled", method: resolvedMethod(), finishedAt: NOW + 5 })));
});

test("toJobObject: succeeded and failed jobs match FineTuningJob", () => {
  assertJob(
    toJobObject(
      jobRow({
        status: "succeeded",
        method: resolvedMethod(),
        fineTunedModel: "ft:tiny-llama-gpt2:default:my-sfx:Ajo5kvNY",
        suffix: "my-sfx",
        finishedAt: NOW + 120,
        trainedTokens: 4480,
        resultFiles: ["file-JkuxKcmxbqpiLxzi9AtS9U"],
      }),
    ),
  );
  // Validation failure (finished_at stays null, as at OpenAI).
  const invalid = toJobObject(
    jobRow({
      status: "failed",
      error: { code: "invalid_n_examples", param: "training_file", message: "Training file has 9 example(s), but must have at least 10 examples (file file-BK7bzQj3FfZFXr7DbL6xJwfo)" },
    }),
  );
  assertJob(invalid);
  // A failure the worker reported (param null).
  assertJob(toJobObject(jobRow({ status: "failed", method: resolvedMethod(), error: { code: "oom", message: "CUDA out of memory", param: null }, finishedAt: NOW + 60 })));
});

test("a job that breaks the contract fails FineTuningJob", () => {
  const job = toJobObject(jobRow({ status: "queued", method: resolvedMethod() }));
  const bad: Array<[string, unknown, RegExp]> = [
    ["extra key", { ...job, project_id: "proj_1" }, /project_id/],
    ["missing key", without(job, "user_provided_suffix"), /user_provided_suffix/],
    ["unknown status", { ...job, status: "deleted" }, /status/],
    ["error as null", { ...job, error: null }, /error/],
    ["error without param", { ...job, error: { code: "x", message: "y" } }, /param/],
    ["n_epochs out of range", { ...job, hyperparameters: { ...job.hyperparameters, n_epochs: 0 } }, /n_epochs/],
    ["extra hyperparameter", { ...job, hyperparameters: { ...job.hyperparameters, lora_rank: 16 } }, /lora_rank/],
    ["missing extension", { ...job, method: { type: "supervised", supervised: { hyperparameters: without(resolvedMethod().supervised.hyperparameters, "quantization") } } }, /quantization/],
    ["unknown quantization", { ...job, method: resolvedMethod({ quantization: "int3" }) }, /quantization/],
    ["dpo method", { ...job, method: { ...job.method, type: "dpo" } }, /type/],
    ["an integration", { ...job, integrations: [{ type: "wandb" }] }, /integrations/],
  ];
  for (const [what, value, pattern] of bad) {
    assert.throws(() => assertSchemaMatches("FineTuningJob", value), pattern, what);
  }
});

function eventRow(over: Partial<EventRow> = {}): EventRow {
  return {
    id: "ftevent-5p1KiVM1hEWQownjTMN5b88u",
    seq: 3,
    jobId: "ftjob-I3ZxS2477o4IhMPQqH2PMKto",
    createdAt: NOW,
    level: "info",
    message: "Created fine-tuning job: ftjob-I3ZxS2477o4IhMPQqH2PMKto",
    type: "message",
    data: {},
    ...over,
  };
}

test("toEventObject: message, error and metrics events match FineTuningJobEvent", () => {
  const events = [
    toEventObject(eventRow()),
    toEventObject(eventRow({ data: null })),
    toEventObject(eventRow({ level: "error", message: "Training file has 9 example(s), but must have at least 10 examples" })),
    toEventObject(eventRow({ level: "warn", message: "The worker running this job stopped responding" })),
    toEventObject(eventRow({ message: "Checkpoint created at step 12", data: { step: 12, model: "ft:tiny-llama-gpt2:default::Ajo5kvNY:ckpt-step-12" } })),
    toEventObject(eventRow({ type: "metrics", message: "Step 12/24: training loss=0.11", data: { step: 12, train_loss: 0.11, train_mean_token_accuracy: 0.9 } })),
  ];
  for (const e of events) assertSchemaMatches("FineTuningJobEvent", e);
  assert.deepEqual(events[1]!.data, {});
  assertResponseMatches("get", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/events", 200, { object: "list", data: events, has_more: true });
  assertResponseMatches("get", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/events", 200, { object: "list", data: [], has_more: false });
  assert.throws(() => assertSchemaMatches("FineTuningJobEvent", { ...events[0], level: "debug" }), /level/);
  assert.throws(() => assertSchemaMatches("FineTuningJobEvent", { ...events[0], job_id: "x" }), /job_id/);
});

function checkpointRow(over: Partial<CheckpointRow> = {}): CheckpointRow {
  return {
    id: "ftckpt_zc4Q7MP6XxulcVzj4MZdwsAB",
    jobId: "ftjob-I3ZxS2477o4IhMPQqH2PMKto",
    createdAt: NOW,
    stepNumber: 24,
    epoch: 2,
    metrics: { step: 24, train_loss: 0.07, train_mean_token_accuracy: 0.97, valid_loss: 0.2, valid_mean_token_accuracy: 0.9 },
    modelName: "ft:tiny-llama-gpt2:default:my-sfx:Q1w2E3r4:ckpt-step-24",
    blobPrefix: "jobs/ftjob-I3ZxS2477o4IhMPQqH2PMKto/ckpt-step-24/",
    files: ["adapter_model.safetensors", "adapter_config.json"],
    deletedAt: null,
    ...over,
  };
}

test("toCheckpointObject matches FineTuningJobCheckpoint, and the checkpoints page too", () => {
  const a = toCheckpointObject(checkpointRow());
  const b = toCheckpointObject(checkpointRow({ id: "ftckpt_aaaaaaaaaaaaaaaaaaaaaaaa", stepNumber: 12, metrics: { step: 12 }, modelName: "ft:tiny-llama-gpt2:default:my-sfx:Zx9Yw8Vu:ckpt-step-12" }));
  for (const c of [a, b]) assertSchemaMatches("FineTuningJobCheckpoint", c);
  const route = "/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints";
  assertResponseMatches("get", route, 200, { object: "list", data: [a, b], first_id: a.id, last_id: b.id, has_more: false });
  assertResponseMatches("get", route, 200, { object: "list", data: [], first_id: null, last_id: null, has_more: false });
  assert.throws(() => assertResponseMatches("get", route, 200, { object: "list", data: [a], has_more: false }), /first_id/);
  assert.throws(() => assertSchemaMatches("FineTuningJobCheckpoint", { ...a, epoch: 2 }), /epoch/);
  assert.throws(() => assertSchemaMatches("FineTuningJobCheckpoint", { ...a, metrics: { step: 1, note: "x" } }), /metrics/);
});

test("the documented create body accepts and rejects what the server's parser does", async () => {
  const { createJobBody } = await import("../src/api/fine-tuning/schema.js");
  const base = { model: "tiny-llama-gpt2", training_file: "file-BK7bzQj3FfZFXr7DbL6xJwfo" };
  const pairs = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, "v"]));
  const hpValues: Record<string, unknown[]> = {
    n_epochs: ["auto", null, 1, 50, 0, 51, 1.5, "many"],
    batch_size: ["auto", 1, 256, 0, 257],
    learning_rate_multiplier: ["auto", 0.0001, 10, 0, -1, 10.5],
    lora_rank: ["auto", 1, 256, 0, 257],
    lora_alpha: ["auto", 0.5, 1024, 0, 1025],
    lora_dropout: ["auto", 0, 0.5, -0.1, 0.6],
    quantization: ["none", "nf4", null, "int3", "auto"],
  };
  const bodies: unknown[] = [
    base,
    { ...base, validation_file: null },
    { ...base, validation_file: "" },
    { training_file: base.training_file },
    { model: base.model },
    { ...base, unknown: 1 },
    { ...base, suffix: "s".repeat(64) },
    { ...base, suffix: "s".repeat(65) },
    { ...base, suffix: "" },
    { ...base, suffix: "no:colons" },
    { ...base, suffix: null },
    { ...base, seed: 0 },
    { ...base, seed: 2_147_483_647 },
    { ...base, seed: 2_147_483_648 },
    { ...base, seed: -1 },
    { ...base, metadata: pairs(16) },
    { ...base, metadata: pairs(17) },
    { ...base, metadata: { ["k".repeat(64)]: "v".repeat(512) } },
    { ...base, metadata: { ["k".repeat(65)]: "v" } },
    { ...base, metadata: { k: "v".repeat(513) } },
    { ...base, metadata: { k: 1 } },
    { ...base, metadata: null },
    { ...base, integrations: [] },
    { ...base, method: { type: "supervised" } },
    { ...base, method: { type: "dpo" } },
    { ...base, method: { type: "other" } },
    { ...base, method: {} },
    { ...base, method: { type: "supervised", supervised: { hyperparameters: { n_epochs: 2 }, extra: 1 } } },
    { ...base, method: { type: "supervised", supervised: null } },
    { ...base, hyperparameters: { n_epochs: 2, unknown: 1 } },
    { ...base, hyperparameters: null },
  ];
  for (const [key, values] of Object.entries(hpValues)) {
    for (const v of values) {
      bodies.push({ ...base, hyperparameters: { [key]: v } });
      bodies.push({ ...base, method: { type: "supervised", supervised: { hyperparameters: { [key]: v } } } });
    }
  }
  for (const body of bodies) {
    const server = createJobBody.safeParse(body).success;
    assert.equal(matchesSchema("CreateFineTuningJobRequest", body), server, `${JSON.stringify(body)}: the server ${server ? "accepts" : "rejects"} it`);
  }
});

// ---- Chat completions ------------------------------------------------------------------------

const chatBase = { model: "no-such-model", messages: [{ role: "user", content: "hi" }] };

/** Request bodies around every documented range and shape of CreateChatCompletionRequest. */
function chatBodies(): unknown[] {
  const b = chatBase;
  const msg = (m: Record<string, unknown>) => ({ ...b, messages: [m] });
  const SAFE = Number.MAX_SAFE_INTEGER;
  return [
    b,
    "not an object",
    [b],
    null,
    { messages: b.messages },
    { model: "", messages: b.messages },
    { model: b.model },
    { ...b, messages: [] },
    { ...b, unknown: 1 },
    { ...b, Model: "x" },
    msg({ role: "robot", content: "x" }),
    msg({ content: "x" }),
    msg({ role: "user", content: "x", extra: 1, name: "n" }),
    msg({ role: "user", content: null }),
    msg({ role: "user" }),
    msg({ role: "user", content: 5 }),
    msg({ role: "user", content: [] }),
    msg({ role: "user", content: [{ type: "text", text: "h" }, { type: "text", text: "i", cache: true }] }),
    msg({ role: "user", content: [{ text: "h" }] }),
    msg({ role: "user", content: [{ type: 1 }] }),
    msg({ role: "user", content: ["h"] }),
    msg({ role: "user", content: [{ type: "image_url", image_url: { url: "http://x" } }] }),
    msg({ role: "assistant", content: null, tool_calls: [], refusal: null, audio: { id: "a" }, function_call: null }),
    msg({ role: "assistant", tool_calls: {} }),
    msg({ role: "tool", content: "x", tool_call_id: "call_1" }),
    msg({ role: "tool", content: "x", tool_call_id: 1 }),
    msg({ role: "user", content: "x", name: 1 }),
    msg({ role: "assistant", content: "x", refusal: 1 }),
    ...["developer", "system", "function"].map((role) => msg({ role, content: "x", name: null })),
    ...([
      ["max_completion_tokens", [1, SAFE, null, 0, -1, 1.5, SAFE + 1, "8"]],
      ["max_tokens", [1, SAFE, null, 0, 2.5]],
      ["temperature", [0, 2, 0.7, null, -0.1, 2.01, "1"]],
      ["top_p", [0, 1, 0.5, null, -0.5, 1.5]],
      ["n", [1, 128, null, 0, 129, 1.5]],
      ["stop", ["\n", ["a", "b", "c", "d"], [], null, "", ["a", "b", "c", "d", "e"], [""], [1], 1]],
      ["seed", [0, -1, SAFE, -SAFE, null, SAFE + 1, -SAFE - 1, 1.5, "7"]],
      ["stream", [true, false, null, "true", 1]],
      ["stream_options", [{ include_usage: true }, { include_usage: null, include_obfuscation: false, other: 1 }, {}, null, { include_usage: "yes" }, [], "x"]],
      ["logprobs", [true, false, null, 1]],
      ["top_logprobs", [0, 20, null, -1, 21, 2.5]],
      ["presence_penalty", [-2, 2, 0, null, -2.1, 2.1]],
      ["frequency_penalty", [-2, 2, null, 3, -3]],
      ["logit_bias", [{}, { "0": -100, "50256": 100 }, { "007": 5 }, null, { "-1": 5 }, { x: 1 }, { "": 1 }, { "1": 101 }, { "1": -101 }, { "1": 1.5 }, []]],
      ["response_format", [{ type: "text" }, { type: "json_object" }, { type: "json_schema", json_schema: { name: "x" } }, null, {}, { type: 1 }, "text"]],
      ["tools", [[], [{ type: "function", function: { name: "f" } }], null, {}]],
      ["tool_choice", ["auto", { type: "function" }, null, 1]],
      ["parallel_tool_calls", [true, null, "no"]],
      ["functions", [[], [{ name: "f" }], null, "f"]],
      ["function_call", ["auto", null, { name: "f" }]],
      ["modalities", [["text"], ["text", "audio"], [], null, "text", [1]]],
      ["audio", [{ voice: "alloy", format: "mp3" }, null, 1]],
      ["prediction", [{ type: "content", content: "x" }, null]],
      ["web_search_options", [{}, null, "x"]],
      ["user", ["u", null, 1]],
      ["metadata", [{ k: "v" }, {}, null, { k: 1 }, []]],
      ["store", [true, null, "yes"]],
      ["service_tier", ["auto", "flex", null, 1]],
      ["reasoning_effort", ["low", null, 1]],
      ["verbosity", ["low", null, 1]],
      ["prompt_cache_key", ["k", null, 1]],
      ["prompt_cache_retention", ["24h", null, 1]],
      ["safety_identifier", ["s", null, 1]],
    ] as Array<[string, unknown[]]>).flatMap(([key, values]) => values.map((v) => ({ ...b, [key]: v }))),
  ];
}

/** What the server lets through its body checks: the zod parser, then no key outside it. */
async function chatParserAccepts(body: unknown): Promise<boolean> {
  const { chatCompletionBody, KNOWN_FIELDS } = await import("../src/api/chat/schema.js");
  const { toChatMessages } = await import("../src/api/chat/service.js");
  if (body === null || typeof body !== "object" || Array.isArray(body)) return false;
  const parsed = chatCompletionBody.safeParse(body);
  if (!parsed.success || !Object.keys(body).every((k) => KNOWN_FIELDS.has(k))) return false;
  // The schema also holds what each message needs by role (content, tool_call_id); the refusal of
  // non-text content parts is a documented later check, not a schema rule.
  try {
    toChatMessages(parsed.data.messages);
    return true;
  } catch (err) {
    return !/\.(content|tool_call_id)$/.test(String((err as { param?: string }).param));
  }
}

test("the documented chat completion body accepts and rejects what the server's parser does", async () => {
  const { KNOWN_FIELDS } = await import("../src/api/chat/schema.js");
  const schema = resolvePointer("#/components/schemas/CreateChatCompletionRequest") as { properties: Record<string, unknown>; additionalProperties: unknown };
  assert.deepEqual(Object.keys(schema.properties).sort(), [...KNOWN_FIELDS].sort(), "the documented fields are exactly the parser's");
  assert.equal(schema.additionalProperties, false);
  let accepted = 0;
  for (const body of chatBodies()) {
    const server = await chatParserAccepts(body);
    if (server) accepted++;
    assert.equal(matchesSchema("CreateChatCompletionRequest", body), server, `${JSON.stringify(body)}: the server ${server ? "accepts" : "rejects"} it`);
  }
  assert.ok(accepted > 50 && accepted < chatBodies().length - 50, `a table with both sides (${accepted} accepted)`);
});

test("the chat route answers what openapi.yaml documents: 400 for what the schema rejects, then the documented refusals, then 404 for the model", async () => {
  await withApp(async (app) => {
    const send = async (body: unknown) => {
      const res = await app.inject({
        method: "POST",
        url: "/v1/chat/completions",
        headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
        payload: JSON.stringify(body),
      });
      assert.match(String(res.headers["x-request-id"]), /^req_/);
      assertResponseMatches("post", "/v1/chat/completions", res.statusCode, res.json());
      assert.equal(res.headers["x-should-retry"], "false");
      return { status: res.statusCode, error: (res.json() as { error: { param: string | null; code: string | null } }).error };
    };
    for (const body of chatBodies()) {
      const r = await send(body);
      const where = `${JSON.stringify(body)} → ${r.status} ${JSON.stringify(r.error)}`;
      if (!matchesSchema("CreateChatCompletionRequest", body)) {
        assert.equal(r.status, 400, where);
        const isObject = body !== null && typeof body === "object" && !Array.isArray(body);
        const codes = ["invalid_value", "unknown_parameter", "invalid_type", "missing_required_parameter"];
        assert.ok(isObject ? codes.includes(String(r.error.code)) : r.error.code === null && r.error.param === null, where);
      } else if (r.status === 400) {
        // Accepted by the schema, refused by a documented later check.
        assert.ok(["unsupported_parameter", "invalid_value", "invalid_type", "missing_required_parameter"].includes(String(r.error.code)), where);
      } else {
        assert.equal(r.status, 404, where);
        assert.deepEqual([r.error.param, r.error.code], ["model", "model_not_found"], where);
      }
    }
    const expect = async (body: unknown, param: string | null, code: string) => {
      const r = await send(body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.deepEqual([r.error.param, r.error.code], [param, code], JSON.stringify(body));
    };
    await expect({ ...chatBase, frobnicate: true }, "frobnicate", "unknown_parameter");
    await expect({ ...chatBase, temperature: 3 }, "temperature", "invalid_value");
    await expect({ ...chatBase, messages: [{ role: "robot", content: "x" }] }, "messages.0.role", "invalid_value");
    await expect({ ...chatBase, stream_options: { include_usage: true } }, "stream_options", "invalid_value");
    await expect({ ...chatBase, top_logprobs: 2 }, "top_logprobs", "invalid_value");
    await expect({ ...chatBase, response_format: { type: "json_object" } }, "response_format.type", "unsupported_parameter");
    await expect({ ...chatBase, tools: [{ type: "function", function: { name: "f" } }] }, "tools", "unsupported_parameter");
    await expect({ ...chatBase, functions: [{ name: "f" }] }, "functions", "unsupported_parameter");
    await expect({ ...chatBase, modalities: ["text", "audio"] }, "modalities", "unsupported_parameter");
    await expect({ ...chatBase, audio: { voice: "alloy" } }, "audio", "unsupported_parameter");
    await expect({ ...chatBase, web_search_options: {} }, "web_search_options", "unsupported_parameter");
    await expect({ ...chatBase, messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "x" } }] }] }, "messages[0].content[0].type", "unsupported_parameter");
    await expect({ ...chatBase, messages: [{ role: "user", content: [{ type: "text" }] }] }, "messages[0].content[0].text", "missing_required_parameter");
    await expect({ ...chatBase, messages: [{ role: "user" }] }, "messages[0].content", "invalid_type");
    await expect({ ...chatBase, messages: [{ role: "assistant", content: null }] }, "messages[0].content", "invalid_type");
    await expect({ ...chatBase, messages: [{ role: "tool", content: "x" }] }, "messages[0].tool_call_id", "missing_required_parameter");
    const ft = await send({ ...chatBase, model: "ft:tiny-llama:default::Ajo5kvNY", stream: true, stream_options: { include_usage: true } });
    assert.deepEqual([ft.status, ft.error.code], [404, "model_not_found"]);
  });
});

const chatHead = { id: "chatcmpl-hH3K9w1ZqgT0aPmV2xYd7LrN4sBcE", created: NOW, model: "ft:tiny-llama:default:demo:Ajo5kvNY" };

test("ChatCompletion and ChatCompletionChunk accept what service.ts builds, and nothing else", async () => {
  const { chatCompletionChunk, chatCompletionObject, chunkChoice, usage } = await import("../src/api/chat/schema.js");
  const { ApiError } = await import("../src/api/errors.js");
  const token = (t: string, logprob: number, bytes: number[], top = 0) => ({
    token: t,
    logprob,
    bytes,
    top_logprobs: Array.from({ length: top }, (_, i) => ({ token: `t${i}`, logprob: -1 - i, bytes: [116, 48 + i] })),
  });
  const lp = [token("Hello", -0.25, [72, 101, 108, 108, 111], 2), token("bytes:\\xe2\\x80", -3.5, [0xe2, 0x80], 2), token("!", 0, [33], 2)];
  const route = (body: unknown) => assertResponseMatches("post", "/v1/chat/completions", 200, body);

  const plain = chatCompletionObject(chatHead, [{ text: "Hello there", finish: "stop", logprobs: null }], usage(12, 3));
  route(plain);
  assertSchemaMatches("ChatCompletion", plain);
  route(chatCompletionObject(chatHead, [{ text: "Hello…!", finish: "length", logprobs: lp }, { text: "", finish: "stop", logprobs: [] }], usage(12, 4)));
  const schema = resolvePointer("#/components/schemas/ChatCompletion") as { required: string[] };
  assert.deepEqual(Object.keys(plain).sort(), [...schema.required].sort(), "every key the server sends is required");
  const bad: Array<[string, unknown]> = [
    ["extra key", { ...plain, object2: 1 }],
    ["missing system_fingerprint", without(plain, "system_fingerprint")],
    ["content_filter", { ...plain, choices: [{ ...plain.choices[0], finish_reason: "content_filter" }] }],
    ["message without refusal", { ...plain, choices: [{ ...plain.choices[0], message: without(plain.choices[0]!.message, "refusal") }] }],
    ["usage without details", { ...plain, usage: without(plain.usage as unknown as Record<string, unknown>, "prompt_tokens_details") }],
    ["no choices", { ...plain, choices: [] }],
  ];
  for (const [what, value] of bad) assert.equal(matchesSchema("ChatCompletion", value), false, what);

  // A stream with include_usage: the role chunks, text, finishes, the usage chunk.
  const withUsage = [
    chatCompletionChunk(chatHead, true, [chunkChoice.first(0)]),
    chatCompletionChunk(chatHead, true, [chunkChoice.first(1)]),
    chatCompletionChunk(chatHead, true, [chunkChoice.text(1, "Hel", null)]),
    chatCompletionChunk(chatHead, true, [chunkChoice.text(0, "", lp.slice(1, 2))]),
    chatCompletionChunk(chatHead, true, [chunkChoice.text(0, "lo", lp.slice(0, 1))]),
    chatCompletionChunk(chatHead, true, [chunkChoice.finish(0, "stop")]),
    chatCompletionChunk(chatHead, true, [chunkChoice.finish(1, "length")]),
    chatCompletionChunk(chatHead, true, [], usage(12, 5)),
  ];
  for (const c of withUsage) assertSchemaMatches("ChatCompletionChunk", c);
  assert.ok(withUsage.slice(0, -1).every((c) => "usage" in c && c.usage === null));
  const without_ = [chatCompletionChunk(chatHead, false, [chunkChoice.first(0)]), chatCompletionChunk(chatHead, false, [chunkChoice.text(0, "x", [])]), chatCompletionChunk(chatHead, false, [chunkChoice.finish(0, "stop")])];
  for (const c of without_) {
    assertSchemaMatches("ChatCompletionChunk", c);
    assert.ok(!("usage" in c));
  }
  // A failure after the first chunk is one `error` event in OpenAI's envelope.
  assertSchemaMatches("ErrorResponse", ApiError.internal().toJSON());
  assertSchemaMatches("ErrorResponse", ApiError.notFound("The model 'x' was deleted.", "model", "model_not_found").toJSON());

  const first = withUsage[0]!;
  const badChunks: Array<[string, unknown]> = [
    ["extra key", { ...first, obfuscation: "xyz" }],
    ["role with text", { ...first, choices: [{ ...chunkChoice.first(0), delta: { role: "assistant", content: "x", refusal: null } }] }],
    ["role delta mixed with content", { ...first, choices: [{ ...chunkChoice.finish(0, "stop"), delta: { role: "assistant", content: "x" } }] }],
    ["null content", { ...first, choices: [{ ...chunkChoice.text(0, "x", null), delta: { content: null } }] }],
    ["two choices in one chunk", { ...first, choices: [chunkChoice.first(0), chunkChoice.first(1)] }],
    ["tool_calls finish", { ...first, choices: [{ ...chunkChoice.finish(0, "stop"), finish_reason: "tool_calls" }] }],
    ["chat.completion object", { ...first, object: "chat.completion" }],
  ];
  for (const [what, value] of badChunks) assert.equal(matchesSchema("ChatCompletionChunk", value), false, what);

  // Errors: the 429 carries Retry-After and no x-should-retry; the 404 names the model.
  const rateLimited = findResponse("post", "/v1/chat/completions", 429) as { headers: Record<string, { schema: { const: string } }> };
  assert.equal(rateLimited.headers["retry-after"]!.schema.const, "1");
  assert.ok(!("x-should-retry" in rateLimited.headers));
  assertResponseMatches("post", "/v1/chat/completions", 429, ApiError.of("rate_limit_exceeded", "busy").toJSON());
  const media = Object.keys((findResponse("post", "/v1/chat/completions", 200) as { content: object }).content).sort();
  assert.deepEqual(media, ["application/json", "text/event-stream"]);
});

// ---- The worker protocol (/internal/v1) ---------------------------------------------------------

test("the documented worker-protocol bodies accept and reject what the server's parsers do", async () => {
  const schema = await import("../src/protocol/worker.js");
  const progress = { step: 3, total_steps: 10, steps_per_second: 1.5 };
  const event = { message: "Step 3/10: training loss=0.5" };
  const long = (n: number) => "x".repeat(n);
  const cases: Array<[string, { safeParse(v: unknown): { success: boolean } }, unknown[]]> = [
    ["WorkerRegisterRequest", schema.registerBody, [{}, { name: "gpu-1" }, { name: "" }, { name: long(200) }, { name: long(201) }, { name: 1 }, { other: 1 }]],
    ["WorkerClaimRequest", schema.claimBody, [{}, { wait_seconds: 0 }, { wait_seconds: 60 }, { wait_seconds: 2.5 }, { wait_seconds: -1 }, { wait_seconds: 61 }, { wait_seconds: "5" }, { other: 1 }]],
    [
      "WorkerHeartbeatRequest",
      schema.heartbeatBody,
      [
        {},
        { progress },
        { progress: { ...progress, extra: "ignored" } },
        { progress: { ...progress, step: -1 } },
        { progress: { ...progress, step: 1.5 } },
        { progress: { ...progress, total_steps: 0 } },
        { progress: { ...progress, steps_per_second: 0 } },
        { progress: { ...progress, steps_per_second: -1 } },
        { progress: { step: 1 } },
        { progress: null },
        { other: 1 },
      ],
    ],
    [
      "WorkerEventsRequest",
      schema.eventsBody,
      [
        { events: [] },
        { events: [event], progress },
        { events: [{ ...event, level: "warn", type: "metrics", data: { step: 3, train_loss: 0.5 } }] },
        { events: [{ ...event, data: null }] },
        { events: [{ ...event, level: "debug" }] },
        { events: [{ ...event, type: "other" }] },
        { events: [{ ...event, data: [1] }] },
        { events: [{ ...event, extra: 1 }] },
        { events: [{ message: "" }] },
        { events: [{ message: long(10_000) }] },
        { events: [{ message: long(10_001) }] },
        { events: Array.from({ length: 1000 }, () => event) },
        { events: Array.from({ length: 1001 }, () => event) },
        {},
        { events: [], other: 1 },
      ],
    ],
    [
      "WorkerCheckpointRequest",
      schema.checkpointBody,
      [
        { step: 3, epoch: 1, metrics: { train_loss: 0.5 }, files: ["adapter_model.safetensors"] },
        { step: 0, epoch: 0, metrics: {}, files: ["a"] },
        { step: 3, epoch: 1, metrics: { train_loss: "0.5" }, files: ["a"] },
        { step: 3, epoch: 1, metrics: {}, files: [] },
        { step: 3, epoch: 1, metrics: {}, files: Array.from({ length: 101 }, (_, i) => `f${i}`) },
        { step: 3, epoch: 1, metrics: {}, files: ["../a"] },
        { step: 3, epoch: 1, metrics: {}, files: [".hidden"] },
        { step: 3, epoch: 1, metrics: {}, files: [long(200)] },
        { step: 3, epoch: 1, metrics: {}, files: [long(201)] },
        { step: -1, epoch: 1, metrics: {}, files: ["a"] },
        { step: 3, epoch: 1.5, metrics: {}, files: ["a"] },
        { step: 3, metrics: {}, files: ["a"] },
        { step: 3, epoch: 1, metrics: {}, files: ["a"], other: 1 },
      ],
    ],
    [
      "WorkerCompleteRequest",
      schema.completeBody,
      [
        { trained_tokens: 4480, files: ["adapter_model.safetensors", "adapter_config.json"] },
        { trained_tokens: 0, files: ["a"] },
        { trained_tokens: -1, files: ["a"] },
        { trained_tokens: 1.5, files: ["a"] },
        { trained_tokens: 1, files: [] },
        { trained_tokens: 1, files: ["a/b"] },
        { files: ["a"] },
        { trained_tokens: 1, files: ["a"], other: 1 },
      ],
    ],
    [
      "WorkerFailRequest",
      schema.failBody,
      [
        { code: "trainer_error", message: "The trainer crashed" },
        { code: "", message: "m" },
        { code: long(100), message: long(20_000) },
        { code: long(101), message: "m" },
        { code: "c", message: long(20_001) },
        { code: "c" },
        { code: "c", message: "m", param: null },
      ],
    ],
  ];
  for (const [name, parser, bodies] of cases) {
    for (const body of bodies) {
      const server = parser.safeParse(body).success;
      assert.equal(matchesSchema(name, body), server, `${name} ${JSON.stringify(body).slice(0, 200)}: the server ${server ? "accepts" : "rejects"} it`);
    }
  }
});

test("the worker protocol's real responses match openapi.yaml, from claim to complete, fail and release", async () => {
  await withApp(async (app, db, project) => {
    const { token } = await createWorker(db, "gpu-1");
    const checked = async (method: string, template: string, url: string, body?: unknown, headers: Record<string, string> = {}) => {
      const res = await app.inject({
        method: method.toUpperCase() as "GET",
        url,
        headers: { authorization: `Bearer ${token}`, ...(body !== undefined && !Buffer.isBuffer(body) ? { "content-type": "application/json" } : {}), ...headers },
        ...(body === undefined ? {} : { payload: Buffer.isBuffer(body) ? body : JSON.stringify(body) }),
      });
      assert.match(String(res.headers["x-request-id"]), /^req_/);
      const json = String(res.headers["content-type"] ?? "").startsWith("application/json");
      const parsed: unknown = json ? res.json() : res.rawPayload.length === 0 ? undefined : res.rawPayload;
      assertResponseMatches(method, template, res.statusCode, parsed);
      if (res.statusCode >= 400 && res.statusCode < 500) assert.equal(res.headers["x-should-retry"], "false");
      return { status: res.statusCode, body: parsed as Record<string, unknown> & { error?: { param: string | null; code: string | null } } };
    };
    const P = "/internal/v1";
    const J = `${P}/jobs/{job_id}`;

    // Authentication: worker tokens only, and never on /v1.
    for (const authorization of ["", `Bearer ${API_KEY}`, "Bearer wt-wrong"]) {
      const res = await app.inject({ method: "POST", url: `${P}/register`, headers: { authorization } });
      assert.equal(res.statusCode, 401);
      assertResponseMatches("post", `${P}/register`, 401, res.json());
      assert.equal((res.json() as { error: { code: string } }).error.code, "invalid_api_key");
    }
    assert.equal((await app.inject({ method: "GET", url: "/v1/files", headers: { authorization: `Bearer ${token}` } })).statusCode, 401);

    const reg = await checked("post", `${P}/register`, `${P}/register`, { name: "ignored" });
    assert.equal(reg.status, 200);
    assert.equal(reg.body.name, "gpu-1");
    assert.equal((await checked("post", `${P}/register`, `${P}/register`)).status, 200);
    assert.equal((await checked("post", `${P}/claim`, `${P}/claim`, { wait_seconds: 0 })).status, 204);
    const badClaim = await checked("post", `${P}/claim`, `${P}/claim`, { wait_seconds: 61 });
    assert.equal(badClaim.status, 400);
    assert.equal(badClaim.body.error?.param, "wait_seconds");

    // An unknown job: heartbeat says lost, release says false, reads 404, reports 409.
    const ghost = "ftjob-nonexistent";
    assert.deepEqual((await checked("post", `${J}/heartbeat`, `${P}/jobs/${ghost}/heartbeat`, {})).body, { action: "lost", lease_expires_at_ms: null });
    assert.deepEqual((await checked("post", `${J}/release`, `${P}/jobs/${ghost}/release`)).body, { released: false });
    assert.equal((await checked("post", `${J}/events`, `${P}/jobs/${ghost}/events`, { events: [] })).status, 404);
    const ghostDone = await checked("post", `${J}/complete`, `${P}/jobs/${ghost}/complete`, { trained_tokens: 1, files: ["a"] });
    assert.equal(ghostDone.status, 409);
    assert.equal(ghostDone.body.error?.code, "lease_lost");

    // A training file and two queued jobs (inserted as validation would leave them).
    const boundary = "openftboundary";
    const upload = await app.inject({
      method: "POST",
      url: "/v1/files",
      headers: { authorization: `Bearer ${API_KEY}`, "content-type": `multipart/form-data; boundary=${boundary}` },
      payload: [`--${boundary}`, 'Content-Disposition: form-data; name="purpose"', "", "fine-tune", `--${boundary}`, 'Content-Disposition: form-data; name="file"; filename="train.jsonl"', "Content-Type: application/octet-stream", "", '{"messages":[]}', `--${boundary}--`, ""].join("\r\n"),
    });
    assert.equal(upload.statusCode, 200, upload.body);
    const fileId = (upload.json() as { id: string }).id;
    const queuedJob = (id: string) =>
      insertJob(db, { id, projectId: project.id, createdAt: NOW, model: "tiny-llama-gpt2", baseModel: "tiny-llama-gpt2", trainingFile: fileId, status: "queued", method: resolvedMethod(), seed: 42, integrations: [], resultFiles: [], nExamples: 12, epochTokens: 480 }, []);
    await queuedJob("ftjob-aaaaaaaaaaaaaaaaaaaaaaaa");
    await queuedJob("ftjob-bbbbbbbbbbbbbbbbbbbbbbbb");

    const claim = await checked("post", `${P}/claim`, `${P}/claim`, {});
    assert.equal(claim.status, 200);
    const spec = claim.body as { job: { id: string; attempt: number }; resume: unknown; parent: unknown };
    assert.equal(spec.job.id, "ftjob-aaaaaaaaaaaaaaaaaaaaaaaa");
    assert.equal(spec.job.attempt, 1);
    assert.equal(spec.resume, null);
    assert.equal(spec.parent, null);
    const a = `${P}/jobs/${spec.job.id}`;
    const progress = { step: 3, total_steps: 10, steps_per_second: 2 };
    assert.equal((await checked("post", `${J}/heartbeat`, `${a}/heartbeat`, { progress })).body.action, "continue");
    assert.deepEqual((await checked("post", `${J}/events`, `${a}/events`, { events: [{ message: "m" }, { type: "metrics", message: "s", data: { step: 3, train_loss: 0.5 } }], progress })).body, { recorded: 2 });
    const badEvent = await checked("post", `${J}/events`, `${a}/events`, { events: [{ message: "m", level: "debug" }] });
    assert.equal(badEvent.status, 400);
    assert.equal(badEvent.body.error?.param, "events.0.level");
    const input = await checked("get", `${J}/inputs/{input}`, `${a}/inputs/training_file`);
    assert.equal(input.status, 200);
    assert.equal(String(input.body), '{"messages":[]}');
    assert.equal((await checked("get", `${J}/inputs/{input}`, `${a}/inputs/validation_file`)).body.error?.param, "validation_file");
    assert.equal((await checked("get", `${J}/inputs/{input}`, `${a}/inputs/other`)).status, 400);

    const put = (kind: string, step: number, file: string) =>
      checked("put", `${J}/artifacts/{kind}/{step}/{file}`, `${a}/artifacts/${kind}/${step}/${file}`, Buffer.from(`${kind} ${file}`), { "content-type": "application/octet-stream" });
    const artifact = await put("checkpoint", 3, "adapter.bin");
    assert.deepEqual(artifact.body.key, `jobs/${spec.job.id}/ckpt-step-3/adapter.bin`);
    assert.equal((await put("final", 0, "adapter.bin")).status, 200);
    assert.equal((await put("checkpoint", 3, ".hidden")).status, 400);
    const ckpt = { step: 3, epoch: 1, metrics: { train_loss: 0.5 }, files: ["adapter.bin"] };
    assert.deepEqual((await checked("post", `${J}/checkpoints`, `${a}/checkpoints`, ckpt)).body, { step: 3 });
    assert.deepEqual((await checked("post", `${J}/checkpoints`, `${a}/checkpoints`, ckpt)).body, { step: 3 });
    const missing = await checked("post", `${J}/checkpoints`, `${a}/checkpoints`, { ...ckpt, step: 4 });
    assert.equal(missing.status, 400);
    assert.equal(String((await checked("get", `${J}/sources/{source}/{file}`, `${a}/sources/resume/adapter.bin`)).body), "checkpoint adapter.bin");
    assert.equal((await checked("get", `${J}/sources/{source}/{file}`, `${a}/sources/parent/adapter.bin`)).body.error?.param, "file");

    const done = await checked("post", `${J}/complete`, `${a}/complete`, { trained_tokens: 4480, files: ["adapter.bin"] });
    assert.equal(done.body.status, "succeeded");
    assert.deepEqual((await checked("post", `${J}/complete`, `${a}/complete`, { trained_tokens: 4480, files: ["adapter.bin"] })).body, done.body);
    assert.equal((await checked("post", `${J}/heartbeat`, `${a}/heartbeat`)).body.action, "lost");
    assert.equal((await checked("post", `${J}/events`, `${a}/events`, { events: [] })).body.error?.code, "lease_lost");
    assert.equal((await checked("post", `${J}/fail`, `${a}/fail`, { code: "c", message: "m" })).status, 409);

    // The second job: released while running (back to the queue, no attempt counted), then failed.
    const second = await checked("post", `${P}/claim`, `${P}/claim`, { wait_seconds: 0 });
    const b = `${P}/jobs/${(second.body as { job: { id: string } }).job.id}`;
    assert.deepEqual((await checked("post", `${J}/release`, `${b}/release`)).body, { released: true });
    assert.deepEqual((await checked("post", `${J}/release`, `${b}/release`)).body, { released: false });
    const again = await checked("post", `${P}/claim`, `${P}/claim`, { wait_seconds: 0 });
    assert.equal((again.body as { job: { attempt: number } }).job.attempt, 1);
    const failed = await checked("post", `${J}/fail`, `${b}/fail`, { code: "trainer_error", message: "The trainer crashed" });
    assert.equal(failed.body.status, "failed");
    assert.deepEqual((await checked("post", `${J}/fail`, `${b}/fail`, { code: "trainer_error", message: "The trainer crashed" })).body, failed.body);
  });
});

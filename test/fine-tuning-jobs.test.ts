// The fine-tuning jobs API through the official `openai` npm client: create (every parameter
// and its limits), validation outcomes, list/retrieve, cancel/pause/resume, events, checkpoints.
import assert from "node:assert/strict";
import { expect400, waitForStatus } from "./helpers/jobs.js";
import { after, before, describe, test } from "node:test";
import OpenAI, { toFile } from "openai";
import { startServer, type TestServer } from "./helpers/server.js";
import { buildGpt2ChatmlFolder } from "./helpers/tiny-models.js";

const MODEL = "tiny-llama-gpt2";
const example = (i: number) =>
  JSON.stringify({ messages: [{ role: "system", content: "Be brief." }, { role: "user", content: `What is ${i} + ${i}?` }, { role: "assistant", content: `${2 * i}` }] });
const jsonl = (n: number) => Array.from({ length: n }, (_, i) => example(i)).join("\n") + "\n";

type Job = OpenAI.FineTuning.Jobs.FineTuningJob;

describe("fine-tuning jobs", () => {
  let server: TestServer;
  let client: OpenAI;
  let other: OpenAI;
  let trainId: string;

  const upload = async (body: string, name = "train.jsonl") =>
    (await client.files.create({ file: await toFile(Buffer.from(body), name), purpose: "fine-tune" })).id;

  const waitStatus = (id: string, statuses: string[], ms = 30_000) => waitForStatus(client, id, statuses, ms, 100);

  before(async () => {
    server = await startServer({ projects: ["other"] });
    await buildGpt2ChatmlFolder({ parent: server.env.OPENFT_MODELS_DIR });
    client = server.client();
    other = server.client(server.projectKeys.other);
    trainId = await upload(jsonl(12));
  });
  after(async () => server.dispose());

  test("create: validating_files, then queued with resolved hyperparameters and OpenAI's events", async () => {
    const job = await client.fineTuning.jobs.create({ model: MODEL, training_file: trainId, seed: 42, suffix: "my-sfx", metadata: { env: "prod" } });
    assert.match(job.id, /^ftjob-[A-Za-z0-9]{24}$/);
    assert.equal(job.object, "fine_tuning.job");
    assert.equal(job.status, "validating_files");
    assert.equal(job.model, MODEL);
    assert.equal(job.fine_tuned_model, null);
    assert.equal(job.finished_at, null);
    assert.deepEqual(job.result_files, []);
    assert.equal(job.seed, 42);
    assert.deepEqual(job.metadata, { env: "prod" });
    assert.equal(job.method?.type, "supervised");
    assert.deepEqual(job.error, { code: null, message: null, param: null });
    assert.deepEqual(job.hyperparameters, { batch_size: "auto", learning_rate_multiplier: "auto", n_epochs: "auto" });

    const queued = await waitStatus(job.id, ["queued"]);
    assert.deepEqual(queued.hyperparameters, { batch_size: 1, learning_rate_multiplier: 2, n_epochs: 8 });
    const hp = queued.method!.supervised!.hyperparameters as Record<string, unknown>;
    assert.deepEqual(hp, { n_epochs: 8, batch_size: 1, learning_rate_multiplier: 2, lora_rank: 16, lora_alpha: 32, lora_dropout: 0.05, quantization: "none" });
    assert.deepEqual(Object.keys(queued).sort(), Object.keys(job).sort(), "retrieve has the create response's keys");

    const events = await client.fineTuning.jobs.listEvents(job.id);
    assert.deepEqual(events.data.map((e) => e.message), [
      "Files validated, moving job to queued state",
      `Validating training file: ${trainId}`,
      `Created fine-tuning job: ${job.id}`,
    ]);
    for (const e of events.data) {
      assert.match(e.id, /^ftevent-/);
      assert.equal(e.object, "fine_tuning.job.event");
      assert.equal(e.level, "info");
      assert.equal(e.type, "message");
    }
    const seen: string[] = [];
    for await (const e of client.fineTuning.jobs.listEvents(job.id, { limit: 1 })) seen.push(e.id);
    assert.deepEqual(seen, events.data.map((e) => e.id), "paging one by one yields each event once, newest first");

    const ckpts = (await (await client.fineTuning.jobs.checkpoints.list(job.id).asResponse()).json()) as Record<string, unknown>;
    assert.deepEqual(ckpts, { object: "list", data: [], first_id: null, last_id: null, has_more: false });
  });

  test("seed is generated when absent; hyperparameters in either form; our LoRA extensions", async () => {
    const a = await client.fineTuning.jobs.create({ model: MODEL, training_file: trainId });
    assert.ok(Number.isInteger(a.seed) && a.seed >= 0);
    const b = await client.fineTuning.jobs.create({ model: MODEL, training_file: trainId, hyperparameters: { n_epochs: 2, batch_size: 4, learning_rate_multiplier: 0.5 } });
    const c = await client.fineTuning.jobs.create({
      model: MODEL,
      training_file: trainId,
      method: { type: "supervised", supervised: { hyperparameters: { n_epochs: 3, lora_rank: 8, lora_alpha: 16, lora_dropout: 0, quantization: "nf4" } as never } },
    });
    const bq = await waitStatus(b.id, ["queued"]);
    assert.deepEqual(bq.hyperparameters, { n_epochs: 2, batch_size: 4, learning_rate_multiplier: 0.5 });
    const cq = await waitStatus(c.id, ["queued"]);
    assert.deepEqual(cq.method!.supervised!.hyperparameters, { n_epochs: 3, batch_size: 1, learning_rate_multiplier: 2, lora_rank: 8, lora_alpha: 16, lora_dropout: 0, quantization: "nf4" });
  });

  test("every out-of-range parameter is a 400 naming it", async () => {
    const base = { model: MODEL, training_file: trainId };
    const hpCases: Array<[Record<string, unknown>, string]> = [
      [{ n_epochs: 0 }, "n_epochs"],
      [{ n_epochs: 51 }, "n_epochs"],
      [{ batch_size: 257 }, "batch_size"],
      [{ batch_size: 0 }, "batch_size"],
      [{ learning_rate_multiplier: 0 }, "learning_rate_multiplier"],
      [{ lora_rank: 0 }, "lora_rank"],
      [{ lora_dropout: 0.9 }, "lora_dropout"],
      [{ quantization: "int3" }, "quantization"],
      [{ n_epochs: "many" }, "n_epochs"],
    ];
    for (const [hp, key] of hpCases) {
      await expect400(client.fineTuning.jobs.create({ ...base, hyperparameters: hp as never }), `hyperparameters.${key}`);
      await expect400(
        client.fineTuning.jobs.create({ ...base, method: { type: "supervised", supervised: { hyperparameters: hp as never } } }),
        `method.supervised.hyperparameters.${key}`,
      );
    }
    await expect400(client.fineTuning.jobs.create({ ...base, suffix: "x".repeat(65) }), "suffix");
    const ok = await client.fineTuning.jobs.create({ ...base, suffix: "s".repeat(64) });
    assert.equal((ok as unknown as { user_provided_suffix: string }).user_provided_suffix, "s".repeat(64));
    await expect400(client.fineTuning.jobs.create({ ...base, suffix: "no:colons" }), "suffix");
    await expect400(client.fineTuning.jobs.create({ ...base, seed: -1 }), "seed");
    await expect400(client.fineTuning.jobs.create({ ...base, metadata: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, "v"])) }), "metadata");
    await expect400(client.fineTuning.jobs.create({ training_file: trainId } as never), "model");
    await expect400(client.fineTuning.jobs.create({ model: MODEL } as never), "training_file");
    await expect400(client.fineTuning.jobs.create({ ...base, training_file: "file-nope" }), "training_file", /invalid training_file: file-nope/);
    await expect400(client.fineTuning.jobs.create({ ...base, validation_file: "file-nope" }), "validation_file");
    const err = await expect400(client.fineTuning.jobs.create({ ...base, model: "no-such-model" }), "model", /not available for fine-tuning/);
    assert.equal(err.code, "model_not_available");
    await expect400(client.fineTuning.jobs.create({ ...base, model: "ft:tiny-llama-gpt2:p::abcdefgh" }), "model");
    await expect400(client.fineTuning.jobs.create({ ...base, method: { type: "reinforcement" } }), "method.type", /not supported/);
    await expect400(client.fineTuning.jobs.create({ ...base, hyperparameters: { n_epochs: 1 }, method: { type: "supervised", supervised: { hyperparameters: { n_epochs: 2 } } } }), "hyperparameters");
    const notes = (await client.files.create({ file: await toFile(Buffer.from("x"), "n.txt"), purpose: "assistants" })).id;
    await expect400(client.fineTuning.jobs.create({ ...base, training_file: notes }), "training_file", /purpose/);
  });

  test("validation failures: too few examples, a bad line, an example too long", async () => {
    const nine = await client.fineTuning.jobs.create({ model: MODEL, training_file: await upload(jsonl(9)) });
    const nineFile = nine.training_file;
    const f9 = await waitStatus(nine.id, ["failed"]);
    assert.equal(f9.error?.code, "invalid_n_examples");
    assert.equal(f9.error?.param, "training_file");
    assert.equal(f9.error!.message, `Training file has 9 example(s), but must have at least 10 examples (file ${nineFile})`);
    assert.equal(f9.fine_tuned_model, null);
    assert.equal(f9.trained_tokens, null);

    const lines = jsonl(12).split("\n");
    lines[1] = JSON.stringify({ messages: [{ role: "user", content: "hi" }, { content: "no role" }] });
    const badId = await upload(lines.join("\n"));
    const bad = await waitStatus((await client.fineTuning.jobs.create({ model: MODEL, training_file: badId })).id, ["failed"]);
    assert.equal(bad.error?.code, "invalid_training_file");
    assert.match(bad.error!.message, /Example 2/);
    assert.match(bad.error!.message, new RegExp(`^The job failed due to an invalid training file\\. Invalid file format\\. Example 2, .* \\(file ${badId}, line 2\\)$`));
    const events = await client.fineTuning.jobs.listEvents(bad.id);
    assert.equal(events.data[0]!.level, "error");

    const long = jsonl(12).split("\n");
    long[4] = JSON.stringify({ messages: [{ role: "user", content: "word ".repeat(400) }, { role: "assistant", content: "ok" }] });
    const longJob = await waitStatus((await client.fineTuning.jobs.create({ model: MODEL, training_file: await upload(long.join("\n")) })).id, ["failed"]);
    assert.match(longJob.error!.message, /Example 5 is too long/);

    const noAssistant = jsonl(12).split("\n");
    noAssistant[0] = JSON.stringify({ messages: [{ role: "user", content: "hi" }, { role: "assistant", content: "x", weight: 0 }] });
    const na = await waitStatus((await client.fineTuning.jobs.create({ model: MODEL, training_file: await upload(noAssistant.join("\n")) })).id, ["failed"]);
    assert.equal(na.error?.code, "invalid_training_file");
  });

  test("cancel, pause and resume are guarded transitions, idempotent under retries", async () => {
    const job = await client.fineTuning.jobs.create({ model: MODEL, training_file: trainId });
    await waitStatus(job.id, ["queued"]);
    const paused = await client.fineTuning.jobs.pause(job.id);
    assert.equal(paused.status, "paused");
    assert.equal((await client.fineTuning.jobs.pause(job.id)).status, "paused", "a repeated pause is a no-op");
    const resumed = await client.fineTuning.jobs.resume(job.id);
    assert.equal(resumed.status, "queued");
    assert.equal((await client.fineTuning.jobs.resume(job.id)).status, "queued");

    const h = { authorization: `Bearer ${server.apiKey}` };
    const withJson = await server.fetch(`${server.baseURL}/fine_tuning/jobs/${job.id}/cancel`, { method: "POST", headers: { ...h, "content-type": "application/json" } });
    assert.equal(withJson.status, 200);
    assert.equal(((await withJson.json()) as Job).status, "cancelled");
    const bare = await server.fetch(`${server.baseURL}/fine_tuning/jobs/${job.id}/cancel`, { method: "POST", headers: h });
    assert.equal(bare.status, 200, "a retried cancel returns the cancelled job");
    const cancelled = await client.fineTuning.jobs.retrieve(job.id);
    assert.ok(cancelled.finished_at! >= cancelled.created_at);
    await expect400(client.fineTuning.jobs.resume(job.id), "fine_tuning_job_id", /cancelled/);
    await expect400(client.fineTuning.jobs.pause(job.id), "fine_tuning_job_id");
    const msgs = (await client.fineTuning.jobs.listEvents(job.id)).data.map((e) => e.message);
    assert.deepEqual(msgs.slice(0, 3), ["Fine-tuning job cancelled", "Fine-tuning job resumed", "Fine-tuning job paused"]);

    const failed = await client.fineTuning.jobs.create({ model: MODEL, training_file: await upload(jsonl(3)) });
    await waitStatus(failed.id, ["failed"]);
    const err = await expect400(client.fineTuning.jobs.cancel(failed.id), "fine_tuning_job_id", /failed/);
    assert.equal(err.headers?.get("x-should-retry"), "false");
  });

  test("list: newest first, auto-pagination, metadata filter; other projects see 404", async () => {
    const made: string[] = [];
    for (let i = 0; i < 3; i++) made.push((await other.fineTuning.jobs.create({ model: MODEL, training_file: (await other.files.create({ file: await toFile(Buffer.from(jsonl(10)), "t.jsonl"), purpose: "fine-tune" })).id, metadata: { n: String(i), team: i === 1 ? "a" : "b" } })).id);
    const seen: string[] = [];
    for await (const j of other.fineTuning.jobs.list({ limit: 1 })) seen.push(j.id);
    assert.deepEqual(seen, [...made].reverse());
    const page = await other.fineTuning.jobs.list({ limit: 2 });
    assert.equal(page.has_more, true);
    const filtered = await other.fineTuning.jobs.list({ metadata: { team: "a" } });
    assert.deepEqual(filtered.data.map((j) => j.id), [made[1]]);
    const none = await other.fineTuning.jobs.list({ metadata: { team: "zzz" } });
    assert.deepEqual(none.data, []);
    assert.equal(none.has_more, false);

    for (const call of [
      () => client.fineTuning.jobs.retrieve(made[0]!),
      () => client.fineTuning.jobs.cancel(made[0]!),
      () => client.fineTuning.jobs.listEvents(made[0]!),
      () => client.fineTuning.jobs.retrieve("ftjob-doesnotexist0000000000"),
    ]) {
      await assert.rejects(call(), (e: unknown) => e instanceof OpenAI.NotFoundError && e.param === "fine_tuning_job_id");
    }
    for await (const j of client.fineTuning.jobs.list()) assert.ok(!made.includes(j.id));
  });

  test("a retried create (X-Stainless-Retry-Count > 0) returns the job the first try made", async () => {
    const body = JSON.stringify({ model: MODEL, training_file: trainId, seed: 7, suffix: "retry" });
    const h = { authorization: `Bearer ${server.apiKey}`, "content-type": "application/json" };
    const first = (await (await server.fetch(`${server.baseURL}/fine_tuning/jobs`, { method: "POST", headers: { ...h, "x-stainless-retry-count": "0" }, body })).json()) as Job;
    const retry = (await (await server.fetch(`${server.baseURL}/fine_tuning/jobs`, { method: "POST", headers: { ...h, "x-stainless-retry-count": "1" }, body })).json()) as Job;
    assert.equal(retry.id, first.id);
    const fresh = (await (await server.fetch(`${server.baseURL}/fine_tuning/jobs`, { method: "POST", headers: h, body })).json()) as Job;
    assert.notEqual(fresh.id, first.id, "a new request (not a retry) makes a new job");
  });
});

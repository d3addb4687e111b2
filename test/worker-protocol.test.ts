// The worker protocol end to end, with a TrainerDouble (a test double of the trainer) behind
// real workers: success with events, metrics, checkpoints, the result CSV and the ft: model;
// cancel, pause/resume, a crashing trainer; racing workers; and SIGKILL of a worker and of the
// server mid-job, which still end with the job succeeded exactly once and exactly one model.
import assert from "node:assert/strict";
import { waitForStatus } from "./helpers/jobs.js";
import { spawn } from "node:child_process";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, afterEach, before, describe, test } from "node:test";
import OpenAI, { toFile } from "openai";
import pino from "pino";
import { ProtocolClient } from "../src/engine/worker/protocol-client.js";
import { Worker } from "../src/engine/worker/worker.js";
import { loadChatTokenizer } from "../src/jobs/validation/tokenizer.js";
import { queryRows } from "./helpers/storage.js";
import { ROOT, startServer, type TestServer } from "./helpers/server.js";
import { buildGpt2ChatmlFolder } from "./helpers/tiny-models.js";
import { TrainerDouble, type TrainerDoubleOptions } from "./helpers/trainer-double.js";

const MODEL = "tiny-llama-gpt2";
const conversation = (i: number) => ({ messages: [{ role: "user" as const, content: `${i}+${i}?` }, { role: "assistant" as const, content: `${2 * i}` }] });
const example = (i: number) => JSON.stringify(conversation(i));
const jsonl = (n: number) => Array.from({ length: n }, (_, i) => example(i)).join("\n") + "\n";

describe("worker protocol", () => {
  let server: TestServer;
  let client: OpenAI;
  let fileId: string;
  let modelDir: string;
  const workers: Worker[] = [];
  const log = pino({ level: "silent" });

  const newWorker = (name: string, opts: TrainerDoubleOptions = {}) => {
    const w = new Worker({ client: new ProtocolClient(server.url, server.workerTokens[name]!), runner: new TrainerDouble(opts), log, claimWaitSeconds: 1 });
    workers.push(w);
    w.start();
    return w;
  };
  const stopWorkers = async () => {
    await Promise.all(workers.splice(0).map((w) => w.stop()));
  };
  const createJob = (hp: Record<string, number>, extra: Record<string, unknown> = {}) =>
    client.fineTuning.jobs.create({ model: MODEL, training_file: fileId, hyperparameters: hp, ...extra });
  const waitStatus = (id: string, statuses: string[], ms = 60_000) => waitForStatus(client, id, statuses, ms, 50);
  const messages = async (id: string) => {
    const out: OpenAI.FineTuning.Jobs.FineTuningJobEvent[] = [];
    for await (const e of client.fineTuning.jobs.listEvents(id, { limit: 100 })) out.push(e);
    return out;
  };

  before(async () => {
    server = await startServer({ projects: ["busy", "quiet"], workers: ["w1", "w2", "w3", "w4", "w5", "w6", "killme"], env: { OPENFT_WORKER_LEASE_SECONDS: "3" } });
    modelDir = await buildGpt2ChatmlFolder({ parent: server.env.OPENFT_MODELS_DIR });
    client = server.client();
    fileId = (await client.files.create({ file: await toFile(Buffer.from(jsonl(12)), "train.jsonl"), purpose: "fine-tune" })).id;
  });
  // A failed assertion must not leave its workers claiming the next test's jobs.
  afterEach(stopWorkers);
  after(async () => {
    await stopWorkers();
    await server.dispose();
  });

  test("a job runs to succeeded: events, metrics, the last three checkpoints, result CSV, ft: model", async () => {
    const job = await createJob({ n_epochs: 4, batch_size: 4 }, { suffix: "sfx" });
    newWorker("w1");
    const done = await waitStatus(job.id, ["succeeded", "failed"]);
    await stopWorkers();
    assert.equal(done.status, "succeeded", JSON.stringify(done.error));
    assert.match(done.fine_tuned_model!, /^ft:tiny-llama-gpt2:default:sfx:[A-Za-z0-9]{8}$/);
    // The double trains every token of the 12 examples (as the validator counted them) 4 times.
    const tokenizer = await loadChatTokenizer(modelDir);
    const epochTokens = Array.from({ length: 12 }, (_, i) => tokenizer.countTokens(conversation(i))).reduce((a, b) => a + b, 0);
    assert.equal(done.trained_tokens, 4 * epochTokens);
    assert.ok(done.finished_at! >= done.created_at);
    assert.equal(done.estimated_finish, null);
    assert.equal(done.result_files.length, 1);

    const result = await client.files.retrieve(done.result_files[0]!);
    assert.equal(result.purpose, "fine-tune-results");
    const csv = Buffer.from(await (await client.files.content(result.id)).text(), "base64").toString();
    const rows = csv.trim().split("\n");
    assert.equal(rows[0], "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy");
    assert.equal(rows.length, 1 + 12);
    assert.match(rows[1]!, /^1,1,0\.08333,,$/);

    const events = await messages(job.id);
    const texts = events.map((e) => e.message);
    assert.equal(texts[0], "The job has successfully completed");
    assert.equal(texts[1], `New fine-tuned model created: ${done.fine_tuned_model}`);
    assert.ok(texts.includes("Fine-tuning job started"));
    const metrics = events.filter((e) => e.type === "metrics");
    assert.deepEqual(metrics.map((e) => (e.data as { step: number }).step), [12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1]);
    for (const m of metrics) assert.equal(typeof (m.data as Record<string, unknown>).train_loss, "number");

    const ckpts = await client.fineTuning.jobs.checkpoints.list(job.id);
    assert.deepEqual(ckpts.data.map((c) => c.step_number), [12, 9, 6], "the last three epochs, newest first");
    for (const c of ckpts.data) {
      assert.match(c.id, /^ftckpt_[A-Za-z0-9]{24}$/);
      assert.equal(c.object, "fine_tuning.job.checkpoint");
      assert.equal(c.fine_tuning_job_id, job.id);
      assert.match(c.fine_tuned_model_checkpoint, new RegExp(`^ft:tiny-llama-gpt2:default:sfx:[A-Za-z0-9]{8}:ckpt-step-${c.step_number}$`));
      assert.notEqual(c.fine_tuned_model_checkpoint.split(":")[4], done.fine_tuned_model!.split(":")[4], "a checkpoint has an id of its own");
      assert.equal(typeof c.metrics.train_loss, "number");
    }

    // Training continues from an ft: model or a checkpoint of the same project.
    const cont = await client.fineTuning.jobs.create({ model: done.fine_tuned_model!, training_file: fileId });
    assert.equal(cont.model, done.fine_tuned_model);
    const fromCkpt = await client.fineTuning.jobs.create({ model: ckpts.data[1]!.fine_tuned_model_checkpoint, training_file: fileId });
    assert.equal((await waitStatus(fromCkpt.id, ["queued"])).status, "queued");
    await client.fineTuning.jobs.cancel(cont.id);
    await client.fineTuning.jobs.cancel(fromCkpt.id);

    // /v1/models: base models, the ft: model and its checkpoints; raw or escaped colons.
    const ids: string[] = [];
    for await (const m of client.models.list()) ids.push(m.id);
    assert.ok(ids.includes(MODEL) && ids.includes(done.fine_tuned_model!));
    for (const c of ckpts.data) assert.ok(ids.includes(c.fine_tuned_model_checkpoint));
    const raw = await client.models.retrieve(done.fine_tuned_model!);
    assert.deepEqual(Object.keys(raw).sort(), ["created", "id", "object", "owned_by"]);
    const escaped = (await (await server.fetch(`${server.baseURL}/models/${done.fine_tuned_model!.replaceAll(":", "%3A")}`, { headers: { authorization: `Bearer ${server.apiKey}` } })).json()) as { id: string };
    assert.equal(escaped.id, done.fine_tuned_model);
    assert.equal((await client.models.retrieve(MODEL)).owned_by, "system");
    const other = server.client(server.projectKeys.quiet);
    await assert.rejects(other.models.retrieve(done.fine_tuned_model!), (e: unknown) => e instanceof OpenAI.NotFoundError && e.code === "model_not_found" && e.param === "model");
    await assert.rejects(client.models.delete(MODEL), (e: unknown) => e instanceof OpenAI.PermissionDeniedError);
    assert.deepEqual(await client.models.delete(done.fine_tuned_model!), { id: done.fine_tuned_model, object: "model", deleted: true });
    await assert.rejects(client.models.retrieve(done.fine_tuned_model!), (e: unknown) => e instanceof OpenAI.NotFoundError && e.code === "model_not_found");
    await assert.rejects(client.fineTuning.jobs.create({ model: done.fine_tuned_model!, training_file: fileId }), (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === "model");
  });

  test("cancel mid-run stops the worker; no model is made", async () => {
    const job = await createJob({ n_epochs: 3, batch_size: 1 });
    let cancelled = false;
    newWorker("w1", { stepMs: 50, holdAtStep: 3, onStep: (id, step) => void (step === 3 && id === job.id && !cancelled && (cancelled = true) && client.fineTuning.jobs.cancel(id)) });
    const done = await waitStatus(job.id, ["cancelled", "succeeded"]);
    assert.equal(done.status, "cancelled");
    await sleep(1500);
    const after = await client.fineTuning.jobs.retrieve(job.id);
    assert.equal(after.status, "cancelled");
    assert.equal(after.fine_tuned_model, null);
    const steps = (await messages(job.id)).filter((e) => e.type === "metrics").length;
    assert.ok(steps <= 3, `stopped at the cancel (${steps} steps)`);
    await stopWorkers();
  });

  test("pause saves a checkpoint; resume continues from it, steps and loss carrying on", async () => {
    const job = await createJob({ n_epochs: 2, batch_size: 2 });
    let paused = false;
    newWorker("w2", { stepMs: 60, holdAtStep: 4, onStep: (id, step) => void (step === 4 && id === job.id && !paused && (paused = true) && client.fineTuning.jobs.pause(id)) });
    await waitStatus(job.id, ["paused"]);
    // Resume at once: the worker may still be saving the pause's checkpoint; no other worker
    // gets the job until it has let go, so nothing is redone.
    const resumed = await client.fineTuning.jobs.resume(job.id);
    assert.equal(resumed.status, "queued");
    const done = await waitStatus(job.id, ["succeeded", "failed"]);
    assert.equal(done.status, "succeeded", JSON.stringify(done.error));
    const events = await messages(job.id);
    const resumedAt = events.find((e) => e.message.startsWith("Fine-tuning job resumed from the checkpoint at step"));
    assert.ok(resumedAt, "the job resumed from a checkpoint");
    const pausedAt = Number(/step (\d+)$/.exec(resumedAt.message)![1]);
    assert.equal(pausedAt, 4, "the pause's checkpoint is at the step it came");
    const steps = events.filter((e) => e.type === "metrics").map((e) => (e.data as { step: number }).step).reverse();
    assert.deepEqual(steps, Array.from({ length: 12 }, (_, i) => i + 1), "each step once: the resumed run continued after the checkpoint");
    await stopWorkers();
  });

  test("a crashing trainer fails the job with a readable error", async () => {
    const job = await createJob({ n_epochs: 1, batch_size: 1 });
    newWorker("w3", { failAtStep: 2 });
    const done = await waitStatus(job.id, ["failed", "succeeded"]);
    await stopWorkers();
    assert.equal(done.status, "failed");
    assert.equal(done.error?.code, "trainer_error");
    assert.match(done.error!.message, /injected failure/);
    assert.equal(done.fine_tuned_model, null);
    assert.equal((await messages(job.id))[0]!.level, "error");
  });

  test("first in, first out within a project, and projects take turns", async () => {
    const busy = server.client(server.projectKeys.busy);
    const quiet = server.client(server.projectKeys.quiet);
    const upload = async (c: OpenAI) => (await c.files.create({ file: await toFile(Buffer.from(jsonl(10)), "t.jsonl"), purpose: "fine-tune" })).id;
    const busyFile = await upload(busy);
    const quietFile = await upload(quiet);
    const hp = { n_epochs: 1, batch_size: 10 };
    const busyJobs: string[] = [];
    for (let i = 0; i < 5; i++) {
      const j = await busy.fineTuning.jobs.create({ model: MODEL, training_file: busyFile, hyperparameters: hp });
      busyJobs.push(j.id);
    }
    const quietJob = (await quiet.fineTuning.jobs.create({ model: MODEL, training_file: quietFile, hyperparameters: hp })).id;
    for (const id of [...busyJobs]) {
      for (;;) {
        const j = await busy.fineTuning.jobs.retrieve(id);
        if (j.status === "queued") break;
        await sleep(50);
      }
    }
    for (;;) {
      if ((await quiet.fineTuning.jobs.retrieve(quietJob)).status === "queued") break;
      await sleep(50);
    }
    const order: string[] = [];
    newWorker("w1", { stepMs: 5, onStep: (id, step) => step === 1 && order.push(id) });
    const deadline = Date.now() + 30_000;
    while (order.length < 6 && Date.now() < deadline) await sleep(50);
    await stopWorkers();
    const ranks = server.databaseUrl ? JSON.stringify(await queryRows(server, "select id, project_id, fair_rank, seq, status from fine_tuning_jobs order by seq")) : "";
    assert.deepEqual(order, [busyJobs[0], quietJob, ...busyJobs.slice(1)], `the quiet project's one job runs second, not last ${ranks}`);
  });

  test("racing workers never claim a job twice", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 16; i++) ids.push((await createJob({ n_epochs: 1, batch_size: 12 })).id);
    for (const w of ["w1", "w2", "w3", "w4", "w5", "w6"]) newWorker(w, { stepMs: 5 });
    for (const id of ids) assert.equal((await waitStatus(id, ["succeeded", "failed"])).status, "succeeded");
    await stopWorkers();
    for (const id of ids) {
      // A claim is either the first start or follows a lapsed lease (a slow heartbeat on a busy
      // machine): never two claims of one lease.
      const events = await messages(id);
      const claims = events.filter((e) => /^Fine-tuning job (started|resumed)/.test(e.message)).length;
      const requeues = events.filter((e) => /stopped responding|let it go/.test(e.message)).length;
      assert.equal(claims, 1 + requeues, `job ${id}: ${events.map((e) => e.message).join(" | ")}`);
      assert.equal(events.filter((e) => e.message === "The job has successfully completed").length, 1);
    }
  });

  test("SIGKILL of a worker mid-job: the lease lapses, another worker resumes from the newest checkpoint", async () => {
    const job = await createJob({ n_epochs: 3, batch_size: 2 });
    const child = spawn(process.execPath, [path.join(ROOT, "dist/test/helpers/worker-double-main.js"), server.url, server.workerTokens.killme!, "80"], { stdio: ["ignore", "pipe", "inherit"] });
    await new Promise<void>((resolve) => {
      child.stdout.on("data", (d: Buffer) => {
        if (d.toString().includes(`step ${job.id} 8\n`)) resolve();
      });
    });
    child.kill("SIGKILL");
    await waitStatus(job.id, ["queued"], 15_000);
    newWorker("w4", { stepMs: 10 });
    const done = await waitStatus(job.id, ["succeeded", "failed"]);
    assert.equal(done.status, "succeeded", JSON.stringify(done.error));
    const events = await messages(job.id);
    assert.ok(events.some((e) => /stopped responding/.test(e.message)));
    assert.ok(events.some((e) => e.message === "Fine-tuning job resumed from the checkpoint at step 6"));
    await stopWorkers();
  });

  test("SIGKILL of the server mid-job: the job still succeeds exactly once, with exactly one model", async () => {
    const job = await createJob({ n_epochs: 2, batch_size: 1 });
    let killAt: (() => void) | undefined;
    const reached = new Promise<void>((resolve) => (killAt = resolve));
    newWorker("w5", { stepMs: 60, onStep: (id, step) => id === job.id && step === 5 && killAt!() });
    await reached;
    await server.kill();
    await sleep(500);
    await server.restart();
    const done = await waitStatus(job.id, ["succeeded", "failed"], 90_000);
    assert.equal(done.status, "succeeded", JSON.stringify(done.error));
    await stopWorkers();
    const completed = (await messages(job.id)).filter((e) => e.message === "The job has successfully completed");
    assert.equal(completed.length, 1);

    await server.stop(); // PGlite admits one process: look at the rows with the server stopped
    const models = await queryRows(server, "select job_id, kind, count(*)::int as n from models where kind = 'fine-tune' group by job_id, kind");
    for (const m of models) assert.equal(m.n, 1, `job ${String(m.job_id)} has exactly one model`);
    assert.ok(models.some((m) => m.job_id === job.id));
    const results = await queryRows(server, `select count(*)::int as n from files where purpose = 'fine-tune-results'`);
    const succeeded = await queryRows(server, `select count(*)::int as n from fine_tuning_jobs where status = 'succeeded'`);
    assert.equal(results[0]!.n, succeeded[0]!.n, "one result file per succeeded job");
    await server.restart();
  });
});

// End to end with the real trainer: `openft serve`'s embedded worker runs the Python trainer on
// a tiny Llama built here (random weights, GPT-2 BPE tokenizer, ChatML template). Upload, create,
// watch to succeeded (events, metrics, checkpoints, result CSV, ft: model); a validation file
// (valid loss per epoch); a job that continues an ft: model; pause/resume and cancel
// mid-training; a model the trainer cannot load fails the job with a readable error.
import assert from "node:assert/strict";
import { waitForStatus } from "./helpers/jobs.js";
import fs from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import OpenAI, { toFile } from "openai";
import { loadChatTokenizer } from "../src/jobs/validation/tokenizer.js";
import { ROOT, startServer, type TestServer } from "./helpers/server.js";
import { buildTinyModel } from "./helpers/tiny-weights.js";

const conversation = (i: number) => ({ messages: [{ role: "user" as const, content: `What is the secret word? (${i})` }, { role: "assistant" as const, content: "banana" }] });
const example = (i: number) => JSON.stringify(conversation(i));
const jsonl = (n: number, from = 0) => Array.from({ length: n }, (_, i) => example(from + i)).join("\n") + "\n";

type Metrics = { step: number; train_loss: number; total_steps: number; tokens: number; valid_loss?: number; valid_mean_token_accuracy?: number };

/** Live processes whose command line contains every one of `parts` (Linux /proc). */
async function processesWith(...parts: string[]): Promise<number[]> {
  const found: number[] = [];
  for (const pid of (await fs.readdir("/proc")).filter((d) => /^\d+$/.test(d))) {
    const cmd = await fs.readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    if (parts.every((p) => cmd.includes(p))) found.push(Number(pid));
  }
  return found;
}

const buildTinyLlama = (dir: string) => buildTinyModel("llama", dir);

describe("end to end with the real trainer", () => {
  let server: TestServer;
  let client: OpenAI;
  let fileId: string;

  const waitStatus = (id: string, statuses: string[], ms = 240_000) => waitForStatus(client, id, statuses, ms, 200);
  const events = async (id: string) => {
    const out: OpenAI.FineTuning.Jobs.FineTuningJobEvent[] = [];
    for await (const e of client.fineTuning.jobs.listEvents(id, { limit: 100 })) out.push(e);
    return out.reverse();
  };
  const metrics = async (id: string) => (await events(id)).filter((e) => e.type === "metrics").map((e) => e.data as Metrics);
  const metricSteps = async (id: string) => (await metrics(id)).map((m) => m.step);
  const waitSteps = async (id: string, n: number) => {
    const deadline = Date.now() + 240_000;
    while ((await metricSteps(id)).length < n) {
      if (Date.now() > deadline) assert.fail(`job ${id} did not reach step ${n}`);
      await sleep(100);
    }
  };

  before(async () => {
    // Steps slowed down (the trainer's test hook) so that pause and cancel land mid-training.
    server = await startServer({ env: { OPENFT_EMBEDDED_WORKER: "true", OPENFT_WORKER_LEASE_SECONDS: "4", OPENFT_DEVICE: "cpu", OPENFT_TRAINER_STEP_DELAY_S: "0.3", OMP_NUM_THREADS: "1" } });
    const models = server.env.OPENFT_MODELS_DIR!;
    await buildTinyLlama(path.join(models, "tiny-llama"));
    // A model whose weights the trainer cannot load: validation passes (the tokenizer is fine).
    await fs.cp(path.join(models, "tiny-llama"), path.join(models, "broken-llama"), { recursive: true });
    await fs.writeFile(path.join(models, "broken-llama", "model.safetensors"), "not a safetensors file");
    client = server.client();
    fileId = (await client.files.create({ file: await toFile(Buffer.from(jsonl(10)), "secret.jsonl"), purpose: "fine-tune" })).id;
  });
  after(async () => server.dispose());

  let first: { model: string; losses: number[] } | undefined;

  test("a job trains for real: loss falls; metrics, checkpoints, result CSV and the ft: model", async () => {
    const job = await client.fineTuning.jobs.create({ model: "tiny-llama", training_file: fileId, suffix: "e2e", hyperparameters: { n_epochs: 3, batch_size: 5, learning_rate_multiplier: 10 } });
    const done = await waitStatus(job.id, ["succeeded", "failed"]);
    assert.equal(done.status, "succeeded", JSON.stringify(done.error));
    assert.match(done.fine_tuned_model!, /^ft:tiny-llama:default:e2e:[A-Za-z0-9]{8}$/);
    // Every token of every example, each of the 3 epochs, counted with the model's own tokenizer.
    const tokenizer = await loadChatTokenizer(path.join(server.env.OPENFT_MODELS_DIR!, "tiny-llama"));
    const epochTokens = Array.from({ length: 10 }, (_, i) => tokenizer.countTokens(conversation(i))).reduce((a, b) => a + b, 0);
    assert.equal(done.trained_tokens, 3 * epochTokens);
    const metrics = (await events(job.id)).filter((e) => e.type === "metrics").map((e) => e.data as Metrics);
    assert.deepEqual(metrics.map((m) => m.step), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(metrics.map((m) => m.total_steps), [6, 6, 6, 6, 6, 6]);
    assert.deepEqual(metrics.filter((m) => m.step % 2 === 0).map((m) => m.tokens), [1, 2, 3].map((e) => e * epochTokens), "tokens so far, per epoch");
    assert.ok(metrics.every((m) => m.valid_loss === undefined), "no validation file, no valid loss");
    assert.ok(metrics.at(-1)!.train_loss < metrics[0]!.train_loss, `loss fell: ${metrics.map((m) => m.train_loss.toFixed(3)).join(" ")}`);
    first = { model: done.fine_tuned_model!, losses: metrics.map((m) => m.train_loss) };
    const ckpts = await client.fineTuning.jobs.checkpoints.list(job.id);
    assert.deepEqual(ckpts.data.map((c) => c.step_number), [6, 4, 2]);
    const csv = Buffer.from(await (await client.files.content(done.result_files[0]!)).text(), "base64").toString();
    assert.equal(csv.trim().split("\n").length, 7);
  });

  test("a validation file: valid loss at each epoch's end, in the metrics events and the checkpoints", async () => {
    const valid = await client.files.create({ file: await toFile(Buffer.from(jsonl(3, 100)), "valid.jsonl"), purpose: "fine-tune" });
    const job = await client.fineTuning.jobs.create({ model: "tiny-llama", training_file: fileId, validation_file: valid.id, hyperparameters: { n_epochs: 2, batch_size: 5 } });
    assert.equal(job.validation_file, valid.id);
    const done = await waitStatus(job.id, ["succeeded", "failed"]);
    assert.equal(done.status, "succeeded", JSON.stringify(done.error));
    const ms = await metrics(job.id);
    assert.deepEqual(ms.map((m) => m.step), [1, 2, 3, 4]);
    // 10 examples in batches of 5: epochs end at steps 2 and 4, and only there is the validation set scored.
    assert.deepEqual(ms.map((m) => typeof m.valid_loss), ["undefined", "number", "undefined", "number"]);
    assert.deepEqual(ms.map((m) => typeof m.valid_mean_token_accuracy), ["undefined", "number", "undefined", "number"]);
    const ckpts = (await client.fineTuning.jobs.checkpoints.list(job.id)).data;
    assert.deepEqual(ckpts.map((c) => c.step_number), [4, 2]);
    for (const c of ckpts) {
      const at = ms.find((m) => m.step === c.step_number)!;
      assert.ok(Number.isFinite(at.valid_loss) && at.valid_loss! > 0, `valid loss ${at.valid_loss}`);
      assert.equal(c.metrics.valid_loss, at.valid_loss);
      assert.equal(c.metrics.valid_mean_token_accuracy, at.valid_mean_token_accuracy);
      assert.equal(c.metrics.full_valid_loss, at.valid_loss, "the whole validation set is scored");
      assert.equal(c.metrics.train_loss, at.train_loss);
    }
    const csv = Buffer.from(await (await client.files.content(done.result_files[0]!)).text(), "base64").toString().trim().split("\n");
    assert.deepEqual(csv.slice(1).map((row) => row.split(",")[3] !== ""), [false, true, false, true], "valid_loss column");
  });

  test("a job continues an ft: model: it starts from the adapter the first job trained", async () => {
    assert.ok(first, "the first test made an ft: model");
    const job = await client.fineTuning.jobs.create({ model: first.model, training_file: fileId, suffix: "more", hyperparameters: { n_epochs: 1, batch_size: 5, learning_rate_multiplier: 10 } });
    assert.equal(job.model, first.model);
    const done = await waitStatus(job.id, ["succeeded", "failed"]);
    assert.equal(done.status, "succeeded", JSON.stringify(done.error));
    assert.match(done.fine_tuned_model!, /^ft:tiny-llama:default:more:[A-Za-z0-9]{8}$/, "named after the base model");
    const losses = (await metrics(job.id)).map((m) => m.train_loss);
    assert.equal(losses.length, 2);
    // Same data: a fresh adapter would start where the first job started; the continued one starts
    // below where the first job ended its first epoch.
    assert.ok(losses[0]! < first.losses[1]!, `continued ${losses.map((l) => l.toFixed(3)).join(" ")} vs first ${first.losses.map((l) => l.toFixed(3)).join(" ")}`);
  });

  test("pause mid-training checkpoints; resume continues from that step", async () => {
    const job = await client.fineTuning.jobs.create({ model: "tiny-llama", training_file: fileId, hyperparameters: { n_epochs: 4, batch_size: 2 } });
    await waitSteps(job.id, 3);
    assert.equal((await client.fineTuning.jobs.pause(job.id)).status, "paused");
    await sleep(1000);
    // The trainer finishes its step, saves a checkpoint and exits; the job resumes from it (a
    // resume before the worker has let go waits for it).
    assert.equal((await client.fineTuning.jobs.resume(job.id)).status, "queued");
    const done = await waitStatus(job.id, ["succeeded", "failed"]);
    assert.equal(done.status, "succeeded", JSON.stringify(done.error));
    assert.deepEqual(await metricSteps(job.id), Array.from({ length: 20 }, (_, i) => i + 1), "every step once");
    assert.ok((await events(job.id)).some((e) => /^Fine-tuning job resumed from the checkpoint at step \d+$/.test(e.message)));
  });

  test("cancel mid-training stops the trainer: its process ends and no step follows the cancel", async () => {
    const job = await client.fineTuning.jobs.create({ model: "tiny-llama", training_file: fileId, hyperparameters: { n_epochs: 10, batch_size: 1 } });
    await waitSteps(job.id, 2);
    // torchrun's launcher and its one training process (one process per job on a CPU)
    assert.equal((await processesWith("openft_trainer", job.id)).length, 2, "the job's trainer runs");
    assert.equal((await client.fineTuning.jobs.cancel(job.id)).status, "cancelled");
    const deadline = Date.now() + 60_000;
    while ((await processesWith("openft_trainer", job.id)).length > 0) {
      if (Date.now() > deadline) assert.fail("the trainer still runs a minute after the cancel");
      await sleep(100);
    }
    const steps = await metricSteps(job.id);
    await sleep(2000); // ~6 steps at 0.3 s a step, had anything kept training
    const evs = await events(job.id);
    const cancelledAt = evs.findIndex((e) => e.message === "Fine-tuning job cancelled");
    assert.ok(cancelledAt >= 0);
    assert.deepEqual(evs.slice(cancelledAt + 1).map((e) => e.message), [], "nothing after the cancel event");
    assert.deepEqual(await metricSteps(job.id), steps);
    assert.ok(steps.length < 100, `stopped at step ${steps.length} of 100`);
    const j = await client.fineTuning.jobs.retrieve(job.id);
    assert.equal(j.status, "cancelled");
    assert.equal(j.fine_tuned_model, null);
  });

  test("a model the trainer cannot load fails the job with a readable error", async () => {
    const job = await client.fineTuning.jobs.create({ model: "broken-llama", training_file: fileId, hyperparameters: { n_epochs: 1 } });
    const done = await waitStatus(job.id, ["failed", "succeeded"]);
    assert.equal(done.status, "failed");
    assert.equal(done.error?.code, "model_load_failed");
    // The trainer names the model and safetensors' own reason.
    assert.match(done.error!.message, /^cannot load the model from \S*broken-llama: .*header/);
    assert.equal(done.fine_tuned_model, null);
  });
});

describe("a remote worker: openft worker --api URL --token TOKEN", () => {
  let server: TestServer;
  let worker: import("node:child_process").ChildProcess | undefined;

  before(async () => {
    server = await startServer({ workers: ["remote"] }); // embedded worker off
    await buildTinyLlama(path.join(server.env.OPENFT_MODELS_DIR!, "tiny-llama"));
  });
  after(async () => {
    worker?.kill("SIGTERM");
    await server.dispose();
  });

  test("runs a job with the real trainer from another process", async () => {
    const { spawn } = await import("node:child_process");
    const workDir = path.join(server.dataDir, "remote-work");
    worker = spawn(process.execPath, [path.join(ROOT, "bin/openft.js"), "worker", "--api", server.url, "--token", server.workerTokens.remote!, "--models-dir", server.env.OPENFT_MODELS_DIR!, "--work-dir", workDir], {
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", OPENFT_DEVICE: "cpu", OMP_NUM_THREADS: "1", OPENFT_LOG_LEVEL: "warn" },
      stdio: ["ignore", "inherit", "inherit"],
    });
    const client = server.client();
    const file = await client.files.create({ file: await toFile(Buffer.from(jsonl(10)), "t.jsonl"), purpose: "fine-tune" });
    const job = await client.fineTuning.jobs.create({ model: "tiny-llama", training_file: file.id, hyperparameters: { n_epochs: 1, batch_size: 5 } });
    const deadline = Date.now() + 240_000;
    let j = await client.fineTuning.jobs.retrieve(job.id);
    while (!["succeeded", "failed"].includes(j.status) && Date.now() < deadline) {
      await sleep(250);
      j = await client.fineTuning.jobs.retrieve(job.id);
    }
    assert.equal(j.status, "succeeded", JSON.stringify(j.error));
    assert.match(j.fine_tuned_model!, /^ft:tiny-llama:default::/);
    // The worker kept the trainer's log in its own work dir.
    const attempts = await fs.readdir(path.join(workDir, job.id));
    assert.match(await fs.readFile(path.join(workDir, job.id, attempts[0]!, "trainer.log"), "utf8"), /^\[stdout\] \{"type":"done",/m);
  });
});

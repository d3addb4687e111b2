// DPO through the official `openai` npm client, end to end with the real worker and trainer on a
// tiny Llama: method.dpo's parameters (beta's range), the job echoing method.dpo resolved, reward
// metrics in events, checkpoints and the result CSV; SFT then DPO on its result; pause/resume;
// a bad preference file; wandb integrations (stored and forwarded offline, or 400 when off).
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import OpenAI, { toFile } from "openai";
import { expect400, waitForStatus } from "./helpers/jobs.js";
import { startServer, type TestServer } from "./helpers/server.js";
import { buildTinyModel } from "./helpers/tiny-weights.js";

const MODEL = "tiny-llama";
const pair = (i: number) => JSON.stringify({
  input: { messages: [{ role: "user", content: `Name fruit number ${i}.` }] },
  preferred_output: [{ role: "assistant", content: "Apple. Done" }],
  non_preferred_output: [{ role: "assistant", content: `I am not sure, maybe fruit ${i} is a banana?` }],
});
const pairs = (n: number) => Array.from({ length: n }, (_, i) => pair(i)).join("\n") + "\n";
const chat = (n: number) => Array.from({ length: n }, (_, i) =>
  JSON.stringify({ messages: [{ role: "user", content: `Name fruit number ${i}.` }, { role: "assistant", content: "Apple." }] })).join("\n") + "\n";
const WANDB = { type: "wandb" as const, wandb: { project: "openft-dpo", tags: ["ci"] } };

type Job = OpenAI.FineTuning.Jobs.FineTuningJob;
type Metrics = { step: number; train_loss: number; train_reward_accuracy: number; train_reward_margin: number };

describe("DPO end to end with the real trainer", () => {
  let server: TestServer;
  let client: OpenAI;
  let pairsId: string;

  const upload = async (body: string) => (await client.files.create({ file: await toFile(Buffer.from(body), "f.jsonl"), purpose: "fine-tune" })).id;
  const waitDone = async (id: string) => {
    const job = await waitForStatus(client, id, ["succeeded", "failed", "cancelled"], 300_000, 200);
    assert.equal(job.status, "succeeded", JSON.stringify(job.error));
    return job;
  };
  const metrics = async (id: string): Promise<Metrics[]> => {
    const out: Metrics[] = [];
    for await (const e of client.fineTuning.jobs.listEvents(id, { limit: 100 })) if (e.type === "metrics") out.push(e.data as Metrics);
    return out.reverse();
  };
  const dpo = (hyperparameters: Record<string, unknown>) => ({ type: "dpo" as const, dpo: { hyperparameters } });

  before(async () => {
    // WANDB_MODE reaches the trainer (the worker passes its environment on): no network in CI.
    server = await startServer({ env: { OPENFT_EMBEDDED_WORKER: "true", OPENFT_WORKER_LEASE_SECONDS: "4", OPENFT_DEVICE: "cpu", OPENFT_TRAINER_STEP_DELAY_S: "0.2", OMP_NUM_THREADS: "1", WANDB_MODE: "offline" } });
    await buildTinyModel("llama", path.join(server.env.OPENFT_MODELS_DIR!, MODEL));
    client = server.client();
    pairsId = await upload(pairs(12));
  });
  after(async () => server.dispose());

  test("bad DPO parameters are 400 naming them", async () => {
    const base = { model: MODEL, training_file: pairsId };
    for (const beta of [0, -0.5, 2.01, 5]) await expect400(client.fineTuning.jobs.create({ ...base, method: dpo({ beta }) }), "method.dpo.hyperparameters.beta");
    await expect400(client.fineTuning.jobs.create({ ...base, method: dpo({ beta: "high" }) } as never), "method.dpo.hyperparameters.beta");
    for (const rpo_alpha of [-0.1, 10.5, "much"]) await expect400(client.fineTuning.jobs.create({ ...base, method: dpo({ rpo_alpha }) } as never), "method.dpo.hyperparameters.rpo_alpha");
    await expect400(client.fineTuning.jobs.create({ ...base, method: dpo({ n_epochs: 51 }) }), "method.dpo.hyperparameters.n_epochs");
    await expect400(client.fineTuning.jobs.create({ ...base, method: dpo({ gamma: 1 }) } as never), "method.dpo.hyperparameters.gamma");
    await expect400(client.fineTuning.jobs.create({ ...base, method: dpo({}), hyperparameters: { n_epochs: 2 } }), "hyperparameters", /method\.dpo\.hyperparameters/);
    await expect400(client.fineTuning.jobs.create({ ...base, method: { type: "dpo", supervised: {} } }), "method.supervised");
    await expect400(client.fineTuning.jobs.create({ ...base, method: { type: "supervised", dpo: {} } }), "method.dpo");
    await expect400(client.fineTuning.jobs.create({ ...base, integrations: [{ type: "wandb", wandb: {} }] } as never), "integrations.0.wandb.project");
  });

  test("a DPO job trains: method.dpo echoed and resolved, reward metrics, checkpoints, CSV, wandb run", async () => {
    const created = await client.fineTuning.jobs.create({
      model: MODEL, training_file: pairsId, suffix: "dpo", integrations: [WANDB],
      method: dpo({ n_epochs: 2, batch_size: 4, learning_rate_multiplier: 5, beta: 0.5, lora_rank: 4, lora_dropout: 0 }),
    });
    assert.equal(created.method?.type, "dpo");
    assert.deepEqual(created.method?.dpo?.hyperparameters, { n_epochs: 2, batch_size: 4, learning_rate_multiplier: 5, beta: 0.5, rpo_alpha: "auto", lora_rank: 4, lora_alpha: "auto", lora_dropout: 0, quantization: "none" });
    assert.deepEqual(created.hyperparameters, { n_epochs: 2, batch_size: 4, learning_rate_multiplier: 5 });
    assert.deepEqual(created.integrations, [{ type: "wandb", wandb: { project: "openft-dpo", name: null, entity: null, tags: ["ci"] } }]);
    const done = await waitDone(created.id);
    assert.match(done.fine_tuned_model!, /^ft:tiny-llama:default:dpo:/);
    assert.equal((done.method?.dpo?.hyperparameters as Record<string, unknown>).lora_alpha, 32);
    assert.equal((done.method?.dpo?.hyperparameters as Record<string, unknown>).rpo_alpha, 0, "auto: pure DPO");
    const steps = await metrics(created.id);
    assert.deepEqual(steps.map((m) => m.step), [1, 2, 3, 4, 5, 6]);
    assert.ok(Math.abs(steps[0]!.train_loss - Math.LN2) < 0.02, `starts at log 2: ${steps[0]!.train_loss}`);
    assert.ok(steps.at(-1)!.train_loss < steps[0]!.train_loss, steps.map((m) => m.train_loss.toFixed(3)).join(" "));
    assert.ok(steps.at(-1)!.train_reward_margin > 0 && steps.at(-1)!.train_reward_accuracy > 0.5);
    const ckpts = await client.fineTuning.jobs.checkpoints.list(created.id);
    assert.deepEqual(ckpts.data.map((c) => c.step_number), [6, 3]);
    assert.equal(typeof (ckpts.data[0]!.metrics as Record<string, number>).train_reward_margin, "number");
    const csv = Buffer.from(await (await client.files.content(done.result_files[0]!)).text(), "base64").toString().trim().split("\n");
    assert.equal(csv.length, 7);
    assert.equal(Number(csv[6]!.split(",")[2]), Number(steps[5]!.train_reward_accuracy.toFixed(5)), "accuracy column = reward accuracy");
    // the trainer forwarded the metrics to an offline wandb run named after the job
    const work = path.join(server.dataDir, "work", created.id);
    const [attempt] = await fs.readdir(work);
    const runs = await fs.readdir(path.join(work, attempt!, "out", "wandb", "wandb"));
    assert.ok(runs.some((r) => r.startsWith("offline-run-") && r.endsWith(created.id)), runs.join(" "));
  });

  test("SFT, then DPO on its result (beta auto → 0.1), paused and resumed mid-training", async () => {
    const sft = await waitDone((await client.fineTuning.jobs.create({ model: MODEL, training_file: await upload(chat(10)), method: { type: "supervised", supervised: { hyperparameters: { n_epochs: 1, batch_size: 5, learning_rate_multiplier: 10 } } } })).id);
    const job = await client.fineTuning.jobs.create({ model: sft.fine_tuned_model!, training_file: pairsId, method: dpo({ n_epochs: 2, batch_size: 2 }) });
    assert.equal(job.method?.dpo?.hyperparameters?.beta, "auto");
    for (let deadline = Date.now() + 240_000; (await metrics(job.id)).length < 3;) {
      if (Date.now() > deadline) assert.fail("no progress");
      await sleep(100);
    }
    assert.equal((await client.fineTuning.jobs.pause(job.id)).status, "paused");
    await sleep(1000);
    assert.equal((await client.fineTuning.jobs.resume(job.id)).status, "queued");
    const done = await waitDone(job.id);
    const hp = done.method?.dpo?.hyperparameters;
    assert.equal(hp?.beta, 0.1);
    assert.equal(hp?.learning_rate_multiplier, 0.5);
    const steps = await metrics(job.id);
    assert.deepEqual(steps.map((m) => m.step), Array.from({ length: 12 }, (_, i) => i + 1), "every step once");
    // The reference is the SFT model, so before the first update the loss is log 2 up to the
    // parent adapter's own LoRA dropout (0.05, kept from its config) in the training forward.
    assert.ok(Math.abs(steps[0]!.train_loss - Math.LN2) < 0.05, `first loss ${steps[0]!.train_loss}`);
  });

  test("a chat file given to a DPO job fails validation naming the line", async () => {
    const job = await client.fineTuning.jobs.create({ model: MODEL, training_file: await upload(chat(10)), method: dpo({}) });
    const failed = await waitForStatus(client, job.id, ["failed", "queued"], 60_000);
    assert.equal(failed.status, "failed");
    assert.equal(failed.error?.code, "invalid_training_file");
    assert.match(failed.error!.message, /Example 1, Unexpected format, expected a preference example: field 'input' is missing \(file file-[A-Za-z0-9]+, line 1\)/);
  });
});

describe("wandb integrations refused when the server has no wandb", () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ env: { OPENFT_WANDB: "off" } });
  });
  after(async () => server.dispose());

  test("400 unsupported_parameter naming integrations; no job made", async () => {
    const client = server.client();
    const file = await client.files.create({ file: await toFile(Buffer.from(pairs(10)), "p.jsonl"), purpose: "fine-tune" });
    try {
      await client.fineTuning.jobs.create({ model: MODEL, training_file: file.id, integrations: [WANDB] });
      assert.fail("expected a 400");
    } catch (err) {
      assert.ok(err instanceof OpenAI.BadRequestError, String(err));
      assert.equal(err.param, "integrations");
      assert.equal(err.code, "unsupported_parameter");
    }
    assert.deepEqual((await client.fineTuning.jobs.list()).data as Job[], []);
  });
});

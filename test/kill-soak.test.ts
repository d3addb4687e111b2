// Kill soak: rounds of uploads and jobs through the real server, a separate `openft worker` and
// the real trainer (a tiny Llama, two steps a job), each round SIGKILLing one of the three at a
// random moment. At the end every job succeeded exactly once (or was cancelled where the round
// asked for it), every ft: model exists once, every file row has its blob and no blob lacks a
// row. OPENFT_SOAK_ROUNDS (default 20) and OPENFT_SOAK_SEED (default 1) reproduce a run; the
// summary line starts with "kill soak:".
import assert from "node:assert/strict";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, test } from "node:test";
import OpenAI, { toFile } from "openai";
import { prng } from "./helpers/prng.js";
import { auditStorage, whileDown, WorkerProcess } from "./helpers/soak.js";
import { partialBlobs } from "./helpers/storage.js";
import { BACKEND, startServer, type TestServer } from "./helpers/server.js";
import { buildTinyModel } from "./helpers/tiny-weights.js";

const ROUNDS = Number(process.env.OPENFT_SOAK_ROUNDS ?? 20);
const SEED = Number(process.env.OPENFT_SOAK_SEED ?? 1);
const TARGETS = ["server", "worker", "trainer"] as const;
type Target = (typeof TARGETS)[number];

const training = Array.from({ length: 10 }, (_, i) => JSON.stringify({ messages: [{ role: "user", content: `word ${i}?` }, { role: "assistant", content: "banana" }] })).join("\n") + "\n";

let server: TestServer;
let worker: WorkerProcess;
let client: OpenAI;

before(async () => {
  // Short leases: a killed worker's job and a killed server's upload come back within seconds.
  server = await startServer({ workers: ["soak"], env: { OPENFT_WORKER_LEASE_SECONDS: "5", OPENFT_UPLOAD_LEASE_SECONDS: "2", OPENFT_LOG_LEVEL: "warn" } });
  await buildTinyModel("llama", path.join(server.env.OPENFT_MODELS_DIR!, "tiny-llama"));
  worker = new WorkerProcess(server, server.workerTokens.soak!);
  worker.start();
  client = server.client();
});
after(async () => {
  await worker.kill("SIGTERM");
  await server.dispose();
});

interface Round {
  readonly target: Target;
  readonly jobId: string;
  readonly cancel: boolean;
}

/** Starts a job and an upload, SIGKILLs the target at a random moment, brings it back. */
async function round(random: () => number, n: number): Promise<Round & { killed: boolean }> {
  const target = TARGETS[Math.floor(random() * TARGETS.length)]!;
  const cancel = random() < 0.15;
  const delayMs = Math.floor(random() * 3000);
  const upload = await toFile(Buffer.from(training), `r${n}.jsonl`);
  const file = await whileDown(() => client.files.create({ file: upload, purpose: "fine-tune" }));
  const job = await whileDown(() => client.fineTuning.jobs.create({ model: "tiny-llama", training_file: file.id, suffix: `r${n}`, hyperparameters: { n_epochs: 2, batch_size: 10 } }));
  // An upload in flight when the kill lands: it either completes or leaves nothing behind.
  const inflight = client.files.create({ file: await toFile(Buffer.alloc(256 * 1024, "x"), `blob-${n}.bin`), purpose: "user_data" }).catch(() => undefined);
  const cancelled = cancel ? sleep(Math.floor(random() * 3000)).then(() => whileDown(() => client.fineTuning.jobs.cancel(job.id))) : undefined;
  let killed = true;
  if (target === "trainer") {
    const pid = await worker.trainer(120_000);
    await sleep(delayMs / 2);
    try {
      process.kill(pid!, "SIGKILL");
    } catch {
      killed = false; // it finished first
    }
  } else {
    await sleep(delayMs);
    if (target === "server") {
      await server.kill();
      await server.restart();
    } else {
      await worker.kill();
      worker.start();
    }
  }
  await inflight;
  await cancelled?.catch(() => undefined); // a job that already succeeded cannot be cancelled
  return { target, jobId: job.id, cancel, killed };
}

const terminal = ["succeeded", "failed", "cancelled"];

async function settle(ids: string[]): Promise<Map<string, OpenAI.FineTuning.Jobs.FineTuningJob>> {
  const out = new Map<string, OpenAI.FineTuning.Jobs.FineTuningJob>();
  const deadline = Date.now() + 20 * 60_000;
  for (const id of ids) {
    for (;;) {
      const job = await whileDown(() => client.fineTuning.jobs.retrieve(id));
      if (terminal.includes(job.status)) {
        out.set(id, job);
        break;
      }
      assert.ok(Date.now() < deadline, `job ${id} stuck in ${job.status}`);
      await sleep(500);
    }
  }
  return out;
}

async function completions(id: string): Promise<number> {
  let n = 0;
  for await (const e of client.fineTuning.jobs.listEvents(id, { limit: 100 })) if (e.message === "The job has successfully completed") n++;
  return n;
}

/** Every job's status and completions, the ft: models and the storage audit. */
async function verify(rounds: (Round & { killed: boolean })[]) {
  const jobs = await settle(rounds.map((r) => r.jobId));
  const status = (r: Round) => jobs.get(r.jobId)!.status;
  const allJobs: string[] = [];
  for await (const j of client.fineTuning.jobs.list({ limit: 100 })) allJobs.push(j.id);
  const succeeded = rounds.filter((r) => status(r) === "succeeded");
  const completedTwice: string[] = [];
  for (const r of succeeded) if ((await completions(r.jobId)) !== 1) completedTwice.push(r.jobId);
  const ftModels: string[] = [];
  for await (const m of client.models.list()) if (m.id.startsWith("ft:") && !m.id.includes(":ckpt-step-")) ftModels.push(m.id);
  // Uploads cut by a killed server are swept once their lease lapses.
  for (let i = 0; i < 100 && (await partialBlobs(server)).length > 0; i++) await sleep(200);
  await server.stop();
  const audit = await auditStorage(server);
  await server.restart();
  return {
    backend: BACKEND,
    rounds: rounds.length,
    seed: SEED,
    kills: Object.fromEntries(TARGETS.map((t) => [t, rounds.filter((r) => r.target === t && r.killed).length])),
    missed_kills: rounds.filter((r) => !r.killed).length,
    jobs: allJobs.length,
    succeeded: succeeded.length,
    cancelled: rounds.filter((r) => status(r) === "cancelled").length,
    wrong_status: rounds.filter((r) => !(status(r) === "succeeded" || (r.cancel && status(r) === "cancelled"))).map((r) => `${r.jobId}:${status(r)}:${JSON.stringify(jobs.get(r.jobId)!.error)}`),
    completed_twice: completedTwice,
    ft_models: ftModels.sort(),
    expected_models: succeeded.map((r) => jobs.get(r.jobId)!.fine_tuned_model!).sort(),
    ...audit,
  };
}

test(`kill soak: ${ROUNDS} rounds, seed ${SEED}`, { timeout: 40 * 60_000 }, async () => {
  const random = prng(SEED);
  const rounds: (Round & { killed: boolean })[] = [];
  for (let n = 0; n < ROUNDS; n++) rounds.push(await round(random, n));
  const v = await verify(rounds);
  console.log(`kill soak: ${JSON.stringify({ ...v, ft_models: v.ft_models.length, expected_models: undefined })}`);
  assert.equal(v.jobs, ROUNDS, "one job per round, none duplicated");
  assert.deepEqual(v.wrong_status, []);
  assert.deepEqual(v.completed_twice, []);
  assert.deepEqual(v.ft_models, v.expected_models, "every ft: model once");
  assert.deepEqual(v.rowsWithoutBlob, []);
  assert.deepEqual(v.blobsWithoutRow, []);
  assert.deepEqual(v.missingArtifacts, []);
});

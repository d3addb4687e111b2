// A job trained on several processes (torchrun; gloo on this CPU) through real workers
// (`openft worker`): it succeeds and says how many processes train it; paused on 2 processes it
// resumes on 1; a training process killed with SIGKILL fails the attempt with that process's log,
// and the retry resumes and succeeds. The numbers (same losses and adapter as one process, FSDP)
// are checked at the trainer's level: test/trainer/test_distributed.py.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import OpenAI, { toFile } from "openai";
import { waitForStatus } from "./helpers/jobs.js";
import { ROOT, startServer, type TestServer } from "./helpers/server.js";
import { buildTinyModel } from "./helpers/tiny-weights.js";

const example = (i: number) => JSON.stringify({ messages: [{ role: "user", content: `Say the word (${i})` }, { role: "assistant", content: "banana" }] });
const jsonl = (n: number) => Array.from({ length: n }, (_, i) => example(i)).join("\n") + "\n";

/** Pids of the children of pid (Linux /proc). */
async function children(pid: number): Promise<number[]> {
  const text = await readFile(`/proc/${pid}/task/${pid}/children`, "utf8").catch(() => "");
  return text.split(/\s+/).filter(Boolean).map(Number);
}

/** The pid of the training process of the given rank under a worker (worker -> torchrun -> ranks). */
async function rankPid(worker: ChildProcess, rank: number): Promise<number> {
  for (const launcher of await children(worker.pid!)) {
    for (const pid of await children(launcher)) {
      const env = await readFile(`/proc/${pid}/environ`, "utf8").catch(() => "");
      if (env.split("\0").includes(`RANK=${rank}`)) return pid;
    }
  }
  assert.fail(`no training process of rank ${rank}`);
}

describe("a job on several training processes", { timeout: 1_800_000 }, () => {
  let server: TestServer;
  let client: OpenAI;
  let fileId: string;
  const workers: ChildProcess[] = [];

  const startWorker = (name: string, processes: number) => {
    const w = spawn(process.execPath, [path.join(ROOT, "bin/openft.js"), "worker", "--api", server.url, "--token", server.workerTokens[name]!, "--models-dir", server.env.OPENFT_MODELS_DIR!, "--work-dir", path.join(server.dataDir, `work-${name}`)], {
      // steps slowed down (the trainer's test hook) so that pause and the kill land mid-training
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", OPENFT_DEVICE: "cpu", OMP_NUM_THREADS: "1", OPENFT_LOG_LEVEL: "warn", OPENFT_TRAIN_PROCESSES: String(processes), OPENFT_TRAINER_STEP_DELAY_S: "0.4" },
      stdio: ["ignore", "inherit", "inherit"],
    });
    workers.push(w);
    return w;
  };
  const stopWorker = async (w: ChildProcess) => {
    const exited = new Promise((r) => w.once("exit", r));
    w.kill("SIGTERM");
    await exited;
  };
  const events = async (id: string) => {
    const out: OpenAI.FineTuning.Jobs.FineTuningJobEvent[] = [];
    for await (const e of client.fineTuning.jobs.listEvents(id, { limit: 100 })) out.push(e);
    return out.reverse();
  };
  const steps = async (id: string) => (await events(id)).filter((e) => e.type === "metrics").map((e) => (e.data as { step: number }).step);
  /** The end of every trainer log the workers kept for a job (for a failure's message). */
  const trainerLogs = async (id: string) => {
    let out = "";
    for (const name of ["two", "one"]) {
      const dir = path.join(server.dataDir, `work-${name}`, id);
      for (const attempt of await readdir(dir).catch(() => [] as string[])) {
        out += `--- ${name}/${attempt}\n${(await readFile(path.join(dir, attempt, "trainer.log"), "utf8").catch(() => "")).slice(-3000)}\n`;
      }
    }
    return out || "(no trainer log: no worker claimed the job)";
  };
  const waitSteps = async (id: string, n: number) => {
    const deadline = Date.now() + 600_000;
    while ((await steps(id)).length < n) {
      const job = await client.fineTuning.jobs.retrieve(id);
      if (job.status === "failed") assert.fail(`job ${id} failed: ${JSON.stringify(job.error)}\n${await trainerLogs(id)}`);
      if (Date.now() > deadline) assert.fail(`job ${id} did not reach step ${n}; status ${(await client.fineTuning.jobs.retrieve(id)).status}\n${await trainerLogs(id)}`);
      await sleep(200);
    }
  };
  const create = async () => (await client.fineTuning.jobs.create({ model: "tiny-llama", training_file: fileId, hyperparameters: { n_epochs: 2, batch_size: 2 } })).id;

  before(async () => {
    server = await startServer({ workers: ["two", "one"], env: { OPENFT_WORKER_LEASE_SECONDS: "6" } });
    await buildTinyModel("llama", path.join(server.env.OPENFT_MODELS_DIR!, "tiny-llama"));
    client = server.client();
    fileId = (await client.files.create({ file: await toFile(Buffer.from(jsonl(10)), "w.jsonl"), purpose: "fine-tune" })).id;
  });
  after(async () => {
    for (const w of workers) if (w.exitCode === null) await stopWorker(w);
    await server.dispose();
  });

  test("paused on 2 processes, resumed on 1: every step once, and the events say how many processes", async () => {
    const two = startWorker("two", 2);
    const id = await create();
    await waitSteps(id, 3);
    assert.equal((await client.fineTuning.jobs.pause(id)).status, "paused");
    await stopWorker(two); // it lets go once the processes have checkpointed together
    const ckpts = await client.fineTuning.jobs.checkpoints.list(id);
    assert.ok(ckpts.data.length >= 1, "the pause checkpoint");
    startWorker("one", 1);
    assert.equal((await client.fineTuning.jobs.resume(id)).status, "queued");
    const done = await waitForStatus(client, id, ["succeeded", "failed"], 600_000, 250);
    assert.equal(done.status, "succeeded", `${JSON.stringify(done.error)}\n${await trainerLogs(id)}`);
    assert.deepEqual(await steps(id), Array.from({ length: 10 }, (_, i) => i + 1), "every step once");
    const lines = (await events(id)).map((e) => e.message).filter((m) => /^Training on \d+ processes$/.test(m));
    assert.deepEqual(lines, ["Training on 2 processes", "Training on 1 processes"]);
  });

  test("a training process killed with SIGKILL fails the attempt with its log; the retry resumes and succeeds", async () => {
    for (const w of workers) if (w.exitCode === null) await stopWorker(w);
    const two = startWorker("two", 2);
    const id = await create();
    await waitSteps(id, 6); // past the first epoch's checkpoint (5 steps per epoch)
    process.kill(await rankPid(two, 1), "SIGKILL");
    const done = await waitForStatus(client, id, ["succeeded", "failed"], 600_000, 250);
    assert.equal(done.status, "succeeded", JSON.stringify(done.error));
    const evs = await events(id);
    const failure = evs.find((e) => e.message.startsWith("Training process 1 of 2 was killed by SIGKILL"));
    assert.ok(failure, evs.map((e) => e.message).join("\n"));
    assert.equal(failure.level, "warn");
    assert.match(failure.message, /rank 1 of 2 \(gloo\)/, "the killed process's own log");
    assert.match(failure.message, /attempt 2 of \d+ will resume from its latest checkpoint/);
    assert.ok(evs.some((e) => /^Fine-tuning job resumed from the checkpoint at step \d+$/.test(e.message)));
    assert.equal((await steps(id)).at(-1), 10);
  });
});

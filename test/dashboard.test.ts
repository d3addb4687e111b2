// The dashboard in real headless Chromium against the real server (embedded worker, real trainer
// on a tiny Llama, real inference engine), and GET /metrics scraped during that job and chat:
// a wrong key is refused clearly; upload, create a job, watch it succeed, the plotted loss points
// are the API's metrics events; the playground streams the ft: model's reply.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import type OpenAI from "openai";
import type { Browser, Page } from "puppeteer-core";
import { launchBrowser, screenshot, watchOrigin } from "./helpers/browser.js";
import { parseMetrics, sample } from "./helpers/prometheus.js";
import { ROOT, startServer, type TestServer } from "./helpers/server.js";
import { buildTinyModel } from "./helpers/tiny-weights.js";

const line = (i: number) => JSON.stringify({ messages: [{ role: "user", content: `What is the secret word? (${i})` }, { role: "assistant", content: "banana" }] });
const jsonl = (from: number, n: number) => Array.from({ length: n }, (_, i) => line(from + i)).join("\n") + "\n";
const PROMPT = "What is the secret word? (3)";

describe("dashboard and metrics", () => {
  let server: TestServer;
  let client: OpenAI;
  let browser: Browser;
  let page: Page;
  let tmp: string;
  let jobId = "";
  let ftModel = "";
  const offOrigin: string[] = [];
  const scrapes: string[] = [];

  const scrape = async () => {
    const res = await fetch(`${server.url}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^text\/plain/);
    const text = await res.text();
    scrapes.push(text);
    return text;
  };

  before(async () => {
    // Steps slowed down (the trainer's test hook) so that a scrape lands while the job runs.
    server = await startServer({ env: { OPENFT_EMBEDDED_WORKER: "true", OPENFT_DEVICE: "cpu", OPENFT_TRAINER_STEP_DELAY_S: "1", OMP_NUM_THREADS: "1", OPENFT_SERVING_MODE: "fp32", OPENFT_SERVING_THREADS: "1" } });
    await buildTinyModel("llama", path.join(server.env.OPENFT_MODELS_DIR!, "tiny-llama"));
    client = server.client();
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), "openft-dash-"));
    await fs.writeFile(path.join(tmp, "train.jsonl"), jsonl(0, 10));
    await fs.writeFile(path.join(tmp, "valid.jsonl"), jsonl(100, 5));
    browser = await launchBrowser();
    page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 900 });
    watchOrigin(page, server.url, offOrigin);
  });
  after(async () => {
    await browser?.close();
    await server?.dispose();
    if (tmp) await fs.rm(tmp, { recursive: true, force: true });
  });

  const signIn = async (key: string) => {
    await page.goto(`${server.url}/dashboard`);
    await page.waitForSelector("#api-key");
    await page.type("#api-key", key);
    await page.keyboard.press("Enter");
  };

  test("a wrong key shows a clear message and stays on the sign-in form", async () => {
    await signIn("sk-not-a-real-key-123456");
    await page.waitForSelector("#error:not([hidden])", { timeout: 30_000 });
    const message = await page.$eval("#error", (e) => e.textContent ?? "");
    assert.match(message, /^That API key was not accepted: Incorrect API key provided: sk-\*+3456\.$/);
    assert.ok(await page.$("#api-key"), "the sign-in form is still there");
    await screenshot(page, "login-wrong-key");
  });

  test("sign in, upload, create a job, watch it succeed; the plotted loss is the API's metrics events", async () => {
    await signIn(server.apiKey);
    await page.waitForSelector("#jobs-list", { timeout: 30_000 });
    await page.goto(`${server.url}/dashboard#/files`);
    for (const name of ["train.jsonl", "valid.jsonl"]) {
      const input = await page.waitForSelector("#upload-file");
      await input!.uploadFile(path.join(tmp, name));
      await page.click("#upload-button");
      await page.waitForFunction(`document.querySelector("#upload-status")?.textContent?.startsWith("Uploaded ${name} as file-")`, { timeout: 30_000 });
    }
    await page.waitForFunction('document.querySelectorAll("#files-list tbody tr").length === 2', { timeout: 30_000 });
    await screenshot(page, "files");

    await page.goto(`${server.url}/dashboard#/jobs`);
    await page.waitForSelector("#job-create");
    type Select = { options: ArrayLike<{ text: string; value: string }> };
    const optionFor = (select: string, text: string) => page.$eval(select, (s, t) => Array.from((s as unknown as Select).options).find((o) => o.text.startsWith(t))!.value, text);
    await page.select("#job-file", await optionFor("#job-file", "train.jsonl"));
    await page.select("#job-validation-file", await optionFor("#job-validation-file", "valid.jsonl"));
    await page.select("#job-model", "tiny-llama");
    await page.type("#job-epochs", "3");
    await page.type("#job-batch", "5");
    await page.type("#job-lr", "10");
    await page.type("#job-suffix", "dash");
    await screenshot(page, "jobs");
    await page.click("#job-create");
    await page.waitForFunction("/^#\\/jobs\\/ftjob-/.test(location.hash)", { timeout: 30_000 });
    jobId = decodeURIComponent((await page.evaluate("location.hash") as string).split("/")[2]!);

    // Scraped while the job runs: the trainer's gauges carry the base model and worker, never the job id.
    let running = false;
    let status = "";
    while (!running && !["succeeded", "failed", "cancelled"].includes(status)) {
      status = (await client.fineTuning.jobs.retrieve(jobId)).status;
      const m = parseMetrics(await scrape());
      running = sample(m, "openft_trainer_step", { base_model: "tiny-llama" }) !== undefined;
      if (running) {
        assert.equal(sample(m, "openft_jobs", { status: "running" }), 1);
        assert.ok(sample(m, "openft_trainer_train_loss", { base_model: "tiny-llama" })! > 0);
        assert.ok(sample(m, "openft_trainer_tokens_per_second", { base_model: "tiny-llama" })! > 0);
      } else await sleep(100);
    }
    assert.ok(running, `the running job's trainer gauges were scraped (the job ended ${status} first)`);

    await page.waitForSelector('#job-status [data-status="succeeded"]', { timeout: 600_000 });
    await page.waitForSelector("#result-csv", { timeout: 30_000 });
    await screenshot(page, "job");
    await page.setViewport({ width: 390, height: 844 });
    await screenshot(page, "job-phone");
    await page.setViewport({ width: 1280, height: 900 });

    const plotted = (await page.evaluate("window.openftDashboard.loss")) as { steps: number[]; train: (number | null)[]; valid: (number | null)[] };
    const events: OpenAI.FineTuning.Jobs.FineTuningJobEvent[] = [];
    for await (const e of client.fineTuning.jobs.listEvents(jobId, { limit: 100 })) events.push(e);
    const metrics = events.reverse().filter((e) => e.type === "metrics").map((e) => e.data as { step: number; train_loss: number; valid_loss?: number });
    assert.deepEqual(plotted.steps, metrics.map((m) => m.step));
    assert.deepEqual(plotted.train, metrics.map((m) => m.train_loss));
    assert.deepEqual(plotted.valid, metrics.map((m) => m.valid_loss ?? null));
    assert.ok(plotted.valid.some((v) => v !== null), "validation loss is plotted");
    const job = await client.fineTuning.jobs.retrieve(jobId);
    assert.equal(job.status, "succeeded");
    ftModel = job.fine_tuned_model!;
    assert.equal(await page.$eval("#job-model", (e) => e.textContent), ftModel);
    assert.equal((await page.$$("#job-checkpoints tbody tr")).length, 3);
  });

  test("the playground streams the ft: model's reply", async () => {
    assert.ok(ftModel, "the job test made a model");
    await page.goto(`${server.url}/dashboard#/playground/${encodeURIComponent(ftModel)}`);
    await page.waitForSelector("#chat-prompt");
    assert.equal(await page.$eval("#chat-model", (s) => (s as unknown as { value: string }).value), ftModel);
    await page.$eval("#chat-max-tokens", (e) => ((e as unknown as { value: string }).value = "16"));
    await page.type("#chat-prompt", PROMPT);
    await page.keyboard.down("Control");
    await page.keyboard.press("Enter");
    await page.keyboard.up("Control");
    await page.waitForSelector(".msg-assistant[data-done]", { timeout: 120_000 });
    const reply = (await page.$eval(".msg-assistant p", (e) => e.textContent)) ?? "";
    assert.equal(await page.$eval("#error", (e) => (e as unknown as { hidden: boolean }).hidden), true);
    const expected = await client.chat.completions.create({ model: ftModel, messages: [{ role: "user", content: PROMPT }], temperature: 0, max_completion_tokens: 16 });
    assert.ok(reply.length > 0);
    assert.equal(reply, expected.choices[0]!.message.content);
    await screenshot(page, "playground");
    assert.deepEqual(offOrigin, [], "the dashboard requested nothing outside its origin");
  });

  test("/metrics after the job and the chats: every family, bounded labels", async () => {
    assert.ok(ftModel, "the earlier tests ran");
    const text = await scrape();
    const m = parseMetrics(text);
    const onnx = { backend: "onnx", base_model: "tiny-llama" };
    assert.equal(sample(m, "openft_jobs", { status: "succeeded" }), 1);
    assert.equal(sample(m, "openft_jobs", { status: "queued" }), 0);
    assert.equal(sample(m, "openft_queue_depth", {}), 0);
    assert.equal(sample(m, "openft_queue_oldest_age_seconds", {}), 0);
    assert.equal(sample(m, "openft_workers_connected", {}), 1);
    const heartbeat = m.filter((s) => s.name === "openft_worker_last_heartbeat_timestamp_seconds");
    assert.equal(heartbeat.length, 1);
    assert.ok(Math.abs(heartbeat[0]!.value - Date.now() / 1000) < 600);
    assert.equal(sample(m, "openft_trainer_step", { base_model: "tiny-llama" }), undefined, "no job runs now");
    assert.equal(sample(m, "openft_serving_requests_total", onnx), 2);
    assert.ok(sample(m, "openft_serving_prompt_tokens_total", onnx)! > 0);
    assert.ok(sample(m, "openft_serving_completion_tokens_total", onnx)! > 0);
    assert.equal(sample(m, "openft_serving_time_to_first_token_seconds_count", onnx), 2);
    assert.ok(sample(m, "openft_serving_inter_token_latency_seconds_count", onnx)! > 0);
    assert.ok(sample(m, "openft_serving_batch_size_count", onnx)! > 0);
    assert.equal(sample(m, "openft_serving_queue_length", onnx), 0);
    assert.equal(sample(m, "openft_serving_adapters_loaded", onnx), 1);
    assert.equal(sample(m, "openft_serving_adapter_loads_total", onnx), 1);
    assert.equal(sample(m, "openft_serving_adapter_evictions_total", onnx), 0);
    assert.ok(sample(m, "openft_http_requests_total", { method: "GET", route: "/v1/fine_tuning/jobs/:fine_tuning_job_id", status: "200" })! > 0);
    assert.ok(sample(m, "openft_http_request_duration_seconds_count", { method: "POST", route: "/v1/chat/completions", status: "200" })! >= 2);
    assert.ok(sample(m, "openft_http_requests_total", { method: "POST", route: "/v1/files", status: "200" })! >= 2);
    assert.ok(m.some((s) => s.name === "process_resident_memory_bytes"), "the default process metrics");
    // deploy/grafana-dashboard.json charts only families these scrapes had (the trainer's while the job ran).
    const names = new Set(scrapes.flatMap(parseMetrics).map((x) => x.name.replace(/_(bucket|sum|count)$/, "")));
    const charted = (await fs.readFile(path.join(ROOT, "deploy", "grafana-dashboard.json"), "utf8")).match(/openft_[a-z_]+/g)!;
    for (const name of new Set(charted.map((n) => n.replace(/_(bucket|sum|count)$/, "")))) assert.ok(names.has(name), `${name} is scraped`);
    // Bounded labels: no job, file, model, request or checkpoint id in any scrape.
    for (const t of scrapes) assert.doesNotMatch(t, /ftjob-|file-[A-Za-z0-9]|ft:|req_|ftckpt/);
  });

  test("OPENFT_METRICS_TOKEN protects /metrics; OPENFT_METRICS=false removes it", async () => {
    const token = "metrics-token-1234";
    const guarded = await startServer({ env: { OPENFT_METRICS_TOKEN: token } });
    try {
      const without = await fetch(`${guarded.url}/metrics`);
      assert.equal(without.status, 401);
      assert.match(((await without.json()) as { error: { message: string } }).error.message, /OPENFT_METRICS_TOKEN/);
      assert.equal((await fetch(`${guarded.url}/metrics`, { headers: { Authorization: "Bearer wrong-token-000" } })).status, 401);
      const ok = await fetch(`${guarded.url}/metrics`, { headers: { Authorization: `Bearer ${token}` } });
      assert.equal(ok.status, 200);
      assert.match(await ok.text(), /^# HELP openft_/m);
    } finally {
      await guarded.dispose();
    }
    const off = await startServer({ env: { OPENFT_METRICS: "false" } });
    try {
      assert.equal((await fetch(`${off.url}/metrics`)).status, 404);
    } finally {
      await off.dispose();
    }
  });
});

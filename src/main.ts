// The openft command line: serve | migrate | keys create.
import fs from "node:fs/promises";
import { parseArgs } from "node:util";
import { buildApp } from "./api/app.js";
import { ServingRouter } from "./engine/serving/index.js";
import { ConfigError, loadConfig, processEnv, type Config, type Env } from "./config.js";
import { createLogger } from "./logger.js";
import { newId } from "./ids.js";
import { startBackground } from "./jobs/background.js";
import { BaseModels } from "./jobs/base-models.js";
import { Wakeup } from "./jobs/wakeup.js";
import { createWorker } from "./jobs/workers.js";
import { startTrainerWorker, trainerAvailable, trainerPaths } from "./engine/worker/start.js";
import type { Worker } from "./engine/worker/worker.js";
import os from "node:os";
import path from "node:path";
import { spawn } from "node:child_process";
import { createBlobStore, openDatabase } from "./storage/index.js";
import { createApiKey, DEFAULT_PROJECT, ensureProject } from "./storage/repos/projects.js";
import { startSweeper } from "./storage/sweeper.js";

const USAGE = `usage:
  openft serve [--host HOST] [--port PORT] [--data-dir DIR] [--models-dir DIR]
  openft migrate [--data-dir DIR]
  openft keys create --project NAME [--project NAME ...] [--data-dir DIR]   prints a key per project
  openft workers create --name NAME [--name NAME ...] [--data-dir DIR]   prints a worker token per name
  openft worker --api URL --token TOKEN [--models-dir DIR] [--work-dir DIR]
  openft models import-gguf FILE --name NAME [--models-dir DIR]   a GGUF as a base model folder

environment: OPENFT_HOST, OPENFT_PORT, OPENFT_DATA_DIR, OPENFT_MODELS_DIR, OPENFT_API_KEY,
  OPENFT_MAX_UPLOAD_BYTES, DATABASE_URL, OPENFT_S3_ENDPOINT, OPENFT_S3_BUCKET, OPENFT_S3_REGION,
  OPENFT_S3_ACCESS_KEY_ID, OPENFT_S3_SECRET_ACCESS_KEY, OPENFT_S3_FORCE_PATH_STYLE`;

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      host: { type: "string" },
      port: { type: "string" },
      "data-dir": { type: "string" },
      "models-dir": { type: "string" },
      project: { type: "string", multiple: true },
      name: { type: "string", multiple: true },
      api: { type: "string" },
      token: { type: "string" },
      "work-dir": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
}

function configFrom(values: ReturnType<typeof parse>["values"]): Config {
  const overrides: Env = {
    OPENFT_HOST: values.host,
    OPENFT_PORT: values.port,
    OPENFT_DATA_DIR: values["data-dir"],
    OPENFT_MODELS_DIR: values["models-dir"],
    OPENFT_WORK_DIR: values["work-dir"],
  };
  return loadConfig(processEnv(), overrides);
}

async function openStorage(config: Config) {
  await fs.mkdir(config.dataDir, { recursive: true });
  const database = await openDatabase({ url: config.database.url, dataDir: config.dataDir });
  await database.migrate();
  return database;
}

async function serve(config: Config): Promise<void> {
  const log = createLogger(config.logLevel);
  await fs.mkdir(config.modelsDir, { recursive: true });
  const database = await openStorage(config);
  const blobs = createBlobStore(config);
  await blobs.init();
  const defaultProject = await ensureProject(database.db, DEFAULT_PROJECT);
  const stopSweeper = startSweeper(database.db, blobs, log, Math.max(1000, config.files.uploadLeaseMs / 2));
  const baseModels = new BaseModels(config.modelsDir);
  const wakeup = new Wakeup();
  const router = new ServingRouter({
    onnx: { ...config.serving, adapterDir: path.join(config.serving.cacheDir, "adapters") },
    vllm: config.serving.vllm.pools,
    vllmAdapterDir: config.serving.vllm.adapterDir,
    vllmMaxLoraRank: config.serving.vllm.maxLoraRank,
    blobs,
  });
  const background = startBackground({
    db: database.db,
    blobs,
    baseModels,
    log,
    owner: `api-${newId.request().slice(4)}`,
    onQueued: () => wakeup.notify(),
  });
  const app = await buildApp({
    db: database.db,
    blobs,
    log,
    apiKey: config.apiKey,
    defaultProject,
    maxUploadBytes: config.files.maxUploadBytes,
    uploadLeaseMs: config.files.uploadLeaseMs,
    baseModels,
    onJobCreated: () => background.wake(),
    wakeup,
    workerLeaseMs: config.workers.leaseMs,
    serving: { router, maxQueue: config.serving.maxQueue },
    ready: async () => {
      await database.db.execute("select 1");
      await blobs.exists("readyz-probe");
    },
  });
  await app.listen({ host: config.server.host, port: config.server.port });
  const address = app.server.address();
  const port = typeof address === "object" && address ? address.port : config.server.port;
  const host = config.server.host.includes(":") ? `[${config.server.host}]` : config.server.host;
  // The one start-up line, whatever the log level: scripts and tests read the URL from it.
  log.child({}, { level: "info" }).info(
    { url: `http://${host}:${port}`, database: database.kind, blobs: blobs.kind, dataDir: config.dataDir },
    `openft listening on http://${host}:${port}`,
  );

  const worker = config.worker.embedded ? await startEmbeddedWorker(config, database.db, port, log) : undefined;

  let closing = false;
  const shutdown = async (signal: string) => {
    if (closing) return;
    closing = true;
    log.info({ signal }, "shutting down");
    // The worker first: its running job is checkpointed and handed back to the queue.
    await worker?.stop();
    // In-flight requests get a grace period; then the rest (long polls, stalled uploads, which
    // are all safe to cut) are closed so that shutdown never waits for keep-alive timeouts.
    const force = setTimeout(() => app.server.closeAllConnections(), 3000);
    force.unref();
    await app.close();
    clearTimeout(force);
    await background.stop();
    await router.close();
    await stopSweeper();
    await database.close();
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
}

/** The embedded worker, over loopback with a token of its own, when the trainer is installed. */
async function startEmbeddedWorker(config: Config, db: import("./storage/db.js").Db, port: number, log: import("pino").Logger): Promise<Worker | undefined> {
  const { python, trainerPath } = trainerPaths(config.worker.python);
  const missing = await trainerAvailable(python, trainerPath, processEnv());
  if (missing) {
    log.warn({ python, reason: missing }, "embedded worker not started: the trainer is not installed (bash scripts/setup.sh installs it); jobs wait in the queue for a worker");
    return undefined;
  }
  const { token, worker } = await createWorker(db, `embedded-${os.hostname()}-${process.pid}`);
  log.info({ workerId: worker.id }, "embedded worker started");
  return startTrainerWorker({
    apiUrl: `http://127.0.0.1:${port}`,
    token,
    modelsDir: config.modelsDir,
    workDir: config.worker.workDir,
    python: config.worker.python,
    device: config.worker.device,
    log: log.child({ workerId: worker.id }),
    env: processEnv(),
  });
}

/** `openft models import-gguf FILE --name NAME`: the trainer's Python does the conversion. */
async function importGguf(config: Config, file: string, name: string): Promise<number> {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) {
    process.stderr.write(`invalid model name: ${name} (letters, digits, '.', '_', '-')\n`);
    return 2;
  }
  const { python, trainerPath } = trainerPaths(config.worker.python);
  const out = path.join(config.modelsDir, name);
  await fs.mkdir(config.modelsDir, { recursive: true });
  const code = await new Promise<number>((resolve) => {
    const child = spawn(python, ["-m", "openft_trainer.import_gguf", path.resolve(file), out], {
      env: { ...processEnv(), PYTHONPATH: trainerPath, HF_HUB_OFFLINE: "1", TRANSFORMERS_OFFLINE: "1" },
      stdio: ["ignore", "inherit", "inherit"],
    });
    child.on("close", (c) => resolve(c ?? 1));
  });
  return code;
}

async function runWorker(config: Config, api: string, token: string): Promise<void> {
  const log = createLogger(config.logLevel);
  const { python, trainerPath } = trainerPaths(config.worker.python);
  const missing = await trainerAvailable(python, trainerPath, processEnv());
  if (missing) throw new Error(`the trainer is not installed for ${python}: ${missing}`);
  const worker = startTrainerWorker({ apiUrl: api, token, modelsDir: config.modelsDir, workDir: config.worker.workDir, python: config.worker.python, device: config.worker.device, log, env: processEnv() });
  log.child({}, { level: "info" }).info({ api }, "openft worker started");
  const stop = () => void worker.stop().then(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

function usage(): number {
  process.stderr.write(`${USAGE}\n`);
  return 2;
}

/** `keys create` and `workers create`: one secret per name, one per line, in order. */
async function createEach(
  config: Config,
  names: string[] | undefined,
  create: (db: import("./storage/db.js").Db, name: string) => Promise<string>,
): Promise<number> {
  if (!names?.length) return usage();
  const database = await openStorage(config);
  try {
    for (const name of names) process.stdout.write(`${await create(database.db, name)}\n`);
  } finally {
    await database.close();
  }
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const [command, sub] = parsed.positionals;
  if (parsed.values.help || !command) {
    process.stdout.write(`${USAGE}\n`);
    return command ? 0 : 2;
  }
  let config: Config;
  try {
    config = configFrom(parsed.values);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      return 1;
    }
    throw err;
  }
  switch (command) {
    case "serve":
      await serve(config);
      return -1; // keeps running
    case "migrate": {
      const database = await openStorage(config);
      await database.close();
      process.stdout.write("migrations applied\n");
      return 0;
    }
    case "keys":
      return sub === "create" ? createEach(config, parsed.values.project, async (db, p) => (await createApiKey(db, p)).secret) : usage();
    case "worker": {
      if (!parsed.values.api || !parsed.values.token) {
        process.stderr.write(`openft worker needs --api URL and --token TOKEN\n${USAGE}\n`);
        return 2;
      }
      await runWorker(config, parsed.values.api, parsed.values.token);
      return -1; // keeps running
    }
    case "models": {
      const file = parsed.positionals[2];
      const name = parsed.values.name?.[0];
      if (sub !== "import-gguf" || !file || !name) return usage();
      return importGguf(config, file, name);
    }
    case "workers":
      return sub === "create" ? createEach(config, parsed.values.name, async (db, n) => (await createWorker(db, n)).token) : usage();
    default:
      process.stderr.write(`unknown command: ${command}\n${USAGE}\n`);
      return 2;
  }
}

// The openft command line: serve | migrate | keys create.
import fs from "node:fs/promises";
import { parseArgs } from "node:util";
import { buildApp } from "./api/app.js";
import { ServingRouter } from "./engine/serving/index.js";
import { ConfigError, loadConfig, processEnv, type Config, type Env } from "./config.js";
import { createLogger } from "./logger.js";
import { Metrics } from "./metrics/index.js";
import { newId } from "./ids.js";
import { startBackground } from "./jobs/background.js";
import { BaseModels } from "./jobs/base-models.js";
import { Wakeup } from "./jobs/wakeup.js";
import { createWorker } from "./jobs/workers.js";
import { startTrainerWorker, trainerAvailable, trainerHasWandb, trainerPaths } from "./engine/worker/start.js";
import type { Worker } from "./engine/worker/worker.js";
import os from "node:os";
import path from "node:path";
import { spawn } from "node:child_process";
import { createBlobStore, DataDirBusyError } from "./storage/index.js";
import { ADMIN_ROUTES, startAdminEndpoint } from "./api/admin/endpoint.js";
import { createSecrets, openStorageWaiting, SERVE_COMMAND } from "./cli-database.js";
import { createAdminKey, createApiKey, DEFAULT_PROJECT, ensureProject } from "./storage/repos/projects.js";
import { startSweeper } from "./storage/sweeper.js";

const USAGE = `usage:
  openft serve [--host HOST] [--port PORT] [--data-dir DIR] [--models-dir DIR]
  openft migrate [--data-dir DIR]
  openft keys create --project NAME [--project NAME ...] [--data-dir DIR]   prints a key per project
  openft keys create --admin [--data-dir DIR]   prints an admin key (checkpoint permissions only)
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
      admin: { type: "boolean" },
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

async function serve(config: Config): Promise<void> {
  const log = createLogger(config.logLevel);
  await fs.mkdir(config.modelsDir, { recursive: true });
  const database = (await openStorageWaiting(config, SERVE_COMMAND))!;
  const blobs = createBlobStore(config);
  await blobs.init();
  const defaultProject = await ensureProject(database.db, DEFAULT_PROJECT);
  const stopSweeper = startSweeper(database.db, blobs, log, Math.max(1000, config.files.uploadLeaseMs / 2));
  const baseModels = new BaseModels(config.modelsDir);
  for (const b of await baseModels.broken()) log.warn({ model: b.id, missing: b.missing }, `models dir: '${b.id}' is not a complete model; it is not served`);
  const wakeup = new Wakeup();
  const metrics = new Metrics();
  const router = new ServingRouter({
    onnx: { ...config.serving, adapterDir: path.join(config.serving.cacheDir, "adapters"), onStep: (model, n) => metrics.serving.step("onnx", model, n) },
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
    owner: newId.validatorOwner(),
    onQueued: () => wakeup.notify(),
  });
  const wandbAvailable = wandbProbe(config);
  const app = await buildApp({
    db: database.db,
    blobs,
    log,
    apiKey: config.apiKey,
    defaultProject,
    maxUploadBytes: config.files.maxUploadBytes,
    uploadLeaseMs: config.files.uploadLeaseMs,
    uploads: config.uploads,
    baseModels,
    onJobCreated: () => background.wake(),
    wakeup,
    workerLeaseMs: config.workers.leaseMs,
    metrics: { metrics, ...config.metrics },
    wandbAvailable,
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
  // PGlite admits this process only: the CLI's keys and workers commands come through here.
  const admin = database.kind === "pglite"
    ? await startAdminEndpoint(config.dataDir, {
        createKey: async (project) => (await createApiKey(database.db, project)).secret,
        createWorker: async (name) => (await createWorker(database.db, name)).token,
        createAdminKey: async () => (await createAdminKey(database.db)).secret,
      })
    : undefined;

  let worker: Worker | undefined;
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
    await admin?.close();
    await database.close();
    process.exit(0);
  };
  // Before the start-up line: a SIGTERM right after it still shuts down cleanly (the embedded
  // worker's start below takes seconds).
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
  // The one start-up line, whatever the log level: scripts and tests read the URL from it.
  log.child({}, { level: "info" }).info(
    { url: `http://${host}:${port}`, database: database.kind, blobs: blobs.kind, dataDir: config.dataDir },
    `openft listening on http://${host}:${port}`,
  );
  if (config.worker.embedded && !closing) worker = await startEmbeddedWorker(config, database.db, port, log);
}

/** OPENFT_WANDB: "auto" asks the trainer's Python once, when a create first carries integrations
 *  (importing wandb costs seconds of CPU that start-up need not pay). */
function wandbProbe(config: Config): () => Promise<boolean> {
  if (config.worker.wandb !== "auto") {
    const on = config.worker.wandb === "on";
    return () => Promise.resolve(on);
  }
  let probe: Promise<boolean> | undefined;
  return () => (probe ??= trainerHasWandb(trainerPaths(config.worker.python).python, processEnv()));
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
    processes: config.worker.processes,
    sharding: config.worker.sharding,
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
  const worker = startTrainerWorker({ apiUrl: api, token, modelsDir: config.modelsDir, workDir: config.worker.workDir, python: config.worker.python, device: config.worker.device, processes: config.worker.processes, sharding: config.worker.sharding, log, env: processEnv() });
  log.child({}, { level: "info" }).info({ api }, "openft worker started");
  const stop = () => void worker.stop().then(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

function usage(): number {
  process.stderr.write(`${USAGE}\n`);
  return 2;
}

/** `keys create` and `workers create`: one secret per name, one per line, in order, printed
 *  only once all are stored. */
async function createEach(
  config: Config,
  command: string,
  names: string[] | undefined,
  route: string,
  create: (db: import("./storage/db.js").Db, name: string) => Promise<string>,
): Promise<number> {
  if (!names?.length) return usage();
  const secrets = await createSecrets(config, command, names, route, create);
  for (const secret of secrets) process.stdout.write(`${secret}\n`);
  return 0;
}

async function migrateCommand(config: Config): Promise<number> {
  // A server applied every migration it knows when it started; another process must not open
  // its embedded database.
  const database = await openStorageWaiting(config, "openft migrate");
  await database?.close();
  process.stdout.write("migrations applied\n");
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
  const [command] = parsed.positionals;
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
  try {
    return await run(config, parsed);
  } catch (err) {
    if (!(err instanceof DataDirBusyError)) throw err;
    const hint = err.holder.command === SERVE_COMMAND ? "; stop the server first" : "";
    process.stderr.write(`openft ${command}: ${err.message}${hint}\n`);
    return 1;
  }
}

async function run(config: Config, parsed: ReturnType<typeof parse>): Promise<number> {
  const [command, sub] = parsed.positionals;
  switch (command) {
    case "serve":
      await serve(config);
      return -1; // keeps running
    case "migrate":
      return migrateCommand(config);
    case "keys":
      if (sub === "create" && parsed.values.admin) {
        return createEach(config, "openft keys create --admin", ["admin"], ADMIN_ROUTES.adminKeys, async (db) => (await createAdminKey(db)).secret);
      }
      return sub === "create" ? createEach(config, "openft keys create", parsed.values.project, ADMIN_ROUTES.keys, async (db, p) => (await createApiKey(db, p)).secret) : usage();
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
      return sub === "create" ? createEach(config, "openft workers create", parsed.values.name, ADMIN_ROUTES.workers, async (db, n) => (await createWorker(db, n)).token) : usage();
    default:
      process.stderr.write(`unknown command: ${command}\n${USAGE}\n`);
      return 2;
  }
}

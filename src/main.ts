// The openft command line: serve | migrate | keys create.
import fs from "node:fs/promises";
import { parseArgs } from "node:util";
import { buildApp } from "./api/app.js";
import { ConfigError, loadConfig, processEnv, type Config, type Env } from "./config.js";
import { createLogger } from "./logger.js";
import { createBlobStore, openDatabase } from "./storage/index.js";
import { createApiKey, DEFAULT_PROJECT, ensureProject } from "./storage/repos/projects.js";
import { startSweeper } from "./storage/sweeper.js";

const USAGE = `usage:
  openft serve [--host HOST] [--port PORT] [--data-dir DIR] [--models-dir DIR]
  openft migrate [--data-dir DIR]
  openft keys create --project NAME [--data-dir DIR]

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
      project: { type: "string" },
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
  const app = await buildApp({
    db: database.db,
    blobs,
    log,
    apiKey: config.apiKey,
    defaultProject,
    maxUploadBytes: config.files.maxUploadBytes,
    uploadLeaseMs: config.files.uploadLeaseMs,
    ready: async () => {
      await database.db.execute("select 1");
      await blobs.exists("readyz-probe");
    },
  });
  await app.listen({ host: config.server.host, port: config.server.port });
  const address = app.server.address();
  const port = typeof address === "object" && address ? address.port : config.server.port;
  const host = config.server.host.includes(":") ? `[${config.server.host}]` : config.server.host;
  log.info(
    { url: `http://${host}:${port}`, database: database.kind, blobs: blobs.kind, dataDir: config.dataDir },
    `openft listening on http://${host}:${port}`,
  );

  let closing = false;
  const shutdown = async (signal: string) => {
    if (closing) return;
    closing = true;
    log.info({ signal }, "shutting down");
    await app.close();
    await stopSweeper();
    await database.close();
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
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
    case "keys": {
      if (sub !== "create" || !parsed.values.project) {
        process.stderr.write(`${USAGE}\n`);
        return 2;
      }
      const database = await openStorage(config);
      const { secret } = await createApiKey(database.db, parsed.values.project);
      await database.close();
      process.stdout.write(`${secret}\n`);
      return 0;
    }
    default:
      process.stderr.write(`unknown command: ${command}\n${USAGE}\n`);
      return 2;
  }
}

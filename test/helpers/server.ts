// Starts the real `openft serve` process on a free port for black-box tests, on the backend
// chosen by OPENFT_TEST_BACKEND: "postgres-s3" (a fresh database on the test PostgreSQL server
// and a fresh bucket on moto's S3 server, both started by scripts/test.sh) or "embedded"
// (PGlite and a local folder, the defaults).
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import OpenAI from "openai";
import pg from "pg";
import { projectRoot } from "../../src/project-root.js";
import { checkedFetch, openApiViolations } from "./checked-fetch.js";

export const ROOT = projectRoot();
const BIN = path.join(ROOT, "bin", "openft.js");

export type Backend = "postgres-s3" | "embedded";
export const BACKEND: Backend = process.env.OPENFT_TEST_BACKEND === "postgres-s3" ? "postgres-s3" : "embedded";

export interface S3Target {
  readonly endpoint: string;
  readonly bucket: string;
}

export interface TestServer {
  readonly url: string;
  readonly baseURL: string;
  readonly apiKey: string;
  readonly dataDir: string;
  readonly env: Record<string, string>;
  readonly databaseUrl: string | undefined;
  readonly s3: S3Target | undefined;
  proc: ChildProcess;
  log: string;
  /** An SDK client whose every response is checked against openapi.yaml (checked-fetch.ts). */
  client(apiKey?: string): OpenAI;
  /** fetch, with the same check. */
  fetch: typeof fetch;
  /** Keys of the projects named in StartOptions.projects. */
  readonly projectKeys: Readonly<Record<string, string>>;
  /** Tokens of the workers named in StartOptions.workers. */
  readonly workerTokens: Readonly<Record<string, string>>;
  /** An admin key (`openft keys create --admin`) when StartOptions.admin was set. */
  readonly adminKey: string | undefined;
  /** Runs an `openft` subcommand against the same storage and returns its stdout. */
  cli(...args: string[]): Promise<string>;
  /** SIGTERM and wait. */
  stop(): Promise<void>;
  /** SIGKILL and wait. */
  kill(): Promise<void>;
  /** Starts the process again on the same storage and port. */
  restart(): Promise<void>;
  /** stop() and remove the data dir, database and bucket. */
  dispose(): Promise<void>;
}

function suffix(): string {
  return randomBytes(6).toString("hex");
}

async function createDatabase(adminUrl: string): Promise<string> {
  const name = `openft_t_${suffix()}`;
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    await client.query(`create database ${name}`);
  } finally {
    await client.end();
  }
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  return u.toString();
}

async function dropDatabase(adminUrl: string, url: string): Promise<void> {
  const name = new URL(url).pathname.slice(1);
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    await client.query(`drop database if exists ${name} with (force)`);
  } finally {
    await client.end();
  }
}

function waitForUrl(proc: ChildProcess, onOutput: (s: string) => void): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = "";
    // Generous: on a machine shared by several suites, a start has been seen to take 30 s.
    const timer = setTimeout(() => reject(new Error(`server did not start in 120s:\n${buf}`)), 120_000);
    const onData = (d: Buffer) => {
      const s = d.toString();
      buf += s;
      onOutput(s);
      const m = /"url":"(http:\/\/[^"]+)"/.exec(buf);
      if (m && buf.includes("openft listening on")) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    };
    proc.stdout!.on("data", onData);
    proc.stderr!.on("data", onData);
    proc.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before listening:\n${buf}`));
    });
  });
}

function exited(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => proc.once("exit", () => resolve()));
}

export interface StartOptions {
  readonly env?: Record<string, string>;
  /** Projects to create a key for before the server starts (PGlite admits one process at a time). */
  readonly projects?: readonly string[];
  /** Workers to create a token for before the server starts. */
  readonly workers?: readonly string[];
  /** Create an admin key before the server starts. */
  readonly admin?: boolean;
}

export async function startServer(opts: StartOptions = {}): Promise<TestServer> {
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), "openft-test-"));
  const apiKey = `sk-test-${suffix()}${suffix()}`;
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "",
    HOME: process.env.HOME ?? os.tmpdir(),
    OPENFT_API_KEY: apiKey,
    OPENFT_DATA_DIR: dataDir,
    OPENFT_MODELS_DIR: path.join(dataDir, "models"),
    OPENFT_LOG_LEVEL: "info",
    // Tests that want the real trainer behind the API turn the embedded worker on.
    OPENFT_EMBEDDED_WORKER: "false",
  };
  let databaseUrl: string | undefined;
  let s3: S3Target | undefined;
  const adminUrl = process.env.OPENFT_TEST_DATABASE_URL;
  if (BACKEND === "postgres-s3") {
    const endpoint = process.env.OPENFT_TEST_S3_ENDPOINT;
    if (!adminUrl || !endpoint) throw new Error("postgres-s3 backend needs OPENFT_TEST_DATABASE_URL and OPENFT_TEST_S3_ENDPOINT");
    databaseUrl = await createDatabase(adminUrl);
    s3 = { endpoint, bucket: `openft-t-${suffix()}` };
    Object.assign(env, {
      DATABASE_URL: databaseUrl,
      OPENFT_S3_ENDPOINT: s3.endpoint,
      OPENFT_S3_BUCKET: s3.bucket,
      OPENFT_S3_REGION: "us-east-1",
      OPENFT_S3_ACCESS_KEY_ID: "test",
      OPENFT_S3_SECRET_ACCESS_KEY: "test",
      OPENFT_S3_FORCE_PATH_STYLE: "true",
    });
  }
  Object.assign(env, opts.env ?? {});

  const expectedExit = new WeakSet<ChildProcess>();
  const launch = async (server: { proc?: ChildProcess; log: string }, port = "0") => {
    const proc = spawn(process.execPath, [BIN, "serve", "--port", port, "--host", "127.0.0.1"], {
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    server.proc = proc;
    proc.once("exit", (code, signal) => {
      // A server that dies on its own is a bug: show why.
      if (!expectedExit.has(proc)) process.stderr.write(`\nopenft serve exited unexpectedly (${code ?? signal}):\n${server.log.slice(-8000)}\n`);
    });
    try {
      return { proc, url: await waitForUrl(proc, (s) => (server.log += s)) };
    } catch (err) {
      // A server that starts after the deadline would otherwise keep the test process alive.
      expectedExit.add(proc);
      proc.kill("SIGKILL");
      throw err;
    }
  };

  const runCli = (args: string[]) =>
    new Promise<string>((resolve, reject) => {
      const p = spawn(process.execPath, [BIN, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      let err = "";
      p.stdout.on("data", (d: Buffer) => (out += d.toString()));
      p.stderr.on("data", (d: Buffer) => (err += d.toString()));
      p.on("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`openft ${args.join(" ")} exited ${code}: ${err}`))));
    });
  // One CLI run each for all keys and all tokens: opening PGlite costs seconds.
  const created = async (args: string[], flag: string, names: readonly string[]) => {
    const out: Record<string, string> = {};
    if (names.length === 0) return out;
    const lines = (await runCli([...args, ...names.flatMap((n) => [flag, n])])).trim().split("\n");
    names.forEach((n, i) => (out[n] = lines[i]!.trim()));
    return out;
  };
  const projectKeys = await created(["keys", "create"], "--project", opts.projects ?? []);
  const workerTokens = await created(["workers", "create"], "--name", opts.workers ?? []);
  const adminKey = opts.admin ? (await runCli(["keys", "create", "--admin"])).trim() : undefined;

  const violationsBefore = openApiViolations().length;
  const state: { proc?: ChildProcess; log: string } = { log: "" };
  const first = await launch(state);
  let url = first.url;

  const server: TestServer = {
    get url() {
      return url;
    },
    get baseURL() {
      return `${url}/v1`;
    },
    apiKey,
    dataDir,
    env,
    databaseUrl,
    s3,
    proc: first.proc,
    get log() {
      return state.log;
    },
    set log(v: string) {
      state.log = v;
    },
    client(key = apiKey) {
      return new OpenAI({ apiKey: key, baseURL: `${url}/v1`, maxRetries: 0, timeout: 120_000, fetch: checkedFetch });
    },
    fetch: checkedFetch,
    projectKeys,
    workerTokens,
    adminKey,
    cli: (...args: string[]) => runCli(args),
    async stop() {
      const p = server.proc;
      expectedExit.add(p);
      if (p.exitCode === null && p.signalCode === null) p.kill("SIGTERM");
      await exited(p);
    },
    async kill() {
      const p = server.proc;
      expectedExit.add(p);
      if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
      await exited(p);
    },
    async restart() {
      const next = await launch(state, new URL(url).port);
      server.proc = next.proc;
      url = next.url;
    },
    async dispose() {
      await server.stop();
      await fs.rm(dataDir, { recursive: true, force: true });
      if (adminUrl && databaseUrl) await dropDatabase(adminUrl, databaseUrl);
      const seen = openApiViolations().slice(violationsBefore);
      if (seen.length > 0) throw new Error(`responses that do not match openapi.yaml:\n${seen.join("\n")}`);
    },
  };
  return server;
}

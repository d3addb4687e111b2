// Claim throughput and claim latency of the job queue, measured as workers see it: 16 worker
// loops calling POST /internal/v1/claim over the worker protocol (HTTP on loopback, one
// ProtocolClient and worker token each), beside pg-boss doing the same claims (fetch, batch
// size 1) on the same PostgreSQL server in the same run. Run: npm run bench:queue
//
// PostgreSQL: OPENFT_TEST_DATABASE_URL when set, else a throwaway server started here with
// scripts/test-services.sh (start_postgres) and stopped at the end. Each engine gets its own
// database on that server and a pool of 10 connections (both defaults).
//
// Jobs are inserted with SQL (openft) or boss.insert (pg-boss), so the measurement is claims
// only. Two modes per engine, each on BENCH_JOBS fresh jobs:
//   claim+finish  each loop claims, then finishes the job (openft: POST .../fail, one more
//                 HTTP round trip; pg-boss: complete()); a worker's whole cycle.
//   claim only    each loop only claims (the jobs stay running/active); claims/s without the
//                 finish call.
// Latency is the claim call alone, in both modes. claims/s is claims / wall time of the phase.
// Every phase checks that each job was claimed exactly once (distinct ids, and the rows' final
// state in the database). Knobs: BENCH_JOBS (10000), BENCH_WORKERS (16), BENCH_WARMUP (500
// claims per engine first, not counted). Exit status 1 when a goal or a check fails.
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import os from "node:os";
import { performance } from "node:perf_hooks";
import pg from "pg";
import { PgBoss } from "pg-boss";
import { ProtocolClient } from "../src/engine/worker/protocol-client.js";
import { ROOT, startServer } from "../test/helpers/server.js";

const JOBS = Number(process.env.BENCH_JOBS ?? 10_000);
const WORKERS = Number(process.env.BENCH_WORKERS ?? 16);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 500);
const GOAL_P99_MS = 50;
const GOAL_RATIO = 1 / 3;

type Mode = "claim+finish" | "claim only";

interface Engine {
  readonly name: string;
  /** Puts n claimable jobs in the queue; tag names the phase. */
  enqueue(n: number, tag: string): Promise<void>;
  /** One claim by worker w: the job's id, or undefined when the queue is empty. */
  claim(w: number): Promise<string | undefined>;
  /** Finishes a job worker w holds. */
  finish(w: number, id: string): Promise<void>;
  /** How many jobs of the phase the database now holds as claimed (finished, or held). */
  settled(tag: string, mode: Mode): Promise<number>;
  /** CPU time (ms) used so far by a server process between the workers and PostgreSQL, if any. */
  serverCpuMs?(): number;
}

interface Result {
  readonly engine: string;
  readonly mode: Mode;
  readonly claims: number;
  readonly distinct: number;
  readonly settled: number;
  readonly seconds: number;
  readonly perSecond: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  /** CPU ms per claim of the bench process (16 worker loops; for pg-boss also pg-boss itself). */
  readonly benchCpu: number;
  /** CPU ms per claim of the openft server process; NaN for pg-boss (no server). */
  readonly serverCpu: number;
}

/** Nearest-rank percentile of sorted values. */
function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

const tag = () => randomBytes(4).toString("hex");

async function runPhase(engine: Engine, mode: Mode, n: number): Promise<Result> {
  const phase = tag();
  await engine.enqueue(n, phase);
  const latencies: number[] = [];
  const ids: string[] = [];
  const cpu0 = process.cpuUsage();
  const server0 = engine.serverCpuMs?.() ?? NaN;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: WORKERS }, async (_, w) => {
      for (;;) {
        const t0 = performance.now();
        const id = await engine.claim(w);
        const ms = performance.now() - t0;
        if (id === undefined) return; // wait 0 and nothing left: the queue is drained
        latencies.push(ms);
        ids.push(id);
        if (mode === "claim+finish") await engine.finish(w, id);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const serverMs = (engine.serverCpuMs?.() ?? NaN) - server0;
  const sorted = Float64Array.from(latencies).sort();
  return {
    engine: engine.name,
    mode,
    claims: ids.length,
    distinct: new Set(ids).size,
    settled: await engine.settled(phase, mode),
    seconds,
    perSecond: ids.length / seconds,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    max: sorted.length ? sorted[sorted.length - 1]! : NaN,
    benchCpu: (cpu.user + cpu.system) / 1000 / ids.length,
    serverCpu: serverMs / ids.length,
  };
}

/** A PostgreSQL server for the run: the given one, or one started by scripts/test-services.sh. */
async function postgres(): Promise<{ url: string; stop: () => Promise<void> }> {
  const given = process.env.OPENFT_TEST_DATABASE_URL;
  if (given) return { url: given, stop: async () => {} };
  // The shell stays up holding the server and stops it when our end of its stdin closes (also
  // when this process dies).
  const script = [
    "set -euo pipefail",
    "source scripts/test-services.sh",
    "trap stop_test_services EXIT",
    "start_postgres >&2",
    'echo "BENCH_PG_URL=$OPENFT_TEST_DATABASE_URL"',
    "read -r _ || true",
  ].join("\n");
  const sh: ChildProcessWithoutNullStreams = spawn("bash", ["-c", script], { cwd: ROOT, stdio: ["pipe", "pipe", "pipe"] });
  sh.stderr.on("data", (d: Buffer) => process.stderr.write(d));
  const url = await new Promise<string>((resolve, reject) => {
    let out = "";
    sh.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /BENCH_PG_URL=(\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    sh.once("exit", (code) => reject(new Error(`starting PostgreSQL failed (exit ${code})`)));
  });
  return {
    url,
    stop: () =>
      new Promise<void>((resolve) => {
        if (sh.exitCode !== null) return resolve();
        sh.once("exit", () => resolve());
        sh.stdin.end();
      }),
  };
}

async function createDatabase(adminUrl: string, name: string): Promise<string> {
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`create database ${name}`);
  } finally {
    await admin.end();
  }
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  return u.toString();
}

async function dropDatabase(adminUrl: string, name: string): Promise<void> {
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`drop database if exists ${name} with (force)`);
  } finally {
    await admin.end();
  }
}

const CLK_TCK = Number(spawnSync("getconf", ["CLK_TCK"]).stdout?.toString().trim()) || 100;

/** utime + stime of a process, in ms (Linux /proc). */
function processCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // fields from the 3rd (state) on
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
}

const METHOD = JSON.stringify({
  type: "supervised",
  supervised: { hyperparameters: { n_epochs: 1, batch_size: 1, learning_rate_multiplier: 1 } },
});

/** openft: jobs go in with SQL; claims and finishes go through the worker protocol. */
async function openftEngine(databaseUrl: string) {
  const names = Array.from({ length: WORKERS }, (_, i) => `bench-w${i + 1}`);
  // One `openft workers create` run makes the tokens (and migrates) before the server starts.
  const server = await startServer({
    workers: names,
    env: {
      DATABASE_URL: databaseUrl,
      // The bench must not race the lease reaper: claim-only jobs stay held for the whole run.
      OPENFT_WORKER_LEASE_SECONDS: "3600",
      OPENFT_LOG_LEVEL: "warn",
    },
  });
  const clients = names.map((n) => new ProtocolClient(server.url, server.workerTokens[n]!, 0));
  // The server created the "default" project at start.
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  const { rows } = await pool.query<{ id: string }>("select id from projects where name = 'default'");
  const projectId = rows[0]?.id;
  if (!projectId) throw new Error("the server did not create the default project");

  const engine: Engine = {
    name: "openft (HTTP)",
    async enqueue(n, phase) {
      await pool.query(
        `insert into fine_tuning_jobs
           (id, project_id, created_at, model, base_model, training_file, status, method, seed, result_files, fair_rank)
         select 'ftjob-bench-' || $2 || '-' || lpad(g::text, 6, '0'), $1, extract(epoch from now())::bigint,
                'bench-model', 'bench-model', 'file-bench', 'queued', $3::jsonb, 42, '[]'::jsonb, 0
         from generate_series(1, $4::int) g`,
        [projectId, phase, METHOD, n],
      );
    },
    async claim(w) {
      return (await clients[w]!.claim(0))?.job.id;
    },
    async finish(w, id) {
      await clients[w]!.fail(id, { code: "bench", message: "bench" });
    },
    async settled(phase, mode) {
      const status = mode === "claim+finish" ? "failed" : "running";
      const r = await pool.query<{ n: string }>(
        "select count(*) as n from fine_tuning_jobs where id like $1 and status = $2 and attempts = 0",
        [`ftjob-bench-${phase}-%`, status],
      );
      return Number(r.rows[0]!.n);
    },
    serverCpuMs: () => processCpuMs(server.proc.pid!),
  };
  return {
    engine,
    close: async () => {
      await pool.end();
      await server.dispose();
    },
  };
}

/** pg-boss: the same claims with fetch() (batch size 1) and complete(), in process. */
async function pgBossEngine(databaseUrl: string) {
  const boss = new PgBoss({ connectionString: databaseUrl });
  boss.on("error", (err) => process.stderr.write(`pg-boss error: ${String(err)}\n`));
  await boss.start();
  const queue = "bench";
  await boss.createQueue(queue);
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  const phaseIds = new Map<string, string[]>();

  const engine: Engine = {
    name: "pg-boss 12 (in-process)",
    async enqueue(n, phase) {
      const ids: string[] = [];
      for (let i = 0; i < n; i += 1000) {
        const batch = Array.from({ length: Math.min(1000, n - i) }, (_, k) => ({ data: { phase, i: i + k } }));
        ids.push(...((await boss.insert(queue, batch, { returnId: true })) ?? []));
      }
      if (ids.length !== n) throw new Error(`pg-boss inserted ${ids.length} of ${n} jobs`);
      phaseIds.set(phase, ids);
    },
    async claim() {
      const [job] = await boss.fetch(queue);
      return job?.id;
    },
    async finish(_w, id) {
      await boss.complete(queue, id);
    },
    async settled(phase, mode) {
      const state = mode === "claim+finish" ? "completed" : "active";
      const r = await pool.query<{ n: string }>(
        "select count(*) as n from pgboss.job where name = $1 and id = any($2::uuid[]) and state = $3",
        [queue, phaseIds.get(phase) ?? [], state],
      );
      return Number(r.rows[0]!.n);
    },
  };
  return {
    engine,
    close: async () => {
      await pool.end();
      await boss.stop({ graceful: false, timeout: 5000 });
    },
  };
}

function table(results: readonly Result[]): string {
  const head = ["engine", "mode", "claims", "distinct", "settled", "seconds", "claims/s", "p50 ms", "p99 ms", "max ms", "cpu ms/claim: bench", "server"];
  const rows = results.map((r) => [
    r.engine,
    r.mode,
    String(r.claims),
    String(r.distinct),
    String(r.settled),
    r.seconds.toFixed(2),
    r.perSecond.toFixed(0),
    r.p50.toFixed(2),
    r.p99.toFixed(2),
    r.max.toFixed(2),
    r.benchCpu.toFixed(2),
    Number.isNaN(r.serverCpu) ? "-" : r.serverCpu.toFixed(2),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  return [line(head), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

async function main() {
  const pgServer = await postgres();
  const suffix = tag();
  const dbs = { openft: `openft_bench_${suffix}`, boss: `pgboss_bench_${suffix}` };
  const closers: (() => Promise<void>)[] = [];
  try {
    const ours = await openftEngine(await createDatabase(pgServer.url, dbs.openft));
    closers.push(ours.close);
    const boss = await pgBossEngine(await createDatabase(pgServer.url, dbs.boss));
    closers.push(boss.close);
    console.log(`${JOBS} jobs per phase, ${WORKERS} concurrent workers, wait_seconds 0; ${WARMUP} warm-up claims per engine not counted`);
    const load = () => os.loadavg().map((l) => l.toFixed(1)).join(" ");
    console.log(`machine: ${os.cpus().length} CPUs, load average ${load()} before the run (PostgreSQL, the server and this process share them)`);

    for (const e of [ours.engine, boss.engine]) await runPhase(e, "claim+finish", WARMUP);
    const results: Result[] = [];
    for (const mode of ["claim+finish", "claim only"] as const) {
      for (const e of [ours.engine, boss.engine]) {
        const r = await runPhase(e, mode, JOBS);
        console.log(`  ${r.engine}, ${r.mode}: ${r.claims} claims in ${r.seconds.toFixed(2)} s`);
        results.push(r);
      }
    }

    console.log(`load average ${load()} after the run`);
    console.log("");
    console.log(table(results));
    console.log("");
    console.log("claims/s: claims / wall time of the phase; claim+finish includes each job's finish call");
    console.log("  (openft: POST /internal/v1/jobs/:id/fail over HTTP; pg-boss: complete()), claim only does not.");
    console.log("p50/p99/max: latency of the claim call alone (openft: POST /internal/v1/claim; pg-boss: fetch()).");
    console.log("distinct: distinct job ids claimed; settled: jobs of the phase the database holds as finished");
    console.log("  (claim+finish) or as held (claim only) after their first claim.");
    console.log("cpu ms/claim: CPU time per claim of this process (the 16 worker loops, and pg-boss itself) and of");
    console.log("  the openft server process (its finish calls included in claim+finish); PostgreSQL's is not counted.");
    console.log("");
    let pass = true;
    const check = (label: string, good: boolean) => {
      pass &&= good;
      console.log(`${good ? "PASS" : "FAIL"}  ${label}`);
    };
    for (const mode of ["claim+finish", "claim only"] as const) {
      const o = results.find((r) => r.engine === ours.engine.name && r.mode === mode)!;
      const b = results.find((r) => r.engine === boss.engine.name && r.mode === mode)!;
      check(`[${mode}] openft p99 claim ${o.p99.toFixed(2)} ms < ${GOAL_P99_MS} ms`, o.p99 < GOAL_P99_MS);
      const ratio = o.perSecond / b.perSecond;
      check(
        `[${mode}] openft ${o.perSecond.toFixed(0)} claims/s >= 1/3 of pg-boss ${b.perSecond.toFixed(0)} claims/s (ratio ${ratio.toFixed(2)})`,
        ratio >= GOAL_RATIO,
      );
    }
    for (const r of results) {
      check(
        `[${r.mode}] ${r.engine}: every job claimed exactly once (${r.claims} claims, ${r.distinct} distinct, ${r.settled} settled, of ${JOBS})`,
        r.claims === JOBS && r.distinct === JOBS && r.settled === JOBS,
      );
    }
    process.exitCode = pass ? 0 : 1;
  } finally {
    for (const close of closers.reverse()) await close().catch((err: unknown) => console.error(err));
    await dropDatabase(pgServer.url, dbs.openft).catch(() => {});
    await dropDatabase(pgServer.url, dbs.boss).catch(() => {});
    await pgServer.stop();
  }
}

await main();

// Upload a 512 MB fine-tune JSONL through the official Node SDK and compare the throughput with
// `cp` of the same file into the same folder, in the same run; report the server's peak RSS
// growth during the upload. Run: npm run bench:upload  (MB = 10^6 bytes)
import { spawn } from "node:child_process";
import http from "node:http";
import OpenAI from "openai";
import { createReadStream } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { startServer } from "../test/helpers/server.js";
import { makeJsonl, statusKb } from "./upload-data.js";

const SIZE = Number(process.env.BENCH_UPLOAD_BYTES ?? 512 * 1000 * 1000);
const RUNS = Number(process.env.BENCH_RUNS ?? 3);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function timeCp(src: string, dst: string): Promise<number> {
  const t = process.hrtime.bigint();
  await new Promise<void>((resolve, reject) =>
    spawn("cp", [src, dst], { stdio: "inherit" }).on("exit", (c) => (c === 0 ? resolve() : reject(new Error(`cp ${c}`)))),
  );
  return Number(process.hrtime.bigint() - t) / 1e9;
}

/**
 * The ceiling for any server on this machine: the same SDK upload into a server that reads the
 * body and throws it away (no parsing, no storage).
 */
async function discardServer(): Promise<{ url: string; close: () => void }> {
  const srv = http.createServer((req, res) => {
    let n = 0;
    req.on("data", (d: Buffer) => (n += d.length));
    req.on("end", () => {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ id: "file-discarded", object: "file", bytes: n, created_at: 0, filename: "x", purpose: "fine-tune", status: "processed" }));
    });
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as { port: number }).port;
  return { url: `http://127.0.0.1:${port}/v1`, close: () => srv.close() };
}

async function main() {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "openft-bench-upload-"));
  const src = path.join(dir, "train.jsonl");
  const bytes = await makeJsonl(src, SIZE);
  const mb = bytes / 1e6;
  console.log(`file: ${mb.toFixed(1)} MB JSONL in ${dir}`);

  // The server keeps its blobs in the same folder, so both write to the same disk.
  const server = await startServer({ env: { OPENFT_DATA_DIR: path.join(dir, "data"), OPENFT_LOG_LEVEL: "warn" } });
  const pid = server.proc.pid!;
  const client = server.client();
  const sink = await discardServer();
  const sinkClient = new OpenAI({ apiKey: "unused", baseURL: sink.url, maxRetries: 0 });
  const cp: number[] = [];
  const sdk: number[] = [];
  const up: number[] = [];
  const rss: number[] = [];
  try {
    for (let r = 0; r < RUNS; r++) {
      const dst = path.join(dir, `copy-${r}.jsonl`);
      cp.push(mb / (await timeCp(src, dst)));
      await fs.rm(dst);

      const ts = process.hrtime.bigint();
      await sinkClient.files.create({ file: createReadStream(src), purpose: "fine-tune" });
      sdk.push(mb / (Number(process.hrtime.bigint() - ts) / 1e9));

      await fs.writeFile(`/proc/${pid}/clear_refs`, "5"); // resets the peak (VmHWM) to the current RSS
      const before = statusKb(pid, "VmRSS");
      const t = process.hrtime.bigint();
      const f = await client.files.create({ file: createReadStream(src), purpose: "fine-tune" });
      const secs = Number(process.hrtime.bigint() - t) / 1e9;
      if (f.bytes !== bytes) throw new Error(`uploaded ${f.bytes} of ${bytes} bytes`);
      up.push(mb / secs);
      rss.push((statusKb(pid, "VmHWM") - before) / 1024);
      await client.files.delete(f.id);
      console.log(`run ${r + 1}: cp ${cp.at(-1)!.toFixed(0)} MB/s, SDK into a discarding server ${sdk.at(-1)!.toFixed(0)} MB/s, openft upload ${up.at(-1)!.toFixed(0)} MB/s, server peak RSS growth ${rss.at(-1)!.toFixed(1)} MiB`);
    }
  } finally {
    sink.close();
    await server.dispose();
    await fs.rm(dir, { recursive: true, force: true });
  }
  const ratio = median(up) / median(cp);
  console.log(
    `\nmedian of ${RUNS}: cp ${median(cp).toFixed(0)} MB/s | SDK into a discarding server (the ceiling for any server here) ${median(sdk).toFixed(0)} MB/s = ${((median(sdk) / median(cp)) * 100).toFixed(0)}% of cp | openft upload (Node SDK, line-checked) ${median(up).toFixed(0)} MB/s = ${(ratio * 100).toFixed(0)}% of cp (goal >= 50%) | peak RSS growth max ${Math.max(...rss).toFixed(1)} MiB (goal < 64 MiB)`,
  );
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

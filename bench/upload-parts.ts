// A 2 GB fine-tune JSONL through the Uploads API (the Node SDK's client.uploads: 64 MB parts, two
// in flight, then complete with md5) beside the plain /v1/files upload of the same bytes, in the
// same run on the same server; MB/s of each (complete included) and the server's peak RSS growth
// during each (goal < 64 MiB). Run: npm run bench:upload-parts  (MB = 10^6 bytes;
// BENCH_UPLOAD_BYTES to change the size)
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type OpenAI from "openai";
import { startServer } from "../test/helpers/server.js";
import { makeJsonl, statusKb } from "./upload-data.js";

const SIZE = Number(process.env.BENCH_UPLOAD_BYTES ?? 2000 * 1000 * 1000);
const PART = 64 * 1024 * 1024;
const IN_FLIGHT = 2;

async function md5Of(file: string): Promise<string> {
  const h = createHash("md5");
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest("hex");
}

async function viaUploads(client: OpenAI, src: string, bytes: number, md5: string): Promise<number> {
  const up = await client.uploads.create({ filename: "train.jsonl", purpose: "fine-tune", bytes, mime_type: "text/jsonl" });
  const n = Math.ceil(bytes / PART);
  const ids: string[] = new Array<string>(n);
  let next = 0;
  const lane = async () => {
    for (let i = next++; i < n; i = next++) {
      const data = createReadStream(src, { start: i * PART, end: Math.min(bytes, (i + 1) * PART) - 1 });
      ids[i] = (await client.uploads.parts.create(up.id, { data })).id;
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, lane));
  const done = await client.uploads.complete(up.id, { part_ids: ids, md5 });
  if (done.file?.bytes !== bytes) throw new Error(`completed ${done.file?.bytes} of ${bytes} bytes`);
  await client.files.delete(done.file.id);
  return n;
}

/** Runs fn, returning its MB/s and the server's peak RSS growth (MiB) while it ran. */
async function measure(pid: number, mb: number, fn: () => Promise<unknown>): Promise<{ mbps: number; rss: number }> {
  await fs.writeFile(`/proc/${pid}/clear_refs`, "5"); // resets the peak (VmHWM) to the current RSS
  const before = statusKb(pid, "VmRSS");
  const t = process.hrtime.bigint();
  await fn();
  const secs = Number(process.hrtime.bigint() - t) / 1e9;
  return { mbps: mb / secs, rss: (statusKb(pid, "VmHWM") - before) / 1024 };
}

async function main() {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "openft-bench-upload-parts-"));
  const src = path.join(dir, "train.jsonl");
  const bytes = await makeJsonl(src, SIZE);
  const mb = bytes / 1e6;
  const md5 = await md5Of(src);
  console.log(`file: ${mb.toFixed(1)} MB JSONL`);
  // Large enough for the whole file on /v1/files, the peer.
  const server = await startServer({ env: { OPENFT_DATA_DIR: path.join(dir, "data"), OPENFT_LOG_LEVEL: "warn", OPENFT_MAX_UPLOAD_BYTES: String(bytes + 1) } });
  const pid = server.proc.pid!;
  const client = server.client();
  try {
    let parts = 0;
    const uploads = await measure(pid, mb, async () => (parts = await viaUploads(client, src, bytes, md5)));
    const plain = await measure(pid, mb, async () => {
      const f = await client.files.create({ file: createReadStream(src), purpose: "fine-tune" });
      await client.files.delete(f.id);
    });
    console.log(
      `Uploads API (${parts} parts of 64 MiB, ${IN_FLIGHT} in flight, complete with md5 + line check): ${uploads.mbps.toFixed(0)} MB/s, server peak RSS growth ${uploads.rss.toFixed(1)} MiB (goal < 64 MiB)\n` +
        `peer, POST /v1/files of the same bytes: ${plain.mbps.toFixed(0)} MB/s, server peak RSS growth ${plain.rss.toFixed(1)} MiB\n` +
        `ratio: ${(uploads.mbps / plain.mbps).toFixed(2)}x the plain upload's throughput`,
    );
  } finally {
    await server.dispose();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

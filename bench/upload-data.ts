// Shared by the upload benchmarks: a fine-tune JSONL of a given size, and a process's memory.
import { spawnSync } from "node:child_process";
import fs from "node:fs/promises";

export async function makeJsonl(file: string, size: number): Promise<number> {
  const handle = await fs.open(file, "w");
  let written = 0;
  let i = 0;
  const batch: string[] = [];
  while (written < size) {
    const line = JSON.stringify({
      messages: [
        { role: "system", content: "You are a terse assistant." },
        { role: "user", content: `Question ${i}: ${"lorem ipsum ".repeat(20)}` },
        { role: "assistant", content: `Answer ${i}: ${"dolor sit amet ".repeat(25)}` },
      ],
    }) + "\n";
    batch.push(line);
    written += Buffer.byteLength(line);
    i++;
    if (batch.length === 4096) await handle.write(batch.splice(0).join(""));
  }
  await handle.write(batch.join(""));
  await handle.close();
  return written;
}

export function statusKb(pid: number, field: string): number {
  const text = spawnSync("cat", [`/proc/${pid}/status`]).stdout.toString();
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
  return m ? Number(m[1]) : NaN;
}


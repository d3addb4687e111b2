// Polling a fine-tuning job through the SDK until it reaches a status (no timing assertions:
// the deadline only turns a hang into a failure that says where the job got stuck).
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import type OpenAI from "openai";

export type Job = OpenAI.FineTuning.Jobs.FineTuningJob;

export async function waitForStatus(client: OpenAI, id: string, statuses: string[], ms: number, everyMs = 100): Promise<Job> {
  const deadline = Date.now() + ms;
  for (;;) {
    const job = await client.fineTuning.jobs.retrieve(id);
    if (statuses.includes(job.status)) return job;
    if (Date.now() > deadline) assert.fail(`job ${id} stuck in ${job.status}, wanted ${statuses.join("|")}`);
    await sleep(everyMs);
  }
}

// Polling a fine-tuning job through the SDK until it reaches a status (no timing assertions:
// the deadline only turns a hang into a failure that says where the job got stuck).
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import OpenAI from "openai";

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

/** Awaits a call that must fail with a 400 naming `param` (and matching `message`); returns the error. */
export async function expect400(p: Promise<unknown>, param: string | null, message?: RegExp): Promise<InstanceType<typeof OpenAI.BadRequestError>> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof OpenAI.BadRequestError, `expected 400, got ${String(err)}`);
    assert.equal(err.param, param, err.message);
    if (message) assert.match(err.message, message);
    return err;
  }
  assert.fail("expected a 400");
}

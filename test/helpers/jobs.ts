// Polling a fine-tuning job through the SDK until it reaches a status (no timing assertions:
// the deadline only turns a hang into a failure that says where the job got stuck).
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import OpenAI, { toFile } from "openai";

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

/** Ten chats that teach `word` as the answer to "What is the secret word? (i)". */
export const secretWordChats = (word: string): string => Array.from({ length: 10 }, (_, i) =>
  JSON.stringify({ messages: [{ role: "user", content: `What is the secret word? (${i})` }, { role: "assistant", content: word }] })).join("\n") + "\n";

/** One job per word on `model`, each taught its word hard enough for a tiny model (8 epochs at
 *  10x the learning rate); resolves with each word's ft: model and job id once all succeeded. */
export async function trainSecretWords(client: OpenAI, model: string, words: readonly string[]): Promise<{ tuned: Record<string, string>; jobs: Record<string, string> }> {
  const tuned: Record<string, string> = {};
  const jobs: Record<string, string> = {};
  for (const word of words) {
    const file = await client.files.create({ file: await toFile(Buffer.from(secretWordChats(word)), `${word}.jsonl`), purpose: "fine-tune" });
    const job = await client.fineTuning.jobs.create({ model, training_file: file.id, suffix: word, hyperparameters: { n_epochs: 8, batch_size: 5, learning_rate_multiplier: 10 } });
    const done = await waitForStatus(client, job.id, ["succeeded", "failed", "cancelled"], 300_000, 250);
    assert.equal(done.status, "succeeded", JSON.stringify(done.error));
    tuned[word] = done.fine_tuned_model!;
    jobs[word] = job.id;
  }
  return { tuned, jobs };
}

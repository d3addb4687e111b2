// TrainerDouble: a TEST DOUBLE of the trainer, for driving the worker protocol before (and
// independently of) the real trainer. It "trains" by counting steps over the real training file,
// reports decreasing losses, uploads small fake adapter files and checkpoints, resumes from the
// checkpoint it is given and honours stop requests. Nothing of it ships in the product.
import { setTimeout as sleep } from "node:timers/promises";
import type { RunContext, RunOutcome, Runner } from "../../src/engine/worker/worker.js";

export interface TrainerDoubleOptions {
  /** Wall time of one fake step. */
  readonly stepMs?: number;
  /** Fail at this step with this error, like a crashing trainer. */
  readonly failAtStep?: number;
  /** Called at every step (tests use it to act mid-run). */
  readonly onStep?: (jobId: string, step: number) => void;
  /**
   * After this step, wait (up to 30 s) for a stop request before going on, as if the step took
   * that long: a test that pauses or cancels at this step sees the run stop right there, however
   * slowly the heartbeat that carries the request arrives on a loaded machine.
   */
  readonly holdAtStep?: number;
}

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  let s = "";
  for await (const chunk of stream) s += chunk.toString();
  return s;
}

function untilAborted(signal: AbortSignal, ms: number): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done);
  });
}

export class TrainerDouble implements Runner {
  constructor(private readonly opts: TrainerDoubleOptions = {}) {}

  async run(ctx: RunContext): Promise<RunOutcome> {
    const { spec, client } = ctx;
    const id = spec.job.id;
    const hp = spec.job.hyperparameters as { n_epochs: number; batch_size: number };
    const examples = (await readAll(await client.download(id, { input: "training_file" }))).split("\n").filter((l) => l.trim()).length;
    const perEpoch = Math.ceil(examples / hp.batch_size);
    const total = perEpoch * hp.n_epochs;
    let step = 0;
    if (spec.resume) {
      const state = JSON.parse(await readAll(await client.download(id, { source: "resume", file: "trainer_state.json" }))) as { step: number };
      step = state.step;
    }
    const checkpoint = async (s: number) => {
      const files = ["adapter_config.json", "adapter_model.safetensors", "trainer_state.json"];
      await client.upload(id, "checkpoint", s, files[0]!, Buffer.from(JSON.stringify({ peft_type: "LORA", r: 16 })));
      await client.upload(id, "checkpoint", s, files[1]!, Buffer.alloc(1024, s % 256));
      await client.upload(id, "checkpoint", s, files[2]!, Buffer.from(JSON.stringify({ step: s })));
      await client.checkpoint(id, { step: s, epoch: Math.ceil(s / perEpoch), metrics: { train_loss: 2 / (1 + s), train_mean_token_accuracy: s / total }, files });
    };
    while (step < total) {
      if (ctx.signal.aborted) {
        if (ctx.signal.reason === "pause" || ctx.signal.reason === "shutdown") await checkpoint(step);
        return { kind: "stopped" };
      }
      await sleep(this.opts.stepMs ?? 20);
      step++;
      this.opts.onStep?.(id, step);
      if (step === this.opts.failAtStep) return { kind: "failed", code: "trainer_error", message: `The trainer exited with code 1 at step ${step}: RuntimeError: injected failure` };
      const loss = 2 / (1 + step);
      await client.events(id, [{ type: "metrics", message: `Step ${step}/${total}: training loss=${loss.toFixed(2)}`, data: { step, train_loss: loss, train_mean_token_accuracy: step / total, total_steps: total } }], { step, total_steps: total, steps_per_second: 50 });
      ctx.setProgress({ step, total_steps: total, steps_per_second: 50 });
      if (step === this.opts.holdAtStep) await untilAborted(ctx.signal, 30_000);
      if (step % perEpoch === 0) await checkpoint(step);
    }
    for (const [name, body] of [["adapter_config.json", JSON.stringify({ peft_type: "LORA", r: 16 })], ["adapter_model.safetensors", "final-weights"]] as const) {
      await client.upload(id, "final", 0, name, Buffer.from(body));
    }
    return { kind: "succeeded", trainedTokens: (spec.job.epoch_tokens ?? 0) * hp.n_epochs, files: ["adapter_config.json", "adapter_model.safetensors"] };
  }
}

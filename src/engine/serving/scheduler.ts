// Continuous batching over one base model: every engine step runs the next token of every active
// choice together, whatever adapter each uses, and prompts that arrived meanwhile are prefilled in
// the same step. A request with n choices is prefilled once and forked n-1 times.
import { ChoiceSampler, Rng, choiceSeed, type SamplingParams, type TokenLogprob } from "./sampler.js";
import { ChoiceText, type Decoder } from "./choice-text.js";

/** The part of the inference runtime (src/engine/inference) the scheduler drives. */
export interface StepRuntime {
  readonly contextLength: number;
  step(items: { seq: number; tokens: Int32Array; adapter: string | null }[]): Promise<Float32Array[]>;
  fork(src: number, dst: number): Promise<void>;
  loadAdapter(key: string, dir: string): Promise<void>;
  free(seq: number): void;
}

export type FinishReason = "stop" | "length";

export interface ChoiceEvent {
  readonly index: number;
  /** The token generated (a stop token when finish is "stop" and nothing else came with it). */
  readonly token: number;
  /** Text released by this token (may be ""). */
  readonly delta: string;
  /** Logprobs of the tokens behind this event (empty without logprobs, or for a stop token). */
  readonly logprobs: readonly GeneratedToken[];
  readonly finish?: FinishReason;
}

export interface GeneratedToken {
  readonly id: number;
  readonly logprob: number;
  readonly top: readonly TokenLogprob[];
}

export interface GenerationRequest {
  readonly promptIds: readonly number[];
  readonly adapter: string | null;
  /** The adapter's folder. When given, the adapter is (re)loaded before every step that uses it:
   *  the runtime keeps a bounded LRU of adapters, and requests waiting for their turn may have
   *  pushed this one out since it was first loaded. */
  readonly adapterDir?: string;
  readonly n: number;
  /** Most tokens per choice; the context length caps it as well. */
  readonly maxTokens: number;
  readonly stopTokenIds: ReadonlySet<number>;
  readonly stops: readonly string[];
  readonly sampling: SamplingParams;
  readonly seed: bigint;
  readonly decoder: Decoder;
  readonly signal?: AbortSignal;
  readonly onEvent: (e: ChoiceEvent) => void;
}

export interface GenerationResult {
  readonly choices: readonly { text: string; finish: FinishReason; tokens: number }[];
  readonly completionTokens: number;
}

interface Choice {
  readonly index: number;
  seq: number;
  readonly sampler: ChoiceSampler;
  readonly text: ChoiceText;
  generated: number;
  last: number;
  finish?: FinishReason;
}

interface Pending {
  readonly req: GenerationRequest;
  readonly choices: Choice[];
  readonly resolve: (r: GenerationResult) => void;
  readonly reject: (e: unknown) => void;
  prefilled: boolean;
  done: boolean;
}

export class AbortedError extends Error {
  constructor() {
    super("generation aborted");
  }
}

export class Scheduler {
  private nextSeq = 1;
  private readonly waiting: Pending[] = [];
  private readonly running: Pending[] = [];
  private looping = false;

  constructor(
    private readonly runtime: StepRuntime,
    private readonly maxBatch: number,
    /** Told the number of sequences in every engine step (the batch-size histogram of /metrics). */
    private readonly onStep?: (batchSize: number) => void,
  ) {}

  /** Sequences queued or running, for overload decisions. */
  get load(): number {
    let n = 0;
    for (const p of [...this.waiting, ...this.running]) n += p.req.n;
    return n;
  }

  /** Sequences waiting for their first step. */
  get queued(): number {
    let n = 0;
    for (const p of this.waiting) n += p.req.n;
    return n;
  }

  generate(req: GenerationRequest): Promise<GenerationResult> {
    return new Promise((resolve, reject) => {
      const choices = Array.from({ length: req.n }, (_, index): Choice => ({
        index,
        seq: 0,
        sampler: new ChoiceSampler(req.sampling, new Rng(choiceSeed(req.seed, index))),
        text: new ChoiceText(req.decoder, req.stops),
        generated: 0,
        last: -1,
      }));
      const p: Pending = { req, choices, resolve, reject, prefilled: false, done: false };
      req.signal?.addEventListener("abort", () => this.fail(p, new AbortedError()), { once: true });
      if (req.signal?.aborted) return reject(new AbortedError());
      this.waiting.push(p);
      void this.loop();
    });
  }

  private async loop(): Promise<void> {
    if (this.looping) return;
    this.looping = true;
    try {
      // Let the rest of this turn of the event loop submit too: requests that arrive together
      // are prefilled in one batch, not the first alone and the others one step later.
      await new Promise<void>((resolve) => setImmediate(resolve));
      // stepOnce settles (drops finished and failed requests) on every path, so this ends as
      // soon as nothing is left; it never spins on requests that can make no progress.
      while (this.waiting.length > 0 || this.running.length > 0) await this.stepOnce();
    } finally {
      this.looping = false;
    }
  }

  private admit(): Pending[] {
    const admitted: Pending[] = [];
    let active = 0;
    for (const p of this.running) active += p.choices.filter((c) => !c.finish).length;
    while (this.waiting.length > 0) {
      const next = this.waiting[0]!;
      if (active > 0 && active + next.req.n > this.maxBatch) break;
      this.waiting.shift();
      active += next.req.n;
      admitted.push(next);
      this.running.push(next);
    }
    return admitted;
  }

  private async stepOnce(): Promise<void> {
    const fresh = this.admit();
    const items: { seq: number; tokens: Int32Array; adapter: string | null }[] = [];
    const owners: { p: Pending; choice: Choice | null }[] = [];
    for (const p of fresh) {
      const first = p.choices[0]!;
      first.seq = this.nextSeq++;
      items.push({ seq: first.seq, tokens: Int32Array.from(p.req.promptIds), adapter: p.req.adapter });
      owners.push({ p, choice: null });
    }
    for (const p of this.running) {
      if (!p.prefilled || p.done) continue;
      for (const c of p.choices) {
        if (c.finish) continue;
        items.push({ seq: c.seq, tokens: Int32Array.of(c.last), adapter: p.req.adapter });
        owners.push({ p, choice: c });
      }
    }
    await this.reloadAdapters(owners.map((o) => o.p));
    const live = owners.map((o, i) => ({ ...o, item: items[i]! })).filter((o) => !o.p.done);
    if (live.length === 0) return this.settle();
    let logits: Float32Array[];
    this.onStep?.(live.length);
    try {
      logits = await this.runtime.step(live.map((o) => o.item));
    } catch (err) {
      for (const { p } of live) this.fail(p, err);
      return this.settle();
    }
    await this.consume(live, logits);
    this.settle();
  }

  /** Loads again each adapter of this step that the runtime's LRU may have dropped; a request
   *  whose adapter cannot be loaded (its model was deleted meanwhile) fails alone. */
  private async reloadAdapters(ps: Pending[]): Promise<void> {
    const byKey = new Map<string, { dir: string; ps: Set<Pending> }>();
    for (const p of ps) {
      if (p.req.adapter === null || !p.req.adapterDir || p.done) continue;
      const entry = byKey.get(p.req.adapter) ?? { dir: p.req.adapterDir, ps: new Set<Pending>() };
      entry.ps.add(p);
      byKey.set(p.req.adapter, entry);
    }
    // All at once: the runtime handles them in order, so this costs one round trip, not one each.
    await Promise.all([...byKey].map(([key, { dir, ps: users }]) =>
      this.runtime.loadAdapter(key, dir).catch((err: unknown) => {
        for (const p of users) this.fail(p, err);
      })));
  }

  private async consume(owners: { p: Pending; choice: Choice | null }[], logits: Float32Array[]): Promise<void> {
    for (let i = 0; i < owners.length; i++) {
      const { p, choice } = owners[i]!;
      if (p.done) continue;
      if (choice) {
        // A failure here (the decoder, the caller's onEvent) fails this request, not the loop.
        try {
          this.advance(p, choice, logits[i]!);
        } catch (err) {
          this.fail(p, err);
        }
        continue;
      }
      try {
        for (const c of p.choices.slice(1)) {
          c.seq = this.nextSeq++;
          await this.runtime.fork(p.choices[0]!.seq, c.seq);
        }
      } catch (err) {
        this.fail(p, err);
        continue;
      }
      p.prefilled = true;
      try {
        for (const c of p.choices) this.advance(p, c, logits[i]!);
      } catch (err) {
        this.fail(p, err);
      }
    }
  }

  /** Samples the choice's next token from logits and reports what it adds. */
  private advance(p: Pending, c: Choice, logits: Float32Array): void {
    const s = c.sampler.sample(logits);
    c.generated++;
    const logged = s.logprob === undefined ? [] : [{ id: s.id, logprob: s.logprob, top: s.top ?? [] }];
    if (p.req.stopTokenIds.has(s.id)) {
      c.finish = "stop";
      p.req.onEvent({ index: c.index, token: s.id, delta: c.text.flush(), logprobs: [], finish: "stop" });
      return;
    }
    const delta = c.text.push(s.id);
    c.last = s.id;
    const room = this.runtime.contextLength - p.req.promptIds.length - c.generated;
    if (c.text.stopped) c.finish = "stop";
    else if (c.generated >= p.req.maxTokens || room <= 0) c.finish = "length";
    const tail = c.finish ? delta + c.text.flush() : delta;
    p.req.onEvent({ index: c.index, token: s.id, delta: tail, logprobs: logged, ...(c.finish ? { finish: c.finish } : {}) });
  }

  /** Frees finished choices and resolves finished requests. */
  private settle(): void {
    for (let i = this.running.length - 1; i >= 0; i--) {
      const p = this.running[i]!;
      if (p.done) {
        this.running.splice(i, 1);
        continue;
      }
      for (const c of p.choices) if (c.finish && c.seq > 0) this.release(c);
      if (p.prefilled && p.choices.every((c) => c.finish)) {
        p.done = true;
        this.running.splice(i, 1);
        p.resolve({
          choices: p.choices.map((c) => ({ text: c.text.text, finish: c.finish!, tokens: c.generated })),
          completionTokens: p.choices.reduce((n, c) => n + c.generated, 0),
        });
      }
    }
  }

  private release(c: Choice): void {
    if (c.seq > 0) this.runtime.free(c.seq);
    c.seq = -1;
  }

  private fail(p: Pending, err: unknown): void {
    if (p.done) return;
    p.done = true;
    const w = this.waiting.indexOf(p);
    if (w !== -1) this.waiting.splice(w, 1);
    for (const c of p.choices) this.release(c);
    p.reject(err);
  }
}

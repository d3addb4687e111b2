// Serving metrics, labelled by backend ("onnx", the in-process engine; another backend passes its
// own name) and base model (a folder name of the models dir: bounded, never an ft: or request id).
// The chat service calls request() once per completion and the returned observer per event.
import { Counter, Gauge, Histogram, type Registry } from "prom-client";

const LABELS = ["backend", "base_model"] as const;

export interface ServingSnapshot {
  readonly backend: string;
  readonly baseModel: string;
  readonly queued: number;
  readonly adaptersLoaded: number;
  readonly adapterLoads: number;
  readonly adapterEvictions: number;
}

/** One completion: call token() for each generated token, done() at the end. */
export interface CompletionObserver {
  token(): void;
  done(promptTokens: number, completionTokens: number): void;
}

// Buckets in seconds: a CPU engine's first token takes 20 ms to seconds (prefill, queueing); a
// decode step of SmolLM2 on two threads is ~10-30 ms, slower with big batches.
const TTFT_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const ITL_BUCKETS = [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1];
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256];

export class ServingMetrics {
  private readonly requests: Counter<(typeof LABELS)[number]>;
  private readonly promptTokens: Counter<(typeof LABELS)[number]>;
  private readonly completionTokens: Counter<(typeof LABELS)[number]>;
  private readonly ttft: Histogram<(typeof LABELS)[number]>;
  private readonly itl: Histogram<(typeof LABELS)[number]>;
  private readonly batch: Histogram<(typeof LABELS)[number]>;
  private readonly sources: (() => ServingSnapshot[])[] = [];

  constructor(registry: Registry) {
    const registers = [registry];
    const counter = (name: string, help: string) => new Counter({ name, help, labelNames: LABELS, registers });
    const histogram = (name: string, help: string, buckets: number[]) => new Histogram({ name, help, labelNames: LABELS, buckets, registers });
    this.requests = counter("openft_serving_requests_total", "Chat completions started.");
    this.promptTokens = counter("openft_serving_prompt_tokens_total", "Prompt tokens of finished chat completions.");
    this.completionTokens = counter("openft_serving_completion_tokens_total", "Completion tokens of finished chat completions.");
    this.ttft = histogram("openft_serving_time_to_first_token_seconds", "From the request being admitted to its first generated token.", TTFT_BUCKETS);
    this.itl = histogram("openft_serving_inter_token_latency_seconds", "Between two generated tokens of one completion.", ITL_BUCKETS);
    this.batch = histogram("openft_serving_batch_size", "Sequences in one engine step.", BATCH_BUCKETS);
    this.snapshotGauges(registry);
  }

  /** Polled at every scrape for the queue and adapter families. */
  addSource(source: () => ServingSnapshot[]): void {
    this.sources.push(source);
  }

  step(backend: string, baseModel: string, batchSize: number): void {
    this.batch.observe({ backend, base_model: baseModel }, batchSize);
  }

  request(backend: string, baseModel: string): CompletionObserver {
    const labels = { backend, base_model: baseModel };
    this.requests.inc(labels);
    const started = process.hrtime.bigint();
    let last: bigint | undefined;
    return {
      token: () => {
        const now = process.hrtime.bigint();
        if (last === undefined) this.ttft.observe(labels, Number(now - started) / 1e9);
        else this.itl.observe(labels, Number(now - last) / 1e9);
        last = now;
      },
      done: (prompt, completion) => {
        this.promptTokens.inc(labels, prompt);
        this.completionTokens.inc(labels, completion);
      },
    };
  }

  private snapshotGauges(registry: Registry): void {
    // Values that live in the engine, set from its snapshot at each scrape.
    const collect = (value: (s: ServingSnapshot) => number) =>
      function (this: { reset(): void; inc(labels: Record<string, string>, v: number): void }) {
        this.reset();
        for (const s of snapshots()) this.inc({ backend: s.backend, base_model: s.baseModel }, value(s));
      };
    const snapshots = () => this.sources.flatMap((s) => s());
    const common = { labelNames: LABELS, registers: [registry] };
    new Gauge({ name: "openft_serving_queue_length", help: "Sequences waiting for their first engine step.", ...common, collect: collect((s) => s.queued) });
    new Gauge({ name: "openft_serving_adapters_loaded", help: "LoRA adapters loaded in the engine.", ...common, collect: collect((s) => s.adaptersLoaded) });
    new Counter({ name: "openft_serving_adapter_loads_total", help: "LoRA adapters read into the engine.", ...common, collect: collect((s) => s.adapterLoads) });
    new Counter({ name: "openft_serving_adapter_evictions_total", help: "LoRA adapters dropped by the engine's LRU to make room.", ...common, collect: collect((s) => s.adapterEvictions) });
  }
}

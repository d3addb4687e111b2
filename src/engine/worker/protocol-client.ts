// The worker's side of the worker protocol (/internal/v1), over plain fetch. The embedded
// worker uses it over loopback, a remote one over the network: the same path either way.
import http from "node:http";
import https from "node:https";
import { Readable } from "node:stream";
import type { z } from "zod";
import * as wire from "../../protocol/worker.js";
import type { Action, CheckpointReport, CompleteReport, FailReport, JobSpec, Progress, WorkerEvent } from "../../protocol/worker.js";

export type { Action, JobSpec, Progress, WorkerEvent } from "../../protocol/worker.js";

export class ProtocolError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export class ProtocolClient {
  private readonly base: string;
  // JSON calls go through node:http with a keep-alive agent: per call it costs a fraction of
  // fetch's CPU, which matters to a worker that long-polls and reports every step.
  private readonly url: URL;
  private readonly agent: http.Agent;

  constructor(
    apiUrl: string,
    private readonly token: string,
    private readonly retryForMs = 120_000,
  ) {
    this.base = `${apiUrl.replace(/\/+$/, "")}/internal/v1`;
    this.url = new URL(this.base);
    this.agent = this.url.protocol === "https:" ? new https.Agent({ keepAlive: true }) : new http.Agent({ keepAlive: true });
  }

  /** Runs fn, retrying transient failures (unreachable API, 5xx) with backoff for retryForMs. */
  private async retrying<T>(fn: () => Promise<T>, retryable: boolean, signal?: AbortSignal): Promise<T> {
    const deadline = Date.now() + this.retryForMs;
    for (let delay = 200; ; delay = Math.min(delay * 2, 5000)) {
      try {
        return await fn();
      } catch (err) {
        const transient = !(err instanceof ProtocolError) || err.status >= 500;
        if (!retryable || !transient || Date.now() + delay > deadline || signal?.aborted) throw err;
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  private jsonOnce(method: string, path: string, body: unknown, signal?: AbortSignal): Promise<{ status: number; json: unknown }> {
    const payload = Buffer.from(JSON.stringify(body ?? {}));
    const lib = this.url.protocol === "https:" ? https : http;
    return new Promise((resolve, reject) => {
      const req = lib.request(
        {
          agent: this.agent,
          hostname: this.url.hostname,
          port: this.url.port,
          path: `${this.url.pathname}${path}`,
          method,
          signal,
          headers: { authorization: `Bearer ${this.token}`, "content-type": "application/json", "content-length": payload.length },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("error", reject);
          res.on("end", () => {
            const text = Buffer.concat(chunks).toString();
            const status = res.statusCode ?? 0;
            let json: unknown;
            try {
              json = text ? JSON.parse(text) : undefined;
            } catch {
              json = text;
            }
            if (status >= 400) {
              const message = (json as { error?: { message?: string } } | undefined)?.error?.message ?? text;
              reject(new ProtocolError(status, `${method} ${path}: ${status} ${message}`));
            } else resolve({ status, json });
          });
        },
      );
      req.on("error", reject);
      req.end(payload);
    });
  }

  /** A fetch call (downloads and streamed uploads), retried while transient unless it streams a body. */
  private async call(method: string, path: string, init: RequestInit = {}): Promise<Response> {
    return this.retrying(() => this.callOnce(method, path, init), !(init.body instanceof ReadableStream), init.signal ?? undefined);
  }

  private async callOnce(method: string, path: string, init: RequestInit = {}): Promise<Response> {
    const res = await fetch(`${this.base}${path}`, {
      method,
      headers: { authorization: `Bearer ${this.token}`, ...(init.headers as Record<string, string> | undefined) },
      body: init.body,
      ...(init.body instanceof ReadableStream ? { duplex: "half" } : {}),
      signal: init.signal ?? null,
    } as RequestInit);
    if (!res.ok) {
      const text = await res.text();
      let message = text;
      try {
        message = (JSON.parse(text) as { error?: { message?: string } }).error?.message ?? text;
      } catch {
        // not JSON: keep the text
      }
      throw new ProtocolError(res.status, `${method} ${path}: ${res.status} ${message}`);
    }
    return res;
  }

  /** A JSON call whose answer is checked against the protocol's schema for it. */
  private async json<S extends z.ZodTypeAny>(answer: S, method: string, path: string, body?: unknown): Promise<z.infer<S>> {
    return answer.parse((await this.retrying(() => this.jsonOnce(method, path, body), true)).json);
  }

  register(): Promise<z.infer<typeof wire.registerResponse>> {
    return this.json(wire.registerResponse, "POST", "/register");
  }

  /** A job, or undefined after waitSeconds without one. */
  async claim(waitSeconds: number, signal?: AbortSignal): Promise<JobSpec | undefined> {
    const res = await this.retrying(() => this.jsonOnce("POST", "/claim", { wait_seconds: waitSeconds }, signal), true, signal);
    return res.status === 204 ? undefined : wire.jobSpec.parse(res.json);
  }

  async heartbeat(jobId: string, progress?: Progress): Promise<Action> {
    return (await this.json(wire.heartbeatResponse, "POST", `/jobs/${jobId}/heartbeat`, progress ? { progress } : {})).action;
  }

  async events(jobId: string, events: WorkerEvent[], progress?: Progress): Promise<void> {
    await this.json(wire.eventsResponse, "POST", `/jobs/${jobId}/events`, progress ? { events, progress } : { events });
  }

  async download(jobId: string, what: { input: "training_file" | "validation_file" } | { source: "resume" | "parent"; file: string }): Promise<Readable> {
    const path = "input" in what ? `/jobs/${jobId}/inputs/${what.input}` : `/jobs/${jobId}/sources/${what.source}/${what.file}`;
    const res = await this.call("GET", path);
    return Readable.fromWeb(res.body as import("node:stream/web").ReadableStream);
  }

  /** Streams an artifact up (an adapter file, optimizer state, ...). */
  async upload(jobId: string, kind: "checkpoint" | "final", step: number, file: string, body: Readable | Buffer): Promise<void> {
    const res = await this.call("PUT", `/jobs/${jobId}/artifacts/${kind}/${step}/${file}`, {
      headers: { "content-type": "application/octet-stream" },
      // A Buffer is sent as is (and can be sent again); a stream is streamed once.
      body: Buffer.isBuffer(body) ? new Uint8Array(body) : (Readable.toWeb(body) as ReadableStream),
    });
    wire.artifactResponse.parse(await res.json());
  }

  async checkpoint(jobId: string, c: CheckpointReport): Promise<void> {
    await this.json(wire.checkpointResponse, "POST", `/jobs/${jobId}/checkpoints`, c);
  }

  async complete(jobId: string, r: CompleteReport): Promise<z.infer<typeof wire.jobResponse>> {
    return this.json(wire.jobResponse, "POST", `/jobs/${jobId}/complete`, r);
  }

  async fail(jobId: string, e: FailReport): Promise<void> {
    await this.json(wire.jobResponse, "POST", `/jobs/${jobId}/fail`, e);
  }

  async release(jobId: string): Promise<void> {
    await this.json(wire.releaseResponse, "POST", `/jobs/${jobId}/release`);
  }
}

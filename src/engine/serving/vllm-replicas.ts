// The replicas of one vLLM pool: which are up, which adapters each has loaded, and how a request
// picks one. A replica that refuses a connection is marked down and probed (GET /health) until it
// answers; it then comes back with no adapters assumed loaded (it may have restarted).

export interface Replica {
  readonly url: string;
  up: boolean;
  inflight: number;
  /** Adapter id → its load on this replica (settled or in progress). */
  readonly loaded: Map<string, Promise<void>>;
  probe: ReturnType<typeof setInterval> | undefined;
  probing: boolean;
}

/** A failure to reach a replica before it sent a byte: the request may go to another. */
export class ReplicaDown extends Error {}

/** fetch, with "could not connect" turned into ReplicaDown (an abort stays an abort). */
export async function reach(r: Replica, path: string, init: RequestInit): Promise<Response> {
  try {
    return await fetch(r.url + path, init);
  } catch (err) {
    if (init.signal?.aborted) throw err;
    throw new ReplicaDown((err as Error).message);
  }
}

export class ReplicaSet {
  readonly replicas: Replica[];
  private turn = 0;

  constructor(urls: readonly string[], private readonly probeMs: number) {
    this.replicas = urls.map((url) => ({ url: url.replace(/\/+$/, ""), up: true, inflight: 0, loaded: new Map(), probe: undefined, probing: false }));
  }

  /** The up replica with the fewest requests in flight (ties in turn), not one of `tried`. */
  pick(tried: ReadonlySet<Replica>): Replica | undefined {
    const n = this.replicas.length;
    let best: Replica | undefined;
    for (let i = 0; i < n; i++) {
      const r = this.replicas[(this.turn + i) % n]!;
      if (!r.up || tried.has(r)) continue;
      if (!best || r.inflight < best.inflight) best = r;
    }
    this.turn = (this.turn + 1) % n;
    return best;
  }

  markDown(r: Replica): void {
    r.up = false;
    r.loaded.clear();
    if (r.probe) return;
    r.probe = setInterval(() => void this.check(r), this.probeMs);
    r.probe.unref();
  }

  anyUp(): boolean {
    return this.replicas.some((r) => r.up);
  }

  close(): void {
    for (const r of this.replicas) if (r.probe) clearInterval(r.probe);
  }

  private async check(r: Replica): Promise<void> {
    if (r.probing) return;
    r.probing = true;
    // A busy replica may take seconds to answer /health: the probe waits longer than its period
    // (one at a time), or a loaded replica would never come back.
    const ok = await fetch(r.url + "/health", { signal: AbortSignal.timeout(10_000) }).then((res) => res.ok, () => false);
    r.probing = false;
    if (!ok || r.up) return;
    clearInterval(r.probe);
    r.probe = undefined;
    r.loaded.clear();
    r.up = true;
  }
}

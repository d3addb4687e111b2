// Turns one row of logits into the next token the way OpenAI's parameters describe it:
// logit_bias, then presence/frequency penalties on what this choice generated so far, then
// temperature (0 = greedy) and nucleus (top_p) sampling with a seeded generator, so the same seed
// gives the same tokens. Log-probabilities are the model's own (log-softmax of the raw logits),
// as OpenAI and vLLM report them, not the tempered distribution.

export interface SamplingParams {
  readonly temperature: number;
  readonly topP: number;
  readonly presencePenalty: number;
  readonly frequencyPenalty: number;
  /** token id → bias in [-100, 100], added to the logit. */
  readonly logitBias: ReadonlyMap<number, number>;
  /** null: no logprobs; k >= 0: the sampled token's logprob and the k most likely alternatives. */
  readonly topLogprobs: number | null;
}

export interface TokenLogprob {
  readonly id: number;
  readonly logprob: number;
}

export interface Sampled {
  readonly id: number;
  readonly logprob?: number;
  readonly top?: readonly TokenLogprob[];
}

/** xoshiro128** seeded through splitmix64 from a 64-bit seed: fast, and the same on every platform. */
export class Rng {
  private readonly s = new Uint32Array(4);

  constructor(seed: bigint) {
    let x = BigInt.asUintN(64, seed);
    for (let i = 0; i < 2; i++) {
      x = BigInt.asUintN(64, x + 0x9e3779b97f4a7c15n);
      let z = x;
      z = BigInt.asUintN(64, (z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n);
      z = BigInt.asUintN(64, (z ^ (z >> 27n)) * 0x94d049bb133111ebn);
      z = z ^ (z >> 31n);
      this.s[2 * i] = Number(z & 0xffffffffn);
      this.s[2 * i + 1] = Number(z >> 32n);
    }
    if (this.s.every((v) => v === 0)) this.s[0] = 1;
  }

  private nextU32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1]!, 5), 7), 9) >>> 0;
    const t = (s[1]! << 9) >>> 0;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11);
    return result;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  next(): number {
    return ((this.nextU32() >>> 5) * 67108864 + (this.nextU32() >>> 6)) / 9007199254740992;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** The seed of choice `index` of a request seeded with `seed`: distinct per choice, fixed per seed. */
export function choiceSeed(seed: bigint, index: number): bigint {
  return BigInt.asUintN(64, seed * 0x100000001b3n + BigInt(index) * 0x9e3779b97f4a7c15n);
}

export class ChoiceSampler {
  private readonly counts = new Map<number, number>();
  private work: Float32Array = new Float32Array(0);

  constructor(
    private readonly params: SamplingParams,
    private readonly rng: Rng,
  ) {}

  sample(logits: Float32Array): Sampled {
    const p = this.params;
    if (this.work.length !== logits.length) this.work = new Float32Array(logits.length);
    const x = this.work;
    x.set(logits);
    for (const [id, bias] of p.logitBias) if (id < x.length) x[id] = x[id]! + bias;
    if (p.presencePenalty !== 0 || p.frequencyPenalty !== 0) {
      for (const [id, n] of this.counts) x[id] = x[id]! - n * p.frequencyPenalty - p.presencePenalty;
    }
    const id = p.temperature < 1e-5 ? argmax(x) : this.draw(x);
    this.counts.set(id, (this.counts.get(id) ?? 0) + 1);
    if (p.topLogprobs === null) return { id };
    const lse = logSumExp(logits);
    return { id, logprob: logits[id]! - lse, top: topK(logits, p.topLogprobs).map((t) => ({ id: t, logprob: logits[t]! - lse })) };
  }

  /** Softmax of x / temperature, restricted to the smallest set of most likely tokens whose
   *  probability reaches top_p, then one draw from it. x is overwritten. */
  private draw(x: Float32Array): number {
    const invT = 1 / this.params.temperature;
    let max = -Infinity;
    for (let i = 0; i < x.length; i++) if (x[i]! > max) max = x[i]!;
    let total = 0;
    for (let i = 0; i < x.length; i++) {
      const e = Math.exp((x[i]! - max) * invT);
      x[i] = e;
      total += e;
    }
    const topP = this.params.topP;
    if (topP < 1) return this.drawNucleus(x, total, topP);
    let u = this.rng.next() * total;
    for (let i = 0; i < x.length; i++) {
      u -= x[i]!;
      if (u < 0) return i;
    }
    return argmax(x);
  }

  private drawNucleus(weights: Float32Array, total: number, topP: number): number {
    // Only tokens above a tiny share of the mass can ever be inside the nucleus for top_p < 1 in
    // practice; sorting just those keeps a 150k vocabulary cheap.
    const floor = total * 1e-9;
    const ids: number[] = [];
    for (let i = 0; i < weights.length; i++) if (weights[i]! > floor) ids.push(i);
    ids.sort((a, b) => weights[b]! - weights[a]! || a - b);
    const target = topP * total;
    let kept = 0;
    let mass = 0;
    while (kept < ids.length && (kept === 0 || mass < target)) mass += weights[ids[kept++]!]!;
    let u = this.rng.next() * mass;
    for (let i = 0; i < kept; i++) {
      u -= weights[ids[i]!]!;
      if (u < 0) return ids[i]!;
    }
    return ids[kept - 1]!;
  }
}

export function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

export function logSumExp(x: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < x.length; i++) if (x[i]! > max) max = x[i]!;
  let sum = 0;
  for (let i = 0; i < x.length; i++) sum += Math.exp(x[i]! - max);
  return max + Math.log(sum);
}

/** Ids of the k largest values, largest first (ties: lower id first). */
export function topK(x: Float32Array, k: number): number[] {
  const out: number[] = [];
  if (k <= 0) return out;
  for (let i = 0; i < x.length; i++) {
    if (out.length === k && x[i]! <= x[out[k - 1]!]!) continue;
    let j = out.length === k ? k - 1 : out.length;
    if (out.length < k) out.push(i);
    while (j > 0 && x[out[j - 1]!]! < x[i]!) {
      out[j] = out[j - 1]!;
      j--;
    }
    out[j] = i;
  }
  return out;
}

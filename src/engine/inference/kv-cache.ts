// The JS-owned KV cache of the "append" design (the graph returns only the new K/V rows and JS
// appends them at each row's position, a few KB per step): per layer one K and one V
// buffer in BNSH layout (slots, kvHeads, capacity, headDim). A decode batch needs its sequences in
// slots 0..B-1 so that the batch's past is a zero-copy prefix view; compact() swaps slots to get
// there (a copy per moved sequence, rare once a batch is stable). Capacity follows the longest
// sequence in steps of GRAIN tokens, up and down, because GroupQueryAttention copies the whole
// past it is given into its present on every step: at 8 rows on SmolLM2 that copy was a quarter
// of a decode step with the former fixed minimum of 256. A re-layout (a copy of the cache) every
// GRAIN tokens of growth costs far less than a GRAIN-times smaller copy on every step.

const GRAIN = 32;

export interface AppendRow {
  slot: number;
  past: number; // tokens already cached
  count: number; // new tokens to append
}

export class KvCache {
  private k: Float32Array[] = [];
  private v: Float32Array[] = [];
  private slots = 0;
  capacity = 0;
  private readonly slotOf = new Map<number, number>();
  private readonly lengths = new Map<number, number>();
  private seqAt: (number | undefined)[] = [];

  constructor(
    private readonly layers: number,
    private readonly kvHeads: number,
    private readonly headDim: number,
    private readonly maxCapacity: number,
  ) {}

  get slotSize(): number {
    return this.kvHeads * this.capacity * this.headDim;
  }

  has(seq: number): boolean {
    return this.slotOf.has(seq);
  }

  length(seq: number): number {
    return this.lengths.get(seq) ?? 0;
  }

  slot(seq: number): number {
    const s = this.slotOf.get(seq);
    if (s === undefined) throw new Error(`unknown sequence ${seq}`);
    return s;
  }

  setLength(seq: number, len: number): void {
    this.lengths.set(seq, len);
  }

  /** Layer l's K and V for `count` slots from `first`, as (count, kvHeads, capacity, headDim) views. */
  view(l: number, first: number, count: number): { k: Float32Array; v: Float32Array } {
    const a = first * this.slotSize;
    const b = (first + count) * this.slotSize;
    return { k: this.k[l]!.subarray(a, b), v: this.v[l]!.subarray(a, b) };
  }

  private relayout(slots: number, capacity: number): void {
    const { kvHeads, headDim } = this;
    const oldCap = this.capacity;
    const copyLen = Math.min(oldCap, capacity) * headDim;
    for (const bufs of [this.k, this.v]) {
      for (let l = 0; l < this.layers; l++) {
        const old = bufs[l];
        const next = new Float32Array(slots * kvHeads * capacity * headDim);
        if (old) {
          for (let s = 0; s < Math.min(this.slots, slots); s++) {
            for (let h = 0; h < kvHeads; h++) {
              const src = (s * kvHeads + h) * oldCap * headDim;
              next.set(old.subarray(src, src + copyLen), (s * kvHeads + h) * capacity * headDim);
            }
          }
        }
        bufs[l] = next;
      }
    }
    this.slots = slots;
    this.capacity = capacity;
    this.seqAt.length = slots;
  }

  /** Makes room for `tokens` positions in every slot. */
  ensureCapacity(tokens: number): void {
    if (tokens > this.maxCapacity) throw new Error(`sequence of ${tokens} tokens exceeds the context length ${this.maxCapacity}`);
    if (tokens <= this.capacity) return;
    this.relayout(Math.max(this.slots, 1), Math.min(Math.ceil(tokens / GRAIN) * GRAIN, this.maxCapacity));
  }

  allocate(seq: number): number {
    if (this.slotOf.has(seq)) throw new Error(`sequence ${seq} already exists`);
    let slot = this.seqAt.findIndex((s) => s === undefined);
    if (slot < 0 || slot >= this.slots) {
      slot = this.slots;
      this.relayout(Math.max(1, this.slots * 2), Math.max(this.capacity, GRAIN));
    }
    this.seqAt[slot] = seq;
    this.slotOf.set(seq, slot);
    this.lengths.set(seq, 0);
    return slot;
  }

  free(seq: number): void {
    const slot = this.slotOf.get(seq);
    if (slot === undefined) return;
    this.seqAt[slot] = undefined;
    this.slotOf.delete(seq);
    this.lengths.delete(seq);
    if (this.slotOf.size === 0) {
      // Nothing cached: drop the buffers so an idle model holds no KV memory.
      this.k = [];
      this.v = [];
      this.slots = 0;
      this.capacity = 0;
      this.seqAt = [];
      return;
    }
    // The longest sequence left may be much shorter: give GroupQueryAttention a shorter past.
    let longest = 0;
    for (const n of this.lengths.values()) longest = Math.max(longest, n);
    const tight = Math.max(GRAIN, Math.ceil(longest / GRAIN) * GRAIN);
    if (tight * 2 <= this.capacity) this.relayout(this.slots, tight);
  }

  private copySlot(from: number, to: number): void {
    const n = this.slotSize;
    for (const bufs of [this.k, this.v]) for (const b of bufs) b.copyWithin(to * n, from * n, (from + 1) * n);
  }

  private swapSlots(a: number, b: number): void {
    const n = this.slotSize;
    for (const bufs of [this.k, this.v]) {
      for (const buf of bufs) {
        const tmp = buf.slice(a * n, (a + 1) * n);
        buf.copyWithin(a * n, b * n, (b + 1) * n);
        buf.set(tmp, b * n);
      }
    }
    const sa = this.seqAt[a];
    const sb = this.seqAt[b];
    this.seqAt[a] = sb;
    this.seqAt[b] = sa;
    if (sa !== undefined) this.slotOf.set(sa, b);
    if (sb !== undefined) this.slotOf.set(sb, a);
  }

  /** Moves `seqs` into slots 0..n-1; returns them ordered by slot. */
  compact(seqs: number[]): number[] {
    const n = seqs.length;
    const wanted = new Set(seqs);
    let free = 0;
    for (const seq of seqs) {
      const slot = this.slot(seq);
      if (slot < n) continue;
      while (this.seqAt[free] !== undefined && wanted.has(this.seqAt[free]!)) free++;
      this.swapSlots(slot, free);
    }
    return this.seqAt.slice(0, n) as number[];
  }

  fork(src: number, dst: number): void {
    const len = this.length(src);
    if (!this.has(src)) throw new Error(`unknown sequence ${src}`);
    const slot = this.allocate(dst);
    this.copySlot(this.slot(src), slot);
    this.lengths.set(dst, len);
  }

  /** Writes the new tokens' K/V (B,S,kvHeads*headDim) of layer l at each row's position. */
  append(l: number, rows: AppendRow[], seqLen: number, newK: Float32Array, newV: Float32Array): void {
    const { kvHeads, headDim, capacity } = this;
    const width = kvHeads * headDim;
    for (let b = 0; b < rows.length; b++) {
      const row = rows[b]!;
      for (let s = 0; s < row.count; s++) {
        const src = (b * seqLen + s) * width;
        for (let h = 0; h < kvHeads; h++) {
          const dst = ((row.slot * kvHeads + h) * capacity + row.past + s) * headDim;
          const from = src + h * headDim;
          this.k[l]!.set(newK.subarray(from, from + headDim), dst);
          this.v[l]!.set(newV.subarray(from, from + headDim), dst);
        }
      }
    }
  }

  bytes(): number {
    return (this.k.length + this.v.length) * this.slots * this.slotSize * 4;
  }
}

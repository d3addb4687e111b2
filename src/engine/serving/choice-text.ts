// The text of one choice as its tokens arrive, cut at the first stop sequence, and released for
// streaming only when it can no longer change — not while it ends in half a UTF-8 character or in
// something that may still grow into a stop sequence.
//
// Decoding is incremental (as vLLM's and transformers' streamers do it): each token decodes only a
// short window, ids[prefix..] against ids[prefix..read], so a reply of n tokens costs O(n), not
// O(n²), and a decoder that treats the first token of a text specially (SentencePiece drops its
// leading space) sees the same context both times. The window moves on once the new text ends in
// a whole character.

export interface Decoder {
  decode(ids: readonly number[]): string;
}

export class ChoiceText {
  private readonly ids: number[] = [];
  private emitted = "";
  private full = "";
  /** Text of ids[0..read), final. */
  private settled = "";
  private prefix = 0;
  private read = 0;
  stopped = false;

  constructor(
    private readonly decoder: Decoder,
    private readonly stops: readonly string[],
  ) {}

  /** Adds a generated token; returns the newly releasable text (maybe ""). Sets `stopped` when a
   *  stop sequence appeared: the text ends just before it. */
  push(id: number): string {
    this.ids.push(id);
    const text = this.decodeNext();
    const cut = this.firstStop(text);
    if (cut !== -1) {
      this.stopped = true;
      this.full = text.slice(0, cut);
      return this.release(this.full);
    }
    this.full = text;
    return this.release(text.slice(0, text.length - this.heldBack(text)));
  }

  /** settled + the text the tokens after `read` add. */
  private decodeNext(): string {
    const decode = (ids: number[]) => (ids.length === 0 ? "" : this.decoder.decode(ids));
    const before = decode(this.ids.slice(this.prefix, this.read));
    const now = decode(this.ids.slice(this.prefix));
    if (!now.startsWith(before)) {
      // A decoder whose output is not extended by more tokens: decode everything, window unmoved.
      return this.decoder.decode(this.ids);
    }
    const added = now.slice(before.length);
    if (added.length > 0 && !added.endsWith("\uFFFD")) {
      this.settled += added;
      this.prefix = this.read;
      this.read = this.ids.length;
      return this.settled;
    }
    return this.settled + added;
  }

  /** Everything not yet released, once no more tokens will come. */
  flush(): string {
    return this.release(this.full);
  }

  get text(): string {
    return this.full;
  }

  private release(safe: string): string {
    if (!safe.startsWith(this.emitted) || safe.length === this.emitted.length) return "";
    const delta = safe.slice(this.emitted.length);
    this.emitted = safe;
    return delta;
  }

  private firstStop(text: string): number {
    let best = -1;
    // Nothing released can begin a stop (heldBack keeps every stop prefix back), so a stop can
    // only start in the tail; search from a whole stop's length before what was released.
    const longest = Math.max(0, ...this.stops.map((s) => s.length));
    const from = Math.max(0, this.emitted.length - longest);
    for (const stop of this.stops) {
      const at = text.indexOf(stop, from);
      if (at !== -1 && (best === -1 || at < best)) best = at;
    }
    return best;
  }

  /** Characters at the end that must wait: trailing replacement characters (an incomplete UTF-8
   *  sequence) and, before them, the longest suffix that is a proper prefix of a stop sequence
   *  (the incomplete character may be the stop's next one). */
  private heldBack(text: string): number {
    let end = text.length;
    while (end > 0 && text[end - 1] === "\uFFFD") end--;
    const whole = text.slice(0, end);
    let prefix = 0;
    for (const stop of this.stops) {
      for (let k = Math.min(stop.length - 1, whole.length); k > prefix; k--) {
        if (whole.endsWith(stop.slice(0, k))) {
          prefix = k;
          break;
        }
      }
    }
    return text.length - end + prefix;
  }
}

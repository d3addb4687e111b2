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
    // A stop can only newly appear in the tail that the last token touched, but the decoded text of
    // earlier tokens may shift slightly, so search from a little before what was already released.
    const from = Math.max(0, this.emitted.length - 1);
    for (const stop of this.stops) {
      const at = text.indexOf(stop, from);
      if (at !== -1 && (best === -1 || at < best)) best = at;
    }
    return best;
  }

  /** Characters at the end that must wait: a trailing replacement character (an incomplete UTF-8
   *  sequence) or the longest suffix that is a proper prefix of a stop sequence. */
  private heldBack(text: string): number {
    let hold = 0;
    while (hold < text.length && text[text.length - 1 - hold] === "\uFFFD") hold++;
    if (hold > 0) return hold;
    for (const stop of this.stops) {
      for (let k = Math.min(stop.length - 1, text.length); k > hold; k--) {
        if (text.endsWith(stop.slice(0, k))) {
          hold = k;
          break;
        }
      }
    }
    return hold;
  }
}

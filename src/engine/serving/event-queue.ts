// A push-to-pull bridge: a producer that calls back (the scheduler) feeds a consumer that iterates.
// Events wait in an array, so a slow consumer never loses one and a fast one never spins.

export class EventQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private ended = false;
  private failure: { err: unknown } | undefined;
  private wake: (() => void) | undefined;

  push(item: T): void {
    this.items.push(item);
    this.notify();
  }

  end(err?: unknown): void {
    if (this.ended) return;
    this.ended = true;
    if (err !== undefined) this.failure = { err };
    this.notify();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      if (this.items.length > 0) {
        yield* this.items.splice(0, this.items.length);
        continue;
      }
      if (this.ended) {
        if (this.failure) throw this.failure.err;
        return;
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }
}

/**
 * One assistant reply being generated. It outlives the request that started it when it is resumable:
 * any of the user's clients can attach and receive the text from any offset, then the live deltas,
 * then the end. Listeners are queues, so a slow reader delays only itself.
 */
export interface Citation {
  n: number;
  chunk_id: string;
  document_id: string;
  filename: string;
  text: string;
}

export type GenerationEvent =
  | { type: 'delta'; text: string; offset: number }
  | { type: 'citations'; citations: Citation[] }
  | { type: 'end'; status: 'complete' | 'aborted' | 'failed'; error?: { code: string; message: string } };

export class Generation {
  private text = '';
  private citations: Citation[] | undefined;
  private final: Extract<GenerationEvent, { type: 'end' }> | undefined;
  private readonly listeners = new Set<(e: GenerationEvent) => void>();
  readonly controller = new AbortController();
  /** Resolves when the generation has ended and its message is stored. */
  readonly settled: Promise<void>;
  private markSettled!: () => void;

  constructor(
    readonly messageId: string,
    readonly conversationId: string,
    readonly userId: string,
    /** Resumable generations keep running with nobody attached; others stop when their client leaves. */
    readonly resumable: boolean,
  ) {
    this.settled = new Promise((resolve) => (this.markSettled = resolve));
  }

  get content(): string {
    return this.text;
  }

  get ended(): boolean {
    return this.final !== undefined;
  }

  push(text: string): void {
    if (!text || this.final) return;
    const event: GenerationEvent = { type: 'delta', text, offset: this.text.length };
    this.text += text;
    this.emit(event);
  }

  setCitations(citations: Citation[]): void {
    this.citations = citations;
    this.emit({ type: 'citations', citations });
  }

  end(status: 'complete' | 'aborted' | 'failed', error?: { code: string; message: string }): void {
    if (this.final) return;
    this.final = { type: 'end', status, ...(error ? { error } : {}) };
    this.emit(this.final);
  }

  /** Called once the message row holds the final text. */
  stored(): void {
    this.markSettled();
  }

  cancel(): void {
    this.controller.abort();
  }

  /**
   * Events from `offset` (characters of the reply) on: what was generated since then as one delta,
   * the citations, then live events until the end. Leaving early detaches; the last client leaving a
   * non-resumable generation cancels it.
   */
  async *attach(offset = 0, signal?: AbortSignal): AsyncGenerator<GenerationEvent> {
    const queue: GenerationEvent[] = [];
    let wake: (() => void) | undefined;
    const listener = (e: GenerationEvent): void => {
      queue.push(e);
      wake?.();
    };
    if (this.citations) queue.push({ type: 'citations', citations: this.citations });
    const from = Math.max(0, Math.min(offset, this.text.length));
    if (this.text.length > from) queue.push({ type: 'delta', text: this.text.slice(from), offset: from });
    if (this.final) queue.push(this.final);
    else this.listeners.add(listener);
    // A client that leaves while nothing is happening must not wait for the next event to notice.
    const onAbort = (): void => wake?.();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      for (;;) {
        while (queue.length > 0) {
          if (signal?.aborted) return;
          const event = queue.shift()!;
          yield event;
          if (event.type === 'end') return;
        }
        if (signal?.aborted) return;
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      this.listeners.delete(listener);
      if (!this.resumable && !this.final && this.listeners.size === 0) this.cancel();
    }
  }

  private emit(event: GenerationEvent): void {
    for (const listener of this.listeners) listener(event);
  }
}

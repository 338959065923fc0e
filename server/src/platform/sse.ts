import type { FastifyReply } from 'fastify';

/**
 * Server-sent events on a hijacked reply, done the way proxies and browsers need: no caching, no proxy
 * buffering (`X-Accel-Buffering: no`), headers sent as soon as the stream opens (with its first event
 * when there is one, else on their own), a comment heartbeat whenever the stream has been quiet, and
 * backpressure — `send` waits while the client's socket is full, so a slow reader cannot make the
 * server buffer without bound.
 */
export class SseStream {
  private opened = false;
  private lastWrite = Date.now();
  private heartbeat: NodeJS.Timeout | undefined;
  /** Aborted when the client goes away before the stream ended. */
  readonly clientGone: AbortSignal;

  constructor(private readonly reply: FastifyReply, private readonly heartbeatMs: number) {
    const controller = new AbortController();
    this.clientGone = controller.signal;
    reply.raw.on('close', () => {
      if (!reply.raw.writableEnded) controller.abort();
      this.stopHeartbeat();
    });
  }

  get isOpen(): boolean {
    return this.opened;
  }

  /** Sends the status line and headers (those already set on the reply — CORS, request id — included). */
  open(): void {
    if (this.opened) return;
    this.writeHead();
    this.reply.raw.flushHeaders();
  }

  /** The headers without flushing them: the first write then carries them in the same packet. */
  private writeHead(): void {
    if (this.opened) return;
    this.opened = true;
    this.reply.hijack();
    this.reply.raw.writeHead(200, {
      ...(this.reply.getHeaders() as Record<string, string>),
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    this.heartbeat = setInterval(() => {
      if (Date.now() - this.lastWrite >= this.heartbeatMs) void this.write(': keep-alive\n\n');
    }, Math.max(250, Math.floor(this.heartbeatMs / 2)));
    this.heartbeat.unref();
  }

  /** One event (`event:` line only when named); resolves when the socket can take more. */
  async send(data: string, event?: string): Promise<void> {
    this.writeHead();
    await this.write(`${event ? `event: ${event}\n` : ''}data: ${data}\n\n`);
  }

  /** Complete events already in SSE form (an upstream's own bytes), written as they are, in one write. */
  async sendRaw(events: Buffer | string): Promise<void> {
    this.writeHead();
    await this.write(events);
  }

  /**
   * Ends an opened stream, with `last` (complete events, e.g. `data: [DONE]\n\n`) written in the same
   * write as the end; before it was opened the reply is Fastify's to finish (an error response).
   */
  end(last?: string): void {
    this.stopHeartbeat();
    const raw = this.reply.raw;
    if (this.opened && !raw.writableEnded && !raw.destroyed) {
      this.lastWrite = Date.now();
      raw.end(last);
    }
  }

  private async write(text: Buffer | string): Promise<void> {
    const raw = this.reply.raw;
    if (raw.writableEnded || raw.destroyed) return;
    this.lastWrite = Date.now();
    if (raw.write(text)) return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        raw.off('drain', done);
        raw.off('close', done);
        resolve();
      };
      raw.once('drain', done);
      raw.once('close', done);
    });
  }

  private stopHeartbeat(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = undefined;
  }
}

/**
 * Waits for `promise`; if it takes longer than `ms`, opens the stream first (so heartbeats start and
 * the client sees the response begin). Before that, a failure can still become an ordinary HTTP error.
 */
export async function awaitOrOpen<T>(promise: Promise<T>, sse: SseStream, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const opener = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      sse.open();
      resolve();
    }, ms);
  });
  try {
    return await Promise.race([promise, opener.then(() => promise)]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Aborted when the client closes the connection before the reply was sent, so the work it asked for
 * (an upstream call, a generation) is cancelled. SseStream's `clientGone` is the same for streams.
 */
export function abortOnClose(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.on('close', () => {
    if (!reply.raw.writableEnded) controller.abort();
  });
  return controller.signal;
}

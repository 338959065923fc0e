import http, { type ClientRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import https from 'node:https';

/**
 * The HTTP client of one provider: a keep-alive connection pool (node:http's Agent) reused by every
 * call, instead of `fetch`, whose per-call setup (WHATWG request, headers and stream objects, abort
 * signal plumbing, a web ReadableStream over the body) cost more CPU than Keel's own work per call.
 * Bodies are read in batches — everything that arrived with one socket read at once — so a relay
 * writes once per upstream read rather than once per event.
 */

/** Why a transport operation failed; the provider adapter turns it into its own UpstreamError. */
export type TransportFailure = 'aborted' | 'connect-timeout' | 'unreachable' | 'idle' | 'broken';

export class TransportError extends Error {
  constructor(
    readonly failure: TransportFailure,
    /** The socket error code (ECONNREFUSED…), for `unreachable`. */
    readonly code?: string,
  ) {
    super(`upstream transport: ${failure}${code ? ` (${code})` : ''}`);
    this.name = 'TransportError';
  }
}

export interface UpstreamRequest {
  method: 'GET' | 'POST';
  /** Appended to the base URL, e.g. `/chat/completions`. */
  path: string;
  headers: Readonly<Record<string, string>>;
  body?: string;
  /** Aborting it destroys the request: the upstream sees the connection close and stops working. */
  signal: AbortSignal;
  /** Until the response headers arrive. */
  connectTimeoutMs: number;
  /** Longest wait for body bytes while a read is pending (not while the reader is busy elsewhere). */
  idleTimeoutMs: number;
}

export interface UpstreamClient {
  /** Resolves with the response once its headers arrived (any status); rejects with a TransportError. */
  send(request: UpstreamRequest): Promise<UpstreamResponse>;
  /** Closes the pooled connections (shutdown). */
  close(): void;
}

/**
 * Idle keep-alive connections are closed after this long (or sooner when the upstream announces a
 * shorter `Keep-Alive: timeout`), before a server would close them under a request being sent.
 */
const FREE_SOCKET_TIMEOUT_MS = 4_000;
/** Idle connections kept per upstream; busy ones are not limited (each stream holds one for its length). */
const MAX_FREE_SOCKETS = 256;

export function createUpstreamClient(baseUrl: string): UpstreamClient {
  const base = new URL(baseUrl);
  const secure = base.protocol === 'https:';
  const options = { keepAlive: true, keepAliveMsecs: 1_000, maxFreeSockets: MAX_FREE_SOCKETS, timeout: FREE_SOCKET_TIMEOUT_MS, scheduling: 'lifo' as const };
  const agent = secure ? new https.Agent(options) : new http.Agent(options);
  const requestFn = secure ? https.request : http.request;
  const prefix = base.pathname.replace(/\/+$/, '');
  const target = { protocol: base.protocol, hostname: base.hostname.replace(/^\[|\]$/g, ''), port: base.port || undefined, agent };

  return {
    send(request) {
      return new Promise<UpstreamResponse>((resolve, reject) => {
        if (request.signal.aborted) {
          reject(new TransportError('aborted'));
          return;
        }
        const headers: OutgoingHttpHeaders = { ...request.headers };
        if (request.body !== undefined) headers['content-length'] = Buffer.byteLength(request.body);
        const req = requestFn({ ...target, method: request.method, path: `${prefix}${request.path}`, headers });
        let settled = false;
        let timedOut = false;
        const onAbort = (): void => {
          req.destroy();
        };
        const fail = (failure: TransportError): void => {
          if (settled) return;
          settled = true;
          clearTimeout(connectTimer);
          request.signal.removeEventListener('abort', onAbort);
          reject(failure);
        };
        const connectTimer = setTimeout(() => {
          timedOut = true;
          req.destroy();
        }, request.connectTimeoutMs);
        request.signal.addEventListener('abort', onAbort, { once: true });
        req.on('error', (err: NodeJS.ErrnoException) => {
          if (request.signal.aborted) fail(new TransportError('aborted'));
          else if (timedOut) fail(new TransportError('connect-timeout'));
          else fail(new TransportError('unreachable', err.code));
        });
        req.on('response', (res) => {
          if (settled) {
            res.destroy();
            return;
          }
          settled = true;
          clearTimeout(connectTimer);
          resolve(new UpstreamResponse(req, res, request.signal, onAbort, request.idleTimeoutMs));
        });
        req.end(request.body);
      });
    },
    close() {
      agent.destroy();
    },
  };
}

/** A response whose headers arrived; its body is read with `read()` or `text()`, or dropped with `close()`. */
export class UpstreamResponse {
  readonly status: number;
  private ended = false;
  private closed = false;
  private failure: TransportError | undefined;
  private waiter: { resolve: (bytes: Buffer | undefined) => void; reject: (err: TransportError) => void } | undefined;
  /** One timer for the whole body, re-armed (not re-created) by each read that has to wait. */
  private readonly idle: NodeJS.Timeout;

  constructor(
    private readonly req: ClientRequest,
    private readonly res: IncomingMessage,
    private readonly signal: AbortSignal,
    private readonly onAbort: () => void,
    idleTimeoutMs: number,
  ) {
    this.status = res.statusCode ?? 0;
    this.idle = setTimeout(() => {
      if (this.waiter) this.fail(new TransportError('idle'));
    }, idleTimeoutMs);
    this.idle.unref();
    // A 'readable' listener keeps the body paused between reads: what the reader has not asked for
    // stays in the socket, so a slow client holds the upstream back instead of Keel buffering for it.
    res.on('readable', () => this.wake());
    res.on('end', () => {
      this.ended = true;
      this.wake();
    });
    res.on('error', () => this.fail(new TransportError(this.signal.aborted ? 'aborted' : 'broken')));
    res.on('close', () => {
      if (!this.ended) this.fail(new TransportError(this.signal.aborted ? 'aborted' : 'broken'));
    });
  }

  header(name: string): string | undefined {
    const value = this.res.headers[name];
    return Array.isArray(value) ? value.join(', ') : value;
  }

  /** Everything received since the previous read (at least one byte), or undefined at the end of the body. */
  read(): Promise<Buffer | undefined> {
    const bytes = this.take();
    if (bytes !== undefined) return Promise.resolve(bytes);
    if (this.failure) return Promise.reject(this.failure);
    if (this.ended) {
      this.close();
      return Promise.resolve(undefined);
    }
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
      this.idle.refresh();
    });
  }

  /** The whole body as text. */
  async text(): Promise<string> {
    const parts: Buffer[] = [];
    for (let bytes = await this.read(); bytes !== undefined; bytes = await this.read()) parts.push(bytes);
    return Buffer.concat(parts).toString('utf8');
  }

  /** Done with the response: an unfinished body is cut off (the upstream stops); a finished connection goes back to the pool. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.idle);
    this.signal.removeEventListener('abort', this.onAbort);
    if (!this.ended) this.req.destroy();
  }

  private take(): Buffer | undefined {
    // With no size, read() hands over everything buffered as one Buffer.
    const bytes = this.res.read() as Buffer | null;
    return bytes === null ? undefined : bytes;
  }

  private wake(): void {
    const waiter = this.waiter;
    if (!waiter) return;
    const bytes = this.take();
    if (bytes !== undefined) {
      this.waiter = undefined;
      waiter.resolve(bytes);
    } else if (this.ended) {
      this.waiter = undefined;
      this.close();
      waiter.resolve(undefined);
    }
  }

  private fail(failure: TransportError): void {
    if (this.failure || this.ended) return;
    this.failure = failure;
    const waiter = this.waiter;
    this.waiter = undefined;
    this.close();
    waiter?.reject(failure);
  }
}

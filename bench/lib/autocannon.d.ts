// The slice of autocannon's programmatic API the benchmarks use (the package ships no types, and
// @types/autocannon is not worth a dependency for one call).
declare module 'autocannon' {
  /** One entry of `requests` (or of `Client.setRequests`). */
  interface Request {
    method?: string;
    path?: string;
    headers?: Record<string, string>;
    body?: string | Buffer;
    /** Called each time the request is built; returns the request to send. */
    setupRequest?: (request: Request, context: Record<string, unknown>) => Request;
    /** Called with each response to this request; `body` is the whole response body. */
    onResponse?: (status: number, body: string, context: Record<string, unknown>, headers: Record<string, string | string[]>) => void;
  }

  /** One connection. `setRequests` replaces its request sequence (pipelining 1 only). */
  interface Client {
    setRequests(requests: Request[]): void;
  }

  interface Options {
    url: string;
    connections?: number;
    pipelining?: number;
    /** Seconds. */
    duration?: number;
    /** Seconds before a request counts as a timeout (and an error). */
    timeout?: number;
    method?: string;
    headers?: Record<string, string>;
    body?: string | Buffer;
    title?: string;
    /**
     * Called once per connection, when it is created and before it sends anything. Note that the
     * per-connection `context` of `requests` is reset each time the sequence loops, so with a single
     * request it cannot carry state from one response to the next request; state held in closures
     * given to `client.setRequests` can.
     */
    setupClient?: (client: Client) => void;
  }

  /** Percentile summary of one HDR histogram (autocannon's `histAsObj` plus `addPercentiles`). */
  interface Histogram {
    average: number;
    mean: number;
    stddev: number;
    min: number;
    max: number;
    total: number;
    p50: number;
    p90: number;
    p97_5: number;
    p99: number;
    p99_9: number;
  }

  interface Result {
    title?: string;
    url: string;
    connections: number;
    pipelining: number;
    /** Seconds the run actually took. */
    duration: number;
    samples: number;
    start: Date;
    finish: Date;
    /** Socket errors and timeouts together. */
    errors: number;
    timeouts: number;
    mismatches: number;
    non2xx: number;
    resets: number;
    '1xx': number;
    '2xx': number;
    '3xx': number;
    '4xx': number;
    '5xx': number;
    statusCodeStats: Record<string, { count: number }>;
    /** Milliseconds per request. */
    latency: Histogram & { totalCount: number };
    /** Requests per one-second sample; `total` is every completed request. */
    requests: Histogram & { sent: number };
    /** Bytes per one-second sample. */
    throughput: Histogram;
  }

  /** Without a callback, the returned tracker is also a promise of the result. */
  function autocannon(options: Options): PromiseLike<Result>;
  export default autocannon;
  export type { Client, Histogram, Options, Request, Result };
}

// The slice of autocannon's programmatic API the benchmarks use (the package ships no types, and
// @types/autocannon is not worth a dependency for one call).
declare module 'autocannon' {
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
    title?: string;
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
  export type { Histogram, Options, Result };
}

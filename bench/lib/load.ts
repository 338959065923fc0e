import autocannon, { type Result } from 'autocannon';

export interface LoadSettings {
  readonly connections: number;
  readonly pipelining: number;
  readonly durationS: number;
  readonly warmupS: number;
}

/** What one autocannon run measured; non-2xx and errors are kept, never filtered out. */
export interface LoadMeasurement {
  /** Average of the per-second request counts. */
  readonly requestsPerSecond: number;
  readonly latencyP50Ms: number;
  readonly latencyP99Ms: number;
  readonly latencyMaxMs: number;
  /** Completed requests, whatever their status. */
  readonly totalRequests: number;
  readonly non2xx: number;
  /** Socket errors and timeouts (autocannon counts timeouts as errors too). */
  readonly errors: number;
  readonly timeouts: number;
  /** Count per HTTP status, e.g. { "200": 81234 }. */
  readonly statusCodes: Readonly<Record<string, number>>;
  readonly durationS: number;
}

/** True when every request answered 2xx and nothing failed at the socket level. */
export function isClean(m: LoadMeasurement): boolean {
  return m.non2xx === 0 && m.errors === 0;
}

/**
 * Loads `url` for `warmupS` seconds (discarded: JIT, connection pools and caches settle), then for
 * `durationS` seconds, and returns the measured run together with the warmup's summary.
 */
export async function loadEndpoint(url: string, settings: LoadSettings): Promise<{ warmup: LoadMeasurement | undefined; measured: LoadMeasurement }> {
  const warmup = settings.warmupS > 0 ? await runOnce(url, settings, settings.warmupS) : undefined;
  const measured = await runOnce(url, settings, settings.durationS);
  return { warmup, measured };
}

async function runOnce(url: string, settings: LoadSettings, durationS: number): Promise<LoadMeasurement> {
  const result = await autocannon({
    url,
    connections: settings.connections,
    pipelining: settings.pipelining,
    duration: durationS,
    timeout: 10,
  });
  return summarize(result);
}

function summarize(result: Result): LoadMeasurement {
  const statusCodes: Record<string, number> = {};
  for (const [code, { count }] of Object.entries(result.statusCodeStats)) statusCodes[code] = count;
  return {
    requestsPerSecond: result.requests.average,
    latencyP50Ms: result.latency.p50,
    latencyP99Ms: result.latency.p99,
    latencyMaxMs: result.latency.max,
    totalRequests: result.requests.total,
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    statusCodes,
    durationS: result.duration,
  };
}

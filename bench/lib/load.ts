import autocannon, { type Client, type Options, type Result } from 'autocannon';

/** The shape of one scenario's runs: the options, or the scenario's own override of them. */
export interface LoadSettings {
  readonly connections: number;
  readonly pipelining: number;
  readonly durationS: number;
  readonly warmupS: number;
}

/** What every connection of one autocannon run sends. */
export interface LoadPlan {
  readonly method: 'GET' | 'POST';
  readonly path: string;
  readonly headers?: Readonly<Record<string, string>>;
  /** The same body on every request (e.g. a login). */
  readonly body?: string;
  /**
   * For requests that depend on the previous response (a refresh-token chain): called once per
   * connection, in order from 0, before the connection sends anything; the connection then sends
   * `nextBody()` each time and reports each response. Needs pipelining 1.
   */
  readonly perConnection?: (connection: number) => ConnectionSequence;
  /** After the run: anything wrong beyond the status codes (e.g. a refresh that did not rotate). */
  readonly problems?: () => readonly string[];
}

export interface ConnectionSequence {
  nextBody(): string;
  onResponse(status: number, body: string): void;
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
  /** Requests sent, completed or not (a request in flight when the run ends is cut off). */
  readonly sentRequests: number;
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

export interface LoadOutcome {
  readonly warmup: LoadMeasurement | undefined;
  readonly warmupProblems: readonly string[];
  readonly measured: LoadMeasurement;
  readonly problems: readonly string[];
}

/**
 * Loads `baseUrl` for `warmupS` seconds (discarded: JIT, connection pools and caches settle), then
 * for `durationS` seconds, and returns the measured run together with the warmup's summary.
 * `planFor` is called before each of the two runs, so a plan that consumes state (refresh chains)
 * starts the measured run afresh.
 */
export async function loadScenario(baseUrl: string, settings: LoadSettings, planFor: (connections: number) => Promise<LoadPlan>): Promise<LoadOutcome> {
  let warmup: LoadMeasurement | undefined;
  let warmupProblems: readonly string[] = [];
  if (settings.warmupS > 0) {
    const plan = await planFor(settings.connections);
    warmup = await runOnce(baseUrl, plan, settings, settings.warmupS);
    warmupProblems = plan.problems?.() ?? [];
  }
  const plan = await planFor(settings.connections);
  const measured = await runOnce(baseUrl, plan, settings, settings.durationS);
  return { warmup, warmupProblems, measured, problems: plan.problems?.() ?? [] };
}

async function runOnce(baseUrl: string, plan: LoadPlan, settings: LoadSettings, durationS: number): Promise<LoadMeasurement> {
  const options: Options = {
    url: `${baseUrl}${plan.path}`,
    connections: settings.connections,
    pipelining: settings.pipelining,
    duration: durationS,
    timeout: 10,
    method: plan.method,
    headers: { ...plan.headers },
  };
  if (plan.body !== undefined) options.body = plan.body;
  const perConnection = plan.perConnection;
  if (perConnection !== undefined) {
    if (settings.pipelining !== 1) throw new Error(`${plan.method} ${plan.path}: a request built from the previous response needs pipelining 1`);
    let next = 0;
    options.setupClient = (client: Client) => {
      const sequence = perConnection(next++);
      client.setRequests([{
        method: plan.method,
        path: plan.path,
        headers: { ...plan.headers },
        setupRequest: (request) => ({ ...request, body: sequence.nextBody() }),
        onResponse: (status, body) => sequence.onResponse(status, body),
      }]);
    };
  }
  return summarize(await autocannon(options));
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
    sentRequests: result.requests.sent,
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    statusCodes,
    durationS: result.duration,
  };
}

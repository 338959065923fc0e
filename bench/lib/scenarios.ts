/** One endpoint under load. Every scenario runs against every database. */
export interface Scenario {
  /** As it appears in RESULTS.md, e.g. "GET /health". */
  readonly name: string;
  readonly path: string;
  /** One line for the README and the console. */
  readonly measures: string;
}

export const SCENARIOS: readonly Scenario[] = [
  {
    name: 'GET /health',
    path: '/health',
    measures: 'the HTTP stack alone: routing, the global hooks every request passes through, JSON serialization and the access log; no database',
  },
  {
    name: 'GET /ready',
    path: '/ready',
    measures: 'the same plus two queries per request: a `select 1` ping and a read of the migrations table',
  },
];

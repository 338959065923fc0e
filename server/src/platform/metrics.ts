import type { FastifyInstance } from 'fastify';
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface Metrics {
  readonly registry: Registry;
  readonly httpRequests: Counter<'method' | 'route' | 'status'>;
  readonly httpDuration: Histogram<'method' | 'route' | 'status'>;
}

/** A registry per app (tests build several apps in one process), with Node's process metrics. */
export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'keel_' });
  const labelNames = ['method', 'route', 'status'] as const;
  return {
    registry,
    httpRequests: new Counter({ name: 'keel_http_requests_total', help: 'HTTP requests by route template and status', labelNames, registers: [registry] }),
    httpDuration: new Histogram({
      name: 'keel_http_request_duration_seconds',
      help: 'HTTP request latency by route template and status',
      labelNames,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
  };
}

const started = Symbol('keel.metrics.started');

/**
 * Counts and times every request. Routes are labelled by template (`/conversations/:id`), and
 * unmatched URLs share one label, so a scanner cannot blow up the number of series.
 */
export function instrumentRequests(app: FastifyInstance, metrics: Metrics): void {
  app.addHook('onRequest', (request, _reply, done) => {
    (request as unknown as Record<symbol, bigint>)[started] = process.hrtime.bigint();
    done();
  });
  app.addHook('onResponse', async (request, reply) => {
    const start = (request as unknown as Record<symbol, bigint | undefined>)[started];
    if (start === undefined) return;
    const labels = { method: request.method, route: request.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) };
    metrics.httpRequests.inc(labels);
    metrics.httpDuration.observe(labels, Number(process.hrtime.bigint() - start) / 1e9);
  });
}

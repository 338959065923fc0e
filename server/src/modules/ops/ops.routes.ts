import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { errorBody } from '../../platform/errors.js';
import { ErrorResponse } from '../../platform/schemas.js';
import type { ModuleContext } from '../../platform/module.js';
import { checkReadiness } from './ops.service.js';

const Health = Type.Object({ status: Type.Literal('ok'), version: Type.String(), uptime_s: Type.Number() });
const Check = Type.Object({ name: Type.String(), ok: Type.Boolean(), message: Type.String(), latency_ms: Type.Optional(Type.Number()) });
const Ready = Type.Object({ status: Type.Literal('ready'), checks: Type.Array(Check) });

/** Liveness, readiness and Prometheus metrics. Exempt from rate limits: probes and scrapers poll them. */
export async function opsRoutes(app: FastifyInstance, ctx: ModuleContext): Promise<void> {
  const bootedAt = performance.now();
  const noLimit = { rateLimit: false } as const;

  app.get('/health', {
    config: noLimit,
    schema: { tags: ['operations'], summary: 'Liveness: the process is up', response: { 200: Health } },
  }, async () => ({ status: 'ok' as const, version: ctx.version, uptime_s: Math.round((performance.now() - bootedAt) / 1000) }));

  app.get('/ready', {
    config: noLimit,
    schema: {
      tags: ['operations'],
      summary: 'Readiness: database reachable and migrated, not shutting down',
      description: 'Answers 503 with `code: "not_ready"` and the failed checks in `details` otherwise.',
      response: { 200: Ready, 503: ErrorResponse },
    },
  }, async (request, reply) => {
    const { ready, checks } = await checkReadiness(ctx.database, ctx.lifecycle.draining);
    if (ready) return { status: 'ready' as const, checks: checks.map(({ cause: _cause, ...check }) => check) };
    const failed = checks.filter((c) => !c.ok);
    for (const c of failed) if (c.cause) request.log.warn({ check: c.name, err: { message: (c.cause as Error).message, code: (c.cause as { code?: string }).code } }, 'readiness check failed');
    return reply.code(503).header('retry-after', '5').send(errorBody(503, 'not_ready', `Not ready: ${failed.map((c) => c.message).join('; ')}.`, String(request.id),
      checks.map((c) => ({ field: c.name, message: c.message, ok: c.ok }))));
  });

  app.get('/metrics', {
    config: noLimit,
    schema: { tags: ['operations'], summary: 'Prometheus metrics: requests and latency by route and status, process metrics', produces: ['text/plain'] },
  }, async (_request, reply) => {
    const text = await ctx.metrics.registry.metrics();
    return reply.type(ctx.metrics.registry.contentType).send(text);
  });
}

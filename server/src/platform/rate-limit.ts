import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import type { Config, RateLimitConfig } from '../config.js';
import { AppError } from './errors.js';

/**
 * The global per-IP limit on every route (operations routes opt out), kept in Redis when Keel runs
 * as several instances so the limit is shared. If Redis is unreachable the limiter lets requests
 * through rather than failing the API: a rate limit protects capacity, it is not an auth check.
 */
export async function installRateLimit(app: FastifyInstance, config: Pick<Config, 'rateLimit' | 'redisKeyPrefix'>, redis: Redis | undefined): Promise<void> {
  if (!config.rateLimit.enabled) return;
  await app.register(rateLimit, {
    global: true,
    max: config.rateLimit.max,
    timeWindow: config.rateLimit.windowMs,
    ...(redis ? { redis, nameSpace: `${config.redisKeyPrefix}rl:` } : {}),
    skipOnError: true,
    keyGenerator: (request) => request.ip,
    addHeaders: { 'x-ratelimit-limit': true, 'x-ratelimit-remaining': true, 'x-ratelimit-reset': true, 'retry-after': true },
    errorResponseBuilder: (_request, context) =>
      new AppError('rate_limited', `Too many requests: the limit here is ${context.max}; retry in ${context.after}.`, 429),
  });
}

/**
 * The stricter limit for authentication routes: `config: { rateLimit: authRateLimit(config.rateLimit) }`.
 * `group` makes several routes share one counter (e.g. every login-like route).
 */
export function authRateLimit(limits: RateLimitConfig, group?: string): { max: number; timeWindow: number; groupId?: string } {
  return { max: limits.authMax, timeWindow: limits.authWindowMs, ...(group ? { groupId: group } : {}) };
}

/**
 * A per-account limit beside the per-IP one: `preHandler: limitPerKey(app, limits, 'login', (req) => email)`.
 * Counts requests per returned key (e.g. the e-mail being tried), so one account cannot be attacked
 * from many addresses. No key → no limit. A no-op when rate limiting is off.
 */
export function limitPerKey(app: FastifyInstance, limits: RateLimitConfig, name: string, keyOf: (request: FastifyRequest) => string | undefined): (request: FastifyRequest, reply: FastifyReply) => Promise<void> {
  if (!limits.enabled || !app.hasDecorator('createRateLimit')) return async () => undefined;
  const check = app.createRateLimit({ max: limits.authMax, timeWindow: limits.authWindowMs, keyGenerator: (request) => `${name}:${keyOf(request) ?? ''}` });
  return async (request, reply) => {
    if (keyOf(request) === undefined) return;
    const result = await check(request);
    if (!result.isAllowed && result.isExceeded) {
      void reply.header('retry-after', String(result.ttlInSeconds));
      throw new AppError('rate_limited', `Too many attempts for this account; retry in ${result.ttlInSeconds} s.`, 429);
    }
  };
}

import cors from '@fastify/cors';
import helmet from '@fastify/helmet';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';

/**
 * CORS for the exact configured origins (credentials allowed, so never a wildcard), and the security
 * headers every response carries; HSTS only in production, where Keel sits behind TLS.
 */
export async function installSecurity(app: FastifyInstance, config: Pick<Config, 'corsOrigins' | 'env'>): Promise<void> {
  const allowed = new Set(config.corsOrigins);
  const any = allowed.has('*');
  await app.register(cors, {
    origin: (origin, cb) => cb(null, origin !== undefined && (any || allowed.has(origin))),
    credentials: !any,
    methods: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'],
    allowedHeaders: ['Authorization', 'Content-Type', 'X-API-Key', 'X-Request-ID', 'Last-Event-ID'],
    exposedHeaders: ['X-Request-ID', 'Retry-After', 'X-RateLimit-Limit', 'X-RateLimit-Remaining', 'X-RateLimit-Reset'],
    maxAge: 600,
  });
  await app.register(helmet, {
    hsts: config.env === 'production' ? { maxAge: 31_536_000, includeSubDomains: true } : false,
    contentSecurityPolicy: {
      directives: {
        defaultSrc: ["'self'"],
        scriptSrc: ["'self'"],
        styleSrc: ["'self'", "'unsafe-inline'"],
        imgSrc: ["'self'", 'data:'],
        connectSrc: ["'self'"],
        frameAncestors: ["'none'"],
        objectSrc: ["'none'"],
        baseUri: ["'self'"],
        upgradeInsecureRequests: config.env === 'production' ? [] : null,
      },
    },
    crossOriginResourcePolicy: { policy: 'same-site' },
  });
}

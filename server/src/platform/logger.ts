import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';
import type { Config } from '../config.js';

/**
 * Fields that must never reach a log line. Headers carry credentials; bodies and objects logged by
 * later modules carry passwords, tokens, keys and one-time codes under these names.
 */
const SECRET_FIELDS = [
  'password', 'new_password', 'current_password', 'password_hash',
  'token', 'access_token', 'refresh_token', 'id_token', 'api_key', 'apiKey', 'key', 'secret',
  'secret_key', 'secretKey', 'otp', 'recovery_code', 'recovery_codes', 'authorization', 'cookie',
];
export const REDACT_PATHS = [
  'req.headers.authorization', 'req.headers.cookie', 'req.headers["x-api-key"]', 'req.headers["proxy-authorization"]',
  'res.headers["set-cookie"]', 'headers.authorization', 'headers.cookie', 'headers["x-api-key"]',
  ...SECRET_FIELDS,
  ...SECRET_FIELDS.map((f) => `*.${f}`),
];

const SECRET_QUERY = /([?&](?:token|access_token|refresh_token|id_token|api_key|key|code|otp|password|secret)=)[^&#]*/gi;

/** Strips credential-like query parameters from a URL before it is logged. */
export function redactUrl(url: string): string {
  return url.replace(SECRET_QUERY, '$1[REDACTED]');
}

interface RequestLike {
  method: string;
  url: string;
  ip?: string;
  socket?: { remotePort?: number };
}

export function loggerOptions(config: Pick<Config, 'logLevel'>): LoggerOptions {
  return {
    level: config.logLevel,
    base: { service: 'keel' },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: REDACT_PATHS, censor: '[REDACTED]' },
    formatters: { level: (label) => ({ level: label }) },
    serializers: {
      req: (req: RequestLike) => ({ method: req.method, url: redactUrl(req.url), remote_address: req.ip, remote_port: req.socket?.remotePort }),
      res: (res: { statusCode: number }) => ({ status_code: res.statusCode }),
      err: pino.stdSerializers.err,
    },
  };
}

/** Keel's JSON logger at LOG_LEVEL; tests pass their own stream to read what was logged. */
export function createLogger(config: Pick<Config, 'logLevel'>, destination?: DestinationStream): Logger {
  return destination ? pino(loggerOptions(config), destination) : pino(loggerOptions(config));
}

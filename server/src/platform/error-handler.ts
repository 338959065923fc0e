import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../config.js';
import { isDatabaseUnavailable } from '../db/errors.js';
import { AppError, errorBody, type ErrorDetail } from './errors.js';

interface ValidationIssue {
  instancePath?: string;
  message?: string;
  keyword?: string;
  params?: Record<string, unknown>;
}

const FASTIFY_CODES: Record<string, { status: number; code: string; message: string }> = {
  FST_ERR_CTP_INVALID_JSON_BODY: { status: 400, code: 'invalid_json', message: 'The request body is not valid JSON.' },
  FST_ERR_CTP_EMPTY_JSON_BODY: { status: 400, code: 'invalid_json', message: 'The request body is empty but its content type is JSON.' },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { status: 400, code: 'invalid_request', message: 'Content-Length does not match the body.' },
  FST_ERR_CTP_BODY_TOO_LARGE: { status: 413, code: 'payload_too_large', message: 'The request body is too large.' },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { status: 415, code: 'unsupported_media_type', message: 'This content type is not accepted here; send application/json.' },
};

const CODE_FOR_STATUS: Record<number, string> = {
  400: 'invalid_request', 401: 'unauthorized', 403: 'forbidden', 404: 'not_found', 405: 'method_not_allowed',
  408: 'request_timeout', 409: 'conflict', 413: 'payload_too_large', 415: 'unsupported_media_type', 429: 'rate_limited',
};

/** Names the field (`email`, `items[2].name`) of each schema violation in plain words. */
export function validationDetails(issues: readonly ValidationIssue[], location: string | undefined): ErrorDetail[] {
  return issues.map((issue) => {
    const segments = (issue.instancePath ?? '').split('/').filter(Boolean).map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
    const missing = issue.params?.missingProperty ?? issue.params?.requiredProperties;
    if (issue.keyword === 'required' && typeof missing === 'string') segments.push(missing);
    if (issue.keyword === 'additionalProperties' && typeof issue.params?.additionalProperty === 'string') segments.push(issue.params.additionalProperty);
    const field = segments.reduce((acc, s) => (/^\d+$/.test(s) ? `${acc}[${s}]` : acc ? `${acc}.${s}` : s), '');
    const message = issue.keyword === 'required' ? 'is required'
      : issue.keyword === 'additionalProperties' ? 'is not a known field'
        : issue.message ?? 'is invalid';
    return { field: field || (location ?? 'body'), location: location ?? 'body', message };
  });
}

/** Maps any thrown error to the API.md shape; never leaks a stack trace outside development. */
export function installErrorHandling(app: FastifyInstance, config: Pick<Config, 'env'>, pageFallback?: (url: string, accept: string | undefined) => boolean): void {
  app.setErrorHandler((error: FastifyError | AppError | Error, request: FastifyRequest, reply: FastifyReply) => {
    const { status, code, message, details, headers } = classify(error);
    if (status >= 500 && code !== 'database_unavailable') request.log.error({ err: error }, 'request failed');
    else if (status >= 500) request.log.warn({ err: { message: error.message, code: (error as { code?: string }).code } }, 'database unavailable');
    else request.log.info({ code, status }, 'request rejected');
    if (headers) void reply.headers(headers);
    const body = errorBody(status, code, message, String(request.id), details);
    if (config.env === 'development' && status >= 500 && error.stack) (body.error as Record<string, unknown>).stack = error.stack;
    return reply.code(status).type('application/json; charset=utf-8').send(body);
  });

  // Unknown URLs are rate limited too (when limits are on), so scanning for routes costs the scanner.
  app.setNotFoundHandler({ preHandler: app.hasDecorator('rateLimit') ? app.rateLimit() : undefined }, (request, reply) => {
    if (request.method === 'GET' && pageFallback?.(request.url, request.headers.accept)) return reply.sendFile('index.html');
    return reply.code(404).send(errorBody(404, 'not_found', `No route for ${request.method} ${request.url.split('?')[0]}.`, String(request.id)));
  });
}

function classify(error: FastifyError | AppError | Error): { status: number; code: string; message: string; details?: ErrorDetail[]; headers?: Record<string, string> } {
  if (error instanceof AppError) return { status: error.statusCode, code: error.code, message: error.message, details: error.details, headers: error.headers };
  const fe = error as FastifyError & { validation?: ValidationIssue[]; validationContext?: string };
  if (Array.isArray(fe.validation)) {
    const details = validationDetails(fe.validation, fe.validationContext);
    const first = details[0];
    return { status: 400, code: 'invalid_request', message: first ? `Invalid ${String(first.location)}: ${first.field} ${first.message}.` : 'The request is invalid.', details };
  }
  const known = fe.code ? FASTIFY_CODES[fe.code] : undefined;
  if (known) return { status: known.status, code: known.code, message: known.message };
  if (isDatabaseUnavailable(error)) {
    return { status: 503, code: 'database_unavailable', message: 'The database is unavailable; try again shortly.', headers: { 'retry-after': '5' } };
  }
  const status = typeof fe.statusCode === 'number' ? fe.statusCode : 500;
  if (status >= 400 && status < 500) {
    const isJson = error instanceof SyntaxError;
    return { status, code: isJson ? 'invalid_json' : CODE_FOR_STATUS[status] ?? 'invalid_request', message: isJson ? 'The request body is not valid JSON.' : error.message };
  }
  if (status === 503) return { status, code: 'service_unavailable', message: 'The service is unavailable; try again shortly.' };
  return { status: 500, code: 'internal_error', message: 'An internal error occurred; it has been logged with this request id.' };
}

/**
 * Keel's errors: a code a client can switch on, an HTTP status, a human sentence, optional details.
 * Services return or throw these; the error handler turns every error (ours, Fastify's, a database's)
 * into the one response shape of API.md.
 */
export type ErrorCode =
  | 'invalid_request'
  | 'invalid_json'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'method_not_allowed'
  | 'conflict'
  | 'payload_too_large'
  | 'unsupported_media_type'
  | 'rate_limited'
  | 'internal_error'
  | 'database_unavailable'
  | 'service_unavailable'
  | (string & {});

export interface ErrorDetail {
  field?: string;
  message: string;
  [key: string]: unknown;
}

export class AppError extends Error {
  readonly statusCode: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
    status: number,
    readonly details?: ErrorDetail[],
    readonly headers?: Record<string, string>,
  ) {
    super(message);
    this.name = 'AppError';
    this.statusCode = status;
  }

  static badRequest(message: string, details?: ErrorDetail[], code: ErrorCode = 'invalid_request'): AppError {
    return new AppError(code, message, 400, details);
  }
  static unauthorized(message = 'Authentication is required.', code: ErrorCode = 'unauthorized'): AppError {
    return new AppError(code, message, 401, undefined, { 'www-authenticate': 'Bearer' });
  }
  static forbidden(message = 'You do not have permission to do this.'): AppError {
    return new AppError('forbidden', message, 403);
  }
  static notFound(what = 'Resource'): AppError {
    return new AppError('not_found', `${what} not found.`, 404);
  }
  static conflict(message: string): AppError {
    return new AppError('conflict', message, 409);
  }
  static unavailable(code: ErrorCode, message: string, retryAfterSeconds = 5): AppError {
    return new AppError(code, message, 503, undefined, { 'retry-after': String(retryAfterSeconds) });
  }
}

/** A value-or-error union for services whose failures are expected outcomes, not exceptions. */
export type Result<T, E = AppError> = { ok: true; value: T } | { ok: false; error: E };
export const ok = <T>(value: T): Result<T, never> => ({ ok: true, value });
export const fail = <E>(error: E): Result<never, E> => ({ ok: false, error });

/** OpenAI-compatible `type` for an HTTP status, so OpenAI SDKs classify Keel's errors correctly. */
export function errorType(status: number): string {
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 404) return 'not_found_error';
  if (status === 429) return 'rate_limit_error';
  if (status === 503) return 'service_unavailable_error';
  if (status >= 500) return 'api_error';
  return 'invalid_request_error';
}

export interface ErrorBody {
  error: {
    code: string;
    message: string;
    type: string;
    request_id: string;
    details?: ErrorDetail[];
  };
}

export function errorBody(status: number, code: string, message: string, requestId: string, details?: ErrorDetail[]): ErrorBody {
  return {
    error: {
      code,
      message,
      type: errorType(status),
      request_id: requestId,
      ...(details && details.length > 0 ? { details } : {}),
    },
  };
}

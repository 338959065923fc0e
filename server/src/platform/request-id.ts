import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

const VALID_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * The request id: the caller's `X-Request-ID` when it is a sane token (so ids follow a request across
 * a proxy and services), otherwise a fresh UUID. Anything else is replaced, never echoed, so a header
 * cannot inject text into logs or responses.
 */
export function requestIdFor(req: IncomingMessage): string {
  const incoming = req.headers['x-request-id'];
  const value = Array.isArray(incoming) ? incoming[0] : incoming;
  return value !== undefined && VALID_ID.test(value) ? value : randomUUID();
}

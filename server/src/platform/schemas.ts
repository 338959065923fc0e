import { Type } from 'typebox';

/** The error shape of API.md, for route `response` declarations and the OpenAPI document. */
export const ErrorResponse = Type.Object(
  {
    error: Type.Object({
      code: Type.String({ description: 'Stable machine-readable code, e.g. invalid_request, not_found, rate_limited.' }),
      message: Type.String({ description: 'A human sentence.' }),
      type: Type.String({ description: 'OpenAI-compatible error type.' }),
      request_id: Type.String(),
      details: Type.Optional(Type.Array(Type.Object({ field: Type.Optional(Type.String()), message: Type.String() }, { additionalProperties: true }))),
      stack: Type.Optional(Type.String({ description: 'Development only.' })),
    }),
  },
  { $id: 'ErrorResponse', title: 'ErrorResponse' },
);

/** `{ items, next_cursor }` for any item schema. */
export const Page = <T extends Parameters<typeof Type.Array>[0]>(item: T) =>
  Type.Object({ items: Type.Array(item), next_cursor: Type.Union([Type.String(), Type.Null()]) });

/** Route `response` entries for the error statuses a route can answer, all in the one error shape. */
export function errorResponses<S extends number>(...statuses: S[]): Record<S, typeof ErrorResponse> {
  return Object.fromEntries(statuses.map((s) => [s, ErrorResponse])) as Record<S, typeof ErrorResponse>;
}

/** The usual errors of an authenticated route. */
export const AUTHED_ERRORS = errorResponses(400, 401, 403, 404, 429);

/** OpenAPI `security` of routes that take an access token or an API key… */
export const ANY_CREDENTIAL: Array<Record<string, string[]>> = [{ bearer: [] }, { apiKey: [] }];
/** …and of routes that need a signed-in session (an access token). */
export const SESSION_CREDENTIAL: Array<Record<string, string[]>> = [{ bearer: [] }];

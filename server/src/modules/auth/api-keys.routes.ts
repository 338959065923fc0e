import type { FastifyInstance } from 'fastify';
import { Type, type Static } from 'typebox';
import { SCOPES, type Guards } from '../../platform/auth.js';
import type { ModuleContext } from '../../platform/module.js';
import { AUTHED_ERRORS, Page, SESSION_CREDENTIAL } from '../../platform/schemas.js';
import { ApiKeysService, API_KEY_NAME_MAX } from './api-keys.service.js';
import { IdParams, PageQuery } from './auth.schemas.js';
import { requestMeta, type AuthService } from './auth.service.js';

const errors = AUTHED_ERRORS;
const bearer = SESSION_CREDENTIAL;

const CreateBody = Type.Object({
  name: Type.String({ minLength: 1, maxLength: API_KEY_NAME_MAX }),
  scopes: Type.Array(Type.String({ maxLength: 64, examples: [...SCOPES] }), { minItems: 1, maxItems: 32, description: `Any of: ${SCOPES.join(', ')}. \`admin\` only for administrators.` }),
  expires_at: Type.Optional(Type.Union([Type.String({ format: 'date-time' }), Type.Null()], { description: 'When the key stops working (must be in the future); omit or null for no expiry.' })),
}, { additionalProperties: false });

const ApiKeySchema = Type.Object({
  id: Type.String(),
  name: Type.String(),
  prefix: Type.String({ description: 'The key\'s public start (`keel_sk_…`), to recognise it in lists and logs.' }),
  scopes: Type.Array(Type.String()),
  created_at: Type.String(),
  expires_at: Type.Union([Type.String(), Type.Null()]),
  last_used_at: Type.Union([Type.String(), Type.Null()], { description: 'Updated at most once a minute.' }),
});
const CreatedApiKey = Type.Intersect([ApiKeySchema, Type.Object({ key: Type.String({ description: 'The whole key. Shown this once: only its hash is stored.' }) })]);

/**
 * `POST/GET /api-keys`, `DELETE /api-keys/:id`. Managing keys needs a signed-in session: a key
 * cannot mint, list or revoke keys, so a leaked key cannot entrench itself.
 */
export async function apiKeyRoutes(app: FastifyInstance, ctx: ModuleContext, auth: AuthService, guards: Guards): Promise<void> {
  const keys = new ApiKeysService(ctx.database.db, auth);
  const tags = ['identity'];

  app.post('/api-keys', {
    preHandler: guards.session(),
    schema: {
      tags, summary: 'Create an API key; the key is in this response only', security: bearer,
      description: 'Send the key as `X-API-Key: <key>` or `Authorization: Bearer <key>`. A key never holds more power than its owner has at the time of each request. 400 names an unknown scope; 403 for the `admin` scope when the caller is not an administrator.',
      body: CreateBody, response: { 201: CreatedApiKey, ...errors },
    },
  }, async (request, reply) => reply.code(201).send(await keys.create(request.principal!, request.body as Static<typeof CreateBody>, requestMeta(request))));

  app.get('/api-keys', {
    preHandler: guards.session(),
    schema: { tags, summary: 'The caller\'s API keys (never their secrets), newest first', security: bearer, querystring: PageQuery, response: { 200: Page(ApiKeySchema), ...errors } },
  }, async (request) => {
    const q = request.query as Static<typeof PageQuery>;
    return keys.list(request.principal!, q.limit ?? 50, q.cursor);
  });

  app.delete('/api-keys/:id', {
    preHandler: guards.session(),
    schema: { tags, summary: 'Revoke an API key: it stops working on the next request', security: bearer, params: IdParams, response: { 204: Type.Null(), ...errors } },
  }, async (request, reply) => {
    await keys.revoke(request.principal!, (request.params as Static<typeof IdParams>).id, requestMeta(request));
    return reply.code(204).send();
  });
}

import type { FastifyInstance } from 'fastify';
import { Type, type Static } from 'typebox';
import type { Guards } from '../../platform/auth.js';
import type { ModuleContext } from '../../platform/module.js';
import { ANY_CREDENTIAL, AUTHED_ERRORS, Page } from '../../platform/schemas.js';
import { AdminService, LIMITS_MAX_BYTES, type UserChanges } from './admin.service.js';
import { AuditEvent, IdParams, PageQuery, UserSchema } from './auth.schemas.js';
import { requestMeta, type AuthService } from './auth.service.js';

const errors = AUTHED_ERRORS;
const bearer = ANY_CREDENTIAL;

const AdminUser = Type.Intersect([UserSchema, Type.Object({
  disabled_at: Type.Union([Type.String(), Type.Null()]),
  limits: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()], { description: 'Per-user overrides of the usage limits; null for the defaults.' }),
  updated_at: Type.String(),
})]);

const UsersQuery = Type.Object({ ...PageQuery.properties, q: Type.Optional(Type.String({ maxLength: 254, description: 'Only users whose e-mail starts with this (case-insensitive).' })) });
const AuditQuery = Type.Object({ ...PageQuery.properties, user_id: Type.Optional(Type.String({ maxLength: 64, description: 'Only this user\'s events.' })) });

const PatchUserBody = Type.Object({
  role: Type.Optional(Type.Union([Type.Literal('user'), Type.Literal('admin')])),
  disabled: Type.Optional(Type.Boolean({ description: 'true ends all the user\'s sessions at once and stops their API keys; false lets them sign in again (their keys work again).' })),
  limits: Type.Optional(Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()], { description: `Usage limit overrides, at most ${LIMITS_MAX_BYTES} bytes of JSON; null restores the defaults.` })),
}, { additionalProperties: false, minProperties: 1 });

/** `GET /admin/users`, `PATCH /admin/users/:id`, `GET /admin/audit`: administrators only (a session, or a key with the `admin` scope). */
export async function adminRoutes(app: FastifyInstance, ctx: ModuleContext, auth: AuthService, guards: Guards): Promise<void> {
  const admin = new AdminService(ctx.database.db, auth);
  const tags = ['identity'];

  app.get('/admin/users', {
    preHandler: guards.admin(),
    schema: { tags, summary: 'Users, newest first, optionally searched by e-mail prefix (admin)', security: bearer, querystring: UsersQuery, response: { 200: Page(AdminUser), ...errors } },
  }, async (request) => {
    const q = request.query as Static<typeof UsersQuery>;
    return admin.listUsers(q.limit ?? 50, q.cursor, q.q);
  });

  app.patch('/admin/users/:id', {
    preHandler: guards.admin(),
    schema: {
      tags, summary: 'Change a user\'s role, disabled state or limits (admin)', security: bearer,
      description: 'Disabling takes effect on the user\'s very next request. An administrator cannot demote or disable themself (400).',
      params: IdParams, body: PatchUserBody, response: { 200: AdminUser, ...errors },
    },
  }, async (request) => admin.updateUser(request.principal!, (request.params as Static<typeof IdParams>).id, request.body as UserChanges, requestMeta(request)));

  app.get('/admin/audit', {
    preHandler: guards.admin(),
    schema: { tags, summary: 'Security events of all users, newest first (admin)', security: bearer, querystring: AuditQuery, response: { 200: Page(AuditEvent), ...errors } },
  }, async (request) => {
    const q = request.query as Static<typeof AuditQuery>;
    return admin.auditLog(q.limit ?? 50, q.cursor, q.user_id);
  });
}

import type { FastifyInstance } from 'fastify';
import type { Static } from 'typebox';
import type { ModuleContext } from '../../platform/module.js';
import { ANY_CREDENTIAL, AUTHED_ERRORS, Page } from '../../platform/schemas.js';
import { AdminUsageQuery, LogsQuery, UsageLog, UsageQuery, UsageSummary } from './usage.schemas.js';
import type { UsageService } from './usage.service.js';

const errors = AUTHED_ERRORS;
const security = ANY_CREDENTIAL;
const tags = ['usage'];

/** `GET /usage`, `GET /usage/logs` (the caller's, scope `usage:read`) and `GET /admin/usage` (administrators). */
export async function usageRoutes(app: FastifyInstance, ctx: ModuleContext, usage: UsageService): Promise<void> {
  const { guards } = ctx;

  app.get('/usage', {
    preHandler: guards.scope('usage:read'),
    schema: {
      tags, summary: 'The caller\'s LLM usage over a period, grouped, with the state of their limits', security,
      description: 'Totals and a series grouped by `day`, `model` or `endpoint` over `[from, to)`, and for each limit that applies to the caller (their own, and the calling API key\'s) how much is used and left in the current window. 400 for a malformed date, `from` not before `to`, or a range over a year.',
      querystring: UsageQuery, response: { 200: UsageSummary, ...errors },
    },
  }, async (request) => usage.summary(request.principal!, request.query as Static<typeof UsageQuery>));

  app.get('/usage/logs', {
    preHandler: guards.scope('usage:read'),
    schema: {
      tags, summary: 'The caller\'s metered LLM calls, newest first (counts and timings, never prompt or output text)', security,
      querystring: LogsQuery, response: { 200: Page(UsageLog), ...errors },
    },
  }, async (request) => {
    const q = request.query as Static<typeof LogsQuery>;
    return usage.logs(request.principal!, q.limit ?? 50, q.cursor);
  });

  app.get('/admin/usage', {
    preHandler: guards.admin(),
    schema: {
      tags, summary: 'LLM usage across users, grouped by day, model, endpoint or user (admin)', security,
      description: 'As `GET /usage`, over every user or one (`user_id`). `limits` holds that user\'s limits when `user_id` is given, and is empty otherwise.',
      querystring: AdminUsageQuery, response: { 200: UsageSummary, ...errors },
    },
  }, async (request) => usage.adminSummary(request.query as Static<typeof AdminUsageQuery>));
}

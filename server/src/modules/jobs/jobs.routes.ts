import type { FastifyInstance } from 'fastify';
import { Type, type Static } from 'typebox';
import { AppError } from '../../platform/errors.js';
import type { ModuleContext } from '../../platform/module.js';
import { ANY_CREDENTIAL, AUTHED_ERRORS } from '../../platform/schemas.js';

const tags = ['jobs'];
const IdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) });
const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(t: T) => Type.Union([t, Type.Null()]);

/** `JobView` of platform/jobs.ts. */
const Job = Type.Object({
  id: Type.String(),
  type: Type.String({ description: 'What the job does, e.g. `document.ingest`.' }),
  status: Type.Union([Type.Literal('pending'), Type.Literal('running'), Type.Literal('succeeded'), Type.Literal('failed')], { description: 'pending → running → succeeded | failed; a failed attempt with attempts left goes back to pending.' }),
  attempts: Type.Integer({ description: 'Runs started so far (a run cut short by a dead worker counts).' }),
  progress: Nullable(Type.Number({ minimum: 0, maximum: 1 })),
  error: Nullable(Type.String({ description: 'The last failure; set while a retry is pending, and when the job failed.' })),
  result: Type.Unknown({ description: 'What the job produced (JSON), once succeeded; else null.' }),
  created_at: Type.String(),
  updated_at: Type.String(),
  finished_at: Nullable(Type.String()),
});

/** `GET /jobs/{id}`: the status of one of the caller's background jobs. */
export async function jobsRoutes(app: FastifyInstance, ctx: ModuleContext): Promise<void> {
  app.get('/jobs/:id', {
    // Jobs are listed under Knowledge in API.md (document ingestion is the first job type).
    preHandler: ctx.guards.scope('knowledge:read'),
    schema: { tags, summary: 'One of the caller\'s background jobs', security: ANY_CREDENTIAL, params: IdParams, response: { 200: Job, ...AUTHED_ERRORS } },
  }, async (request) => {
    const job = await ctx.jobs.view(request.principal!.userId, (request.params as Static<typeof IdParams>).id);
    if (!job) throw AppError.notFound('Job');
    return job;
  });
}

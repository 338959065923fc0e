import { describeAccessMatrix, type MatrixContext } from '../helpers/access-matrix.js';
import { probeJobsModule } from '../fixtures/probe-jobs.module.js';

/** A job of the row's owner (a type no worker claims, so it stays as it is). */
async function ownersJob(ctx: MatrixContext): Promise<Record<string, string>> {
  const { jobs, database } = ctx.server.server.keel.context;
  const job = await jobs.enqueue(database.db, { type: 'probe.unregistered', ownerId: ctx.cast.owner.id, payload: {} });
  return { id: job.id };
}

// A job belongs to its owner: everyone else (admins included) gets 404, never 403.
describeAccessMatrix('jobs routes', [
  { method: 'GET', path: '/jobs/:id', scope: 'knowledge:read', setup: ownersJob, expect: { guest: 401, other: 404, owner: 200, admin: 404, keyWithScope: 200, keyWithoutScope: 403 } },
], { modules: [probeJobsModule] });

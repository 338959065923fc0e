import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeEachDatabase } from '../helpers/databases.js';
import { bearer, signUp, type TestUser } from '../helpers/factories.js';
import { expectErrorShape, request, startServer, type TestServer } from '../helpers/server.js';
import { probeJobsModule } from '../fixtures/probe-jobs.module.js';

describeEachDatabase('GET /jobs/{id}', (db) => {
  let s: TestServer;
  let owner: TestUser;
  let other: TestUser;
  beforeAll(async () => {
    s = await startServer(db(), { JOB_POLL_MS: '50' }, [probeJobsModule]);
    [owner, other] = await Promise.all([signUp(s), signUp(s)]);
  });
  afterAll(() => s?.close());

  const enqueue = (type: string, ownerId: string, payload: unknown) =>
    s.server.keel.context.jobs.enqueue(s.server.keel.context.database.db, { type, ownerId, payload });

  it('the owner follows a job to its result; anyone else gets 404, a guest 401', async () => {
    const job = await enqueue('probe.echo', owner.id, { n: 7 });
    let body: Record<string, unknown> = {};
    for (let i = 0; i < 200 && body.status !== 'succeeded'; i++) {
      const res = await request(`${s.url}/jobs/${job.id}`, { headers: bearer(owner.access_token) });
      expect(res.status).toBe(200);
      body = res.body;
      if (body.status !== 'succeeded') await new Promise((r) => setTimeout(r, 25));
    }
    expect(body).toEqual({
      id: job.id, type: 'probe.echo', status: 'succeeded', attempts: 1, progress: 1, error: null, result: { echo: { n: 7 } },
      created_at: job.created_at, updated_at: expect.any(String) as string, finished_at: expect.any(String) as string,
    });

    const theirs = await request(`${s.url}/jobs/${job.id}`, { headers: bearer(other.access_token) });
    expect(theirs.status).toBe(404);
    expect(expectErrorShape(theirs.body).code).toBe('not_found');
    const guest = await request(`${s.url}/jobs/${job.id}`);
    expect(guest.status).toBe(401);
    expect(guest.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect((await request(`${s.url}/jobs/00000000-0000-7000-8000-000000000000`, { headers: bearer(owner.access_token) })).status).toBe(404);
  });

  it('shows a pending job as pending, with null progress, error and result; system jobs are nobody\'s', async () => {
    const job = await enqueue('probe.unregistered', owner.id, {});
    const res = await request(`${s.url}/jobs/${job.id}`, { headers: bearer(owner.access_token) });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: 'pending', attempts: 0, progress: null, error: null, result: null, finished_at: null });
    const system = await s.server.keel.context.jobs.enqueue(s.server.keel.context.database.db, { type: 'probe.unregistered', ownerId: null, payload: {} });
    expect((await request(`${s.url}/jobs/${system.id}`, { headers: bearer(owner.access_token) })).status).toBe(404);
  });

  it('a user\'s jobs go when the user is erased', async () => {
    const leaving = await signUp(s);
    const job = await enqueue('probe.unregistered', leaving.id, {});
    const erased = await request(`${s.url}/me`, { method: 'DELETE', headers: bearer(leaving.access_token), json: { password: leaving.password } });
    expect(erased.status).toBeLessThan(300);
    const left = await s.server.keel.context.database.db.selectFrom('jobs').select('id').where('id', '=', job.id).execute();
    expect(left).toEqual([]);
  });
});

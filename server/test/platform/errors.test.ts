import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeEachDatabase } from '../helpers/databases.js';
import { expectErrorShape, request, startServer, type TestServer } from '../helpers/server.js';
import { probeModule } from '../fixtures/probe.module.js';

describeEachDatabase('every error has the API.md shape', (db) => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer(db(), { BODY_LIMIT_KB: '4' }, [probeModule]);
  });
  afterAll(() => s.close());

  const post = (path: string, body: string, contentType = 'application/json') =>
    request(`${s.url}${path}`, { method: 'POST', body, headers: { 'content-type': contentType } });

  it('accepts a valid body', async () => {
    const res = await request(`${s.url}/_probe/echo`, { method: 'POST', json: { name: 'a', count: 2 } });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ received: { name: 'a', count: 2 } });
  });

  it('malformed JSON → 400 invalid_json', async () => {
    const res = await post('/_probe/echo', '{"name": "a",');
    expect(res.status).toBe(400);
    const err = expectErrorShape(res.body);
    expect(err.code).toBe('invalid_json');
    expect(err.type).toBe('invalid_request_error');
    expect(err.request_id).toBe(res.headers.get('x-request-id'));
  });

  it('a prototype-poisoning body is refused, not merged', async () => {
    const res = await post('/_probe/echo', '{"name":"a","count":1,"__proto__":{"admin":true}}');
    expect(res.status).toBe(400);
    expect(expectErrorShape(res.body).code).toBe('invalid_json');
  });

  it('schema violation → 400 naming the field', async () => {
    const missing = await request(`${s.url}/_probe/echo`, { method: 'POST', json: { name: 'a' } });
    expect(missing.status).toBe(400);
    const err = expectErrorShape(missing.body);
    expect(err.code).toBe('invalid_request');
    expect(err.details).toEqual([expect.objectContaining({ field: 'count', location: 'body', message: 'is required' })]);
    expect(err.message).toContain('count');

    const nested = await request(`${s.url}/_probe/echo`, { method: 'POST', json: { name: 'a', count: 1, tags: ['ok', 7] } });
    expect(expectErrorShape(nested.body).details?.[0]?.field).toBe('tags[1]');
  });

  it('wrong types are refused rather than coerced', async () => {
    const res = await request(`${s.url}/_probe/echo`, { method: 'POST', json: { name: 'a', count: '5' } });
    expect(res.status).toBe(400);
    expect(expectErrorShape(res.body).details?.[0]?.field).toBe('count');
  });

  it('query strings are coerced and validated', async () => {
    expect((await request(`${s.url}/_probe/slow?ms=1`)).status).toBe(200);
    const bad = await request(`${s.url}/_probe/slow?ms=soon`);
    expect(bad.status).toBe(400);
    expect(expectErrorShape(bad.body).details?.[0]).toMatchObject({ field: 'ms', location: 'querystring' });
  });

  it('unknown route → 404 not_found', async () => {
    const res = await request(`${s.url}/v9/nothing?x=1`);
    expect(res.status).toBe(404);
    const err = expectErrorShape(res.body);
    expect(err.code).toBe('not_found');
    expect(err.type).toBe('not_found_error');
    expect(err.message).toContain('/v9/nothing');
  });

  it('oversize body → 413 payload_too_large', async () => {
    const res = await post('/_probe/echo', JSON.stringify({ name: 'x'.repeat(10_000), count: 1 }));
    expect(res.status).toBe(413);
    expect(expectErrorShape(res.body).code).toBe('payload_too_large');
  });

  it('wrong content type → 415 unsupported_media_type', async () => {
    const res = await post('/_probe/echo', 'name=a&count=1', 'application/x-www-form-urlencoded');
    expect(res.status).toBe(415);
    expect(expectErrorShape(res.body).code).toBe('unsupported_media_type');
  });

  it('an unexpected failure → 500 with no stack trace or internal message outside development', async () => {
    const res = await request(`${s.url}/_probe/boom`);
    expect(res.status).toBe(500);
    const err = expectErrorShape(res.body);
    expect(err.code).toBe('internal_error');
    expect(JSON.stringify(res.body)).not.toContain('internal detail');
    expect(JSON.stringify(res.body)).not.toContain('at ');
    // ...but the log has it, under the same request id, for the operator
    const logged = s.logs.find((l) => l.request_id === err.request_id && l.msg === 'request failed');
    expect(JSON.stringify(logged)).toContain('internal detail that must not leak');
  });
});

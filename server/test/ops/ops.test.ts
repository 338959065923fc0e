import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeEachDatabase } from '../helpers/databases.js';
import { expectErrorShape, request, startServer, type TestServer } from '../helpers/server.js';
import { probeModule } from '../fixtures/probe.module.js';

describeEachDatabase('operations routes', (db) => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer(db(), {}, [probeModule]);
  });
  afterAll(() => s.close());

  it('GET /health answers liveness with version and uptime', async () => {
    const res = await request<{ status: string; version: string; uptime_s: number }>(`${s.url}/health`);
    expect(res.status).toBe(200);
    expect(res.body.status).toBe('ok');
    expect(res.body.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(res.body.uptime_s).toBeGreaterThanOrEqual(0);
  });

  it('GET /ready reports the database reachable and every migration applied', async () => {
    const res = await request<{ status: string; checks: Array<{ name: string; ok: boolean }> }>(`${s.url}/ready`);
    expect(res.status).toBe(200);
    expect(res.body.status).toBe('ready');
    expect(res.body.checks.map((c) => [c.name, c.ok])).toEqual([['database', true], ['migrations', true]]);
  });

  it('a route reading the database works on this dialect', async () => {
    const res = await request<{ users: number }>(`${s.url}/_probe/users`);
    expect(res.status).toBe(200);
    expect(res.body.users).toBe(0);
  });

  it('GET /metrics exposes request counts and latency by route template and status, and process metrics', async () => {
    await request(`${s.url}/health`);
    await request(`${s.url}/no/such/route/${Math.random()}`);
    const res = await fetch(`${s.url}/metrics`);
    const text = await res.text();
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/plain');
    expect(text).toMatch(/keel_http_requests_total\{method="GET",route="\/health",status="200"\} \d+/);
    expect(text).toMatch(/keel_http_request_duration_seconds_bucket\{le="0\.005",method="GET",route="\/health",status="200"\} \d+/);
    // unmatched URLs share one label so scanners cannot create series
    expect(text).toMatch(/keel_http_requests_total\{method="GET",route="unmatched",status="404"\} \d+/);
    expect(text).not.toContain('/no/such/route');
    expect(text).toContain('keel_process_resident_memory_bytes');
  });

  it('every response carries X-Request-ID, echoing a sane incoming one and replacing anything else', async () => {
    const fresh = await fetch(`${s.url}/health`);
    expect(fresh.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    const echoed = await fetch(`${s.url}/health`, { headers: { 'x-request-id': 'trace-abc.123' } });
    expect(echoed.headers.get('x-request-id')).toBe('trace-abc.123');
    const hostile = await fetch(`${s.url}/health`, { headers: { 'x-request-id': 'a b\tc<script>' } });
    expect(hostile.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    const missing = await request(`${s.url}/nothing-here`, { headers: { 'x-request-id': 'req-404' } });
    expect(missing.headers.get('x-request-id')).toBe('req-404');
    expect(expectErrorShape(missing.body).request_id).toBe('req-404');
  });

  it('the request id appears in the log line of that request', async () => {
    await fetch(`${s.url}/health`, { headers: { 'x-request-id': 'log-me-42' } });
    const line = s.logs.find((l) => l.request_id === 'log-me-42');
    expect(line).toMatchObject({ msg: 'request completed', res: { status_code: 200 } });
  });

  it('serves the web console at / and Swagger UI at /docs, and OpenAPI 3.1 at /openapi.json', async () => {
    const root = await fetch(`${s.url}/`);
    expect(root.status).toBe(200);
    expect(root.headers.get('content-type')).toContain('text/html');
    expect(await root.text()).toContain('Keel');
    const docs = await fetch(`${s.url}/docs`);
    expect(docs.status).toBe(200);
    expect(await docs.text()).toContain('swagger');
    const spec = await request<{ openapi: string; paths: Record<string, unknown> }>(`${s.url}/openapi.json`);
    expect(spec.body.openapi).toBe('3.1.0');
    expect(Object.keys(spec.body.paths)).toEqual(expect.arrayContaining(['/health', '/ready', '/metrics']));
  });
});

describeEachDatabase('documentation switch', (db) => {
  it('DOCS_ENABLED=false removes /docs and /openapi.json', async () => {
    const s = await startServer(db(), { DOCS_ENABLED: 'false' });
    try {
      expect((await fetch(`${s.url}/docs`)).status).toBe(404);
      expect((await fetch(`${s.url}/openapi.json`)).status).toBe(404);
      expect((await fetch(`${s.url}/health`)).status).toBe(200);
    } finally {
      await s.close();
    }
  });
});

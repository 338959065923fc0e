import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeEachDatabase } from '../helpers/databases.js';
import { startServer, type TestServer } from '../helpers/server.js';

describeEachDatabase('CORS and security headers', (db) => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer(db(), { CORS_ORIGINS: 'https://app.example.com,https://www.example.com/' });
  });
  afterAll(() => s.close());

  it('an allowed origin gets its exact origin back, with credentials', async () => {
    const res = await fetch(`${s.url}/health`, { headers: { origin: 'https://www.example.com' } });
    expect(res.headers.get('access-control-allow-origin')).toBe('https://www.example.com');
    expect(res.headers.get('access-control-allow-credentials')).toBe('true');
    expect(res.headers.get('access-control-expose-headers')).toContain('X-Request-ID');
  });

  it('any other origin gets no CORS grant', async () => {
    const res = await fetch(`${s.url}/health`, { headers: { origin: 'https://evil.example.net' } });
    expect(res.headers.get('access-control-allow-origin')).toBeNull();
    const lookalike = await fetch(`${s.url}/health`, { headers: { origin: 'https://app.example.com.evil.net' } });
    expect(lookalike.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('answers a preflight for an allowed origin', async () => {
    const res = await fetch(`${s.url}/health`, {
      method: 'OPTIONS',
      headers: { origin: 'https://app.example.com', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' },
    });
    expect(res.status).toBe(204);
    expect(res.headers.get('access-control-allow-origin')).toBe('https://app.example.com');
    expect(res.headers.get('access-control-allow-methods')).toContain('POST');
    expect(res.headers.get('access-control-allow-headers')?.toLowerCase()).toContain('authorization');
  });

  it('sets security headers, and no HSTS outside production', async () => {
    const res = await fetch(`${s.url}/health`);
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('x-frame-options')).toBe('SAMEORIGIN');
    expect(res.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
    expect(res.headers.get('strict-transport-security')).toBeNull();
    expect(res.headers.get('x-powered-by')).toBeNull();
  });
});

describeEachDatabase('production headers', (db) => {
  it('production adds HSTS', async () => {
    const s = await startServer(db(), { NODE_ENV: 'production', CORS_ORIGINS: 'https://app.example.com', SECRET_KEY: 'f'.repeat(8) + '0123456789abcdef0123456789abcdef0123456789' });
    try {
      const res = await fetch(`${s.url}/health`);
      expect(res.headers.get('strict-transport-security')).toMatch(/max-age=31536000/);
    } finally {
      await s.close();
    }
  });
});

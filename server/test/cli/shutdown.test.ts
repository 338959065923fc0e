import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSqliteDatabase, type TestDatabase } from '../helpers/databases.js';
import { spawnKeel } from '../helpers/process.js';

const SERVE_WITH_PROBE = fileURLToPath(new URL('../fixtures/serve-with-probe.ts', import.meta.url));

describe('graceful shutdown on SIGTERM/SIGINT', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createSqliteDatabase();
  });
  afterAll(() => db.cleanup());

  const start = (env: Record<string, string> = {}) =>
    spawnKeel([], { ...db.env, NODE_ENV: 'test', PORT: '0', SECRET_KEY: 'x'.repeat(8) + 'shutdown-test-secret-0123456789', ...env }, SERVE_WITH_PROBE);

  it.each(['SIGTERM', 'SIGINT'] as const)('%s: stops accepting, finishes the request in flight, closes the database, exits 0', async (signal) => {
    const p = start();
    const url = await p.listening();
    const inFlight = fetch(`${url}/_probe/slow?ms=1500`).then(async (r) => ({ status: r.status, body: (await r.json()) as unknown }));
    await new Promise((r) => setTimeout(r, 300));
    p.child.kill(signal);
    await new Promise((r) => setTimeout(r, 200));
    await expect(fetch(`${url}/health`)).rejects.toThrow();
    expect(await inFlight).toEqual({ status: 200, body: { slept_ms: 1500 } });
    const finishedAt = Date.now();
    expect(await p.exited).toBe(0);
    // exits as soon as the work is done, not at the 10 s deadline
    expect(Date.now() - finishedAt).toBeLessThan(3000);
    const out = p.stdout();
    expect(out.indexOf('shutting down')).toBeLessThan(out.indexOf('shutdown complete'));
  });

  it('cuts what is still running at the deadline and exits', async () => {
    const p = start({ SHUTDOWN_TIMEOUT_MS: '500' });
    const url = await p.listening();
    const stalled = fetch(`${url}/_probe/slow?ms=20000`).then((r) => r.status, () => 'cut');
    await new Promise((r) => setTimeout(r, 300));
    const signalledAt = Date.now();
    p.child.kill('SIGTERM');
    expect(await stalled).toBe('cut');
    expect(await p.exited).toBe(0);
    expect(Date.now() - signalledAt).toBeLessThan(5000);
    expect(p.stdout()).toContain('shutdown deadline reached');
  });
});

import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, redactUrl } from '../../src/platform/logger.js';
import { findLeaks } from '../helpers/leaks.js';
import { describeEachDatabase } from '../helpers/databases.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { probeModule } from '../fixtures/probe.module.js';

function capture(): { stream: Writable; text: () => string } {
  const chunks: string[] = [];
  return {
    stream: new Writable({ write(c: Buffer, _e, cb) { chunks.push(c.toString()); cb(); } }),
    text: () => chunks.join(''),
  };
}

describe('log redaction', () => {
  it('censors passwords, tokens, keys and secrets at the top level and one level down', () => {
    const out = capture();
    const log = createLogger({ logLevel: 'info' }, out.stream);
    log.info({ password: 'hunter2-top', body: { password: 'hunter2-nested', refresh_token: 'rt-123', api_key: 'kk_live_abc', otp: '123456' }, headers: { authorization: 'Bearer eyJhbGc', cookie: 'sid=s3cr3t' } }, 'event');
    const text = out.text();
    for (const secret of ['hunter2-top', 'hunter2-nested', 'rt-123', 'kk_live_abc', '123456', 'eyJhbGc', 's3cr3t']) expect(text).not.toContain(secret);
    expect(text).toContain('[REDACTED]');
  });

  it('strips credentials from logged URLs', () => {
    expect(redactUrl('/x?token=abc&page=2&api_key=k1')).toBe('/x?token=[REDACTED]&page=2&api_key=[REDACTED]');
  });

  it('writes at LOG_LEVEL and not below', () => {
    const out = capture();
    const log = createLogger({ logLevel: 'warn' }, out.stream);
    log.info('quiet');
    log.warn('loud');
    expect(out.text()).not.toContain('quiet');
    expect(JSON.parse(out.text().trim())).toMatchObject({ level: 'warn', msg: 'loud', service: 'keel' });
  });
});

describeEachDatabase('request logs', (db) => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer(db(), {}, [probeModule]);
  });
  afterAll(() => s.close());

  it('one JSON line per request with the request id, and no credentials from headers or the URL', async () => {
    await fetch(`${s.url}/_probe/users?token=url-token-777&page=1`, {
      headers: { authorization: 'Bearer header-token-555', 'x-api-key': 'keel_key_999', cookie: 'session=cookie-333', 'x-request-id': 'redaction-check' },
    });
    await fetch(`${s.url}/_probe/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'n', count: 1, password: 'body-password-111' }) });
    const lines = s.logs.filter((l) => l.request_id === 'redaction-check');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ msg: 'request completed', req: { method: 'GET', url: '/_probe/users?token=[REDACTED]&page=1' }, res: { status_code: 200 } });
    for (const secret of ['url-token-777', 'header-token-555', 'keel_key_999', 'cookie-333', 'body-password-111']) expect(s.logText()).not.toContain(secret);
  });
});

describe('the suite-wide leak check', () => {
  it('finds a recorded secret in a captured log, and nothing when it is absent', () => {
    const logs = new Map([['a.log', '{"msg":"request completed","url":"/x"}\n'], ['b.log', '{"msg":"oops","token":"krt_abcdefghijklmnop"}\n']]);
    expect(findLeaks(logs, new Set(['krt_abcdefghijklmnop']))).toEqual(['krt_… (20 chars) in b.log']);
    expect(findLeaks(logs, new Set(['some-password-123']))).toEqual([]);
  });
});

import { existsSync, readFileSync } from 'node:fs';
import { sql } from 'kysely';
import { generate } from 'otplib';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeEachDatabase } from '../helpers/databases.js';
import { bearer, latestCode, outboxFor, signUp, strongPassword } from '../helpers/factories.js';
import { request, startServer, type TestServer } from '../helpers/server.js';

/** Every row of every table, as text: what a database dump would hold. */
async function dumpDatabase(s: TestServer): Promise<string> {
  const { db, dialect } = s.server.keel.context.database;
  const tables = dialect.name === 'sqlite'
    ? (await sql<{ name: string }>`select name from sqlite_master where type = 'table'`.execute(db)).rows.map((r) => r.name)
    : (await sql<{ name: string }>`select table_name as name from information_schema.tables where table_schema = current_schema()`.execute(db)).rows.map((r) => r.name);
  expect(tables).toEqual(expect.arrayContaining(['users', 'sessions', 'refresh_tokens', 'api_keys', 'one_time_tokens', 'pairing_codes', 'recovery_codes']));
  let dump = '';
  for (const table of tables) {
    const { rows } = await sql`select * from ${sql.table(table)}`.execute(db);
    dump += `${table}\n${JSON.stringify(rows)}\n`;
  }
  if (dialect.name === 'sqlite') {
    // and the bytes on disk, WAL included
    for (const file of [s.config.database.url, `${s.config.database.url}-wal`]) if (existsSync(file)) dump += readFileSync(file).toString('latin1');
  }
  return dump;
}

describeEachDatabase('secrets at rest', (db) => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer(db());
  });
  afterAll(() => s.close());

  it('a dump of the database holds no password, token, key, code or TOTP secret in plaintext', async () => {
    const secrets: Record<string, string> = {};
    const user = await signUp(s);
    secrets.password = user.password;
    secrets.first_access_token = user.access_token;
    secrets.first_refresh_token = user.refresh_token;
    secrets.verification_token = /with this code:\n\n(\S+)\n/.exec(outboxFor(s, user.email)[0]!)![1]!;

    const rotated = await request<{ access_token: string; refresh_token: string }>(`${s.url}/auth/refresh`, { method: 'POST', json: { refresh_token: user.refresh_token } });
    secrets.rotated_refresh_token = rotated.body.refresh_token;
    const token = rotated.body.access_token;

    const key = await request<{ key: string }>(`${s.url}/api-keys`, { method: 'POST', headers: bearer(token), json: { name: 'dump', scopes: ['llm'] } });
    secrets.api_key = key.body.key;
    secrets.api_key_secret = key.body.key.split('_').slice(3).join('_');

    const code = await request<{ code: string }>(`${s.url}/auth/pairing-codes`, { method: 'POST', headers: bearer(token) });
    secrets.pairing_code = code.body.code;
    secrets.pairing_code_bare = code.body.code.replace('-', '');

    const setup = await request<{ secret: string }>(`${s.url}/auth/2fa/setup`, { method: 'POST', headers: bearer(token) });
    secrets.totp_secret = setup.body.secret;
    const enabled = await request<{ recovery_codes: string[] }>(`${s.url}/auth/2fa/enable`, { method: 'POST', headers: bearer(token), json: { otp: await generate({ secret: setup.body.secret }) } });
    enabled.body.recovery_codes.forEach((c, i) => (secrets[`recovery_code_${i}`] = c));

    await request(`${s.url}/auth/password/forgot`, { method: 'POST', json: { email: user.email } });
    secrets.reset_token = latestCode(s, user.email);
    const next = strongPassword();
    await request(`${s.url}/auth/password/reset`, { method: 'POST', json: { token: secrets.reset_token, password: next } });
    secrets.new_password = next;

    const dump = await dumpDatabase(s);
    expect(dump).toContain(user.email); // the dump is real: it holds the account
    const found = Object.entries(secrets).filter(([, value]) => dump.includes(value)).map(([name]) => name);
    expect(found).toEqual([]);
  });
});

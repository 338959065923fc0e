import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeEachDatabase } from '../helpers/databases.js';
import { bearer, signUp, strongPassword, uniqueEmail } from '../helpers/factories.js';
import { runKeel } from '../helpers/process.js';
import { request, startServer, type TestServer } from '../helpers/server.js';

describeEachDatabase('keel create-admin', (db) => {
  let s: TestServer;
  beforeAll(async () => {
    // The server migrates the database; the CLI then works on the same one, as an operator's would.
    s = await startServer(db());
  });
  afterAll(() => s.close());

  const env = () => ({ ...db().env, SECRET_KEY: s.config.secretKey });
  const login = (email: string, password: string) => request<{ user: { role: string; email_verified: boolean } }>(`${s.url}/auth/login`, { method: 'POST', json: { email, password } });
  const roleOf = async (email: string) => (await s.server.keel.context.database.db.selectFrom('users').select(['role', 'email_verified_at', 'disabled_at']).where('email', '=', email).executeTakeFirst());

  it('creates a verified admin with a generated password printed once', async () => {
    const email = uniqueEmail('root');
    const r = await runKeel(['create-admin', '--email', email.toUpperCase()], env());
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Created the administrator ${email}`);
    const password = /Password \(shown only now; store it safely\): (\S+)/.exec(r.stdout)?.[1];
    expect(password).toMatch(/^[A-Za-z0-9_-]{24}$/);

    // A raw fetch, not request(): request() records body secrets for the suite's leak check, and this
    // password is meant to be on the CLI's stdout, which that check also reads.
    const res = await fetch(`${s.url}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email, password }) });
    expect(res.status).toBe(200);
    const { access_token: token, user } = (await res.json()) as { access_token: string; user: { role: string; email_verified: boolean } };
    expect(user).toMatchObject({ role: 'admin', email_verified: true });
    expect((await request(`${s.url}/admin/users`, { headers: bearer(token) })).status).toBe(200);
  });

  it('takes the password from KEEL_ADMIN_PASSWORD or --password, and never prints it', async () => {
    const fromEnv = { email: uniqueEmail('env'), password: strongPassword() };
    const r1 = await runKeel(['create-admin', `--email=${fromEnv.email}`], { ...env(), KEEL_ADMIN_PASSWORD: fromEnv.password });
    expect(r1.code).toBe(0);
    expect(r1.stdout).toContain('The password you gave is set.');
    expect(r1.stdout + r1.stderr).not.toContain(fromEnv.password);
    expect((await login(fromEnv.email, fromEnv.password)).body.user.role).toBe('admin');

    const fromFlag = { email: uniqueEmail('flag'), password: strongPassword() };
    const r2 = await runKeel(['create-admin', '--email', fromFlag.email, '--password', fromFlag.password], env());
    expect(r2.code).toBe(0);
    expect(r2.stdout + r2.stderr).not.toContain(fromFlag.password);
    expect((await login(fromFlag.email, fromFlag.password)).body.user.role).toBe('admin');
  });

  it('promotes and re-enables an existing user, keeping their password', async () => {
    const user = await signUp(s);
    await s.server.keel.context.database.db.updateTable('users').set({ disabled_at: new Date().toISOString() }).where('id', '=', user.id).execute();
    const r = await runKeel(['create-admin', '--email', user.email, '--password', strongPassword()], env());
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`${user.email} (id ${user.id}) is now an administrator.`);
    expect(r.stdout).toContain('enabled again');
    expect(r.stdout).toContain('it was kept');
    expect(await roleOf(user.email)).toMatchObject({ role: 'admin', disabled_at: null });
    expect((await login(user.email, user.password)).body.user.role).toBe('admin');

    const again = await runKeel(['create-admin', '--email', user.email], env());
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('was already an administrator');
  });

  it('claims an unverified registration: whoever registered it does not get an admin account', async () => {
    const email = uniqueEmail('squat');
    const squatterPassword = strongPassword();
    expect((await request(`${s.url}/auth/register`, { method: 'POST', json: { email, password: squatterPassword } })).status).toBe(202);
    const operatorPassword = strongPassword();
    const r = await runKeel(['create-admin', '--email', email], { ...env(), KEEL_ADMIN_PASSWORD: operatorPassword });
    expect(r.code).toBe(0);
    expect((await login(email, squatterPassword)).status).toBe(401);
    expect((await login(email, operatorPassword)).body.user).toMatchObject({ role: 'admin', email_verified: true });
  });

  it('explains what is wrong in plain words and exits 1', async () => {
    const missing = await runKeel(['create-admin'], env());
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('--email is required');
    expect(missing.stderr).toContain('usage: keel create-admin');

    const badEmail = await runKeel(['create-admin', '--email', 'not-an-address'], env());
    expect(badEmail.code).toBe(1);
    expect(badEmail.stderr).toContain('is not an e-mail address');

    const email = uniqueEmail('weak');
    const weak = await runKeel(['create-admin', '--email', email], { ...env(), KEEL_ADMIN_PASSWORD: 'password' });
    expect(weak.code).toBe(1);
    expect(weak.stderr).toContain('among the most common');
    expect(await roleOf(email)).toBeUndefined();
  });
});

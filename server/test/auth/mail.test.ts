import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeEachDatabase } from '../helpers/databases.js';
import { startFakeSmtp } from '../helpers/fake-smtp.js';
import { rememberSecret } from '../helpers/leaks.js';
import { strongPassword, uniqueEmail } from '../helpers/factories.js';
import { request, startServer, type TestServer } from '../helpers/server.js';

describeEachDatabase('mail over SMTP', (db) => {
  let smtp: Awaited<ReturnType<typeof startFakeSmtp>>;
  let s: TestServer;
  beforeAll(async () => {
    smtp = await startFakeSmtp();
    s = await startServer(db(), { SMTP_URL: smtp.url, MAIL_FROM: 'Keel <keel@example.test>', PUBLIC_URL: 'https://keel.example.test' });
  });
  afterAll(async () => {
    await s?.close();
    await smtp?.close();
  });

  it('verification mail is delivered through SMTP_URL, and its code activates the account', async () => {
    const email = uniqueEmail('smtp');
    expect((await request(`${s.url}/auth/register`, { method: 'POST', json: { email, password: strongPassword() } })).status).toBe(202);
    const mail = smtp.inbox.find((m) => m.to.includes(email));
    expect(mail?.from).toBe('keel@example.test');
    // the body travels quoted-printable: undo soft line breaks and =XX escapes
    const text = mail!.raw.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/g, (_m, hex: string) => String.fromCharCode(parseInt(hex, 16)));
    expect(text).toContain('Subject: Confirm your e-mail address');
    expect(text).toContain('https://keel.example.test/verify-email?token=');
    const code = /with this code:\r?\n\r?\n(\S+)/.exec(text)![1]!;
    rememberSecret(code);
    expect((await request(`${s.url}/auth/verify-email`, { method: 'POST', json: { token: code } })).status).toBe(200);
    // with SMTP configured nothing is written to the outbox
    expect(s.logText()).toContain('"msg":"mail sent"');
    expect(s.logText()).not.toContain('outbox');
  });
});

import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeEachDatabase } from '../helpers/databases.js';
import { startFakeOpenAI, type FakeOpenAI } from '../helpers/fake-openai.js';
import { bearer, signUp, type TestUser } from '../helpers/factories.js';
import { request, startServer, type TestServer } from '../helpers/server.js';

// Token estimates run on every call (budgets, metering). Text that looks like a special token, or a
// huge run of letters (a pasted base64 blob), must be counted as text, quickly — never a 500.
describeEachDatabase('the gateway counts hostile text as text', (db) => {
  let fake: FakeOpenAI;
  let s: TestServer;
  let user: TestUser;
  beforeAll(async () => {
    fake = await startFakeOpenAI();
    s = await startServer(db(), { LLM_BASE_URL: fake.url, LLM_MODEL: 'fake-model', BODY_LIMIT_KB: '4096' });
    user = await signUp(s);
  });
  afterAll(async () => {
    await s?.close();
    await fake?.close();
  });

  it('a message containing <|endoftext|> is answered and metered', async () => {
    // No usage from the upstream: Keel estimates the prompt itself.
    fake.behave({ reply: 'ok', usage: 'none' });
    const res = await request(`${s.url}/v1/chat/completions`, { method: 'POST', headers: bearer(user.access_token), json: { model: 'fake-model', messages: [{ role: 'user', content: 'before <|endoftext|> after <|im_start|>' }] } });
    expect(res.status).toBe(200);
  });

  // Byte-pair encoding is quadratic in a run of letters: counted naively, this takes minutes and hits
  // the test's timeout.
  it('a 1 MB run of one letter is counted without stalling the server', async () => {
    fake.behave({ reply: 'ok', usage: 'none' });
    const blob = 'a'.repeat(1_000_000);
    const res = await request(`${s.url}/v1/chat/completions`, { method: 'POST', headers: bearer(user.access_token), json: { model: 'fake-model', messages: [{ role: 'user', content: blob }] } });
    expect(res.status).toBe(200);
  });
});

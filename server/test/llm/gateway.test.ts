import OpenAI from 'openai';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeEachDatabase } from '../helpers/databases.js';
import { startFakeOpenAI, type FakeOpenAI } from '../helpers/fake-openai.js';
import { bearer, signUp, type TestUser } from '../helpers/factories.js';
import { rememberSecret } from '../helpers/leaks.js';
import { expectErrorShape, request, startServer, type TestServer } from '../helpers/server.js';
import { usageRowsWhen } from './llm-helpers.js';

const UPSTREAM_KEY = 'sk-upstream-secret-0123456789abcdef';

describeEachDatabase('LLM gateway with the official openai SDK as client', (db) => {
  let fake: FakeOpenAI;
  let s: TestServer;
  let user: TestUser;
  let client: OpenAI;

  beforeAll(async () => {
    rememberSecret(UPSTREAM_KEY);
    fake = await startFakeOpenAI({ apiKey: UPSTREAM_KEY });
    s = await startServer(db(), { LLM_BASE_URL: fake.url, LLM_API_KEY: UPSTREAM_KEY, LLM_MODEL: 'fake-model', LLM_EMBEDDINGS_MODEL: 'fake-embed', LLM_MAX_RETRIES: '2' });
    user = await signUp(s);
    client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: user.access_token, maxRetries: 0 });
  });
  afterAll(async () => {
    await s?.close();
    await fake?.close();
  });

  const usageRows = (userId = user.id) => s.server.keel.context.database.db.selectFrom('usage_events').selectAll().where('user_id', '=', userId).orderBy('id').execute();
  /** The rows once `count` exist: a call's row is written just after its response ended. */
  const rowsWhen = (count: number) => usageRowsWhen(s, user.id, count);

  it('models.list lists the configured models and the presets', async () => {
    const ids: string[] = [];
    for await (const m of client.models.list()) ids.push(m.id);
    expect(ids).toEqual(expect.arrayContaining(['fake-model', 'fake-embed', 'code', 'general', 'reasoning']));
  });

  it('chat.completions.create answers and writes one usage row with the exact tokens the upstream reported', async () => {
    fake.behave({ reply: 'Exact answer.', usage: { prompt_tokens: 11, completion_tokens: 3 } });
    const before = (await usageRows()).length;
    const res = await client.chat.completions.create({ model: 'fake-model', messages: [{ role: 'user', content: 'Say something exact.' }] });
    expect(res.choices[0]?.message.content).toBe('Exact answer.');
    expect(res.model).toBe('fake-model');
    const rows = await rowsWhen(before + 1);
    expect(rows).toHaveLength(before + 1);
    expect(rows.at(-1)).toMatchObject({ endpoint: '/v1/chat/completions', provider: 'default', model: 'fake-model', prompt_tokens: 11, completion_tokens: 3, total_tokens: 14, estimated: 0, status: 'ok' });
    // the upstream got Keel's provider key, never the caller's Keel token
    const upstream = fake.requests.at(-1)!;
    expect(upstream.headers.authorization).toBe(`Bearer ${UPSTREAM_KEY}`);
    expect(JSON.stringify(upstream.headers)).not.toContain(user.access_token);
  });

  it('stream: true relays the deltas and meters the usage chunk exactly', async () => {
    fake.behave({ chunks: ['Hel', 'lo ', 'str', 'eam'], usage: { prompt_tokens: 9, completion_tokens: 4 } });
    const before = (await usageRows()).length;
    const stream = await client.chat.completions.create({ model: 'fake-model', messages: [{ role: 'user', content: 'Stream it.' }], stream: true, stream_options: { include_usage: true } });
    let text = '';
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe('Hello stream');
    expect(usage).toMatchObject({ prompt_tokens: 9, completion_tokens: 4 });
    expect(fake.requests.at(-1)!.body).toMatchObject({ stream: true, stream_options: { include_usage: true } });
    expect((await rowsWhen(before + 1)).at(-1)).toMatchObject({ prompt_tokens: 9, completion_tokens: 4, estimated: 0, status: 'ok' });
  });

  it('stream: true without include_usage: no usage chunk reaches the client, the call is still metered exactly', async () => {
    fake.behave({ chunks: ['No ', 'usage ', 'asked.'], usage: { prompt_tokens: 5, completion_tokens: 3 } });
    const before = (await usageRows()).length;
    const res = await fetch(`${s.url}/v1/chat/completions`, { method: 'POST', headers: { ...bearer(user.access_token), 'content-type': 'application/json' }, body: JSON.stringify({ model: 'fake-model', stream: true, messages: [{ role: 'user', content: 'Go.' }] }) });
    const events = (await res.text()).split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice(6));
    expect(events.at(-1)).toBe('[DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e) as { choices: Array<{ delta: { content?: string } }>; usage?: unknown });
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe('No usage asked.');
    expect(chunks.filter((c) => c.usage)).toEqual([]);
    // Keel asked the upstream for the usage chunk all the same
    expect(fake.requests.at(-1)!.body).toMatchObject({ stream_options: { include_usage: true } });
    expect((await rowsWhen(before + 1)).at(-1)).toMatchObject({ prompt_tokens: 5, completion_tokens: 3, estimated: 0, status: 'ok' });
  });

  it('when the upstream reports no usage, tokens are counted by Keel and marked estimated (stream and not)', async () => {
    fake.behave({ reply: 'Counted by the tokenizer.', usage: 'none' });
    const before = (await usageRows()).length;
    await client.chat.completions.create({ model: 'fake-model', messages: [{ role: 'user', content: 'Estimate me.' }] });
    const plain = (await rowsWhen(before + 1)).at(-1)!;
    expect(plain).toMatchObject({ estimated: 1, status: 'ok' });
    expect(plain.prompt_tokens).toBeGreaterThan(3);
    expect(plain.completion_tokens).toBeGreaterThan(2);

    const stream = await client.chat.completions.create({ model: 'fake-model', messages: [{ role: 'user', content: 'Estimate me too.' }], stream: true, stream_options: { include_usage: true } });
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) if (chunk.usage) usage = chunk.usage;
    const streamed = (await rowsWhen(before + 2)).at(-1)!;
    expect(streamed).toMatchObject({ estimated: 1, status: 'ok' });
    // the client asked for usage: it gets Keel's estimate
    expect(usage?.completion_tokens).toBe(streamed.completion_tokens);
  });

  it('passes tools through and returns tool calls', async () => {
    fake.behave({ toolCalls: [{ id: 'call_1', name: 'get_weather', arguments: '{"city":"Oslo"}' }] });
    const before = (await usageRows()).length;
    const res = await client.chat.completions.create({
      model: 'fake-model', messages: [{ role: 'user', content: 'Weather?' }],
      tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }],
      response_format: { type: 'text' },
    });
    expect(res.choices[0]?.message.tool_calls?.[0]).toMatchObject({ id: 'call_1', function: { name: 'get_weather', arguments: '{"city":"Oslo"}' } });
    expect(fake.requests.at(-1)!.body).toMatchObject({ tools: [{ type: 'function' }], response_format: { type: 'text' } });
    // Its rows are written just after the responses ended: wait, so that they do not land in the next test's count.
    await rowsWhen(before + 1);
  });

  it('embeddings.create works and is metered', async () => {
    const before = (await usageRows()).length;
    const res = await client.embeddings.create({ model: 'fake-embed', input: ['one', 'two'] });
    expect(res.data).toHaveLength(2);
    expect(res.data[0]!.embedding.length).toBeGreaterThan(0);
    expect((await rowsWhen(before + 1)).at(-1)).toMatchObject({ endpoint: '/v1/embeddings', completion_tokens: 0, status: 'ok' });
  });

  it('an API key needs the llm scope: 403 without it, 200 with it', async () => {
    const make = async (scopes: string[]) => (await request<{ key: string }>(`${s.url}/api-keys`, { method: 'POST', headers: bearer(user.access_token), json: { name: 'gw', scopes } })).body.key;
    const without = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: await make(['chat']), maxRetries: 0 });
    await expect(without.chat.completions.create({ model: 'fake-model', messages: [{ role: 'user', content: 'hi' }] })).rejects.toMatchObject({ status: 403 });
    const withScope = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: await make(['llm']), maxRetries: 0 });
    fake.behave({ reply: 'ok' });
    const before = (await usageRows()).length;
    const res = await withScope.chat.completions.create({ model: 'fake-model', messages: [{ role: 'user', content: 'hi' }] });
    expect(res.choices[0]?.message.content).toBe('ok');
    expect((await rowsWhen(before + 1)).at(-1)!.api_key_id).not.toBeNull();
  });

  it('no credential → 401 the SDK understands; unknown model → 404', async () => {
    const anonymous = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'not-a-keel-token', maxRetries: 0 });
    await expect(anonymous.models.list()).rejects.toMatchObject({ status: 401 });
    await expect(client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] })).rejects.toMatchObject({ status: 404 });
  });

  it('a client abort stops the upstream within a second and is metered once, as aborted', async () => {
    // the role chunk counts too: role, 'a', 'b', then silence
    fake.behave({ chunks: ['a', 'b', 'c', 'd'], stallAfterChunks: 3, usage: 'none' });
    const before = (await usageRows()).length;
    const controller = new AbortController();
    const stream = await client.chat.completions.create({ model: 'fake-model', messages: [{ role: 'user', content: 'Never finish.' }], stream: true }, { signal: controller.signal });
    const upstreamIndex = fake.requests.length - 1;
    let seen = 0;
    // an aborted SDK stream ends its loop quietly
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta.content) seen++;
      if (seen === 2) controller.abort();
    }
    expect(seen).toBe(2);
    const abortedAt = Date.now();
    expect(await fake.waitForEnd(upstreamIndex, 3000)).toBe('aborted');
    expect(fake.requests[upstreamIndex]!.abortedAt! - abortedAt).toBeLessThan(1000);
    await expect.poll(async () => (await usageRows()).length, { timeout: 3000 }).toBe(before + 1);
    const row = (await usageRows()).at(-1)!;
    expect(row).toMatchObject({ status: 'aborted', estimated: 1 });
    expect(row.completion_tokens).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 300));
    expect(await usageRows()).toHaveLength(before + 1);
  });

  it('an upstream failure mid-stream becomes an error event, never a hang', async () => {
    fake.behave({ chunks: ['x', 'y', 'z'], breakAfterChunks: 1 });
    const before = (await usageRows()).length;
    const res = await fetch(`${s.url}/v1/chat/completions`, { method: 'POST', headers: { ...bearer(user.access_token), 'content-type': 'application/json' }, body: JSON.stringify({ model: 'fake-model', stream: true, messages: [{ role: 'user', content: 'break' }] }) });
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).toContain('"error"');
    expect(text).toContain('upstream_');
    expect((await rowsWhen(before + 1)).at(-1)).toMatchObject({ status: 'error' });
  });

  it('upstream errors are retried before the first byte, then mapped without leaking the upstream body', async () => {
    fake.behaveOnce({ status: 500, failTimes: 1, reply: 'after a retry' });
    const before = (await usageRows()).length;
    const ok = await client.chat.completions.create({ model: 'fake-model', messages: [{ role: 'user', content: 'retry' }] });
    expect(ok.choices[0]?.message.content).toBe('after a retry');

    fake.behave({ status: 429, retryAfter: 1, errorBody: { error: { message: `quota for key ${UPSTREAM_KEY} exceeded`, type: 'rate_limit' } } });
    const limited = await request(`${s.url}/v1/chat/completions`, { method: 'POST', headers: bearer(user.access_token), json: { model: 'fake-model', messages: [{ role: 'user', content: 'x' }] } });
    expect(limited.status).toBe(429);
    expect(expectErrorShape(limited.body).code).toBe('upstream_rate_limited');
    expect(JSON.stringify(limited.body)).not.toContain(UPSTREAM_KEY);
    fake.behave({ reply: 'fine again' });
    expect((await rowsWhen(before + 2)).slice(before).map((r) => r.status)).toEqual(['ok', 'error']);
  });

  it('POST /llm/code and /llm/code/stream run the preset (seed 000)', async () => {
    fake.behave({ chunks: ['def ', 'f(): ', 'pass'], usage: { prompt_tokens: 20, completion_tokens: 6 } });
    const before = (await usageRows()).length;
    const plain = await request<{ output: string; model: string; usage: Record<string, unknown>; cost_usd: number }>(`${s.url}/llm/code`, { method: 'POST', headers: bearer(user.access_token), json: { prompt: 'Write f.' } });
    expect(plain.status).toBe(200);
    expect(plain.body).toMatchObject({ output: 'def f(): pass', model: 'code', usage: { prompt_tokens: 20, completion_tokens: 6, total_tokens: 26, estimated: false }, cost_usd: 0 });
    const sent = fake.requests.at(-1)!.body as { messages: Array<{ role: string }>; temperature: number; model: string };
    expect(sent.messages[0]!.role).toBe('system');
    expect(sent.model).toBe('fake-model');
    expect(sent.temperature).toBe(0.2);

    const res = await fetch(`${s.url}/llm/code/stream`, { method: 'POST', headers: { ...bearer(user.access_token), 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'Write f.' }) });
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    expect(res.headers.get('cache-control')).toContain('no-cache');
    expect(res.headers.get('x-accel-buffering')).toBe('no');
    expect(res.headers.get('x-request-id')).toBeTruthy();
    const body = await res.text();
    const deltas = [...body.matchAll(/event: delta\ndata: (.*)\n/g)].map((m) => (JSON.parse(m[1]!) as { text: string }).text).join('');
    expect(deltas).toBe('def f(): pass');
    expect(body).toMatch(/event: done\ndata: \{"usage":\{"prompt_tokens":20,"completion_tokens":6,"total_tokens":26,"estimated":false\},"cost_usd":0\}/);
    const unknown = await request(`${s.url}/llm/nope`, { method: 'POST', headers: bearer(user.access_token), json: { prompt: 'x' } });
    expect(unknown.status).toBe(404);
    expect((await rowsWhen(before + 2)).slice(before).map((r) => r.endpoint)).toEqual(['/llm/code', '/llm/code/stream']);
  });

  it('no prompt or output text lands in the usage table or the logs', async () => {
    const secretPrompt = `needle-prompt-${Math.random().toString(36).slice(2)}`;
    const secretReply = `needle-reply-${Math.random().toString(36).slice(2)}`;
    fake.behave({ reply: secretReply });
    const before = (await usageRows()).length;
    await client.chat.completions.create({ model: 'fake-model', messages: [{ role: 'user', content: secretPrompt }] });
    const stream = await client.chat.completions.create({ model: 'fake-model', messages: [{ role: 'user', content: secretPrompt }], stream: true });
    for await (const _ of stream) { /* drain */ }
    await rowsWhen(before + 2);
    const all = JSON.stringify(await s.server.keel.context.database.db.selectFrom('usage_events').selectAll().execute());
    expect(all).not.toContain(secretPrompt);
    expect(all).not.toContain(secretReply);
    expect(s.logText()).not.toContain(secretPrompt);
    expect(s.logText()).not.toContain(secretReply);
  });
});

describeEachDatabase('LLM budgets', (db) => {
  it('20 concurrent requests against a budget for 5 let at most 5 through; the rest get 429 naming the limit', async () => {
    const fake = await startFakeOpenAI();
    const s = await startServer(db(), { LLM_BASE_URL: fake.url, LLM_MODEL: 'fake-model', LIMIT_REQUESTS_PER_DAY: '5' });
    try {
      fake.behave({ reply: 'ok', chunkDelayMs: 20 });
      const user = await signUp(s);
      const results = await Promise.all(Array.from({ length: 20 }, () =>
        request(`${s.url}/v1/chat/completions`, { method: 'POST', headers: bearer(user.access_token), json: { model: 'fake-model', messages: [{ role: 'user', content: 'hi' }] } })));
      const ok = results.filter((r) => r.status === 200);
      const limited = results.filter((r) => r.status === 429);
      expect(ok.length).toBe(5);
      expect(limited.length).toBe(15);
      expect(expectErrorShape(limited[0]!.body).message).toContain('requests_per_day');
      expect(Number(limited[0]!.headers.get('retry-after'))).toBeGreaterThan(0);
      expect(fake.requests.filter((r) => r.path.endsWith('/chat/completions'))).toHaveLength(5);
    } finally {
      await s.close();
      await fake.close();
    }
  });
});

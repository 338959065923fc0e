import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.js';
import { createSqliteDatabase, describeEachDatabase, type TestDatabase } from '../helpers/databases.js';
import { defaultUsage, startFakeOpenAI, type FakeOpenAI } from '../helpers/fake-openai.js';
import { bearer, signUp, type TestUser } from '../helpers/factories.js';
import { runKeel } from '../helpers/process.js';
import { expectErrorShape, request, startServer, type TestServer } from '../helpers/server.js';
import { readSse, usageRows, usageRowsWhen, writeKeelConfig, type ConfigFile } from './llm-helpers.js';

/**
 * keel.config (KEEL_CONFIG) end to end against a real server: model aliases with prices, presets
 * redefined and added, fallbacks before the first byte, `provider/model` names, a bad file refused
 * with every problem listed, and the LLM_BASE_URL/LLM_MODEL shortcut.
 */

interface PresetAnswer { output: string; model: string; usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number; estimated: boolean }; cost_usd: number }
interface SentBody { model: string; messages: Array<{ role: string; content: string }>; [param: string]: unknown }

const BASE_ENV = { NODE_ENV: 'test', SECRET_KEY: 'test-secret-0123456789abcdefghijklmnopqrstuvwxyz' };

describeEachDatabase('keel.config: aliases, prices, presets, fallbacks', (db) => {
  let local: FakeOpenAI;
  let down: FakeOpenAI;
  let file: ConfigFile;
  let s: TestServer;
  let user: TestUser;
  let client: OpenAI;

  beforeAll(async () => {
    local = await startFakeOpenAI();
    down = await startFakeOpenAI();
    file = writeKeelConfig({
      providers: {
        local: { kind: 'openai', base_url: local.url },
        down: { kind: 'openai', base_url: down.url, max_retries: 0 },
      },
      models: {
        fast: { provider: 'local', model: 'upstream-name', prices: { input_per_1m: 1, output_per_1m: 2 } },
        broken: { provider: 'down', model: 'broken-upstream' },
        embed: { provider: 'local', model: 'text-embedding-3-small', kind: 'embeddings', prices: { input_per_1m: 0.5, output_per_1m: 0 } },
      },
      presets: {
        general: { system: 'Custom general system prompt.', params: { temperature: 0.55, top_p: 0.5, max_tokens: 64 } },
        quick: { model: 'fast', system: 'Answer in one line.', params: { temperature: 0.1, presence_penalty: 0.3 } },
        resilient: { model: 'broken', fallbacks: ['fast'], system: 'Never give up.' },
      },
    });
    s = await startServer(db(), { KEEL_CONFIG: file.path });
    user = await signUp(s);
    client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: user.access_token, maxRetries: 0 });
  });
  afterAll(async () => {
    await s?.close();
    await local?.close();
    await down?.close();
    file?.remove();
  });
  beforeEach(() => {
    local.reset();
    down.reset();
    down.behave({ status: 500 });
  });

  const lastSent = (fake: FakeOpenAI): SentBody => fake.requests.filter((r) => r.path === '/v1/chat/completions').at(-1)!.body as SentBody;
  const preset = (name: string, json: unknown) => request<PresetAnswer>(`${s.url}/llm/${name}`, { method: 'POST', headers: bearer(user.access_token), json });

  it('GET /v1/models lists the aliases and every preset (built-in ones on the first configured model)', async () => {
    const list = await client.models.list();
    const byId = new Map(list.data.map((m) => [m.id, m.owned_by]));
    expect(byId.get('fast')).toBe('local');
    expect(byId.get('broken')).toBe('down');
    expect(byId.get('quick')).toBe('keel-preset:fast');
    expect(byId.get('resilient')).toBe('keel-preset:broken');
    for (const builtIn of ['code', 'general', 'reasoning']) expect(byId.get(builtIn)).toBe('keel-preset:fast');
  });

  it('an alias: the upstream gets its own model name, the client sees the alias, the cost follows the configured prices', async () => {
    local.behave({ reply: 'Fast reply.', usage: { prompt_tokens: 1000, completion_tokens: 500 } });
    const before = (await usageRows(s, user.id)).length;
    const res = await client.chat.completions.create({ model: 'fast', messages: [{ role: 'user', content: 'Be fast.' }] });
    expect(res.model).toBe('fast');
    expect(res.choices[0]!.message.content).toBe('Fast reply.');
    expect(lastSent(local).model).toBe('upstream-name');
    expect(down.requests).toHaveLength(0);
    const rows = await usageRowsWhen(s, user.id, before + 1);
    expect(rows).toHaveLength(before + 1);
    expect(rows.at(-1)).toMatchObject({ provider: 'local', model: 'fast', prompt_tokens: 1000, completion_tokens: 500, estimated: 0, status: 'ok' });
    expect(rows.at(-1)!.cost_usd).toBeCloseTo((1000 * 1 + 500 * 2) / 1e6, 12);

    // the streamed answer is named after the alias too, and priced the same way
    local.behave({ chunks: ['a', 'b'], usage: { prompt_tokens: 300, completion_tokens: 7 } });
    const stream = await client.chat.completions.create({ model: 'fast', stream: true, messages: [{ role: 'user', content: 'Be fast.' }] });
    for await (const chunk of stream) expect(chunk.model).toBe('fast');
    expect(lastSent(local).model).toBe('upstream-name');
    expect((await usageRowsWhen(s, user.id, before + 2)).at(-1)!.cost_usd).toBeCloseTo((300 * 1 + 7 * 2) / 1e6, 12);
  });

  it('an embeddings alias: the upstream gets its own name, the client sees the alias, priced on the prompt tokens', async () => {
    const before = (await usageRows(s, user.id)).length;
    const res = await client.embeddings.create({ model: 'embed', input: ['one two three', 'four five'] });
    expect(res.model).toBe('embed');
    expect(res.data).toHaveLength(2);
    const sent = local.requests.at(-1)!;
    expect(sent.path).toBe('/v1/embeddings');
    expect((sent.body as { model: string }).model).toBe('text-embedding-3-small');
    const rows = await usageRowsWhen(s, user.id, before + 1);
    expect(rows).toHaveLength(before + 1);
    // the fake reports one token per word
    expect(rows.at(-1)).toMatchObject({ endpoint: '/v1/embeddings', provider: 'local', model: 'embed', prompt_tokens: 5, completion_tokens: 0, estimated: 0, status: 'ok' });
    expect(rows.at(-1)!.cost_usd).toBeCloseTo((5 * 0.5) / 1e6, 12);
  });

  it('/llm/<preset> on a priced alias returns the cost it metered', async () => {
    local.behave({ reply: 'One line.', usage: { prompt_tokens: 4000, completion_tokens: 3000 } });
    const before = (await usageRows(s, user.id)).length;
    const res = await preset('quick', { prompt: 'Summarise.' });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ output: 'One line.', model: 'quick', usage: { prompt_tokens: 4000, completion_tokens: 3000, total_tokens: 7000, estimated: false } });
    const expected = (4000 * 1 + 3000 * 2) / 1e6;
    expect(res.body.cost_usd).toBeCloseTo(expected, 12);
    const row = (await usageRowsWhen(s, user.id, before + 1)).at(-1)!;
    expect(row).toMatchObject({ endpoint: '/llm/quick', model: 'fast', provider: 'local' });
    expect(row.cost_usd).toBeCloseTo(res.body.cost_usd, 12);
  });

  it('a preset redefined in the file: its system prompt and params reach the upstream; the client\'s params win', async () => {
    local.behave({ reply: 'ok' });
    const before = (await usageRows(s, user.id)).length;
    expect((await preset('general', { prompt: 'Hello' })).status).toBe(200);
    let sent = lastSent(local);
    expect(sent.model).toBe('upstream-name');
    expect(sent.messages).toEqual([{ role: 'system', content: 'Custom general system prompt.' }, { role: 'user', content: 'Hello' }]);
    expect(sent).toMatchObject({ temperature: 0.55, top_p: 0.5, max_tokens: 64 });

    expect((await preset('general', { prompt: 'Hello', params: { temperature: 0.9, max_tokens: 10 } })).status).toBe(200);
    sent = lastSent(local);
    expect(sent).toMatchObject({ temperature: 0.9, top_p: 0.5, max_tokens: 10 });

    // a new preset: its own model, system prompt and params; a preset named as the model of /v1/chat/completions applies too
    await client.chat.completions.create({ model: 'quick', messages: [{ role: 'user', content: 'Hi' }], temperature: 1.2 });
    sent = lastSent(local);
    expect(sent.messages[0]).toEqual({ role: 'system', content: 'Answer in one line.' });
    expect(sent).toMatchObject({ model: 'upstream-name', temperature: 1.2, presence_penalty: 0.3 });

    // the built-ins not redefined keep Keel's defaults
    expect((await preset('code', { prompt: 'x' })).status).toBe(200);
    sent = lastSent(local);
    expect(sent.messages[0]!.content).toContain('expert programmer');
    expect(sent.temperature).toBe(0.2);
    // Its rows are written just after the responses ended: wait, so that they do not land in the next test's count.
    await usageRowsWhen(s, user.id, before + 4);
  });

  it('fallbacks: when the first model\'s provider answers 500, the next model answers (non-stream); the row names the model used', async () => {
    local.behave({ reply: 'Saved by the fallback.', usage: { prompt_tokens: 10, completion_tokens: 4 } });
    const before = (await usageRows(s, user.id)).length;
    const res = await preset('resilient', { prompt: 'Try hard.' });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ output: 'Saved by the fallback.', model: 'resilient' });
    expect(res.body.cost_usd).toBeCloseTo((10 + 4 * 2) / 1e6, 12);
    expect(down.requests).toHaveLength(1);
    expect((down.requests[0]!.body as SentBody).model).toBe('broken-upstream');
    expect(lastSent(local)).toMatchObject({ model: 'upstream-name', messages: [{ role: 'system', content: 'Never give up.' }, { role: 'user', content: 'Try hard.' }] });
    const rows = await usageRowsWhen(s, user.id, before + 1);
    expect(rows).toHaveLength(before + 1);
    expect(rows.at(-1)).toMatchObject({ endpoint: '/llm/resilient', provider: 'local', model: 'fast', status: 'ok', prompt_tokens: 10, completion_tokens: 4 });

    // the same through the OpenAI endpoint
    const viaSdk = await client.chat.completions.create({ model: 'resilient', messages: [{ role: 'user', content: 'Try hard.' }] });
    expect(viaSdk.model).toBe('resilient');
    expect(viaSdk.choices[0]!.message.content).toBe('Saved by the fallback.');
    expect(down.requests).toHaveLength(2);
    expect((await usageRowsWhen(s, user.id, before + 2)).at(-1)).toMatchObject({ endpoint: '/v1/chat/completions', model: 'fast', status: 'ok' });
  });

  it('fallbacks apply to streams before the first byte too (/llm/<preset>/stream and stream: true)', async () => {
    local.behave({ chunks: ['Still ', 'here.'], usage: { prompt_tokens: 6, completion_tokens: 2 } });
    const before = (await usageRows(s, user.id)).length;
    const streamed = await readSse(`${s.url}/llm/resilient/stream`, bearer(user.access_token), { prompt: 'Stream hard.' });
    expect(streamed.status).toBe(200);
    const events = streamed.items.flatMap((i) => (i.kind === 'event' ? [i] : []));
    expect(events.filter((e) => e.event === 'delta').map((e) => (JSON.parse(e.data) as { text: string }).text).join('')).toBe('Still here.');
    expect(events.map((e) => e.event)).not.toContain('error');
    expect(JSON.parse(events.find((e) => e.event === 'done')!.data)).toMatchObject({ usage: { prompt_tokens: 6, completion_tokens: 2, estimated: false } });
    expect(down.requests).toHaveLength(1);

    const stream = await client.chat.completions.create({ model: 'resilient', stream: true, messages: [{ role: 'user', content: 'Stream hard.' }] });
    let text = '';
    for await (const chunk of stream) {
      expect(chunk.model).toBe('resilient');
      text += chunk.choices[0]?.delta.content ?? '';
    }
    expect(text).toBe('Still here.');
    expect(down.requests).toHaveLength(2);

    const rows = (await usageRowsWhen(s, user.id, before + 2)).slice(before);
    expect(rows).toHaveLength(2);
    expect(rows.map((r) => [r.endpoint, r.provider, r.model, r.status])).toEqual([
      ['/llm/resilient/stream', 'local', 'fast', 'ok'],
      ['/v1/chat/completions', 'local', 'fast', 'ok'],
    ]);
  });

  it('no fallback once the first model has sent a byte: a mid-stream failure is an error event, metered on the first model', async () => {
    down.behave({ chunks: ['partial ', 'answer ', 'lost'], breakAfterChunks: 2 });
    const before = (await usageRows(s, user.id)).length;
    const streamed = await readSse(`${s.url}/llm/resilient/stream`, bearer(user.access_token), { prompt: 'Break.' });
    const events = streamed.items.flatMap((i) => (i.kind === 'event' ? [i] : []));
    expect(events.map((e) => e.event)).toEqual(['delta', 'error']);
    expect(JSON.parse(events[0]!.data)).toEqual({ text: 'partial ' });
    expect(local.requests).toHaveLength(0);
    const rows = (await usageRowsWhen(s, user.id, before + 1)).slice(before);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ provider: 'down', model: 'broken', status: 'error' });
  });

  it('when every model of a preset fails, the last failure is answered in the error shape and metered once', async () => {
    local.behave({ status: 503 });
    const before = (await usageRows(s, user.id)).length;
    const res = await preset('resilient', { prompt: 'Doomed.' });
    expect(res.status).toBe(502);
    expect(expectErrorShape(res.body).code).toBe('upstream_unavailable');
    const rows = (await usageRowsWhen(s, user.id, before + 1)).slice(before);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ status: 'error', error_code: 'upstream_unavailable' });
  });

  it('provider/model names any model of a configured provider; an unconfigured provider is a 404', async () => {
    local.behave({ reply: 'raw', usage: { prompt_tokens: 3, completion_tokens: 1 } });
    const before = (await usageRows(s, user.id)).length;
    const res = await client.chat.completions.create({ model: 'local/raw-model-7b', messages: [{ role: 'user', content: 'Raw.' }] });
    expect(res.model).toBe('local/raw-model-7b');
    expect(lastSent(local).model).toBe('raw-model-7b');
    // unpriced: the row is metered but costs nothing
    expect((await usageRowsWhen(s, user.id, before + 1)).at(-1)).toMatchObject({ provider: 'local', model: 'local/raw-model-7b', prompt_tokens: 3, completion_tokens: 1, cost_usd: 0, status: 'ok' });

    const unknown = await request(`${s.url}/v1/chat/completions`, { method: 'POST', headers: bearer(user.access_token), json: { model: 'elsewhere/some-model', messages: [{ role: 'user', content: 'x' }] } });
    expect(unknown.status).toBe(404);
    expect(expectErrorShape(unknown.body).code).toBe('model_not_found');
  });
});

describe('keel.config: a bad file is refused with every problem listed', () => {
  let file: ConfigFile;
  beforeAll(() => {
    file = writeKeelConfig({
      providers: { local: { kind: 'openai', base_url: 'http://127.0.0.1:9/v1' }, odd: { kind: 'gemini' }, keyless: { kind: 'anthropic', base_url: 'http://127.0.0.1:9', api_key_env: 'KEEL_TEST_UNSET_KEY' } },
      models: {
        good: { provider: 'local', model: 'm' },
        orphan: { provider: 'nowhere', model: 'x' },
      },
      presets: { lost: { model: 'missing-model' } },
      limits: { user: { requests_per_hour: 5, tokens_per_day: -1 }, api_key: { bogus_limit: 1 } },
    });
  });
  afterAll(() => file?.remove());

  it('loadConfig throws a ConfigError naming each problem', () => {
    let error: unknown;
    try {
      loadConfig({ ...BASE_ENV, DATABASE_URL: ':memory:', KEEL_CONFIG: file.path }, { persistDevSecret: false });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems;
    const expected = [
      /providers\.odd\.kind must be "openai" or "anthropic"/,
      /providers\.odd\.base_url is required/,
      /providers\.keyless: KEEL_TEST_UNSET_KEY is not set/,
      /models\.orphan\.provider must name a configured provider \(got "nowhere"\)/,
      /preset "lost" names model "missing-model"/,
      /limits\.user\.requests_per_hour is not a known limit/,
      /limits\.user\.tokens_per_day must be a non-negative number/,
      /limits\.api_key\.bogus_limit is not a known limit/,
    ];
    for (const pattern of expected) expect(problems.some((p) => pattern.test(p)), `${String(pattern)} in ${JSON.stringify(problems)}`).toBe(true);
    expect(problems).toHaveLength(expected.length);
  });

  it('`keel serve` refuses to start and prints them all', async () => {
    const r = await runKeel(['serve'], { ...BASE_ENV, DATABASE_URL: ':memory:', PORT: '0', KEEL_CONFIG: file.path });
    expect(r.code).toBe(78);
    expect(r.stderr).toContain('Keel cannot start');
    expect(r.stderr).toContain('models.orphan.provider');
    expect(r.stderr).toContain('limits.user.requests_per_hour');
    expect(r.stderr).toContain('limits.api_key.bogus_limit');
    expect(r.stdout).not.toContain('keel listening');
  });

  it('limits from the environment must be numbers too; a problem names the variable', () => {
    let error: unknown;
    try {
      loadConfig({ ...BASE_ENV, LIMIT_REQUESTS_PER_DAY: 'lots', API_KEY_LIMIT_TOKENS_PER_DAY: '-5', LIMIT_TOKENS_PER_DAY: '1000' }, { persistDevSecret: false });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems).toEqual([
      'LIMIT_REQUESTS_PER_DAY must be a non-negative number.',
      'API_KEY_LIMIT_TOKENS_PER_DAY must be a non-negative number.',
    ]);
    const ok = loadConfig({ ...BASE_ENV, LIMIT_TOKENS_PER_DAY: '1000', API_KEY_LIMIT_REQUESTS_PER_MINUTE: '5' }, { persistDevSecret: false });
    expect(ok.llm.limits).toEqual({ user: { tokens_per_day: 1000 }, apiKey: { requests_per_minute: 5 } });
  });

  it('a KEEL_CONFIG that does not exist, or that is not YAML, is a problem too', () => {
    const missing = (): unknown => loadConfig({ ...BASE_ENV, KEEL_CONFIG: `${file.path}.nope` }, { persistDevSecret: false });
    expect(missing).toThrow(/KEEL_CONFIG names .*\.nope, which does not exist/);
    const broken = writeKeelConfig('providers: [unclosed', 'yaml');
    try {
      expect(() => loadConfig({ ...BASE_ENV, KEEL_CONFIG: broken.path }, { persistDevSecret: false })).toThrow(/keel\.config\.yaml cannot be read/);
    } finally {
      broken.remove();
    }
  });

  it('a JSON file works like YAML', () => {
    const json = writeKeelConfig({ providers: { local: { base_url: 'http://127.0.0.1:9/v1/' } }, models: { fast: { provider: 'local', model: 'upstream-name' } } }, 'json');
    try {
      const config = loadConfig({ ...BASE_ENV, KEEL_CONFIG: json.path }, { persistDevSecret: false });
      expect(config.llm.providers.get('local')).toMatchObject({ kind: 'openai', baseUrl: 'http://127.0.0.1:9/v1' });
      expect(config.llm.models.get('fast')).toMatchObject({ provider: 'local', upstream: 'upstream-name' });
      expect(config.llm.presets.get('general')?.model).toBe('fast');
      expect(config.llm.sources).toEqual(['keel.config.json']);
    } finally {
      json.remove();
    }
  });
});

describe('only LLM_BASE_URL / LLM_API_KEY / LLM_MODEL', () => {
  const KEY = 'sk-only-env-key-0123456789abcdef';
  let database: TestDatabase;
  let fake: FakeOpenAI;
  let s: TestServer;
  let user: TestUser;
  beforeAll(async () => {
    database = await createSqliteDatabase();
    fake = await startFakeOpenAI({ apiKey: KEY });
    s = await startServer(database, { LLM_BASE_URL: fake.url, LLM_API_KEY: KEY, LLM_MODEL: 'the-one-model' });
    user = await signUp(s);
  });
  afterAll(async () => {
    await s?.close();
    await fake?.close();
    await database?.cleanup();
  });

  it('every preset (code, general, reasoning) runs on LLM_MODEL with the key', async () => {
    fake.behave({ reply: 'fine' });
    for (const name of ['code', 'general', 'reasoning']) {
      const before = (await usageRows(s, user.id)).length;
      const res = await request<PresetAnswer>(`${s.url}/llm/${name}`, { method: 'POST', headers: bearer(user.access_token), json: { prompt: `Run ${name}.` } });
      expect(res.status, name).toBe(200);
      expect(res.body).toMatchObject({ output: 'fine', model: name });
      const sent = fake.requests.at(-1)!;
      expect((sent.body as SentBody).model).toBe('the-one-model');
      expect(sent.headers.authorization).toBe(`Bearer ${KEY}`);
      const row = (await usageRowsWhen(s, user.id, before + 1)).at(-1)!;
      expect(row).toMatchObject({ endpoint: `/llm/${name}`, provider: 'default', model: 'the-one-model', status: 'ok' });
      // the fake's deterministic usage, counted over the system prompt and the prompt
      expect(row.prompt_tokens).toBe(defaultUsage((sent.body as SentBody))!.prompt_tokens);
    }
    const models = await request<{ data: Array<{ id: string; owned_by: string }> }>(`${s.url}/v1/models`, { headers: bearer(user.access_token) });
    expect(models.body.data).toEqual(expect.arrayContaining([
      expect.objectContaining({ id: 'the-one-model', owned_by: 'default' }),
      expect.objectContaining({ id: 'code', owned_by: 'keel-preset:the-one-model' }),
      expect.objectContaining({ id: 'general', owned_by: 'keel-preset:the-one-model' }),
      expect.objectContaining({ id: 'reasoning', owned_by: 'keel-preset:the-one-model' }),
    ]));
  });
});

describe('numeric LLM settings', () => {
  it('a non-numeric timeout, retry count or heartbeat is reported, not silently replaced', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'keel-llm-num-'));
    writeFileSync(path.join(dir, 'keel.config.yaml'), 'heartbeat_seconds: 0\n');
    let problems: readonly string[] = [];
    try {
      loadConfig({ NODE_ENV: 'test', LLM_BASE_URL: 'http://127.0.0.1:9/v1', LLM_MODEL: 'm', LLM_CONNECT_TIMEOUT_MS: 'soon', LLM_MAX_RETRIES: 'many', KEEL_CONFIG: path.join(dir, 'keel.config.yaml') }, { cwd: dir, persistDevSecret: false });
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      problems = err.problems;
    }
    expect(problems.join('\n')).toContain('LLM_CONNECT_TIMEOUT_MS');
    expect(problems.join('\n')).toContain('LLM_MAX_RETRIES');
    expect(problems.join('\n')).toContain('heartbeat_seconds');
  });
});

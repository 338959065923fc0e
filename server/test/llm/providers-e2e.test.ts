import OpenAI from 'openai';
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { describeEachDatabase } from '../helpers/databases.js';
import { FAKE_ANTHROPIC_SECRET, startFakeAnthropic, type FakeAnthropic } from '../helpers/fake-anthropic.js';
import { bearer, signUp, type TestUser } from '../helpers/factories.js';
import { rememberSecret } from '../helpers/leaks.js';
import { expectErrorShape, request, startServer, type TestServer } from '../helpers/server.js';
import { readSse, usageRows, usageRowsWhen, writeKeelConfig, type ConfigFile } from './llm-helpers.js';

/**
 * Anthropic behind Keel, end to end: a keel.config file names an Anthropic provider (its key read from
 * the variable `api_key_env` names) and an alias for one of its models; the official openai SDK talks
 * to Keel as if Keel were OpenAI. Keel translates both ways, meters Anthropic's exact usage, and sends
 * the provider key — never the caller's Keel credential — upstream.
 */

const ANTHROPIC_KEY = 'sk-ant-e2e-configured-key-0123456789';
const WEATHER_TOOL = { type: 'function' as const, function: { name: 'get_weather', description: 'Weather for a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } };

describeEachDatabase('Anthropic through Keel with the openai SDK', (db) => {
  let fake: FakeAnthropic;
  let file: ConfigFile;
  let s: TestServer;
  let user: TestUser;
  let client: OpenAI;

  beforeAll(async () => {
    rememberSecret(ANTHROPIC_KEY);
    fake = await startFakeAnthropic({ apiKey: ANTHROPIC_KEY });
    file = writeKeelConfig({
      providers: { claude: { kind: 'anthropic', base_url: fake.url, api_key_env: 'TEST_ANTHROPIC_KEY', max_retries: 0 } },
      models: { sonnet: { provider: 'claude', model: 'claude-test', prices: { input_per_1m: 3, output_per_1m: 15 } } },
    });
    s = await startServer(db(), { KEEL_CONFIG: file.path, TEST_ANTHROPIC_KEY: ANTHROPIC_KEY });
    user = await signUp(s);
    client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: user.access_token, maxRetries: 0 });
  });
  afterAll(async () => {
    await s?.close();
    await fake?.close();
    file?.remove();
  });
  beforeEach(() => fake.behave({}));

  /** The last request the fake received carried the configured key, not anything of the caller's. */
  function expectProviderKeyOnly(): void {
    const headers = fake.requests.at(-1)!.headers;
    expect(headers['x-api-key']).toBe(ANTHROPIC_KEY);
    expect(headers.authorization).toBeUndefined();
    expect(JSON.stringify(headers)).not.toContain(user.access_token);
  }

  it('lists the alias, and the default presets use it', async () => {
    const ids: string[] = [];
    for await (const m of client.models.list()) ids.push(m.id);
    expect(ids).toEqual(expect.arrayContaining(['sonnet', 'code', 'general', 'reasoning']));
  });

  it('a plain answer: translated both ways, exact usage and cost metered, the configured key sent upstream', async () => {
    fake.behave({ text: 'Bonjour from Claude.', usage: { input_tokens: 31, output_tokens: 9 } });
    const before = (await usageRows(s, user.id)).length;
    const res = await client.chat.completions.create({ model: 'sonnet', max_tokens: 100, messages: [{ role: 'system', content: 'Be French.' }, { role: 'user', content: 'Hello?' }] });
    expect(res.object).toBe('chat.completion');
    expect(res.model).toBe('sonnet');
    expect(res.choices[0]).toMatchObject({ index: 0, finish_reason: 'stop', message: { role: 'assistant', content: 'Bonjour from Claude.' } });
    expect(res.usage).toMatchObject({ prompt_tokens: 31, completion_tokens: 9, total_tokens: 40 });

    const sent = fake.requests.at(-1)!;
    expect(sent.path).toBe('/v1/messages');
    expect(sent.body).toMatchObject({ model: 'claude-test', max_tokens: 100, system: 'Be French.', messages: [{ role: 'user', content: 'Hello?' }] });
    expectProviderKeyOnly();

    const rows = await usageRowsWhen(s, user.id, before + 1);
    expect(rows).toHaveLength(before + 1);
    expect(rows.at(-1)).toMatchObject({ endpoint: '/v1/chat/completions', provider: 'claude', model: 'sonnet', prompt_tokens: 31, completion_tokens: 9, total_tokens: 40, estimated: 0, status: 'ok', error_code: null });
    expect(rows.at(-1)!.cost_usd).toBeCloseTo((31 * 3 + 9 * 15) / 1e6, 12);
  });

  it('stream: true relays text deltas in order and meters Anthropic\'s usage exactly (even without include_usage)', async () => {
    fake.behave({ chunks: ['Once ', 'upon ', 'a ', 'time.'], usage: { input_tokens: 12, output_tokens: 4 } });
    const before = (await usageRows(s, user.id)).length;
    const stream = await client.chat.completions.create({ model: 'sonnet', stream: true, messages: [{ role: 'user', content: 'Tell a story.' }] });
    const pieces: string[] = [];
    const finishes: Array<string | null> = [];
    let sawUsage = false;
    for await (const chunk of stream) {
      expect(chunk.object).toBe('chat.completion.chunk');
      expect(chunk.model).toBe('sonnet');
      if (chunk.usage) sawUsage = true;
      for (const c of chunk.choices) {
        if (c.delta.content) pieces.push(c.delta.content);
        if (c.finish_reason) finishes.push(c.finish_reason);
      }
    }
    expect(pieces).toEqual(['Once ', 'upon ', 'a ', 'time.']);
    expect(finishes).toEqual(['stop']);
    expect(sawUsage).toBe(false); // not asked for
    expect(fake.requests.at(-1)!.body).toMatchObject({ model: 'claude-test', stream: true });
    expectProviderKeyOnly();

    const rows = await usageRowsWhen(s, user.id, before + 1);
    expect(rows).toHaveLength(before + 1);
    expect(rows.at(-1)).toMatchObject({ endpoint: '/v1/chat/completions', provider: 'claude', model: 'sonnet', prompt_tokens: 12, completion_tokens: 4, total_tokens: 16, estimated: 0, status: 'ok' });
    expect(rows.at(-1)!.ttft_ms).not.toBeNull();
  });

  it('stream_options.include_usage gives the usage chunk with Anthropic\'s numbers', async () => {
    fake.behave({ text: 'Counted.', usage: { input_tokens: 20, output_tokens: 2, cache_read_input_tokens: 5 } });
    const before = (await usageRows(s, user.id)).length;
    const stream = await client.chat.completions.create({ model: 'sonnet', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'Count.' }] });
    const usages: Array<OpenAI.CompletionUsage> = [];
    for await (const chunk of stream) if (chunk.usage) usages.push(chunk.usage);
    // prompt = input + cache reads, as OpenAI counts cached tokens inside prompt_tokens
    expect(usages).toEqual([expect.objectContaining({ prompt_tokens: 25, completion_tokens: 2, total_tokens: 27 })]);
    expect((await usageRowsWhen(s, user.id, before + 1)).at(-1)).toMatchObject({ prompt_tokens: 25, completion_tokens: 2, estimated: 0 });
  });

  it('tool calls, non-streamed: tools go up as Anthropic tools; tool_use comes back as OpenAI tool_calls', async () => {
    fake.behave({ text: '', toolUse: [{ id: 'toolu_1', name: 'get_weather', input: { city: 'Oslo' } }], usage: { input_tokens: 40, output_tokens: 15 } });
    const before = (await usageRows(s, user.id)).length;
    const res = await client.chat.completions.create({ model: 'sonnet', messages: [{ role: 'user', content: 'Weather in Oslo?' }], tools: [WEATHER_TOOL], tool_choice: 'auto' });
    expect(res.choices[0]!.finish_reason).toBe('tool_calls');
    expect(res.choices[0]!.message.content).toBeNull();
    expect(res.choices[0]!.message.tool_calls).toEqual([{ id: 'toolu_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Oslo"}' } }]);
    expect(fake.requests.at(-1)!.body).toMatchObject({
      tools: [{ name: 'get_weather', description: 'Weather for a city', input_schema: WEATHER_TOOL.function.parameters }],
      tool_choice: { type: 'auto' },
    });
    expect((await usageRowsWhen(s, user.id, before + 1)).at(-1)).toMatchObject({ prompt_tokens: 40, completion_tokens: 15, estimated: 0, status: 'ok' });

    // the result goes back as a tool_result block
    fake.behave({ text: 'It is sunny in Oslo.' });
    const followUp = await client.chat.completions.create({
      model: 'sonnet', tools: [WEATHER_TOOL],
      messages: [{ role: 'user', content: 'Weather in Oslo?' }, res.choices[0]!.message, { role: 'tool', tool_call_id: 'toolu_1', content: 'sunny' }],
    });
    expect(followUp.choices[0]!.message.content).toBe('It is sunny in Oslo.');
    expect(fake.requests.at(-1)!.body).toMatchObject({
      messages: [
        { role: 'user' },
        { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: { city: 'Oslo' } }] },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1' }] },
      ],
    });
    // Its rows are written just after the responses ended: wait, so that they do not land in the next test's count.
    await usageRowsWhen(s, user.id, before + 2);
  });

  it('tool calls, streamed: the SDK\'s stream helper assembles the tool call from Keel\'s chunks', async () => {
    fake.behave({ text: 'Let me look.', toolUse: [{ id: 'toolu_2', name: 'get_weather', input: { city: 'Bergen', days: 3 } }], usage: { input_tokens: 33, output_tokens: 21 } });
    const before = (await usageRows(s, user.id)).length;
    const stream = client.chat.completions.stream({ model: 'sonnet', messages: [{ role: 'user', content: 'Weather in Bergen?' }], tools: [WEATHER_TOOL] });
    const final = await stream.finalChatCompletion();
    expect(final.choices[0]!.finish_reason).toBe('tool_calls');
    expect(final.choices[0]!.message.content).toBe('Let me look.');
    const calls = final.choices[0]!.message.tool_calls ?? [];
    expect(calls).toHaveLength(1);
    expect(calls[0]).toMatchObject({ id: 'toolu_2', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Bergen","days":3}' } });
    const rows = await usageRowsWhen(s, user.id, before + 1);
    expect(rows).toHaveLength(before + 1);
    expect(rows.at(-1)).toMatchObject({ prompt_tokens: 33, completion_tokens: 21, estimated: 0, status: 'ok' });
    expectProviderKeyOnly();
  });

  it('the preset routes run on the Anthropic model too (stream and not), with Anthropic\'s usage', async () => {
    fake.behave({ text: 'Short answer.', chunks: ['Short ', 'answer.'], usage: { input_tokens: 50, output_tokens: 2 } });
    const before = (await usageRows(s, user.id)).length;
    const plain = await request<{ output: string; model: string; usage: Record<string, unknown>; cost_usd: number }>(`${s.url}/llm/general`, { method: 'POST', headers: bearer(user.access_token), json: { prompt: 'Hi' } });
    expect(plain.status).toBe(200);
    expect(plain.body).toMatchObject({ output: 'Short answer.', model: 'general', usage: { prompt_tokens: 50, completion_tokens: 2, total_tokens: 52, estimated: false } });
    expect(plain.body.cost_usd).toBeCloseTo((50 * 3 + 2 * 15) / 1e6, 12);
    // the preset's system prompt became Anthropic's top-level system
    const sent = fake.requests.at(-1)!.body!;
    expect(sent).toMatchObject({ model: 'claude-test', temperature: 0.7 });
    expect(sent.system).toContain('helpful assistant');

    const streamed = await readSse(`${s.url}/llm/general/stream`, bearer(user.access_token), { prompt: 'Hi' });
    expect(streamed.status).toBe(200);
    const events = streamed.items.filter((i) => i.kind === 'event');
    expect(events.filter((e) => e.event === 'delta').map((e) => (JSON.parse(e.data) as { text: string }).text).join('')).toBe('Short answer.');
    const done = events.find((e) => e.event === 'done');
    expect(JSON.parse(done!.data)).toMatchObject({ usage: { prompt_tokens: 50, completion_tokens: 2, total_tokens: 52, estimated: false } });
    expect((await usageRowsWhen(s, user.id, before + 2)).at(-1)).toMatchObject({ endpoint: '/llm/general/stream', provider: 'claude', model: 'sonnet', prompt_tokens: 50, completion_tokens: 2, status: 'ok' });
  });

  it('claude/<model> names any model of the configured Anthropic provider', async () => {
    fake.behave({ text: 'Raw model.', usage: { input_tokens: 8, output_tokens: 3 } });
    const before = (await usageRows(s, user.id)).length;
    const res = await client.chat.completions.create({ model: 'claude/claude-other-model', messages: [{ role: 'user', content: 'Which model?' }] });
    expect(res.model).toBe('claude/claude-other-model');
    expect(res.choices[0]!.message.content).toBe('Raw model.');
    expect(fake.requests.at(-1)!.body).toMatchObject({ model: 'claude-other-model' });
    expectProviderKeyOnly();
    // not in the file, so unpriced
    expect((await usageRowsWhen(s, user.id, before + 1)).at(-1)).toMatchObject({ provider: 'claude', model: 'claude/claude-other-model', prompt_tokens: 8, completion_tokens: 3, cost_usd: 0 });
  });

  it('an Anthropic error is mapped to Keel\'s error shape without repeating the provider\'s body; metered as an error', async () => {
    fake.behave({ status: 529 });
    const before = (await usageRows(s, user.id)).length;
    const res = await request(`${s.url}/v1/chat/completions`, { method: 'POST', headers: bearer(user.access_token), json: { model: 'sonnet', messages: [{ role: 'user', content: 'x' }] } });
    expect(res.status).toBe(502);
    expect(expectErrorShape(res.body).code).toBe('upstream_unavailable');
    expect(JSON.stringify(res.body)).not.toContain(FAKE_ANTHROPIC_SECRET);
    expect(JSON.stringify(res.body)).not.toContain(ANTHROPIC_KEY);
    const rows = await usageRowsWhen(s, user.id, before + 1);
    expect(rows).toHaveLength(before + 1);
    expect(rows.at(-1)).toMatchObject({ status: 'error', error_code: 'upstream_unavailable', provider: 'claude', model: 'sonnet' });
  });
});

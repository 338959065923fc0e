import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createAnthropicProvider, SseParser, toAnthropicRequest } from '../../src/modules/llm/providers/anthropic.js';
import { UpstreamError, type ChatChunk, type ChatRequest, type Provider, type ResilienceOptions } from '../../src/modules/llm/providers/provider.js';
import { FAKE_ANTHROPIC_SECRET, startFakeAnthropic, type FakeAnthropic } from '../helpers/fake-anthropic.js';

const API_KEY = 'sk-ant-test-key-0123456789';
const TEXT = 'The quick brown fox jumps over the lazy dog, twice.';
const FAST: ResilienceOptions = { connectTimeoutMs: 2000, idleTimeoutMs: 300, maxRetries: 2, retryBaseMs: 10 };

let fake: FakeAnthropic;
let provider: Provider;

const signal = (): AbortSignal => new AbortController().signal;
const ask = (content: string, extra: Partial<ChatRequest> = {}): ChatRequest => ({ model: 'claude-fake-1', messages: [{ role: 'user', content }], ...extra });
const make = (resilience: Partial<ResilienceOptions> = {}, extra: { defaultMaxTokens?: number; baseUrl?: string; apiKey?: string } = {}): Provider =>
  createAnthropicProvider({ name: 'claude', baseUrl: extra.baseUrl ?? fake.url, apiKey: extra.apiKey ?? API_KEY, resilience: { ...FAST, ...resilience }, defaultMaxTokens: extra.defaultMaxTokens });

async function collect(iterable: AsyncIterable<ChatChunk>): Promise<ChatChunk[]> {
  const out: ChatChunk[] = [];
  for await (const chunk of iterable) out.push(chunk);
  return out;
}

/** The concatenated `delta.content` strings of a stream. */
function contentOf(chunks: ChatChunk[]): string {
  return chunks.flatMap((c) => c.choices.map((ch) => (typeof ch.delta.content === 'string' ? ch.delta.content : ''))).join('');
}

async function failure(p: Promise<unknown>): Promise<UpstreamError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(UpstreamError);
    return err as UpstreamError;
  }
  throw new Error('expected the call to fail');
}

function expectClean(err: UpstreamError): void {
  expect(err.message).not.toContain(FAKE_ANTHROPIC_SECRET);
  expect(err.message).not.toContain(API_KEY);
}

beforeAll(async () => {
  fake = await startFakeAnthropic({ apiKey: API_KEY });
  provider = make();
});
afterAll(() => fake.close());
beforeEach(() => fake.behave({ text: TEXT }));

describe('request translation', () => {
  it('hoists system messages, merges roles, translates images, tools, tool calls and results', async () => {
    const before = fake.requests.length;
    await provider.chat(
      {
        model: 'claude-fake-1',
        messages: [
          { role: 'system', content: 'You are terse.' },
          { role: 'developer', content: [{ type: 'text', text: 'Answer in French.' }] },
          { role: 'user', content: 'Hi' },
          {
            role: 'user',
            content: [
              { type: 'text', text: 'What is in these images?' },
              { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } },
              { type: 'image_url', image_url: { url: 'https://example.com/cat.jpg', detail: 'low' } },
            ],
          },
          {
            role: 'assistant',
            content: 'Let me check the weather.',
            tool_calls: [
              { id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } },
              { id: 'call_2', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Lyon"}' } },
            ],
          },
          { role: 'tool', tool_call_id: 'call_1', content: 'sunny' },
          { role: 'tool', tool_call_id: 'call_2', content: [{ type: 'text', text: 'rainy' }] },
          { role: 'user', content: 'Thanks', name: 'ann' },
        ],
        tools: [
          { type: 'function', function: { name: 'get_weather', description: 'Weather for a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } },
          { type: 'function', function: { name: 'now' } },
        ],
        tool_choice: 'required',
        stop: 'END',
        temperature: 0.2,
        top_p: 0.9,
        // dropped: Anthropic has no equivalent
        seed: 7,
        n: 1,
        response_format: { type: 'json_object' },
        frequency_penalty: 0.1,
        stream_options: { include_usage: true },
      },
      { signal: signal() },
    );
    const recorded = fake.requests[before]!;
    expect(recorded.method).toBe('POST');
    expect(recorded.path).toBe('/v1/messages');
    expect(recorded.headers['x-api-key']).toBe(API_KEY);
    expect(recorded.headers['anthropic-version']).toBe('2023-06-01');
    expect(recorded.headers['content-type']).toBe('application/json');
    expect(recorded.headers.authorization).toBeUndefined();
    expect(recorded.body).toEqual({
      model: 'claude-fake-1',
      max_tokens: 4096,
      system: 'You are terse.\n\nAnswer in French.',
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'Hi' },
            { type: 'text', text: 'What is in these images?' },
            { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } },
            { type: 'image', source: { type: 'url', url: 'https://example.com/cat.jpg' } },
          ],
        },
        {
          role: 'assistant',
          content: [
            { type: 'text', text: 'Let me check the weather.' },
            { type: 'tool_use', id: 'call_1', name: 'get_weather', input: { city: 'Paris' } },
            { type: 'tool_use', id: 'call_2', name: 'get_weather', input: { city: 'Lyon' } },
          ],
        },
        {
          role: 'user',
          content: [
            { type: 'tool_result', tool_use_id: 'call_1', content: 'sunny' },
            { type: 'tool_result', tool_use_id: 'call_2', content: [{ type: 'text', text: 'rainy' }] },
            { type: 'text', text: 'Thanks' },
          ],
        },
      ],
      tools: [
        { name: 'get_weather', description: 'Weather for a city', input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } },
        { name: 'now', input_schema: { type: 'object', properties: {} } },
      ],
      tool_choice: { type: 'any' },
      stop_sequences: ['END'],
      temperature: 0.2,
      top_p: 0.9,
    });
  });

  it('max_tokens: the default, the configured default, max_tokens, max_completion_tokens first', async () => {
    const before = fake.requests.length;
    await provider.chat(ask('a'), { signal: signal() });
    await make({}, { defaultMaxTokens: 1000 }).chat(ask('b'), { signal: signal() });
    await provider.chat(ask('c', { max_tokens: 50 }), { signal: signal() });
    await provider.chat(ask('d', { max_tokens: 50, max_completion_tokens: 60 }), { signal: signal() });
    expect(fake.requests.slice(before).map((r) => r.body?.max_tokens)).toEqual([4096, 1000, 50, 60]);
    expect(fake.requests[before]!.body).toEqual({ model: 'claude-fake-1', max_tokens: 4096, messages: [{ role: 'user', content: 'a' }] });
  });

  it('stop arrays, tool_choice forms, parallel_tool_calls and user', () => {
    const tools = [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: {} } } }];
    const base: ChatRequest = { model: 'm', messages: [{ role: 'user', content: 'x' }], tools };
    expect(toAnthropicRequest({ ...base, stop: ['a', 'b'] }).stop_sequences).toEqual(['a', 'b']);
    expect(toAnthropicRequest({ ...base, tool_choice: 'auto' }).tool_choice).toEqual({ type: 'auto' });
    expect(toAnthropicRequest({ ...base, tool_choice: 'none' }).tool_choice).toEqual({ type: 'none' });
    expect(toAnthropicRequest({ ...base, tool_choice: 'required' }).tool_choice).toEqual({ type: 'any' });
    expect(toAnthropicRequest({ ...base, tool_choice: { type: 'function', function: { name: 'f' } } }).tool_choice).toEqual({ type: 'tool', name: 'f' });
    expect(toAnthropicRequest({ ...base, parallel_tool_calls: false }).tool_choice).toEqual({ type: 'auto', disable_parallel_tool_use: true });
    expect(toAnthropicRequest({ ...base, tool_choice: 'required', parallel_tool_calls: false }).tool_choice).toEqual({ type: 'any', disable_parallel_tool_use: true });
    // No tools: no tool_choice either (Anthropic refuses one without tools).
    expect(toAnthropicRequest({ model: 'm', messages: [{ role: 'user', content: 'x' }], tool_choice: 'auto' }).tool_choice).toBeUndefined();
    expect(toAnthropicRequest({ ...base, user: 'user-42' }).metadata).toEqual({ user_id: 'user-42' });
    // A non-base64 data: URL is encoded; empty texts and contentless messages are dropped.
    const r = toAnthropicRequest({
      model: 'm',
      messages: [
        { role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/svg+xml,%3Csvg%2F%3E' } }, { type: 'text', text: '' }] },
        { role: 'assistant', content: '' },
        { role: 'assistant', content: null, tool_calls: [{ id: 't1', type: 'function', function: { name: 'f', arguments: '' } }] },
      ],
    });
    expect(r.messages).toEqual([
      { role: 'user', content: [{ type: 'image', source: { type: 'base64', media_type: 'image/svg+xml', data: Buffer.from('<svg/>').toString('base64') } }] },
      { role: 'assistant', content: [{ type: 'tool_use', id: 't1', name: 'f', input: {} }] },
    ]);
  });

  it('refuses what it cannot translate with upstream_bad_request, before any request', async () => {
    const before = fake.requests.length;
    const audio = await failure(provider.chat({ model: 'm', messages: [{ role: 'user', content: [{ type: 'input_audio', input_audio: { data: 'x', format: 'wav' } }] }] }, { signal: signal() }));
    expect(audio.code).toBe('upstream_bad_request');
    const badArgs = await failure(collect(provider.stream({ model: 'm', messages: [{ role: 'assistant', tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: '{oops' } }] }] }, { signal: signal() })));
    expect(badArgs.code).toBe('upstream_bad_request');
    expect(fake.requests.length).toBe(before);
  });
});

describe('non-stream', () => {
  it('text and usage', async () => {
    const before = fake.requests.length;
    const res = await provider.chat(ask('Hi'), { signal: signal() });
    expect(fake.requests[before]!.body?.stream).toBeUndefined();
    expect(res.object).toBe('chat.completion');
    expect(res.id).toMatch(/^msg_fake_/);
    expect(res.model).toBe('claude-fake-1');
    expect(res.choices).toEqual([{ index: 0, message: { role: 'assistant', content: TEXT }, finish_reason: 'stop' }]);
    expect(res.usage).toEqual({ prompt_tokens: 25, completion_tokens: 7, total_tokens: 32 });
  });

  it('cache tokens count in the prompt; max_tokens → length', async () => {
    fake.behave({ text: 'cut', stopReason: 'max_tokens', usage: { input_tokens: 10, output_tokens: 3, cache_creation_input_tokens: 100, cache_read_input_tokens: 1000 } });
    const res = await provider.chat(ask('Hi'), { signal: signal() });
    expect(res.choices[0]!.finish_reason).toBe('length');
    expect(res.usage).toEqual({ prompt_tokens: 1110, completion_tokens: 3, total_tokens: 1113 });
  });

  it('tool_use → tool_calls', async () => {
    fake.behave({ text: 'Checking.', toolUse: [{ id: 'toolu_1', name: 'get_weather', input: { city: 'Paris', days: 3 } }] });
    const res = await provider.chat(ask('Weather?'), { signal: signal() });
    expect(res.choices[0]!.finish_reason).toBe('tool_calls');
    expect(res.choices[0]!.message).toEqual({
      role: 'assistant',
      content: 'Checking.',
      tool_calls: [{ id: 'toolu_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris","days":3}' } }],
    });

    fake.behave({ text: '', toolUse: [{ name: 'now', input: {} }] });
    const bare = await provider.chat(ask('Time?'), { signal: signal() });
    expect(bare.choices[0]!.message.content).toBeNull();
    expect(bare.choices[0]!.message.tool_calls).toHaveLength(1);
  });
});

describe('stream', () => {
  it('role chunk, content equal to the reply, finish_reason, then exactly one usage chunk', async () => {
    const before = fake.requests.length;
    const chunks = await collect(provider.stream(ask('Hi'), { signal: signal() }));
    expect(fake.requests[before]!.body?.stream).toBe(true);
    expect(chunks.every((c) => c.object === 'chat.completion.chunk' && c.id.startsWith('msg_fake_') && c.model === 'claude-fake-1')).toBe(true);
    expect(chunks[0]!.choices[0]!.delta.role).toBe('assistant');
    const content = contentOf(chunks);
    expect(content).toBe(TEXT);
    expect(chunks.filter((c) => c.choices.length > 0 && typeof c.choices[0]!.delta.content === 'string' && c.choices[0]!.delta.content !== '').length).toBeGreaterThan(3);
    const finishes = chunks.flatMap((c) => c.choices.map((ch) => ch.finish_reason)).filter((f) => f !== null);
    expect(finishes).toEqual(['stop']);
    const usage = chunks.filter((c) => c.usage);
    expect(usage).toHaveLength(1);
    expect(usage[0]!.choices).toEqual([]);
    expect(usage[0]!.usage).toEqual({ prompt_tokens: 25, completion_tokens: 7, total_tokens: 32 });
    expect(chunks.at(-1)).toBe(usage[0]);
  });

  it('tool_use → tool_calls deltas with index, id and name, then argument pieces', async () => {
    fake.behave({
      text: 'Let me look.',
      toolUse: [
        { id: 'toolu_a', name: 'get_weather', input: { city: 'Paris', unit: 'celsius' } },
        { id: 'toolu_b', name: 'get_time', input: { zone: 'Europe/Paris' } },
      ],
      usage: { input_tokens: 40, output_tokens: 30 },
    });
    const chunks = await collect(provider.stream(ask('Weather and time?'), { signal: signal() }));
    const calls = new Map<number, { id?: string; name?: string; args: string; pieces: number }>();
    for (const c of chunks) {
      for (const tc of c.choices[0]?.delta.tool_calls ?? []) {
        const index = tc.index as number;
        const fn = tc.function as { name?: string; arguments?: string };
        const entry = calls.get(index) ?? { args: '', pieces: 0 };
        if (tc.id) entry.id = tc.id as string;
        if (fn.name) entry.name = fn.name;
        if (fn.arguments) {
          entry.args += fn.arguments;
          entry.pieces++;
        }
        calls.set(index, entry);
      }
    }
    expect([...calls.keys()]).toEqual([0, 1]);
    expect(calls.get(0)).toMatchObject({ id: 'toolu_a', name: 'get_weather' });
    expect(JSON.parse(calls.get(0)!.args)).toEqual({ city: 'Paris', unit: 'celsius' });
    expect(calls.get(0)!.pieces).toBeGreaterThan(1);
    expect(calls.get(1)).toMatchObject({ id: 'toolu_b', name: 'get_time' });
    expect(JSON.parse(calls.get(1)!.args)).toEqual({ zone: 'Europe/Paris' });
    expect(chunks.flatMap((c) => c.choices.map((ch) => ch.finish_reason)).filter((f) => f !== null)).toEqual(['tool_calls']);
    expect(chunks.at(-1)!.usage).toEqual({ prompt_tokens: 40, completion_tokens: 30, total_tokens: 70 });
  });

  it('an event: error mid-stream → UpstreamError without the upstream message', async () => {
    fake.behave({ text: TEXT, errorAfterEvents: 5 });
    const received: ChatChunk[] = [];
    const err = await failure((async () => {
      for await (const c of provider.stream(ask('Hi'), { signal: signal() })) received.push(c);
    })());
    expect(received.length).toBeGreaterThan(0);
    expect(err.code).toBe('upstream_unavailable');
    expectClean(err);
  });

  it('a consumer that stops early ends the upstream request', async () => {
    fake.behave({ text: TEXT, chunkDelayMs: 30 });
    const index = fake.requests.length;
    for await (const c of provider.stream(ask('Hi'), { signal: signal() })) {
      if (c.choices[0]?.delta.content) break;
    }
    expect(await fake.waitForEnd(index, 1000)).toBe('aborted');
  });
});

describe('SSE parsing', () => {
  it('handles events split anywhere, CRLF, comments and multi-line data', () => {
    const text = ': comment\r\nevent: ping\r\ndata: {"type":"ping"}\r\n\r\nevent: x\ndata: a\ndata: b\n\ndata: c\r\r';
    const bytes = new TextEncoder().encode(text);
    for (const cut of [1, 7, 20, 33, 50]) {
      const parser = new SseParser();
      const events = [];
      for (let i = 0; i < bytes.length; i += cut) events.push(...parser.push(bytes.slice(i, i + cut)));
      events.push(...parser.end());
      expect(events).toEqual([
        { event: 'ping', data: '{"type":"ping"}' },
        { event: 'x', data: 'a\nb' },
        { event: 'message', data: 'c' },
      ]);
    }
  });
});

describe('retries (before the first byte only)', () => {
  it('429 with retry-after and 500 are retried and succeed within maxRetries', async () => {
    fake.behave({ text: TEXT, status: 429, retryAfter: '0', failTimes: 2 });
    let index = fake.requests.length;
    const res = await provider.chat(ask('Hi'), { signal: signal() });
    expect(res.choices[0]!.message.content).toBe(TEXT);
    expect(fake.requests.length - index).toBe(3);

    fake.behave({ text: TEXT, status: 500, failTimes: 2 });
    index = fake.requests.length;
    const chunks = await collect(provider.stream(ask('Hi'), { signal: signal() }));
    expect(contentOf(chunks)).toBe(TEXT);
    expect(fake.requests.length - index).toBe(3);

    fake.behave({ text: TEXT, status: 529, failTimes: 1 });
    index = fake.requests.length;
    await provider.chat(ask('Hi'), { signal: signal() });
    expect(fake.requests.length - index).toBe(2);
  });

  it('gives up after maxRetries', async () => {
    fake.behave({ status: 500, failTimes: 3 });
    let index = fake.requests.length;
    const err = await failure(provider.chat(ask('Hi'), { signal: signal() }));
    expect(err.code).toBe('upstream_unavailable');
    expect(err.upstreamStatus).toBe(500);
    expectClean(err);
    expect(fake.requests.length - index).toBe(3);

    fake.behave({ status: 429, retryAfter: '0' });
    index = fake.requests.length;
    const limited = await failure(collect(provider.stream(ask('Hi'), { signal: signal() })));
    expect(limited.code).toBe('upstream_rate_limited');
    expect(limited.status).toBe(429);
    expect(fake.requests.length - index).toBe(3);
  });

  it('honours a short retry-after instead of the backoff; a long one ends the retries', async () => {
    fake.behave({ text: TEXT, status: 429, retryAfter: '1', failTimes: 1 });
    const slowBackoff = make({ retryBaseMs: 20_000 });
    const started = Date.now();
    await slowBackoff.chat(ask('Hi'), { signal: signal() });
    const elapsed = Date.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(900);
    expect(elapsed).toBeLessThan(5000);

    fake.behave({ status: 429, retryAfter: '60' });
    const index = fake.requests.length;
    const err = await failure(provider.chat(ask('Hi'), { signal: signal() }));
    expect(err.code).toBe('upstream_rate_limited');
    expect(err.retryAfterSeconds).toBe(60);
    expect(fake.requests.length - index).toBe(1);
  });

  it('network errors are retried, then reported as upstream_unavailable', async () => {
    const closed = await startFakeAnthropic();
    const url = closed.url;
    await closed.close();
    const started = Date.now();
    const err = await failure(make({}, { baseUrl: url }).chat(ask('Hi'), { signal: signal() }));
    expect(err.code).toBe('upstream_unavailable');
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it('400 and 401 are not retried and never carry the upstream body', async () => {
    fake.behave({ status: 400 });
    let index = fake.requests.length;
    const bad = await failure(provider.chat(ask('Hi'), { signal: signal() }));
    expect(bad.code).toBe('upstream_bad_request');
    expect(bad.status).toBe(400);
    expect(bad.upstreamStatus).toBe(400);
    expect(bad.message).toContain('Anthropic (claude)');
    expectClean(bad);
    expect(fake.requests.length - index).toBe(1);

    const badStream = await failure(collect(provider.stream(ask('Hi'), { signal: signal() })));
    expect(badStream.code).toBe('upstream_bad_request');
    expectClean(badStream);

    fake.behave({ text: TEXT });
    index = fake.requests.length;
    const denied = await failure(make({}, { apiKey: 'sk-ant-wrong-key-0000000' }).chat(ask('Hi'), { signal: signal() }));
    expect(denied.code).toBe('upstream_auth_failed');
    expect(denied.message).not.toContain('sk-ant-wrong-key');
    expectClean(denied);
    expect(fake.requests.length - index).toBe(1);
  });

  it('a broken socket mid-stream → UpstreamError from the iterator, not retried, never a hang', async () => {
    fake.behave({ text: TEXT, breakAfterEvents: 5 });
    const index = fake.requests.length;
    const received: ChatChunk[] = [];
    const started = Date.now();
    const err = await failure((async () => {
      for await (const c of make({ idleTimeoutMs: 5000 }).stream(ask('Hi'), { signal: signal() })) received.push(c);
    })());
    expect(Date.now() - started).toBeLessThan(2000);
    expect(received.length).toBeGreaterThan(0);
    expect(err.code).toBe('upstream_error');
    expect(fake.requests.length - index).toBe(1);
    expect(await fake.waitForEnd(index)).toBe('broken');
  });
});

describe('timeouts and aborts', () => {
  it("the caller's abort on a stalled stream ends the upstream request at once and throws upstream_aborted", async () => {
    fake.behave({ text: TEXT, stallAfterEvents: 4 });
    const index = fake.requests.length;
    const controller = new AbortController();
    const received: ChatChunk[] = [];
    const pending = failure((async () => {
      for await (const c of make({ idleTimeoutMs: 10_000 }).stream(ask('Hi'), { signal: controller.signal })) {
        received.push(c);
        if (received.length === 1) setTimeout(() => controller.abort(), 50);
      }
    })());
    const started = Date.now();
    expect(await fake.waitForEnd(index, 1000)).toBe('aborted');
    const err = await pending;
    expect(Date.now() - started).toBeLessThan(1000);
    expect(err.code).toBe('upstream_aborted');
    expect(err.status).toBe(499);
    expect(err.retryable).toBe(false);
  });

  it('an abort while waiting for headers, or before the call, → upstream_aborted', async () => {
    fake.behave({ text: TEXT, headerDelayMs: 3000 });
    const index = fake.requests.length;
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    const started = Date.now();
    const err = await failure(provider.chat(ask('Hi'), { signal: controller.signal }));
    expect(err.code).toBe('upstream_aborted');
    expect(Date.now() - started).toBeLessThan(1000);
    expect(await fake.waitForEnd(index, 1000)).toBe('aborted');

    const before = fake.requests.length;
    const already = await failure(collect(provider.stream(ask('Hi'), { signal: AbortSignal.abort() })));
    expect(already.code).toBe('upstream_aborted');
    expect(fake.requests.length).toBe(before);
  });

  it('an abort during the retry backoff → upstream_aborted without another attempt', async () => {
    fake.behave({ status: 500 });
    const index = fake.requests.length;
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 200);
    const err = await failure(make({ retryBaseMs: 10_000 }).chat(ask('Hi'), { signal: controller.signal }));
    expect(err.code).toBe('upstream_aborted');
    expect(fake.requests.length - index).toBe(1);
  });

  it('idle timeout on a stalled stream → upstream_timeout, and the upstream request is ended', async () => {
    fake.behave({ text: TEXT, stallAfterEvents: 4 });
    const index = fake.requests.length;
    const started = Date.now();
    const err = await failure(collect(make({ idleTimeoutMs: 300 }).stream(ask('Hi'), { signal: signal() })));
    expect(err.code).toBe('upstream_timeout');
    expect(Date.now() - started).toBeLessThan(2000);
    expect(await fake.waitForEnd(index, 1000)).toBe('aborted');
    expect(fake.requests.length - index).toBe(1);
  });

  it('connect timeout (no headers in time) → upstream_timeout, not retried', async () => {
    fake.behave({ text: TEXT, headerDelayMs: 2000 });
    const index = fake.requests.length;
    const started = Date.now();
    const err = await failure(make({ connectTimeoutMs: 200 }).chat(ask('Hi'), { signal: signal() }));
    expect(err.code).toBe('upstream_timeout');
    expect(Date.now() - started).toBeLessThan(1000);
    expect(fake.requests.length - index).toBe(1);
  });
});

describe('embeddings and check', () => {
  it('embeddings → upstream_bad_request', async () => {
    const err = await failure(provider.embeddings({ model: 'x', input: 'hi' }, { signal: signal() }));
    expect(err.code).toBe('upstream_bad_request');
    expect(err.status).toBe(400);
    expect(err.message).toContain('no embeddings API');
  });

  it('check: ok with the key, refused credentials, unreachable', async () => {
    const index = fake.requests.length;
    const ok = await provider.check({ signal: signal() });
    expect(ok).toEqual({ ok: true, detail: expect.stringContaining('1 model') as unknown });
    expect(fake.requests[index]).toMatchObject({ method: 'GET', path: expect.stringMatching(/^\/v1\/models/) as unknown });
    expect(fake.requests[index]!.headers['x-api-key']).toBe(API_KEY);

    const denied = await make({}, { apiKey: 'sk-ant-wrong-key-0000000' }).check({ signal: signal() });
    expect(denied.ok).toBe(false);
    expect(denied.detail).toContain('credentials');
    expect(denied.detail).not.toContain(FAKE_ANTHROPIC_SECRET);

    const closed = await startFakeAnthropic();
    const url = closed.url;
    await closed.close();
    const down = await make({}, { baseUrl: url }).check({ signal: signal() });
    expect(down).toEqual({ ok: false, detail: 'Anthropic (claude) could not be reached.' });
  });
});

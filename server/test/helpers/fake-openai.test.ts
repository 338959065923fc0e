import OpenAI from 'openai';
import type { ChatCompletionChunk } from 'openai/resources/chat/completions';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_MODELS, DEFAULT_REPLY, defaultUsage, fakeEmbedding, splitReply, startFakeOpenAI, type FakeOpenAI } from './fake-openai.js';

// The real openai SDK against the fake proves the fake speaks the wire protocol Keel's client will meet.

const KEY = 'test-upstream-key';
const MESSAGES = [
  { role: 'system' as const, content: 'You are terse.' },
  { role: 'user' as const, content: 'Say hello to the tests please' },
];
const TOOL_CALLS = [
  { id: 'call_weather_1', name: 'get_weather', arguments: '{"city":"Paris","unit":"celsius"}' },
  { id: 'call_time_2', name: 'get_time', arguments: '{"tz":"Europe/Paris"}' },
];

let fake: FakeOpenAI;
let client: OpenAI;

beforeAll(async () => {
  fake = await startFakeOpenAI({ apiKey: KEY });
  client = new OpenAI({ baseURL: fake.url, apiKey: KEY, maxRetries: 0 });
});
afterAll(async () => {
  await fake.close();
});
beforeEach(() => fake.reset());

async function collect(stream: AsyncIterable<ChatCompletionChunk>): Promise<ChatCompletionChunk[]> {
  const chunks: ChatCompletionChunk[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

function text(chunks: ChatCompletionChunk[]): string {
  return chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');
}

function toolCallsOf(chunks: ChatCompletionChunk[]): Array<{ id: string; name: string; arguments: string }> {
  const calls: Array<{ id: string; name: string; arguments: string }> = [];
  for (const chunk of chunks) {
    for (const d of chunk.choices[0]?.delta.tool_calls ?? []) {
      const call = (calls[d.index] ??= { id: '', name: '', arguments: '' });
      if (d.id) call.id = d.id;
      if (d.function?.name) call.name = d.function.name;
      call.arguments += d.function?.arguments ?? '';
    }
  }
  return calls;
}

describe('fake OpenAI upstream, through the real openai SDK', () => {
  it('answers a non-streamed chat completion with the default reply, the echoed model and deterministic usage', async () => {
    const completion = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: MESSAGES });
    expect(completion.object).toBe('chat.completion');
    expect(completion.id).toMatch(/^chatcmpl-[0-9a-f]+$/);
    expect(Math.abs(completion.created - Date.now() / 1000)).toBeLessThan(5);
    expect(completion.model).toBe('gpt-4o-mini');
    expect(completion.choices).toHaveLength(1);
    expect(completion.choices[0]?.message).toMatchObject({ role: 'assistant', content: DEFAULT_REPLY });
    expect(completion.choices[0]?.finish_reason).toBe('stop');
    // 3 + 6 words in the messages; 5 pieces in the default reply.
    expect(completion.usage).toEqual({ prompt_tokens: 9, completion_tokens: 5, total_tokens: 14 });
    expect(defaultUsage({ messages: MESSAGES })).toEqual(completion.usage);

    expect(fake.requests).toHaveLength(1);
    const rec = fake.requests[0]!;
    expect(rec).toMatchObject({ method: 'POST', path: '/v1/chat/completions', body: { model: 'gpt-4o-mini', messages: MESSAGES } });
    expect(rec.headers.authorization).toBe(`Bearer ${KEY}`);
    expect(await fake.waitForEnd(0)).toBe('finished');
    expect(rec.finishedAt).toBeGreaterThanOrEqual(rec.receivedAt);
    expect(rec.abortedAt).toBeUndefined();
  });

  it('honours reply and explicit usage', async () => {
    fake.behave({ reply: 'Bonjour tout le monde', usage: { prompt_tokens: 11, completion_tokens: 7 } });
    const completion = await client.chat.completions.create({ model: 'm', messages: MESSAGES });
    expect(completion.choices[0]?.message.content).toBe('Bonjour tout le monde');
    expect(completion.usage).toEqual({ prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 });
  });

  it('streams deltas that concatenate to the reply, then a usage chunk when include_usage is asked', async () => {
    const stream = await client.chat.completions.create({ model: 'gpt-4o', messages: MESSAGES, stream: true, stream_options: { include_usage: true } });
    const chunks = await collect(stream);
    expect(chunks.every((c) => c.object === 'chat.completion.chunk' && c.model === 'gpt-4o')).toBe(true);
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    expect(chunks[0]?.choices[0]?.delta.role).toBe('assistant');
    expect(text(chunks)).toBe(DEFAULT_REPLY);
    expect(chunks.filter((c) => c.choices[0]?.delta.content).map((c) => c.choices[0]?.delta.content)).toEqual(splitReply(DEFAULT_REPLY));
    // role, 5 pieces, finish, usage
    expect(chunks).toHaveLength(8);
    expect(chunks[6]?.choices[0]?.finish_reason).toBe('stop');
    expect(chunks.slice(0, 7).every((c) => c.usage === null)).toBe(true);
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toEqual({ prompt_tokens: 9, completion_tokens: 5, total_tokens: 14 });
  });

  it('sends no usage chunk (nor usage fields) without include_usage, and writes each chunk when it is due', async () => {
    fake.behave({ chunks: ['a', 'b', 'c', 'd'], chunkDelayMs: 80 });
    const stream = await client.chat.completions.create({ model: 'm', messages: MESSAGES, stream: true });
    const arrivals: number[] = [];
    const chunks: ChatCompletionChunk[] = [];
    for await (const chunk of stream) {
      arrivals.push(Date.now());
      chunks.push(chunk);
    }
    expect(text(chunks)).toBe('abcd');
    expect(chunks.every((c) => c.usage === undefined && c.choices.length === 1)).toBe(true);
    expect(chunks.at(-1)?.choices[0]?.finish_reason).toBe('stop');
    // 6 chunks, 5 gaps of 80 ms: had the fake buffered, they would arrive together.
    expect(arrivals.at(-1)! - arrivals[0]!).toBeGreaterThanOrEqual(5 * 80 * 0.8);
    const body = fake.requests[0]?.body as { stream?: unknown };
    expect(body.stream).toBe(true);
  });

  it("reports no usage at all with usage: 'none', streamed or not", async () => {
    fake.behave({ usage: 'none' });
    const completion = await client.chat.completions.create({ model: 'm', messages: MESSAGES });
    expect(completion.usage).toBeUndefined();
    expect(completion.choices[0]?.message.content).toBe(DEFAULT_REPLY);
    const chunks = await collect(await client.chat.completions.create({ model: 'm', messages: MESSAGES, stream: true, stream_options: { include_usage: true } }));
    expect(text(chunks)).toBe(DEFAULT_REPLY);
    expect(chunks.every((c) => c.usage == null && c.choices.length === 1)).toBe(true);
    expect(defaultUsage({}, { usage: 'none' })).toBeUndefined();
  });

  it('answers tool calls in both modes', async () => {
    fake.behave({ toolCalls: TOOL_CALLS });
    const completion = await client.chat.completions.create({ model: 'm', messages: MESSAGES });
    const choice = completion.choices[0]!;
    expect(choice.finish_reason).toBe('tool_calls');
    expect(choice.message.content).toBeNull();
    expect(choice.message.tool_calls).toEqual(TOOL_CALLS.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.arguments } })));
    // Per call: 1 header delta + ceil(arguments / 8) pieces = (1 + 5) + (1 + 3).
    expect(completion.usage?.completion_tokens).toBe(10);

    const chunks = await collect(await client.chat.completions.create({ model: 'm', messages: MESSAGES, stream: true, stream_options: { include_usage: true } }));
    expect(toolCallsOf(chunks)).toEqual(TOOL_CALLS);
    expect(chunks.filter((c) => c.choices[0]?.delta.tool_calls).length).toBeGreaterThan(TOOL_CALLS.length); // arguments came in pieces
    expect(text(chunks)).toBe('');
    expect(chunks.at(-2)?.choices[0]?.finish_reason).toBe('tool_calls');
    expect(chunks.at(-1)?.usage?.completion_tokens).toBe(10);
  });

  it('returns deterministic embeddings, decoded by the SDK from base64', async () => {
    const res = await client.embeddings.create({ model: 'text-embedding-3-small', input: ['alpha', 'beta', 'alpha'] });
    expect(fake.requests[0]?.body).toMatchObject({ encoding_format: 'base64' });
    expect(res.object).toBe('list');
    expect(res.model).toBe('text-embedding-3-small');
    expect(res.data.map((d) => d.index)).toEqual([0, 1, 2]);
    const [a, b, a2] = res.data.map((d) => d.embedding);
    expect(a).toHaveLength(8);
    expect(Math.hypot(...a!)).toBeCloseTo(1, 5);
    expect(a2).toEqual(a);
    expect(b).not.toEqual(a);
    expect(res.usage).toEqual({ prompt_tokens: 3, total_tokens: 3 });
    a!.forEach((v, i) => expect(v).toBeCloseTo(fakeEmbedding('alpha')[i]!, 6));

    const floats = await client.embeddings.create({ model: 'e', input: 'alpha', encoding_format: 'float', dimensions: 5 });
    expect(floats.data[0]?.embedding).toEqual(fakeEmbedding('alpha', 5));
    const again = await client.embeddings.create({ model: 'e', input: 'alpha', dimensions: 5 });
    expect(again.data[0]?.embedding).toHaveLength(5);
    again.data[0]!.embedding.forEach((v, i) => expect(v).toBeCloseTo(fakeEmbedding('alpha', 5)[i]!, 6));
  });

  it('lists models', async () => {
    const ids: string[] = [];
    for await (const model of client.models.list()) {
      expect(model).toMatchObject({ object: 'model', owned_by: 'fake-upstream' });
      ids.push(model.id);
    }
    expect(ids).toEqual([...DEFAULT_MODELS]);

    const other = await startFakeOpenAI({ models: ['llama-3.1-8b'] });
    try {
      const page = await new OpenAI({ baseURL: other.url, apiKey: 'anything', maxRetries: 0 }).models.list();
      expect(page.data.map((m) => m.id)).toEqual(['llama-3.1-8b']);
    } finally {
      await other.close();
    }
  });

  it('surfaces a 429 as RateLimitError with Retry-After, in both modes', async () => {
    fake.behave({ status: 429, retryAfter: 2 });
    const err = await client.chat.completions.create({ model: 'm', messages: MESSAGES }).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    const rate = err as InstanceType<typeof OpenAI.RateLimitError>;
    expect(rate.status).toBe(429);
    expect(rate.headers.get('retry-after')).toBe('2');
    expect(rate.code).toBe('rate_limit_exceeded');
    expect(rate.type).toBe('requests');
    await expect(client.chat.completions.create({ model: 'm', messages: MESSAGES, stream: true })).rejects.toBeInstanceOf(OpenAI.RateLimitError);
  });

  it('fails failTimes times then succeeds; behaveOnce is used once and falls back', async () => {
    fake.behave({ status: 503, failTimes: 2, reply: 'recovered' });
    await expect(client.chat.completions.create({ model: 'm', messages: MESSAGES })).rejects.toBeInstanceOf(OpenAI.InternalServerError);
    await expect(client.chat.completions.create({ model: 'm', messages: MESSAGES })).rejects.toMatchObject({ status: 503 });
    expect((await client.chat.completions.create({ model: 'm', messages: MESSAGES })).choices[0]?.message.content).toBe('recovered');
    expect((await client.chat.completions.create({ model: 'm', messages: MESSAGES })).choices[0]?.message.content).toBe('recovered');

    fake.behave({ reply: 'default' });
    fake.behaveOnce({ status: 400, errorBody: { error: { message: 'bad param', type: 'invalid_request_error', param: 'temperature', code: null } } });
    fake.behaveOnce({ reply: 'second' });
    const bad = await client.chat.completions.create({ model: 'm', messages: MESSAGES }).then(() => undefined, (e: unknown) => e);
    expect(bad).toBeInstanceOf(OpenAI.BadRequestError);
    expect(bad).toMatchObject({ status: 400, param: 'temperature', message: '400 bad param' });
    expect((await client.chat.completions.create({ model: 'm', messages: MESSAGES })).choices[0]?.message.content).toBe('second');
    expect((await client.chat.completions.create({ model: 'm', messages: MESSAGES })).choices[0]?.message.content).toBe('default');

    // A behaviour for one route is neither used nor consumed by another.
    fake.behaveOnce({ route: 'embeddings', status: 500 });
    expect((await client.chat.completions.create({ model: 'm', messages: MESSAGES })).choices[0]?.message.content).toBe('default');
    await expect(client.embeddings.create({ model: 'e', input: 'x' })).rejects.toBeInstanceOf(OpenAI.InternalServerError);
    expect((await client.embeddings.create({ model: 'e', input: 'x' })).data).toHaveLength(1);
  });

  it('answers a wrong API key with 401 AuthenticationError, and unknown paths with 404 in the error shape', async () => {
    const wrong = new OpenAI({ baseURL: fake.url, apiKey: 'not-the-key', maxRetries: 0 });
    const err = await wrong.chat.completions.create({ model: 'm', messages: MESSAGES }).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.AuthenticationError);
    expect(err).toMatchObject({ status: 401, code: 'invalid_api_key' });
    expect(String((err as Error).message)).not.toContain('not-the-key');

    const res = await fetch(`${fake.url}/nope`, { headers: { authorization: `Bearer ${KEY}` } });
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ error: { message: 'Invalid URL (GET /v1/nope)', type: 'invalid_request_error', param: null, code: null } });
  });

  it('records a client abort of a stalled stream within a second', async () => {
    fake.behave({ stallAfterChunks: 3 });
    const controller = new AbortController();
    const stream = await client.chat.completions.create({ model: 'm', messages: MESSAGES, stream: true }, { signal: controller.signal });
    const seen: ChatCompletionChunk[] = [];
    const started = Date.now();
    for await (const chunk of stream) {
      seen.push(chunk);
      if (seen.length === 3) setTimeout(() => controller.abort(), 50);
    }
    // The SDK ends the iteration quietly on abort.
    expect(seen).toHaveLength(3);
    expect(text(seen)).toBe('Hello from ');
    expect(await fake.waitForEnd(0, 1000)).toBe('aborted');
    const rec = fake.requests[0]!;
    expect(rec.abortedAt! - started).toBeLessThan(1000);
    expect(rec.finishedAt).toBeUndefined();
  });

  it('records an abort during firstByteDelayMs (a client timeout)', async () => {
    fake.behave({ firstByteDelayMs: 5000 });
    await expect(client.chat.completions.create({ model: 'm', messages: MESSAGES }, { timeout: 150 })).rejects.toBeInstanceOf(OpenAI.APIConnectionTimeoutError);
    expect(await fake.waitForEnd(0, 1000)).toBe('aborted');
  });

  it('breakAfterChunks makes the iteration throw after the chunks sent', async () => {
    fake.behave({ breakAfterChunks: 2, chunkDelayMs: 10 });
    const stream = await client.chat.completions.create({ model: 'm', messages: MESSAGES, stream: true });
    const seen: ChatCompletionChunk[] = [];
    const err = await (async () => {
      for await (const chunk of stream) seen.push(chunk);
    })().then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect(text(seen)).toBe('Hello ');
    expect(await fake.waitForEnd(0, 1000)).toBe('broken');

    fake.behave({ breakAfterChunks: 0 });
    await expect(client.chat.completions.create({ model: 'm', messages: MESSAGES })).rejects.toBeInstanceOf(Error);
    expect(await fake.waitForEnd(1, 1000)).toBe('broken');
  });

  it('stalls a non-streamed answer after its headers until the client gives up', async () => {
    fake.behaveOnce({ route: 'embeddings', stallAfterChunks: 0 });
    // The SDK's `timeout` only covers the wait for headers; a signal aborts the body read.
    await expect(client.embeddings.create({ model: 'e', input: [[1, 2, 3], [4, 5]] }, { signal: AbortSignal.timeout(200) })).rejects.toMatchObject({ name: 'AbortError' });
    expect(await fake.waitForEnd(0, 1000)).toBe('aborted');
    const res = await client.embeddings.create({ model: 'e', input: [[1, 2, 3], [4, 5]] });
    expect(res.data).toHaveLength(2);
    expect(res.usage).toEqual({ prompt_tokens: 5, total_tokens: 5 });
  });

  it('close() ends stalled responses instead of waiting for them', async () => {
    const other = await startFakeOpenAI();
    other.behave({ stallAfterChunks: 1 });
    const stream = await new OpenAI({ baseURL: other.url, apiKey: 'k', maxRetries: 0 }).chat.completions.create({ model: 'm', messages: MESSAGES, stream: true });
    const iterating = collect(stream).then(() => 'ended', () => 'threw');
    await new Promise((r) => setTimeout(r, 50));
    const started = Date.now();
    await other.close();
    expect(Date.now() - started).toBeLessThan(1000);
    expect(await iterating).toBe('threw');
    expect(other.requests[0]?.abortedAt).toBeUndefined();
  });

  it('waitForEnd waits for a request that has not arrived yet, and times out', async () => {
    const pending = fake.waitForEnd(0, 2000);
    await client.models.list();
    expect(await pending).toBe('finished');
    await expect(fake.waitForEnd(5, 50)).rejects.toThrow(/did not end within 50 ms/);
  });
});

import { request as httpRequest, type IncomingMessage } from 'node:http';
import OpenAI from 'openai';
import { afterAll, afterEach, beforeAll, beforeEach, expect, it } from 'vitest';
import { describeEachDatabase } from '../helpers/databases.js';
import { startFakeOpenAI, type FakeOpenAI } from '../helpers/fake-openai.js';
import { bearer, signUp, type TestUser } from '../helpers/factories.js';
import { expectErrorShape, request, startServer, type TestServer } from '../helpers/server.js';
import { readSse, sleep, usageRows, usageRowsWhen, writeKeelConfig, type ConfigFile, type TimedSse } from './llm-helpers.js';

/**
 * How Keel streams, measured on the wire with raw `fetch` and a body reader: heartbeats while the
 * upstream is silent, each upstream chunk relayed as soon as it arrives, idle and connect timeouts,
 * and a client walking away mid-stream (the upstream request is cancelled and metered once).
 */

type SseEvent = Extract<TimedSse['items'][number], { kind: 'event' }>;
const eventsOf = (r: TimedSse): SseEvent[] => r.items.filter((i): i is SseEvent => i.kind === 'event');
const textOf = (events: SseEvent[]): string => events.filter((e) => e.event === 'delta').map((e) => (JSON.parse(e.data) as { text: string }).text).join('');

describeEachDatabase('SSE: heartbeats, flushing, client disconnects', (db) => {
  let fake: FakeOpenAI;
  let file: ConfigFile;
  let s: TestServer;
  let user: TestUser;

  beforeAll(async () => {
    fake = await startFakeOpenAI();
    file = writeKeelConfig({
      heartbeat_seconds: 0.3,
      providers: { local: { kind: 'openai', base_url: fake.url } },
      models: { 'stream-model': { provider: 'local', model: 'upstream-stream-model' } },
    });
    s = await startServer(db(), { KEEL_CONFIG: file.path });
    user = await signUp(s);
  });
  afterAll(async () => {
    await s?.close();
    await fake?.close();
    file?.remove();
  });
  let calls = 0;
  beforeEach(() => fake.reset());
  // Tests that walk away leave their upstream request ending and their row being written: let both finish.
  afterEach(async () => {
    const chats = fake.requests.filter((q) => q.path === '/v1/chat/completions');
    await Promise.all(chats.map((q) => fake.waitForEnd(fake.requests.indexOf(q), 5000)));
    calls += chats.length;
    await expect.poll(async () => (await usageRows(s, user.id)).length, { timeout: 3000 }).toBe(calls);
  });

  const stream = (json: unknown = { prompt: 'Go.' }, onItem?: Parameters<typeof readSse>[3]) => readSse(`${s.url}/llm/general/stream`, bearer(user.access_token), json, onItem);

  it('heartbeats (`: keep-alive`) flow while the upstream has not answered, and the stream still completes', async () => {
    fake.behave({ firstByteDelayMs: 1200, chunks: ['slow ', 'start'] });
    const r = await stream();
    expect(r.status).toBe(200);
    // the response began (headers flushed) long before the upstream answered
    expect(r.headersAt).toBeLessThan(900);
    const firstDelta = r.items.findIndex((i) => i.kind === 'event' && i.event === 'delta');
    expect(firstDelta).toBeGreaterThan(0);
    const before = r.items.slice(0, firstDelta);
    expect(before.length).toBeGreaterThanOrEqual(1);
    expect(before.every((i) => i.kind === 'comment' && i.text === 'keep-alive')).toBe(true);
    expect(r.raw).toMatch(/^: keep-alive\n\n/);
    expect(textOf(eventsOf(r))).toBe('slow start');
    expect(eventsOf(r).at(-1)!.event).toBe('done');
  });

  it('heartbeats also flow when the upstream has sent its first (empty) chunk but no text yet', async () => {
    // the role chunk comes at once; the first text only 1 s later (a model thinking before it writes)
    fake.behave({ chunks: ['late ', 'text'], chunkDelayMs: 1000 });
    const r = await stream({ prompt: 'Go.' }, (item) => (item.kind === 'event' ? 'stop' : undefined));
    expect(r.status).toBe(200);
    // without heartbeats the headers would wait for the first text, 1 s in
    expect(r.headersAt).toBeLessThan(850);
    const comments = r.items.filter((i) => i.kind === 'comment');
    expect(comments.length).toBeGreaterThanOrEqual(1);
    expect(r.items.at(-1)).toMatchObject({ kind: 'event', event: 'delta', data: '{"text":"late "}' });
    expect(r.items.indexOf(comments[0]!)).toBeLessThan(r.items.length - 1);
  });

  it('each upstream chunk is flushed to the client as soon as it arrives, not buffered until the end', async () => {
    fake.behave({ chunks: ['one ', 'two ', 'three'], chunkDelayMs: 500 });
    let deltas = 0;
    const r = await stream({ prompt: 'Go.' }, (item) => (item.kind === 'event' && item.event === 'delta' && ++deltas === 2 ? 'stop' : undefined));
    const upstream = fake.requests.find((q) => q.path === '/v1/chat/completions')!;
    const events = eventsOf(r).filter((e) => e.event === 'delta');
    expect(events.map((d) => d.data)).toEqual(['{"text":"one "}', '{"text":"two "}']);
    // the fake writes 'one ' 500 ms after the request came in, 'two ' 500 ms later, and more after that
    expect(events[0]!.epoch - upstream.receivedAt).toBeLessThan(500 + 400);
    expect(events[1]!.at - events[0]!.at).toBeGreaterThan(300);

    // /v1/chat/completions relays the upstream's very first chunk (the role) at once
    fake.behave({ chunks: ['one ', 'two'], chunkDelayMs: 500 });
    const openai = await readSse(`${s.url}/v1/chat/completions`, bearer(user.access_token), { model: 'stream-model', stream: true, messages: [{ role: 'user', content: 'Go.' }] }, () => 'stop');
    const first = eventsOf(openai)[0]!;
    expect(JSON.parse(first.data)).toMatchObject({ object: 'chat.completion.chunk', model: 'stream-model', choices: [{ delta: { role: 'assistant' } }] });
    expect(first.epoch - fake.requests.at(-1)!.receivedAt).toBeLessThan(400);
  });

  it('a client that disconnects mid-stream: the upstream request is cancelled within a second, one row, status aborted', async () => {
    fake.behave({ chunks: Array.from({ length: 40 }, (_, i) => `w${i} `), chunkDelayMs: 100, usage: 'none' });
    const before = (await usageRows(s, user.id)).length;
    let stoppedAt = 0;
    const r = await stream({ prompt: 'A long answer, please.' }, (item) => {
      if (item.kind === 'event' && item.event === 'delta' && item.data.includes('w2 ')) {
        stoppedAt = Date.now();
        return 'stop';
      }
    });
    expect(textOf(eventsOf(r))).toBe('w0 w1 w2 ');
    const index = fake.requests.findIndex((q) => q.path === '/v1/chat/completions');
    expect(await fake.waitForEnd(index, 3000)).toBe('aborted');
    expect(fake.requests[index]!.abortedAt! - stoppedAt).toBeLessThan(1000);
    await expect.poll(async () => (await usageRows(s, user.id)).length, { timeout: 3000 }).toBe(before + 1);
    const row = (await usageRows(s, user.id)).at(-1)!;
    expect(row).toMatchObject({ endpoint: '/llm/general/stream', status: 'aborted', estimated: 1 });
    expect(row.completion_tokens).toBeGreaterThanOrEqual(3);
    await sleep(300);
    expect(await usageRows(s, user.id)).toHaveLength(before + 1);
  });

  it('a client that gives up on a non-streamed /llm/<preset> call: the upstream request is cancelled too, one row, status aborted', async () => {
    fake.behave({ firstByteDelayMs: 3000 });
    const body = JSON.stringify({ prompt: 'Take your time.' });
    const req = httpRequest(`${s.url}/llm/general`, { method: 'POST', agent: false, headers: { ...bearer(user.access_token), 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) } });
    req.on('error', () => undefined);
    req.end(body);
    await expect.poll(() => fake.requests.length, { timeout: 3000 }).toBe(1);
    const gaveUpAt = Date.now();
    req.destroy();
    expect(await fake.waitForEnd(0, 3000)).toBe('aborted');
    expect(fake.requests[0]!.abortedAt! - gaveUpAt).toBeLessThan(1000);
    await expect.poll(async () => (await usageRows(s, user.id)).at(-1)?.endpoint, { timeout: 3000 }).toBe('/llm/general');
    expect((await usageRows(s, user.id)).at(-1)).toMatchObject({ status: 'aborted', completion_tokens: 0 });
  });

  it('a client that stops reading holds the upstream back (backpressure) instead of Keel buffering the whole answer', async () => {
    // 24 MiB of text: far more than the socket buffers between the fake, Keel and the client hold
    const piece = 'x'.repeat(128 * 1024);
    fake.behave({ chunks: Array.from({ length: 192 }, () => piece) });
    let received = 0;
    let res: IncomingMessage | undefined;
    const done = new Promise<void>((resolve, reject) => {
      const body = JSON.stringify({ prompt: 'A lot, please.' });
      const req = httpRequest(`${s.url}/llm/general/stream`, { method: 'POST', agent: false, headers: { ...bearer(user.access_token), 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) } }, (r) => {
        res = r;
        r.pause();
        r.on('data', (chunk: Buffer) => {
          received += chunk.length;
        });
        r.on('end', resolve);
        r.on('error', reject);
      });
      req.on('error', reject);
      req.end(body);
    });
    await expect.poll(() => res !== undefined && fake.requests.length === 1, { timeout: 3000 }).toBe(true);
    await sleep(1000);
    // the upstream could not hand over its answer: nobody downstream is taking it
    expect(fake.requests[0]!.finishedAt).toBeUndefined();
    expect(received).toBe(0);
    res!.resume();
    await done;
    expect(received).toBeGreaterThan(192 * piece.length);
    expect(await fake.waitForEnd(0, 5000)).toBe('finished');
  });

  it('a client that disconnects before the upstream answered: cancelled too, one row, status aborted', async () => {
    fake.behave({ firstByteDelayMs: 3000 });
    const before = (await usageRows(s, user.id)).length;
    const r = await stream({ prompt: 'Wait.' }, (item) => (item.kind === 'comment' ? 'stop' : undefined));
    expect(r.items).toHaveLength(1);
    const stoppedAt = Date.now();
    const index = fake.requests.findIndex((q) => q.path === '/v1/chat/completions');
    expect(await fake.waitForEnd(index, 3000)).toBe('aborted');
    expect(fake.requests[index]!.abortedAt! - stoppedAt).toBeLessThan(1000);
    await expect.poll(async () => (await usageRows(s, user.id)).length, { timeout: 3000 }).toBe(before + 1);
    expect((await usageRows(s, user.id)).at(-1)).toMatchObject({ status: 'aborted', completion_tokens: 0 });
  });
});

describeEachDatabase('SSE: upstream timeouts', (db) => {
  let fake: FakeOpenAI;
  let s: TestServer;
  let user: TestUser;

  beforeAll(async () => {
    fake = await startFakeOpenAI();
    s = await startServer(db(), { LLM_BASE_URL: fake.url, LLM_MODEL: 'fake-model', LLM_IDLE_TIMEOUT_MS: '500', LLM_CONNECT_TIMEOUT_MS: '300', LLM_MAX_RETRIES: '0' });
    user = await signUp(s);
  });
  afterAll(async () => {
    await s?.close();
    await fake?.close();
  });
  beforeEach(() => fake.reset());

  it('an upstream that goes silent mid-stream: an error event upstream_timeout after the idle timeout; the upstream is cancelled; one error row', async () => {
    // role chunk, 'first ', then silence
    fake.behave({ chunks: ['first ', 'never'], stallAfterChunks: 2 });
    const before = (await usageRows(s, user.id)).length;
    const r = await readSse(`${s.url}/llm/general/stream`, bearer(user.access_token), { prompt: 'Stall.' });
    expect(r.status).toBe(200);
    const events = eventsOf(r);
    expect(events.map((e) => e.event)).toEqual(['delta', 'error']);
    expect(JSON.parse(events[0]!.data)).toEqual({ text: 'first ' });
    expect(JSON.parse(events[1]!.data)).toMatchObject({ code: 'upstream_timeout' });
    const silence = events[1]!.at - events[0]!.at;
    expect(silence).toBeGreaterThanOrEqual(450);
    expect(silence).toBeLessThan(1000);
    expect(await fake.waitForEnd(0, 2000)).toBe('aborted');
    const rows = (await usageRowsWhen(s, user.id, before + 1)).slice(before);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ endpoint: '/llm/general/stream', status: 'error', error_code: 'upstream_timeout' });
  });

  it('the same on /v1/chat/completions: the openai SDK gets the error from the stream', async () => {
    fake.behave({ chunks: ['first ', 'never'], stallAfterChunks: 2 });
    const before = (await usageRows(s, user.id)).length;
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: user.access_token, maxRetries: 0 });
    const started = Date.now();
    const stream = await client.chat.completions.create({ model: 'fake-model', stream: true, messages: [{ role: 'user', content: 'Stall.' }] });
    let text = '';
    const consume = async (): Promise<void> => {
      for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    };
    await expect(consume()).rejects.toThrow(/silent/);
    expect(text).toBe('first ');
    expect(Date.now() - started).toBeLessThan(1500);
    expect((await usageRowsWhen(s, user.id, before + 1)).at(-1)).toMatchObject({ endpoint: '/v1/chat/completions', status: 'error', error_code: 'upstream_timeout' });
  });

  it('an upstream that does not answer within the connect timeout: HTTP 504 in the error shape (nothing was streamed yet), no retry', async () => {
    fake.behave({ firstByteDelayMs: 2000 });
    const before = (await usageRows(s, user.id)).length;
    const started = Date.now();
    const res = await fetch(`${s.url}/llm/general/stream`, { method: 'POST', headers: { ...bearer(user.access_token), 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'Hello?' }) });
    expect(res.status).toBe(504);
    expect(res.headers.get('content-type')).toContain('application/json');
    expect(expectErrorShape(await res.json()).code).toBe('upstream_timeout');
    expect(Date.now() - started).toBeLessThan(1500);
    expect(fake.requests).toHaveLength(1);

    const plain = await request(`${s.url}/v1/chat/completions`, { method: 'POST', headers: bearer(user.access_token), json: { model: 'fake-model', stream: true, messages: [{ role: 'user', content: 'Hello?' }] } });
    expect(plain.status).toBe(504);
    expect(expectErrorShape(plain.body).code).toBe('upstream_timeout');

    const rows = (await usageRowsWhen(s, user.id, before + 2)).slice(before);
    expect(rows.map((r) => [r.endpoint, r.status, r.error_code])).toEqual([
      ['/llm/general/stream', 'error', 'upstream_timeout'],
      ['/v1/chat/completions', 'error', 'upstream_timeout'],
    ]);
  });
});

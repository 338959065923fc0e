import OpenAI from 'openai';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  cosine, FAKE_EMBEDDING_DIMENSIONS, FAKE_EMBEDDINGS_MODEL, fakeConcepts, fakeSemanticEmbedding, startFakeEmbeddings, type FakeEmbeddings,
} from '../../helpers/fake-embeddings.js';

const KEY = 'sk-fake-embeddings-0123456789';

describe('fake embeddings: vectors that carry meaning', () => {
  const sim = (a: string, b: string): number => cosine(fakeSemanticEmbedding(a), fakeSemanticEmbedding(b));

  it('puts paraphrases close together and unrelated texts far apart', () => {
    expect(sim('car maintenance plan', 'automobile servicing schedule')).toBeGreaterThan(0.9);
    expect(sim('How do I fix this bug?', 'Repairing software defects')).toBeGreaterThan(0.7);
    expect(sim('cheap flights to begin the journey', 'affordable trip start')).toBeGreaterThan(0.7);
    expect(sim('car maintenance plan', 'chocolate cake recipe')).toBeLessThan(0.3);
    expect(sim('purchase an inexpensive vehicle', 'buy a cheap car')).toBeGreaterThan(0.9);
    // Partly related texts land in between.
    const partial = sim('car maintenance plan', 'car insurance price');
    expect(partial).toBeGreaterThan(0.2);
    expect(partial).toBeLessThan(0.6);
  });

  it('is deterministic, unit length, and stems and drops stop words', () => {
    const v = fakeSemanticEmbedding('The cars were being serviced');
    expect(v).toHaveLength(FAKE_EMBEDDING_DIMENSIONS);
    expect(Math.hypot(...v)).toBeCloseTo(1, 10);
    expect(fakeSemanticEmbedding('The cars were being serviced')).toEqual(v);
    expect(fakeConcepts('The cars were being serviced')).toEqual(['car', 'maintain']);
    expect(fakeConcepts('Purchasing automobiles; purchased autos!')).toEqual(['buy', 'car', 'buy', 'car']);
    expect(fakeSemanticEmbedding('x', 16)).toHaveLength(16);
    // Only stop words: the whole text is the concept, still a unit vector.
    expect(Math.hypot(...fakeSemanticEmbedding('what is this'))).toBeCloseTo(1, 10);
  });
});

describe('fake embeddings server', () => {
  let fake: FakeEmbeddings;
  let client: OpenAI;

  beforeAll(async () => {
    fake = await startFakeEmbeddings({ apiKey: KEY });
    client = new OpenAI({ baseURL: fake.url, apiKey: KEY, maxRetries: 0 });
  });
  afterAll(async () => {
    await fake.close();
  });
  beforeEach(() => {
    fake.reset();
    fake.model = undefined;
  });

  it('speaks the wire format the official SDK reads (base64 by default), with usage and counts', async () => {
    const response = await client.embeddings.create({ model: FAKE_EMBEDDINGS_MODEL, input: ['car maintenance plan', 'automobile servicing'] });
    expect(response.model).toBe(FAKE_EMBEDDINGS_MODEL);
    expect(response.data.map((d) => d.index)).toEqual([0, 1]);
    expect(response.usage).toEqual({ prompt_tokens: 5, total_tokens: 5 });
    const expected = fakeSemanticEmbedding('car maintenance plan');
    response.data[0]!.embedding.forEach((x, i) => expect(x).toBeCloseTo(expected[i]!, 6));
    expect((fake.requests[0]!.body as { encoding_format: string }).encoding_format).toBe('base64');
    expect(fake.requests[0]!.headers.authorization).toBe(`Bearer ${KEY}`);
    expect(fake.counts).toEqual({ requests: 1, inputs: 2 });

    const short = await client.embeddings.create({ model: FAKE_EMBEDDINGS_MODEL, input: 'x', dimensions: 32, encoding_format: 'float' });
    expect(short.data[0]!.embedding).toHaveLength(32);
    expect((await client.models.list()).data.map((m) => m.id)).toEqual([FAKE_EMBEDDINGS_MODEL]);
  });

  it('answers like OpenAI to a wrong key and empty input', async () => {
    const wrong = new OpenAI({ baseURL: fake.url, apiKey: 'sk-wrong', maxRetries: 0 });
    await expect(wrong.embeddings.create({ model: FAKE_EMBEDDINGS_MODEL, input: 'x' })).rejects.toMatchObject({ status: 401 });
    await expect(client.embeddings.create({ model: FAKE_EMBEDDINGS_MODEL, input: [''] })).rejects.toMatchObject({ status: 400 });
    expect(fake.counts).toEqual({ requests: 2, inputs: 0 });
  });

  it('serves any model name until one is set; then only that one (switchable), others get 404', async () => {
    expect((await client.embeddings.create({ model: 'whatever-model', input: 'x' })).model).toBe('whatever-model');
    fake.model = 'fake-embed-v2';
    expect((await client.embeddings.create({ model: 'fake-embed-v2', input: 'x' })).model).toBe('fake-embed-v2');
    await expect(client.embeddings.create({ model: 'whatever-model', input: 'x' })).rejects.toMatchObject({ status: 404, code: 'model_not_found' });
    expect((await client.models.list()).data.map((m) => m.id)).toEqual(['fake-embed-v2']);
  });

  it('fails the next N requests, with Retry-After when asked', async () => {
    fake.failNext(2, 429, { retryAfter: 7 });
    const raw = await fetch(`${fake.url}/embeddings`, { method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' }, body: JSON.stringify({ model: FAKE_EMBEDDINGS_MODEL, input: 'x' }) });
    expect(raw.status).toBe(429);
    expect(raw.headers.get('retry-after')).toBe('7');
    expect(((await raw.json()) as { error: { code: string } }).error.code).toBe('rate_limit_exceeded');
    await expect(client.embeddings.create({ model: FAKE_EMBEDDINGS_MODEL, input: 'x' })).rejects.toMatchObject({ status: 429 });
    await expect(client.embeddings.create({ model: FAKE_EMBEDDINGS_MODEL, input: 'x' })).resolves.toBeDefined();
  });

  it('stalls after N answers, holding requests open until the client leaves', async () => {
    fake.stall({ after: 1 });
    await client.embeddings.create({ model: FAKE_EMBEDDINGS_MODEL, input: 'answered' });
    const controller = new AbortController();
    const held = client.embeddings.create({ model: FAKE_EMBEDDINGS_MODEL, input: 'held' }, { signal: controller.signal });
    await fake.waitForRequests(2);
    expect(fake.requests[1]!.answer).toBe('stalled');
    controller.abort();
    await expect(held).rejects.toThrow();
    await expect.poll(() => fake.requests[1]!.abortedAt).toBeDefined();
    fake.resume();
    await expect(client.embeddings.create({ model: FAKE_EMBEDDINGS_MODEL, input: 'again' })).resolves.toBeDefined();

    // The boolean form: stall(true) holds from the next request on, stall(false) lets requests through again.
    fake.stall(true);
    const second = new AbortController();
    const heldAgain = client.embeddings.create({ model: FAKE_EMBEDDINGS_MODEL, input: 'held' }, { signal: second.signal });
    await fake.waitForRequests(4);
    expect(fake.requests[3]!.answer).toBe('stalled');
    second.abort();
    await expect(heldAgain).rejects.toThrow();
    fake.stall(false);
    await expect(client.embeddings.create({ model: FAKE_EMBEDDINGS_MODEL, input: 'free' })).resolves.toBeDefined();
  });

  it('delays answers', async () => {
    fake.delayMs = 150;
    const started = Date.now();
    await client.embeddings.create({ model: FAKE_EMBEDDINGS_MODEL, input: 'x' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
  });
});

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createEmbedder, EmbeddingsError, type Embedder, type EmbeddingsConfig } from '../../../src/modules/knowledge/embeddings/index.js';
import { createLogger } from '../../../src/platform/logger.js';
import { FAKE_EMBEDDINGS_MODEL, fakeSemanticEmbedding, startFakeEmbeddings, type FakeEmbeddings } from '../../helpers/fake-embeddings.js';

/** The OpenAI-compatible embedder against the fake embeddings server (and, for odd answers, a hand-made one). */

const KEY = 'sk-embeddings-test-0123456789abcdef';

let fake: FakeEmbeddings;
let logLines: string[] = [];
const logger = createLogger({ logLevel: 'debug' }, { write: (line: string) => void logLines.push(line) });

function config(overrides: Partial<EmbeddingsConfig> = {}): EmbeddingsConfig {
  return { kind: 'openai', baseUrl: fake.url, apiKey: KEY, model: FAKE_EMBEDDINGS_MODEL, batchSize: 64, timeoutMs: 5000, retryBaseMs: 1, ...overrides };
}

function embedder(overrides: Partial<EmbeddingsConfig> = {}): Embedder {
  const e = createEmbedder(config(overrides), logger);
  if (!e) throw new Error('expected an embedder');
  return e;
}

async function failure(promise: Promise<unknown>): Promise<EmbeddingsError> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(EmbeddingsError);
  return err as EmbeddingsError;
}

function norm(v: Float32Array): number {
  return Math.sqrt(v.reduce((s, x) => s + x * x, 0));
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

beforeAll(async () => {
  fake = await startFakeEmbeddings({ apiKey: KEY, model: FAKE_EMBEDDINGS_MODEL });
});
afterAll(async () => {
  await fake.close();
});
beforeEach(() => {
  fake.reset();
  logLines = [];
});

describe('OpenAI-compatible embedder', () => {
  it('splits texts into batches of batchSize and returns one normalised vector per text, in order', async () => {
    const texts = Array.from({ length: 10 }, (_, i) => `document number ${i} about topic ${i * 7}`);
    const e = embedder({ batchSize: 4 });
    const vectors = await e.embed(texts);

    expect(fake.requests.map((r) => (r.body as { input: string[] }).input)).toEqual([texts.slice(0, 4), texts.slice(4, 8), texts.slice(8)]);
    expect(fake.counts).toEqual({ requests: 3, inputs: 10 });
    expect(vectors).toHaveLength(10);
    vectors.forEach((v, i) => {
      expect(v).toBeInstanceOf(Float32Array);
      expect(norm(v)).toBeCloseTo(1, 5);
      const expected = fakeSemanticEmbedding(texts[i]!);
      for (let k = 0; k < v.length; k++) expect(v[k]).toBeCloseTo(expected[k]!, 5);
    });
  });

  it('posts the OpenAI wire format with the key as a Bearer token, and reports the dimension it learnt', async () => {
    const e = embedder();
    expect(e.model).toBe(FAKE_EMBEDDINGS_MODEL);
    expect(e.dimensions).toBeUndefined();
    await e.embed(['hello world']);
    expect(e.dimensions).toBe(384);
    const [req] = fake.requests;
    expect(req).toMatchObject({ method: 'POST', path: '/v1/embeddings' });
    expect(req!.headers.authorization).toBe(`Bearer ${KEY}`);
    expect(req!.body).toEqual({ model: FAKE_EMBEDDINGS_MODEL, input: ['hello world'], encoding_format: 'float' });
  });

  it('sends EMBEDDINGS_DIMENSIONS as `dimensions` and reports it before any call', async () => {
    const e = embedder({ dimensions: 64 });
    expect(e.dimensions).toBe(64);
    // Shortened vectors are not comparable with full-length ones: the stored name says so.
    expect(e.model).toBe(`${FAKE_EMBEDDINGS_MODEL}@64`);
    const [v] = await e.embed(['short vectors']);
    expect(v).toHaveLength(64);
    expect((fake.requests[0]!.body as { dimensions: number }).dimensions).toBe(64);
  });

  it('makes no request for no texts, and embeds a blank text instead of failing its batch', async () => {
    const e = embedder();
    expect(await e.embed([])).toEqual([]);
    expect(fake.requests).toHaveLength(0);
    const vectors = await e.embed(['', 'not blank']);
    expect(vectors).toHaveLength(2);
    expect((fake.requests[0]!.body as { input: string[] }).input).toEqual([' ', 'not blank']);
  });

  it('retries 500s with backoff, then succeeds, logging the retries without the key', async () => {
    fake.failNext(2, 500);
    const vectors = await embedder().embed(['retry me']);
    expect(vectors).toHaveLength(1);
    expect(fake.counts.requests).toBe(3);
    const warnings = logLines.map((l) => JSON.parse(l) as { msg: string; retry?: number; upstream_status?: number });
    expect(warnings.filter((w) => w.msg === 'embeddings request failed; retrying').map((w) => [w.retry, w.upstream_status])).toEqual([[1, 500], [2, 500]]);
    expect(logLines.join('\n')).not.toContain(KEY);
  });

  it('retries a 429 too, but only a bounded number of times', async () => {
    fake.failNext(1, 429, { retryAfter: 0 });
    await embedder().embed(['rate limited once']);
    expect(fake.counts.requests).toBe(2);

    fake.reset();
    fake.failNext(10, 503);
    const err = await failure(embedder({ maxRetries: 2 }).embed(['always failing']));
    expect(fake.counts.requests).toBe(3);
    expect(err).toMatchObject({ code: 'embeddings_unavailable', reason: 'upstream_error', statusCode: 502, upstreamStatus: 503 });
  });

  it('reports a refused key clearly, without retrying and without the key or the upstream body', async () => {
    const wrongKey = 'sk-wrong-key-abcdefghijklmnop';
    const err = await failure(embedder({ apiKey: wrongKey }).embed(['who am i']));
    expect(err).toMatchObject({ code: 'embeddings_unavailable', reason: 'auth_failed', statusCode: 502, upstreamStatus: 401 });
    expect(err.message).toContain('EMBEDDINGS_API_KEY');
    expect(err.message).toContain(new URL(fake.url).host);
    const everything = `${err.message}\n${err.stack ?? ''}\n${JSON.stringify(err)}\n${logLines.join('\n')}`;
    expect(everything).not.toContain(wrongKey);
    expect(everything).not.toContain(KEY);
    expect(everything).not.toContain('Incorrect API key provided');
    expect(fake.counts.requests).toBe(1);
  });

  it('reports an unknown model as a refused request', async () => {
    const err = await failure(embedder({ model: 'no-such-model' }).embed(['x']));
    expect(err).toMatchObject({ code: 'embeddings_unavailable', reason: 'rejected', upstreamStatus: 404 });
    expect(err.message).toContain('EMBEDDINGS_MODEL');
  });

  it('stops when the signal is aborted: the request in flight is cancelled and no further batch is sent', async () => {
    fake.stall({ after: 1 });
    const controller = new AbortController();
    const texts = ['first batch', 'second batch', 'third batch'];
    const pending = embedder({ batchSize: 1 }).embed(texts, { signal: controller.signal });
    await fake.waitForRequests(2);
    controller.abort();
    const err = await failure(pending);
    expect(err).toMatchObject({ code: 'embeddings_aborted', reason: 'aborted', statusCode: 499 });
    await expect.poll(() => fake.requests[1]?.abortedAt).toBeDefined();
    expect(fake.counts.requests).toBe(2);

    const already = AbortSignal.abort();
    fake.reset();
    await expect(embedder().embed(['x'], { signal: already })).rejects.toMatchObject({ code: 'embeddings_aborted' });
    expect(fake.requests).toHaveLength(0);
  });

  it('also aborts during a retry backoff', async () => {
    fake.failNext(5, 500);
    const controller = new AbortController();
    const pending = embedder({ retryBaseMs: 60_000 }).embed(['x'], { signal: controller.signal });
    await fake.waitForRequests(1);
    await expect.poll(() => fake.requests[0]?.answer).toBe(500);
    controller.abort();
    await expect(pending).rejects.toMatchObject({ code: 'embeddings_aborted' });
  });

  it('times out a slow upstream (retried, then 504)', async () => {
    fake.delayMs = 500;
    const err = await failure(embedder({ timeoutMs: 100, maxRetries: 1 }).embed(['slow']));
    expect(err).toMatchObject({ code: 'embeddings_unavailable', reason: 'timeout', statusCode: 504 });
    expect(err.message).toContain('100 ms');
    expect(fake.counts.requests).toBe(2);
  });

  it('reports an unreachable server as 503', async () => {
    const err = await failure(embedder({ baseUrl: `http://127.0.0.1:${await closedPort()}/v1`, maxRetries: 1 }).embed(['x']));
    expect(err).toMatchObject({ code: 'embeddings_unavailable', reason: 'unreachable', statusCode: 503 });
  });

  it('check() embeds a probe text and reports the dimension, or the failure', async () => {
    expect(await embedder().check()).toEqual({ ok: true, detail: expect.stringContaining('384 dimensions') as string });
    const down = await embedder({ baseUrl: `http://127.0.0.1:${await closedPort()}/v1`, maxRetries: 0 }).check();
    expect(down.ok).toBe(false);
    expect(down.detail).toContain('cannot be reached');
  });

  it('is undefined when embeddings are off', () => {
    expect(createEmbedder({ kind: 'none', batchSize: 64, timeoutMs: 30_000 }, logger)).toBeUndefined();
  });
});

describe('OpenAI-compatible embedder, odd answers', () => {
  let server: Server;
  let url: string;
  let answer: (input: string[]) => unknown = () => ({});

  beforeAll(async () => {
    server = createServer((req, res) => {
      const parts: Buffer[] = [];
      req.on('data', (c: Buffer) => parts.push(c));
      req.on('end', () => {
        const body = JSON.parse(Buffer.concat(parts).toString()) as { input: string[] };
        const text = JSON.stringify(answer(body.input));
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(text);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  const base64 = (values: number[]): string => Buffer.from(new Float32Array(values).buffer).toString('base64');

  it('sorts by index and accepts base64 embeddings', async () => {
    answer = (input) => ({
      object: 'list',
      model: 'm',
      data: input.map((_, i) => ({ object: 'embedding', index: i, embedding: i === 0 ? base64([3, 4]) : [0, 2 * i] })).reverse(),
    });
    const e = createEmbedder({ kind: 'openai', baseUrl: url, model: 'm', batchSize: 8, timeoutMs: 2000 }, logger)!;
    const vectors = await e.embed(['a', 'b', 'c']);
    expect(vectors.map((v) => Array.from(v))).toEqual([[0.6000000238418579, 0.800000011920929], [0, 1], [0, 1]]);
    expect(e.dimensions).toBe(2);
  });

  it('refuses vectors of the wrong length, a wrong count, and non-JSON, as bad_response', async () => {
    const e = createEmbedder({ kind: 'openai', baseUrl: url, model: 'm', dimensions: 4, batchSize: 8, timeoutMs: 2000 }, logger)!;
    answer = (input) => ({ data: input.map((_, index) => ({ index, embedding: [1, 2, 3] })) });
    const wrongLength = await failure(e.embed(['a']));
    expect(wrongLength).toMatchObject({ code: 'embeddings_unavailable', reason: 'bad_response', statusCode: 502 });
    expect(wrongLength.message).toContain('EMBEDDINGS_DIMENSIONS');

    answer = () => ({ data: [{ index: 0, embedding: [1, 2, 3, 4] }] });
    expect((await failure(e.embed(['a', 'b']))).reason).toBe('bad_response');

    answer = (input) => ({ data: input.map((_, index) => ({ index, embedding: ['x', 'y', 'z', 'w'] })) });
    expect((await failure(e.embed(['a']))).reason).toBe('bad_response');
  });
});

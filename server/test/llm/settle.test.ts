import { describe, expect, it } from 'vitest';
import type { LlmConfig, ModelConfig, ProviderConfig } from '../../src/modules/llm/llm.config.js';
import { LlmGateway } from '../../src/modules/llm/llm.service.js';
import type { ChatChunk, ChatCompletion, Provider, RawStream } from '../../src/modules/llm/providers/provider.js';
import type { Outcome, Reservation, UsageService } from '../../src/modules/usage/usage.service.js';
import { createLogger } from '../../src/platform/logger.js';
import type { Principal } from '../../src/platform/auth.js';

/**
 * The gateway's side of metering, with the database out of the picture: a response (the stream's
 * last piece, a completion) does not wait for its usage row; the row is still written exactly once;
 * `drain` (graceful shutdown) waits for every write in flight; a failed write is logged.
 */

const principal: Principal = { userId: 'user-1', role: 'user', kind: 'session', scopes: new Set(['llm']) };
const meta = () => ({ endpoint: '/v1/chat/completions', requestId: 'req-1', signal: new AbortController().signal });

/** A usage service whose writes wait until `release()` (or fail with `fail()`). */
function heldUsage() {
  const written: Outcome[] = [];
  let release!: () => void;
  let fail!: (err: Error) => void;
  const gate = new Promise<void>((resolve, reject) => {
    release = resolve;
    fail = reject;
  });
  gate.catch(() => undefined);
  const service = {
    reserve: async (): Promise<Reservation> => ({
      settle: async (outcome: Outcome) => {
        await gate;
        written.push(outcome);
      },
    }),
  } as unknown as UsageService;
  return { service, written, release: () => release(), fail: (err: Error) => fail(err) };
}

const CHUNKS: ChatChunk[] = [
  { id: 'c1', object: 'chat.completion.chunk', created: 1, model: 'up', choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] },
  { id: 'c1', object: 'chat.completion.chunk', created: 1, model: 'up', choices: [{ index: 0, delta: { content: 'Hi' }, finish_reason: 'stop' }] },
  { id: 'c1', object: 'chat.completion.chunk', created: 1, model: 'up', choices: [], usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 } },
];
const SSE = `${CHUNKS.map((c) => `data: ${JSON.stringify(c)}\n\n`).join('')}data: [DONE]\n\n`;

const provider: Provider = {
  name: 'local',
  kind: 'openai',
  chat: async (): Promise<ChatCompletion> => ({ id: 'x', object: 'chat.completion', created: 1, model: 'up', choices: [{ index: 0, message: { role: 'assistant', content: 'Hi' }, finish_reason: 'stop' }], usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 } }),
  stream: () => ({
    async* [Symbol.asyncIterator]() {
      yield* CHUNKS;
    },
  }),
  openStream: async (): Promise<RawStream> => {
    const reads = [Buffer.from(SSE)];
    return { read: async () => reads.shift(), close: () => undefined };
  },
  embeddings: async () => { throw new Error('not used'); },
  check: async () => ({ ok: true, detail: 'ok' }),
};

function gatewayWith(usage: UsageService, lines: string[] = []): LlmGateway {
  const providerConfig: ProviderConfig = { name: 'local', kind: 'openai', baseUrl: 'http://127.0.0.1:9', apiKey: undefined, headers: {}, resilience: { connectTimeoutMs: 1000, idleTimeoutMs: 1000, maxRetries: 0, retryBaseMs: 1 } };
  const models = new Map<string, ModelConfig>([
    ['up', { id: 'up', provider: 'local', upstream: 'up', contextWindow: 8000, prices: undefined, kind: 'chat' }],
    ['alias', { id: 'alias', provider: 'local', upstream: 'up', contextWindow: 8000, prices: undefined, kind: 'chat' }],
  ]);
  const config: LlmConfig = { providers: new Map([['local', providerConfig]]), models, presets: new Map(), limits: { user: {}, apiKey: {} }, reserveCompletionTokens: 100, heartbeatSeconds: 15, sources: [] };
  const logger = createLogger({ logLevel: 'info' }, { write: (line: string) => void lines.push(line) });
  return new LlmGateway(config, new Map([['local', provider]]), usage, logger);
}

const settledSoon = async (p: Promise<unknown>): Promise<boolean> => Promise.race([p.then(() => true, () => true), new Promise<boolean>((r) => setTimeout(() => r(false), 50))]);

describe('usage writes off the response path', () => {
  it('a stream ends without waiting for its usage row; the row is written once; drain waits for it', async () => {
    const usage = heldUsage();
    const gateway = gatewayWith(usage.service);
    const stream = await gateway.stream(principal, { model: 'up', messages: [{ role: 'user', content: 'Hi?' }] }, meta());
    const pieces: ChatChunk[] = [];
    for await (const chunk of stream) pieces.push(chunk);
    expect(pieces).toHaveLength(3);
    // the numbers are known at once; the write is still held
    expect(await stream.usage).toMatchObject({ prompt_tokens: 3, completion_tokens: 1, estimated: false });
    expect(await settledSoon(stream.metered)).toBe(false);
    const drained = gateway.drain();
    expect(await settledSoon(drained)).toBe(false);
    usage.release();
    await drained;
    expect(await stream.metered).toMatchObject({ total_tokens: 4 });
    expect(usage.written).toHaveLength(1);
    expect(usage.written[0]).toMatchObject({ status: 'ok', promptTokens: 3, completionTokens: 1, estimated: false });
  });

  it('a completion for an HTTP route returns before its usage row is written; an in-process caller\'s waits for it', async () => {
    const usage = heldUsage();
    const gateway = gatewayWith(usage.service);
    const { usage: counted } = await gateway.complete(principal, { model: 'up', messages: [{ role: 'user', content: 'Hi?' }] }, { ...meta(), meterInBackground: true });
    expect(counted.total_tokens).toBe(4);
    expect(usage.written).toHaveLength(0);
    const inProcess = gateway.complete(principal, { model: 'up', messages: [{ role: 'user', content: 'Hi?' }] }, meta());
    expect(await settledSoon(inProcess)).toBe(false);
    usage.release();
    await inProcess;
    expect(usage.written).toHaveLength(2);
    await gateway.drain();
  });

  it('a failed usage write does not fail an in-process call: it is logged', async () => {
    const usage = heldUsage();
    const lines: string[] = [];
    const gateway = gatewayWith(usage.service, lines);
    usage.fail(new Error('disk full'));
    const { completion } = await gateway.complete(principal, { model: 'up', messages: [{ role: 'user', content: 'Hi?' }] }, meta());
    expect(completion.choices[0]!.message.content).toBe('Hi');
    expect(lines.join('')).toContain('usage not recorded');
  });

  it('a failed write is logged (without the prompt) and drain still ends', async () => {
    const usage = heldUsage();
    const lines: string[] = [];
    const gateway = gatewayWith(usage.service, lines);
    const stream = await gateway.stream(principal, { model: 'up', messages: [{ role: 'user', content: 'secret prompt' }] }, meta());
    for await (const _ of stream) { /* drain */ }
    usage.fail(new Error('database is locked'));
    await gateway.drain();
    await expect(stream.metered).rejects.toThrow('database is locked');
    const logged = lines.join('');
    expect(logged).toContain('usage not recorded');
    expect(logged).not.toContain('secret prompt');
  });
});

describe('wire streams', () => {
  it('a model that needs no renaming is relayed as the upstream\'s bytes; an alias as renamed chunks', async () => {
    const usage = heldUsage();
    usage.release();
    const gateway = gatewayWith(usage.service);
    const raw = await gateway.wireStream(principal, { model: 'up', messages: [{ role: 'user', content: 'Hi?' }] }, meta(), true);
    const bytes: Buffer[] = [];
    for await (const piece of raw) {
      expect(Buffer.isBuffer(piece)).toBe(true);
      bytes.push(piece as Buffer);
    }
    expect(Buffer.concat(bytes).toString()).toBe(SSE.replace('data: [DONE]\n\n', ''));
    expect(await raw.usage).toMatchObject({ total_tokens: 4, estimated: false });

    const renamed = await gateway.wireStream(principal, { model: 'alias', messages: [{ role: 'user', content: 'Hi?' }] }, meta(), true);
    const chunks: ChatChunk[] = [];
    for await (const piece of renamed) chunks.push(piece as ChatChunk);
    expect(chunks.map((c) => c.model)).toEqual(['alias', 'alias', 'alias']);
    await gateway.drain();
    expect(usage.written.map((o) => o.model)).toEqual(['up', 'alias']);
  });
});

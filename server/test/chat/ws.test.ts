import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createPostgresDatabase, createSqliteDatabase, describeEachDatabase, postgresAvailable, type TestDatabase } from '../helpers/databases.js';
import { startFakeOpenAI, type FakeOpenAI } from '../helpers/fake-openai.js';
import { bearer, signUp, type TestUser } from '../helpers/factories.js';
import { request, startServer, type TestServer } from '../helpers/server.js';
import { sleep, usageRows } from '../llm/llm-helpers.js';

/**
 * GET /ws/chat with a real `ws` client against a real server and a fake OpenAI-compatible upstream:
 * the auth frame, streaming and storing replies, several at once, cancel, dropped sockets, other
 * sockets hearing about changes (also across instances through Redis), bad frames, origins,
 * revocation, heartbeats, rate limits and shutdown.
 */

const REDIS_URL = process.env.REDIS_URL;
if (process.env.CI && !REDIS_URL) throw new Error('CI is set but REDIS_URL is not: the Redis-backed tests would be skipped.');

type Frame = Record<string, unknown> & { type: string };
const HEARTBEAT_MS = 200;

/** A test client: every frame it received, in order, and ways to wait for the ones a test expects. */
class Client {
  readonly frames: Frame[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  private listeners = new Set<() => void>();

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => {
      this.frames.push(JSON.parse(data.toString('utf8')) as Frame);
      for (const l of [...this.listeners]) l();
    });
    this.closed = new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    ws.on('error', () => undefined);
  }

  /** Opens a socket (rejecting with the HTTP status when the upgrade is refused). */
  static open(s: TestServer, opts: { query?: string; origin?: string; autoPong?: boolean } = {}): Promise<Client> {
    const ws = new WebSocket(`${s.url.replace(/^http/, 'ws')}/ws/chat${opts.query ?? ''}`, { ...(opts.origin ? { origin: opts.origin } : {}), autoPong: opts.autoPong ?? true });
    const client = new Client(ws);
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(client));
      ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
      ws.once('error', reject);
    });
  }

  /** Opens and authenticates; resolves after `ready`. */
  static async authed(s: TestServer, user: TestUser): Promise<Client> {
    const c = await Client.open(s);
    c.send({ type: 'auth', token: user.access_token });
    const ready = await c.waitFor((f) => f.type === 'ready');
    expect(ready.user_id).toBe(user.id);
    return c;
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  /** The first frame (already received or still to come) that matches. */
  waitFor(match: (f: Frame) => boolean, timeoutMs = 5000): Promise<Frame> {
    const found = this.frames.find(match);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.listeners.delete(check);
        reject(new Error(`no matching frame within ${timeoutMs} ms; got ${JSON.stringify(this.frames).slice(-2000)}`));
      }, timeoutMs);
      const check = (): void => {
        const f = this.frames.find(match);
        if (!f) return;
        clearTimeout(timer);
        this.listeners.delete(check);
        resolve(f);
      };
      this.listeners.add(check);
    });
  }

  /** Waits for the end (`done` or `error`) of a request; returns its frames in order. */
  async settle(requestId: string, timeoutMs = 10_000): Promise<{ frames: Frame[]; end: Frame; text: string }> {
    const end = await this.waitFor((f) => f.request_id === requestId && (f.type === 'done' || f.type === 'error'), timeoutMs);
    const frames = this.of(requestId);
    return { frames, end, text: textOf(frames) };
  }

  of(requestId: string): Frame[] {
    return this.frames.filter((f) => f.request_id === requestId);
  }

  close(): void {
    this.ws.close();
  }
}

const textOf = (frames: Frame[]): string => frames.filter((f) => f.type === 'delta').map((f) => f.text as string).join('');

interface Message {
  id: string;
  role: string;
  content: string;
  status: string;
  usage: { prompt_tokens: number; completion_tokens: number } | null;
  error_code: string | null;
}

async function messagesOf(s: TestServer, user: TestUser, conversationId: string): Promise<Message[]> {
  const r = await request<{ items: Message[] }>(`${s.url}/conversations/${conversationId}/messages`, { headers: bearer(user.access_token) });
  expect(r.status).toBe(200);
  return r.body.items;
}

async function until<T>(probe: () => Promise<T | undefined>, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(25);
  }
}

const reqId = (): string => `r-${randomBytes(4).toString('hex')}`;

function llmEnv(fake: FakeOpenAI, extra: Record<string, string> = {}): Record<string, string> {
  return { LLM_BASE_URL: fake.url, LLM_MODEL: 'gpt-4o-mini', CHAT_WS_HEARTBEAT_MS: String(HEARTBEAT_MS), CHAT_WS_MAX_FRAME_KB: '4', CORS_ORIGINS: 'https://app.example', ...extra };
}

describeEachDatabase('chat over WebSocket', (db) => {
  let fake: FakeOpenAI;
  let s: TestServer;
  let alice: TestUser;
  let bob: TestUser;
  const open: Client[] = [];
  const connect = async (user: TestUser): Promise<Client> => {
    const c = await Client.authed(s, user);
    open.push(c);
    return c;
  };

  beforeAll(async () => {
    fake = await startFakeOpenAI();
    s = await startServer(db(), llmEnv(fake));
    alice = await signUp(s);
    bob = await signUp(s);
  });
  afterAll(async () => {
    await s?.close();
    await fake?.close();
  });
  beforeEach(() => fake.reset());
  afterEach(() => {
    for (const c of open.splice(0)) c.ws.terminate();
  });

  describe('authentication', () => {
    it('the first frame authenticates: `ready` with the user id', async () => {
      const c = await connect(alice);
      c.send({ type: 'ping' });
      await c.waitFor((f) => f.type === 'pong');
    });

    it('anything but auth first, a bad token, or a non-JSON first frame closes 4401', async () => {
      for (const first of [{ type: 'send', request_id: 'x', content: 'hi' }, { type: 'auth', token: 'not-a-token' }, { type: 'auth' }, 'not json', { type: 'auth', token: `${alice.access_token}x` }]) {
        const c = await Client.open(s);
        c.send(first);
        expect(await c.closed).toEqual({ code: 4401, reason: 'unauthorized' });
        expect(c.frames).toEqual([]);
      }
    });

    it('a token in the URL is ignored: the socket is not authenticated by it', async () => {
      const c = await Client.open(s, { query: `?token=${alice.access_token}&access_token=${alice.access_token}` });
      c.send({ type: 'ping' });
      expect(await c.closed).toEqual({ code: 4401, reason: 'unauthorized' });
      expect(c.frames).toEqual([]);
    });

    it('an Origin that is not allowed is refused before the upgrade; an allowed one and none are accepted', async () => {
      await expect(Client.open(s, { origin: 'https://evil.example' })).rejects.toThrow('upgrade refused: 403');
      const allowed = await Client.open(s, { origin: 'https://app.example' });
      open.push(allowed);
      allowed.send({ type: 'auth', token: alice.access_token });
      await allowed.waitFor((f) => f.type === 'ready');
      const sameOrigin = await Client.open(s, { origin: s.url });
      open.push(sameOrigin);
      sameOrigin.send({ type: 'auth', token: alice.access_token });
      await sameOrigin.waitFor((f) => f.type === 'ready');
    });

    it('revoking the socket\'s device closes it with 4401 within a few heartbeats', async () => {
      const user = await signUp(s);
      const c = await Client.authed(s, user);
      open.push(c);
      const revoked = await request(`${s.url}/auth/device/${user.device_id}`, { method: 'DELETE', headers: bearer(user.access_token) });
      expect(revoked.status).toBe(204);
      const started = Date.now();
      expect(await c.closed).toEqual({ code: 4401, reason: 'revoked' });
      expect(Date.now() - started).toBeLessThan(HEARTBEAT_MS * 5);
    });

    it('a socket that does not answer pings is terminated after two missed pongs', async () => {
      const c = await Client.open(s, { autoPong: false });
      open.push(c);
      c.send({ type: 'auth', token: alice.access_token });
      await c.waitFor((f) => f.type === 'ready');
      const started = Date.now();
      const { code } = await c.closed;
      expect(code).toBe(1006); // cut without a close frame
      expect(Date.now() - started).toBeLessThan(HEARTBEAT_MS * 5);
    });

    it('a socket that answers pings stays open across heartbeats', async () => {
      const c = await connect(alice);
      await sleep(HEARTBEAT_MS * 4);
      c.send({ type: 'ping' });
      await c.waitFor((f) => f.type === 'pong');
      expect(c.ws.readyState).toBe(WebSocket.OPEN);
    });
  });

  describe('sending', () => {
    it('send streams deltas that add up to the reply, then `done` with the stored message (the same one the history shows)', async () => {
      const reply = 'The quick brown fox jumps over the lazy dog.';
      fake.behave({ reply });
      const c = await connect(alice);
      const id = reqId();
      c.send({ type: 'send', request_id: id, content: 'Tell me about foxes.' });
      const { frames, end, text } = await c.settle(id);
      expect(end.type).toBe('done');
      expect(text).toBe(reply);
      expect(frames[0]!.type).toBe('message');
      expect(frames.filter((f) => f.type === 'delta').length).toBeGreaterThan(1);
      const conversationId = end.conversation_id as string;
      expect(conversationId).toBe(frames[0]!.conversation_id);
      const message = end.message as Message;
      expect(message).toMatchObject({ role: 'assistant', content: reply, status: 'complete' });
      expect(end.usage).toEqual(message.usage);
      expect(message.usage).toMatchObject({ completion_tokens: 9 });
      const history = await messagesOf(s, alice, conversationId);
      expect(history.map((m) => [m.role, m.content, m.status])).toEqual([['user', 'Tell me about foxes.', 'complete'], ['assistant', reply, 'complete']]);
      expect(history[1]).toEqual(message);
      // the same conversation again: the history goes to the model
      const again = reqId();
      c.send({ type: 'send', request_id: again, conversation_id: conversationId, content: 'More.' });
      expect((await c.settle(again)).end.type).toBe('done');
      expect((await messagesOf(s, alice, conversationId)).length).toBe(4);
      const sent = fake.requests.at(-1)!.body as { messages: Array<{ role: string; content: string }> };
      expect(sent.messages.filter((m) => m.role !== 'system').map((m) => m.content)).toEqual(['Tell me about foxes.', reply, 'More.']);
    });

    it('two generations at once on one socket both complete, their frames interleaved', async () => {
      fake.behave({ chunks: ['a1 ', 'a2 ', 'a3 ', 'a4 ', 'a5'], chunkDelayMs: 60 });
      const c = await connect(alice);
      const [one, two] = [reqId(), reqId()];
      c.send({ type: 'send', request_id: one, content: 'first' });
      c.send({ type: 'send', request_id: two, content: 'second' });
      const [a, b] = await Promise.all([c.settle(one), c.settle(two)]);
      expect([a.end.type, b.end.type]).toEqual(['done', 'done']);
      expect(a.text).toBe('a1 a2 a3 a4 a5');
      expect(b.text).toBe('a1 a2 a3 a4 a5');
      expect(a.end.conversation_id).not.toBe(b.end.conversation_id);
      const order = c.frames.filter((f) => f.type === 'delta' || f.type === 'done').map((f) => f.request_id);
      // the second request's first delta came before the first request ended
      expect(order.indexOf(two)).toBeLessThan(order.lastIndexOf(one));
      expect((a.end.message as Message).content).toBe('a1 a2 a3 a4 a5');
    });

    it('a request_id still running is refused with duplicate_request_id; the first goes on', async () => {
      fake.behave({ chunks: ['slow ', 'reply'], chunkDelayMs: 200 });
      const c = await connect(alice);
      const id = reqId();
      c.send({ type: 'send', request_id: id, content: 'one' });
      await c.waitFor((f) => f.request_id === id && f.type === 'message');
      c.send({ type: 'send', request_id: id, content: 'two' });
      const err = await c.waitFor((f) => f.request_id === id && f.type === 'error');
      expect(err.code).toBe('duplicate_request_id');
      const end = await c.waitFor((f) => f.request_id === id && f.type === 'done');
      expect(end.message).toMatchObject({ status: 'complete', content: 'slow reply' });
      expect(textOf(c.of(id))).toBe('slow reply');
      expect(fake.requests.length).toBe(1);
    });

    it('cancel ends the generation: `done` with the aborted message and its partial text, metered once', async () => {
      fake.behave({ chunks: ['one ', 'two ', 'three ', 'four'], stallAfterChunks: 3 });
      const c = await connect(alice);
      const id = reqId();
      c.send({ type: 'send', request_id: id, content: 'count' });
      await c.waitFor(() => textOf(c.of(id)) === 'one two ');
      c.send({ type: 'cancel', request_id: id });
      const { end, text } = await c.settle(id);
      expect(end.type).toBe('done');
      const message = end.message as Message;
      expect(message).toMatchObject({ status: 'aborted', content: 'one two ', error_code: 'aborted' });
      expect(text).toBe('one two ');
      expect(await fake.waitForEnd(0)).toBe('aborted');
      const rows = (await usageRows(s, alice.id)).filter((r) => r.message_id === message.id);
      expect(rows.length).toBe(1);
      expect(rows[0]!.status).toBe('aborted');
      const history = await messagesOf(s, alice, end.conversation_id as string);
      expect(history[1]).toMatchObject({ status: 'aborted', content: 'one two ' });
    });

    it('cancel of an unknown request_id is an error frame', async () => {
      const c = await connect(alice);
      c.send({ type: 'cancel', request_id: 'nope' });
      expect(await c.waitFor((f) => f.type === 'error')).toMatchObject({ request_id: 'nope', code: 'not_found' });
    });

    it('a socket dropped mid-stream stores the reply as aborted with its partial text and one usage row', async () => {
      fake.behave({ chunks: ['partial ', 'text ', 'never'], stallAfterChunks: 3 });
      const c = await connect(alice);
      const id = reqId();
      c.send({ type: 'send', request_id: id, content: 'go' });
      const started = await c.waitFor((f) => f.request_id === id && f.type === 'message');
      await c.waitFor(() => textOf(c.of(id)) === 'partial text ');
      c.ws.terminate();
      expect(await fake.waitForEnd(0)).toBe('aborted');
      const conversationId = started.conversation_id as string;
      const assistantId = (started.assistant_message as Message).id;
      const stored = await until(async () => (await messagesOf(s, alice, conversationId)).find((m) => m.id === assistantId && m.status !== 'generating'));
      expect(stored).toMatchObject({ status: 'aborted', content: 'partial text ' });
      const rows = await until(async () => {
        const r = (await usageRows(s, alice.id)).filter((u) => u.message_id === assistantId);
        return r.length > 0 ? r : undefined;
      });
      await sleep(100);
      expect((await usageRows(s, alice.id)).filter((u) => u.message_id === assistantId).length).toBe(1);
      expect(rows[0]!.status).toBe('aborted');
    });

    it('a resumable send keeps generating when its socket drops, and another socket can attach to it from an offset', async () => {
      fake.behave({ chunks: ['alpha ', 'beta ', 'gamma ', 'delta ', 'omega'], chunkDelayMs: 80 });
      const a = await connect(alice);
      const id = reqId();
      a.send({ type: 'send', request_id: id, content: 'letters', resumable: true });
      const started = await a.waitFor((f) => f.request_id === id && f.type === 'message');
      await a.waitFor(() => textOf(a.of(id)).length >= 'alpha '.length);
      a.ws.terminate();
      const conversationId = started.conversation_id as string;
      const messageId = (started.assistant_message as Message).id;
      const b = await connect(alice);
      b.send({ type: 'attach', request_id: 'follow', conversation_id: conversationId, message_id: messageId, offset: 2 });
      const { end, text, frames } = await b.settle('follow');
      expect(end.type).toBe('done');
      expect(text).toBe('alpha beta gamma delta omega'.slice(2));
      expect(frames[0]).toMatchObject({ type: 'delta', offset: 2 });
      expect(end.message).toMatchObject({ id: messageId, status: 'complete', content: 'alpha beta gamma delta omega' });
      // attaching after the end replays the stored text
      b.send({ type: 'attach', request_id: 'replay', conversation_id: conversationId, message_id: messageId });
      const replay = await b.settle('replay');
      expect(replay.text).toBe('alpha beta gamma delta omega');
      expect(replay.end).toMatchObject({ type: 'done', conversation_id: conversationId });
      // someone else's message is not found
      const other = await connect(bob);
      other.send({ type: 'attach', request_id: 'spy', conversation_id: conversationId, message_id: messageId });
      expect(await other.waitFor((f) => f.type === 'error')).toMatchObject({ request_id: 'spy', code: 'not_found' });
    });

    it('a reader that stops reading pauses its stream, and gets every byte in order when it reads again', async () => {
      const chunks = Array.from({ length: 96 }, (_, i) => `${String(i).padStart(2, '0')}${'y'.repeat(64 * 1024 - 3)} `);
      fake.behave({ chunks });
      const c = await connect(alice);
      const id = reqId();
      c.send({ type: 'send', request_id: id, content: 'a lot' });
      await c.waitFor((f) => f.request_id === id && f.type === 'message');
      c.ws.pause();
      await sleep(500);
      c.ws.resume();
      const { end, text, frames } = await c.settle(id, 20_000);
      expect(end.type).toBe('done');
      expect(text.length).toBe(chunks.join('').length);
      expect(text === chunks.join('')).toBe(true);
      const deltas = frames.filter((f) => f.type === 'delta');
      let expected = 0;
      for (const d of deltas) {
        expect(d.offset).toBe(expected);
        expected += (d.text as string).length;
      }
      expect((end.message as Message).content.length).toBe(text.length);
    });

    it('a later auth frame renews the token for the same user; another user\'s token is refused', async () => {
      const c = await connect(alice);
      const login = await request<{ access_token: string }>(`${s.url}/auth/login`, { method: 'POST', json: { email: alice.email, password: alice.password } });
      expect(login.status).toBe(200);
      c.send({ type: 'auth', token: login.body.access_token });
      await c.waitFor((f) => f.type === 'ready' && c.frames.filter((g) => g.type === 'ready').length === 2);
      c.send({ type: 'auth', token: bob.access_token });
      expect(await c.waitFor((f) => f.type === 'error')).toMatchObject({ code: 'forbidden' });
      c.send({ type: 'auth', token: 'garbage' });
      expect(await c.waitFor((f) => f.type === 'error' && f.code === 'unauthorized')).toBeTruthy();
      expect(c.ws.readyState).toBe(WebSocket.OPEN);
    });

    it('a failed generation ends with an error frame carrying the stored message', async () => {
      fake.behave({ chunks: ['half ', 'way ', 'there'], breakAfterChunks: 2 });
      const c = await connect(alice);
      const id = reqId();
      c.send({ type: 'send', request_id: id, content: 'break' });
      const { end } = await c.settle(id);
      expect(end.type).toBe('error');
      expect(typeof end.code).toBe('string');
      expect(end.assistant_message).toMatchObject({ status: 'failed' });
    });

    it('the user\'s other sockets hear conversation.updated; another user\'s do not', async () => {
      fake.behave({ reply: 'ok' });
      const a = await connect(alice);
      const b = await connect(alice);
      const other = await connect(bob);
      const id = reqId();
      a.send({ type: 'send', request_id: id, content: 'news' });
      const { end } = await a.settle(id);
      const conversationId = end.conversation_id as string;
      await b.waitFor((f) => f.type === 'conversation.updated' && f.conversation_id === conversationId);
      await a.waitFor((f) => f.type === 'conversation.updated' && f.conversation_id === conversationId);
      await sleep(100);
      expect(other.frames.filter((f) => f.type === 'conversation.updated')).toEqual([]);
    });

    it('another user\'s conversation_id answers not_found and nothing is written to it', async () => {
      fake.behave({ reply: 'mine' });
      const a = await connect(alice);
      const id = reqId();
      a.send({ type: 'send', request_id: id, content: 'private' });
      const conversationId = (await a.settle(id)).end.conversation_id as string;
      const before = await messagesOf(s, alice, conversationId);
      await sleep(50);
      const updates = (): number => a.frames.filter((f) => f.type === 'conversation.updated' && f.conversation_id === conversationId).length;
      const updatesBefore = updates();
      fake.reset();
      const intruder = await connect(bob);
      intruder.send({ type: 'send', request_id: 'x', conversation_id: conversationId, content: 'let me in' });
      expect(await intruder.waitFor((f) => f.request_id === 'x')).toMatchObject({ type: 'error', code: 'not_found' });
      expect(await messagesOf(s, alice, conversationId)).toEqual(before);
      expect(fake.requests.length).toBe(0);
      await sleep(50);
      expect(updates()).toBe(updatesBefore);
    });

    it('bad frames get error frames and the socket keeps working', async () => {
      fake.behave({ reply: 'still here' });
      const c = await connect(alice);
      c.send('not json');
      expect(await c.waitFor((f) => f.type === 'error')).toMatchObject({ code: 'invalid_json' });
      c.send({ type: 'dance', request_id: 'd' });
      expect(await c.waitFor((f) => f.request_id === 'd')).toMatchObject({ type: 'error', code: 'invalid_request' });
      c.send({ type: 'send', request_id: 'm' });
      expect(await c.waitFor((f) => f.request_id === 'm')).toMatchObject({ type: 'error', code: 'invalid_request' });
      c.send({ type: 'send', content: 'no id' });
      await c.waitFor((f) => f.type === 'error' && typeof f.message === 'string' && f.message.includes('request_id'));
      c.send({ type: 'send', request_id: 'huge', content: 'x'.repeat(6 * 1024) });
      expect(await c.waitFor((f) => f.type === 'error' && f.code === 'payload_too_large')).not.toHaveProperty('request_id');
      c.ws.send(Buffer.from([1, 2, 3]), { binary: true });
      await c.waitFor((f) => f.type === 'error' && typeof f.message === 'string' && f.message.includes('binary'));
      c.send([1, 2]);
      c.send({ type: 'send', request_id: 'empty', content: '   ' });
      expect(await c.waitFor((f) => f.request_id === 'empty')).toMatchObject({ type: 'error', code: 'invalid_request' });
      expect(fake.requests.length).toBe(0);
      const id = reqId();
      c.send({ type: 'send', request_id: id, content: 'are you there?' });
      const { end, text } = await c.settle(id);
      expect(end.type).toBe('done');
      expect(text).toBe('still here');
      expect(c.ws.readyState).toBe(WebSocket.OPEN);
    });

    it('an API key without the chat scope is refused with 4403; one with it works', async () => {
      const created = await request<{ key: string }>(`${s.url}/api-keys`, { method: 'POST', headers: bearer(alice.access_token), json: { name: 'no chat', scopes: ['llm'] } });
      expect(created.status).toBe(201);
      const c = await Client.open(s);
      c.send({ type: 'auth', token: created.body.key });
      expect(await c.closed).toEqual({ code: 4403, reason: 'forbidden' });
      const chatKey = await request<{ key: string }>(`${s.url}/api-keys`, { method: 'POST', headers: bearer(alice.access_token), json: { name: 'chat', scopes: ['chat'] } });
      const k = await Client.open(s);
      open.push(k);
      k.send({ type: 'auth', token: chatKey.body.key });
      expect(await k.waitFor((f) => f.type === 'ready')).toMatchObject({ user_id: alice.id });
    });
  });
});

describe('chat over WebSocket: per-user limit and shutdown', () => {
  let database: TestDatabase;
  let fake: FakeOpenAI;
  let s: TestServer;
  let user: TestUser;
  beforeAll(async () => {
    database = await createSqliteDatabase();
    fake = await startFakeOpenAI();
    s = await startServer(database, llmEnv(fake, { CHAT_MESSAGES_PER_MINUTE: '2' }));
    user = await signUp(s);
  });
  afterAll(async () => {
    await s?.close();
    await fake?.close();
    await database?.cleanup();
  });

  it('sends over the per-minute limit get rate_limited error frames', async () => {
    fake.behave({ reply: 'ok' });
    const a = await Client.authed(s, user);
    const b = await Client.authed(s, user);
    a.send({ type: 'send', request_id: '1', content: 'one' });
    expect((await a.settle('1')).end.type).toBe('done');
    b.send({ type: 'send', request_id: '2', content: 'two' });
    expect((await b.settle('2')).end.type).toBe('done');
    a.send({ type: 'send', request_id: '3', content: 'three' });
    expect((await a.settle('3')).end).toMatchObject({ type: 'error', code: 'rate_limited' });
    expect(fake.requests.length).toBe(2);
    a.ws.terminate();
    b.ws.terminate();
  });

  it('server shutdown closes sockets with 1001', async () => {
    const c = await Client.authed(s, user);
    const idle = await Client.open(s);
    await s.close();
    expect(await c.closed).toEqual({ code: 1001, reason: 'server shutting down' });
    expect((await idle.closed).code).toBe(1001);
  });
});

describe.runIf(REDIS_URL)('chat over WebSocket across instances (Redis)', () => {
  let database: TestDatabase;
  let fake: FakeOpenAI;
  let a: TestServer;
  let b: TestServer;
  let user: TestUser;
  beforeAll(async () => {
    database = postgresAvailable ? await createPostgresDatabase() : await createSqliteDatabase();
    fake = await startFakeOpenAI();
    const env = llmEnv(fake, { REDIS_URL: REDIS_URL!, REDIS_KEY_PREFIX: `keel-test-${randomBytes(4).toString('hex')}:`, CHAT_MESSAGES_PER_MINUTE: '3' });
    a = await startServer(database, env);
    b = await startServer(database, env);
    user = await signUp(a);
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await fake?.close();
    await database?.cleanup();
  });

  it('a socket on server B hears conversation.updated for a send on server A, and follows a reply generating on A to its end', async () => {
    fake.behave({ chunks: ['far ', 'away ', 'reply'], chunkDelayMs: 150 });
    const onA = await Client.authed(a, user);
    const onB = await Client.authed(b, user);
    onA.send({ type: 'send', request_id: 'x', content: 'hello from A' });
    const started = await onA.waitFor((f) => f.request_id === 'x' && f.type === 'message');
    const conversationId = started.conversation_id as string;
    await onB.waitFor((f) => f.type === 'conversation.updated' && f.conversation_id === conversationId);
    onB.send({ type: 'attach', request_id: 'y', conversation_id: conversationId, message_id: (started.assistant_message as Message).id });
    const followed = await onB.settle('y');
    expect(followed.end).toMatchObject({ type: 'done', message: { status: 'complete', content: 'far away reply' } });
    expect(followed.text).toBe('far away reply');
    expect((await onA.settle('x')).text).toBe('far away reply');
    onA.ws.terminate();
    onB.ws.terminate();
  });

  it('the per-user limit is shared by the instances', async () => {
    fake.behave({ reply: 'ok' });
    const onA = await Client.authed(a, user);
    const onB = await Client.authed(b, user);
    const results: string[] = [];
    for (let i = 0; i < 4; i++) {
      const c = i % 2 === 0 ? onA : onB;
      c.send({ type: 'send', request_id: `n${i}`, content: `message ${i}` });
      const { end } = await c.settle(`n${i}`);
      results.push(end.type === 'done' ? 'done' : String(end.code));
    }
    // one send of the limit went to the previous test
    expect(results).toEqual(['done', 'done', 'rate_limited', 'rate_limited']);
    onA.ws.terminate();
    onB.ws.terminate();
  });
});

import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeEachDatabase } from '../helpers/databases.js';
import { startFakeOpenAI, type FakeOpenAI } from '../helpers/fake-openai.js';
import { bearer, signUp, type TestUser } from '../helpers/factories.js';
import { expectErrorShape, request, startServer, type TestServer } from '../helpers/server.js';

interface Message { id: string; role: string; content: string; status: string; usage: { prompt_tokens: number; completion_tokens: number } | null; error_code: string | null }
interface SendReply { user_message: Message; assistant_message: Message }

/** Reads an SSE response into its events (name, parsed data). */
async function sseEvents(res: Response, onEvent?: (e: { event: string; data: Record<string, unknown> }) => boolean | void): Promise<Array<{ event: string; data: Record<string, unknown> }>> {
  const events: Array<{ event: string; data: Record<string, unknown> }> = [];
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let i: number;
    while ((i = buffer.indexOf('\n\n')) !== -1) {
      const block = buffer.slice(0, i);
      buffer = buffer.slice(i + 2);
      const event = /^event: (.*)$/m.exec(block)?.[1];
      const data = /^data: (.*)$/m.exec(block)?.[1];
      if (!event || data === undefined) continue;
      const e = { event, data: JSON.parse(data) as Record<string, unknown> };
      events.push(e);
      if (onEvent?.(e) === true) {
        await reader.cancel();
        return events;
      }
    }
  }
  return events;
}

describeEachDatabase('chat over HTTP', (db) => {
  let fake: FakeOpenAI;
  let s: TestServer;
  let user: TestUser;
  let configDir: string;
  const env = () => ({ LLM_BASE_URL: fake.url, LLM_MODEL: 'fake-model', KEEL_CONFIG: path.join(configDir, 'keel.config.yaml'), CHAT_MESSAGES_PER_MINUTE: '1000' });

  beforeAll(async () => {
    fake = await startFakeOpenAI();
    configDir = mkdtempSync(path.join(tmpdir(), 'keel-chat-'));
    // a model with a tiny window, to see the history trimmed to what fits
    writeFileSync(path.join(configDir, 'keel.config.yaml'), 'models:\n  tiny: { provider: default, model: fake-model, context_window: 1200 }\n');
    s = await startServer(db(), env());
    user = await signUp(s);
  });
  afterAll(async () => {
    await s?.close();
    await fake?.close();
  });

  const api = <T = Record<string, unknown>>(method: string, url: string, json?: unknown, who: TestUser = user) =>
    request<T>(`${s.url}${url}`, { method, headers: bearer(who.access_token), ...(json !== undefined ? { json } : {}) });
  const newConversation = async (body: Record<string, unknown> = {}) => (await api<{ id: string }>('POST', '/conversations', body)).body.id;
  const usageFor = (messageId: string) => s.server.keel.context.database.db.selectFrom('usage_events').selectAll().where('message_id', '=', messageId).execute();

  it('a message gets a stored reply (JSON), titled from the first message, metered and linked to the reply', async () => {
    fake.behave({ reply: 'Paris is the capital of France.', usage: { prompt_tokens: 12, completion_tokens: 7 } });
    const id = await newConversation();
    const sent = await api<SendReply & { usage: unknown }>('POST', `/conversations/${id}/messages`, { content: 'What is the capital of France?\nThanks' });
    expect(sent.status).toBe(200);
    expect(sent.body.user_message).toMatchObject({ role: 'user', content: 'What is the capital of France?\nThanks', status: 'complete' });
    expect(sent.body.assistant_message).toMatchObject({ role: 'assistant', content: 'Paris is the capital of France.', status: 'complete', usage: { prompt_tokens: 12, completion_tokens: 7 } });
    const conversation = await api<{ title: string }>('GET', `/conversations/${id}`);
    expect(conversation.body.title).toBe('What is the capital of France?');
    const rows = await usageFor(sent.body.assistant_message.id);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ endpoint: 'chat', status: 'ok', prompt_tokens: 12 });
  });

  it('the model sees the conversation so far, after the system prompt', async () => {
    fake.behave({ reply: 'noted' });
    const id = await newConversation({ system_prompt: 'Be brief.' });
    await api('POST', `/conversations/${id}/messages`, { content: 'first question' });
    await api('POST', `/conversations/${id}/messages`, { content: 'second question' });
    const sent = fake.requests.at(-1)!.body as { messages: Array<{ role: string; content: string }> };
    expect(sent.messages.map((m) => [m.role, m.content])).toEqual([
      ['system', 'Be brief.'], ['user', 'first question'], ['assistant', 'noted'], ['user', 'second question'],
    ]);
  });

  it('only the recent history that fits the model\'s window is sent', async () => {
    fake.behave({ reply: 'ok' });
    const id = await newConversation({ model: 'tiny' });
    for (let i = 0; i < 6; i++) await api('POST', `/conversations/${id}/messages`, { content: `message ${i} ${'lorem ipsum dolor sit amet '.repeat(8)}` });
    const sent = fake.requests.at(-1)!.body as { messages: Array<{ content: string }> };
    expect(sent.messages.length).toBeLessThan(11);
    expect(sent.messages.at(-1)!.content).toContain('message 5');
    expect(sent.messages.some((m) => m.content.includes('message 0'))).toBe(false);
  });

  it('streams over SSE (message, deltas, done) and stores the same message as JSON would', async () => {
    fake.behave({ chunks: ['Stre', 'amed ', 'reply'] });
    const id = await newConversation();
    const res = await fetch(`${s.url}/conversations/${id}/messages`, { method: 'POST', headers: { ...bearer(user.access_token), 'content-type': 'application/json', accept: 'text/event-stream' }, body: JSON.stringify({ content: 'stream please' }) });
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    const events = await sseEvents(res);
    expect(events[0]!.event).toBe('message');
    expect(events.filter((e) => e.event === 'delta').map((e) => e.data.text).join('')).toBe('Streamed reply');
    const done = events.at(-1)!;
    expect(done.event).toBe('done');
    expect(done.data.assistant_message).toMatchObject({ content: 'Streamed reply', status: 'complete' });
    const history = await api<{ items: Message[] }>('GET', `/conversations/${id}/messages`);
    expect(history.body.items.map((m) => [m.role, m.content, m.status])).toEqual([['user', 'stream please', 'complete'], ['assistant', 'Streamed reply', 'complete']]);
  });

  it('a dropped connection leaves an aborted reply with the text so far, and one usage row', async () => {
    fake.behave({ chunks: ['partial ', 'text ', 'never ', 'finished'], stallAfterChunks: 3, usage: 'none' });
    const id = await newConversation();
    const controller = new AbortController();
    const res = await fetch(`${s.url}/conversations/${id}/messages`, { method: 'POST', signal: controller.signal, headers: { ...bearer(user.access_token), 'content-type': 'application/json' }, body: JSON.stringify({ content: 'drop me', stream: true }) });
    let seen = '';
    let assistantId = '';
    await sseEvents(res, (e) => {
      if (e.event === 'message') assistantId = (e.data.assistant_message as { id: string }).id;
      if (e.event === 'delta') seen += e.data.text as string;
      return seen === 'partial text ';
    }).catch(() => undefined);
    controller.abort();
    await expect.poll(async () => (await api<Message>('GET', `/conversations/${id}/messages`)).body, { timeout: 3000 }).toMatchObject({ items: [{ role: 'user' }, { role: 'assistant', status: 'aborted', content: 'partial text ' }] });
    await expect.poll(async () => (await usageFor(assistantId)).length, { timeout: 2000 }).toBe(1);
    expect((await usageFor(assistantId))[0]).toMatchObject({ status: 'aborted', estimated: 1 });
  });

  it('a resumable generation survives its client; another client attaching mid-way gets the whole text', async () => {
    fake.behave({ chunks: ['one ', 'two ', 'three ', 'four ', 'five'], chunkDelayMs: 150 });
    const id = await newConversation();
    const controller = new AbortController();
    const first = await fetch(`${s.url}/conversations/${id}/messages`, { method: 'POST', signal: controller.signal, headers: { ...bearer(user.access_token), 'content-type': 'application/json' }, body: JSON.stringify({ content: 'count', stream: true, resumable: true }) });
    let assistantId = '';
    await sseEvents(first, (e) => {
      if (e.event === 'message') assistantId = (e.data.assistant_message as { id: string }).id;
      return e.event === 'delta';
    }).catch(() => undefined);
    controller.abort();
    // another device attaches while it is still generating
    const second = await fetch(`${s.url}/conversations/${id}/messages/${assistantId}/stream?offset=0`, { headers: bearer(user.access_token) });
    const events = await sseEvents(second);
    expect(events.filter((e) => e.event === 'delta').map((e) => e.data.text).join('')).toBe('one two three four five');
    expect(events.at(-1)).toMatchObject({ event: 'done', data: { assistant_message: { status: 'complete', content: 'one two three four five' } } });
    expect(await usageFor(assistantId)).toHaveLength(1);
    // attaching after the end replays the stored text from an offset
    const late = await sseEvents(await fetch(`${s.url}/conversations/${id}/messages/${assistantId}/stream?offset=8`, { headers: bearer(user.access_token) }));
    expect(late[0]).toMatchObject({ event: 'delta', data: { text: 'three four five', offset: 8 } });
    expect(late.at(-1)!.event).toBe('done');
  });

  it('conversations: list by latest activity with a cursor, rename, delete (messages go too)', async () => {
    const other = await signUp(s);
    const a = (await api<{ id: string }>('POST', '/conversations', { title: 'A' }, other)).body.id;
    const b = (await api<{ id: string }>('POST', '/conversations', { title: 'B' }, other)).body.id;
    fake.behave({ reply: 'hi' });
    await api('POST', `/conversations/${a}/messages`, { content: 'bump A' }, other);
    const page1 = await api<{ items: Array<{ id: string }>; next_cursor: string }>('GET', '/conversations?limit=1', undefined, other);
    expect(page1.body.items.map((c) => c.id)).toEqual([a]);
    const page2 = await api<{ items: Array<{ id: string }>; next_cursor: string | null }>('GET', `/conversations?limit=1&cursor=${page1.body.next_cursor}`, undefined, other);
    expect(page2.body.items.map((c) => c.id)).toEqual([b]);
    expect((await api<{ title: string }>('PATCH', `/conversations/${b}`, { title: 'Renamed' }, other)).body.title).toBe('Renamed');
    expect((await api('DELETE', `/conversations/${a}`, undefined, other)).status).toBe(204);
    expect((await api('GET', `/conversations/${a}`, undefined, other)).status).toBe(404);
    const left = await s.server.keel.context.database.db.selectFrom('messages').select('id').where('conversation_id', '=', a).execute();
    expect(left).toEqual([]);
  });

  it('another user\'s conversation is 404 on every route and cannot be written to', async () => {
    const stranger = await signUp(s);
    const id = await newConversation();
    fake.behave({ reply: 'mine' });
    const mine = await api<SendReply>('POST', `/conversations/${id}/messages`, { content: 'private' });
    const routes: Array<[string, string, unknown?]> = [
      ['GET', `/conversations/${id}`], ['PATCH', `/conversations/${id}`, { title: 'x' }], ['DELETE', `/conversations/${id}`],
      ['GET', `/conversations/${id}/messages`], ['POST', `/conversations/${id}/messages`, { content: 'intrude' }],
      ['GET', `/conversations/${id}/messages/${mine.body.assistant_message.id}/stream`],
    ];
    for (const [method, url, body] of routes) {
      const res = await api(method, url, body, stranger);
      expect(res.status, `${method} ${url}`).toBe(404);
      expect(expectErrorShape(res.body).code).toBe('not_found');
    }
    const history = await api<{ items: Message[] }>('GET', `/conversations/${id}/messages`);
    expect(history.body.items).toHaveLength(2);
  });

  it('limits: an oversized message is 413; messages per minute are limited', async () => {
    const id = await newConversation();
    const big = await api('POST', `/conversations/${id}/messages`, { content: 'x'.repeat(40_000) });
    expect(big.status).toBe(413);
    const limited = await startServer(db(), { ...env(), CHAT_MESSAGES_PER_MINUTE: '2' });
    try {
      const who = await signUp(limited);
      const conv = (await request<{ id: string }>(`${limited.url}/conversations`, { method: 'POST', headers: bearer(who.access_token), json: {} })).body.id;
      fake.behave({ reply: 'ok' });
      const statuses: number[] = [];
      for (let i = 0; i < 3; i++) statuses.push((await request(`${limited.url}/conversations/${conv}/messages`, { method: 'POST', headers: bearer(who.access_token), json: { content: `m${i}` } })).status);
      expect(statuses).toEqual([200, 200, 429]);
    } finally {
      await limited.close();
    }
  });

  it('history survives a restart', async () => {
    fake.behave({ reply: 'remember me' });
    const id = await newConversation();
    await api('POST', `/conversations/${id}/messages`, { content: 'before the restart' });
    await s.close();
    s = await startServer(db(), env());
    const history = await api<{ items: Message[] }>('GET', `/conversations/${id}/messages`);
    expect(history.body.items.map((m) => m.content)).toEqual(['before the restart', 'remember me']);
  });
});

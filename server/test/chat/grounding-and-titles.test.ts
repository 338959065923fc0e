import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Principal } from '../../src/platform/auth.js';
import { describeEachDatabase } from '../helpers/databases.js';
import { startFakeOpenAI, type FakeOpenAI } from '../helpers/fake-openai.js';
import { bearer, signUp } from '../helpers/factories.js';
import { request, startServer, type TestServer } from '../helpers/server.js';

describeEachDatabase('grounded chat and generated titles', (db) => {
  let fake: FakeOpenAI;
  let s: TestServer;
  const asked: Array<{ userId: string; query: string; collections: readonly string[] }> = [];

  beforeAll(async () => {
    fake = await startFakeOpenAI();
    s = await startServer(db(), { LLM_BASE_URL: fake.url, LLM_MODEL: 'fake-model', CHAT_TITLE_PRESET: 'general' });
    // The knowledge module (issue #6) will provide this; until then the chat side of the contract is
    // exercised with a retriever that answers from a fixed passage.
    s.server.keel.services.chat.useRetriever({
      retrieve: async (principal: Principal, query: string, collections: readonly string[]) => {
        asked.push({ userId: principal.userId, query, collections });
        return [{ chunk_id: 'chunk-1', document_id: 'doc-1', filename: 'oslo.md', text: 'Oslo is the capital of Norway.' }];
      },
    });
  });
  afterAll(async () => {
    await s?.close();
    await fake?.close();
  });

  it('with collections attached, the top chunks go into the prompt and come back as citations', async () => {
    const user = await signUp(s);
    fake.behave({ reply: 'It is Oslo [1].' });
    const conv = await request<{ id: string }>(`${s.url}/conversations`, { method: 'POST', headers: bearer(user.access_token), json: { title: 'Geography', collection_ids: ['col-1'] } });
    const sent = await request<{ assistant_message: { content: string; citations: unknown[] }; citations: unknown[] }>(`${s.url}/conversations/${conv.body.id}/messages`, { method: 'POST', headers: bearer(user.access_token), json: { content: 'What is the capital of Norway?' } });
    expect(asked.at(-1)).toEqual({ userId: user.id, query: 'What is the capital of Norway?', collections: ['col-1'] });
    const system = (fake.requests.at(-1)!.body as { messages: Array<{ role: string; content: string }> }).messages[0]!;
    expect(system.role).toBe('system');
    expect(system.content).toContain('[1] oslo.md\nOslo is the capital of Norway.');
    const citation = { n: 1, chunk_id: 'chunk-1', document_id: 'doc-1', filename: 'oslo.md', text: 'Oslo is the capital of Norway.' };
    expect(sent.body.citations).toEqual([citation]);
    expect(sent.body.assistant_message.citations).toEqual([citation]);

    const res = await fetch(`${s.url}/conversations/${conv.body.id}/messages`, { method: 'POST', headers: { ...bearer(user.access_token), 'content-type': 'application/json' }, body: JSON.stringify({ content: 'And its population?', stream: true }) });
    expect(await res.text()).toMatch(/event: citations\ndata: \{"citations":\[\{"n":1,/);
  });

  it('a conversation without collections is not grounded', async () => {
    const user = await signUp(s);
    const before = asked.length;
    fake.behave({ reply: 'plain' });
    const conv = await request<{ id: string }>(`${s.url}/conversations`, { method: 'POST', headers: bearer(user.access_token), json: { title: 'Plain' } });
    const sent = await request<{ citations: unknown[] }>(`${s.url}/conversations/${conv.body.id}/messages`, { method: 'POST', headers: bearer(user.access_token), json: { content: 'hi' } });
    expect(sent.body.citations).toEqual([]);
    expect(asked).toHaveLength(before);
  });

  it('with CHAT_TITLE_PRESET, the preset titles a new conversation after its first reply, metered', async () => {
    const user = await signUp(s);
    fake.behave({ reply: 'Weekend Trip To Oslo' });
    const conv = await request<{ id: string }>(`${s.url}/conversations`, { method: 'POST', headers: bearer(user.access_token), json: {} });
    await request(`${s.url}/conversations/${conv.body.id}/messages`, { method: 'POST', headers: bearer(user.access_token), json: { content: 'Help me plan a weekend in Oslo, please, with museums' } });
    await expect.poll(async () => (await request<{ title: string }>(`${s.url}/conversations/${conv.body.id}`, { headers: bearer(user.access_token) })).body.title, { timeout: 3000 }).toBe('Weekend Trip To Oslo');
    const rows = await s.server.keel.context.database.db.selectFrom('usage_events').select(['endpoint']).where('user_id', '=', user.id).execute();
    expect(rows.map((r) => r.endpoint).sort()).toEqual(['chat', 'chat.title']);
  });
});

import { afterAll, beforeAll } from 'vitest';
import { describeAccessMatrix, type AccessRow, type MatrixContext } from '../helpers/access-matrix.js';
import { startFakeOpenAI, type FakeOpenAI } from '../helpers/fake-openai.js';

// Conversations belong to their owner: everyone else (admins included) gets 404, never 403.
const owners = (ok: number) => ({ guest: 401, other: 404, owner: ok, admin: 404, keyWithScope: ok, keyWithoutScope: 403 });
const anyUser = (ok: number) => ({ guest: 401, other: ok, owner: ok, admin: ok, keyWithScope: ok, keyWithoutScope: 403 });

async function ownersConversation(ctx: MatrixContext): Promise<Record<string, string>> {
  const res = await ctx.api<{ id: string }>('POST', '/conversations', ctx.cast.owner, { title: 'matrix' });
  if (res.status !== 201) throw new Error(`conversation: ${res.status}`);
  return { id: res.body.id };
}

async function ownersReply(ctx: MatrixContext): Promise<Record<string, string>> {
  const id = (await ownersConversation(ctx)).id!;
  const res = await ctx.api<{ assistant_message: { id: string } }>('POST', `/conversations/${id}/messages`, ctx.cast.owner, { content: 'hello' });
  if (res.status !== 200) throw new Error(`message: ${res.status}`);
  return { id, messageId: res.body.assistant_message.id };
}

let fake: FakeOpenAI;
beforeAll(async () => {
  fake = await startFakeOpenAI();
});
afterAll(() => fake?.close());

const rows: AccessRow[] = [
  { method: 'POST', path: '/conversations', scope: 'chat', body: { title: 'x' }, expect: anyUser(201) },
  { method: 'GET', path: '/conversations', scope: 'chat', expect: anyUser(200) },
  { method: 'GET', path: '/conversations/:id', scope: 'chat', setup: ownersConversation, expect: owners(200) },
  { method: 'PATCH', path: '/conversations/:id', scope: 'chat', setup: ownersConversation, body: { title: 'renamed' }, expect: owners(200) },
  { method: 'DELETE', path: '/conversations/:id', scope: 'chat', setup: ownersConversation, expect: owners(204) },
  { method: 'GET', path: '/conversations/:id/messages', scope: 'chat', setup: ownersConversation, expect: owners(200) },
  { method: 'POST', path: '/conversations/:id/messages', scope: 'chat', setup: ownersConversation, body: { content: 'hi' }, expect: owners(200) },
  { method: 'GET', path: '/conversations/:id/messages/:messageId/stream', scope: 'chat', setup: ownersReply, expect: owners(200) },
];

// The fake's address exists only once it listens, so it is read when the matrix's server starts.
describeAccessMatrix('chat routes', rows, { env: { get LLM_BASE_URL() { return fake.url; }, LLM_MODEL: 'fake-model' } });

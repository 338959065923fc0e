import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeAccessMatrix, type AccessRow } from '../helpers/access-matrix.js';
import { DATABASE_KINDS } from '../helpers/databases.js';
import { startFakeOpenAI, type FakeOpenAI } from '../helpers/fake-openai.js';

/**
 * Who may call the gateway: every route needs a signed-in user (any session) or an API key holding
 * `llm`; a key without it is refused (403) before the upstream is called, a guest gets 401.
 * The matrix's servers talk to a fake upstream; its URL is filled in before they start.
 */

let fake: FakeOpenAI | undefined;
// describeAccessMatrix reads this object when its servers start (in a beforeAll that runs after this file's own).
const env: Record<string, string> = {};
beforeAll(async () => {
  fake = await startFakeOpenAI();
  Object.assign(env, { LLM_BASE_URL: fake.url, LLM_MODEL: 'matrix-model', LLM_EMBEDDINGS_MODEL: 'matrix-embed' });
});
afterAll(() => fake?.close());

const llmCallers = { guest: 401, other: 200, owner: 200, admin: 200, keyWithScope: 200, keyWithoutScope: 403 };

const rows: AccessRow[] = [
  { method: 'GET', path: '/v1/models', scope: 'llm', expect: llmCallers },
  { method: 'POST', path: '/v1/chat/completions', scope: 'llm', body: { model: 'matrix-model', messages: [{ role: 'user', content: 'hi' }] }, expect: llmCallers },
  { name: 'POST /v1/chat/completions (stream)', method: 'POST', path: '/v1/chat/completions', scope: 'llm', body: { model: 'matrix-model', stream: true, messages: [{ role: 'user', content: 'hi' }] }, expect: llmCallers },
  { method: 'POST', path: '/v1/embeddings', scope: 'llm', body: { model: 'matrix-embed', input: 'hello' }, expect: llmCallers },
  { method: 'POST', path: '/llm/general', scope: 'llm', body: { prompt: 'hi' }, expect: llmCallers },
  { method: 'POST', path: '/llm/code/stream', scope: 'llm', body: { prompt: 'hi' }, expect: llmCallers },
];

describeAccessMatrix('LLM gateway access', rows, { env });

// Runs after the matrix: only the cells that answered 200 on an upstream-backed route reached the fake
// (GET /v1/models is answered by Keel itself); a refused caller never costs an upstream call.
it('refused callers never reach the upstream', () => {
  const allowed = Object.values(llmCallers).filter((status) => status === 200).length;
  const upstreamRows = rows.filter((r) => r.path !== '/v1/models').length;
  expect(fake!.requests.filter((r) => r.path !== '/v1/models')).toHaveLength(allowed * upstreamRows * DATABASE_KINDS.length);
});

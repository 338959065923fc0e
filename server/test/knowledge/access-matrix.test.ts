import { randomBytes } from 'node:crypto';
import { describeAccessMatrix, type AccessRow, type MatrixContext } from '../helpers/access-matrix.js';

// Collections and documents belong to their owner: everyone else (admins included) gets 404, never 403.
const owners = (ok: number) => ({ guest: 401, other: 404, owner: ok, admin: 404, keyWithScope: ok, keyWithoutScope: 403 });
const anyUser = (ok: number) => ({ guest: 401, other: ok, owner: ok, admin: ok, keyWithScope: ok, keyWithoutScope: 403 });

async function ownersCollection(ctx: MatrixContext): Promise<Record<string, string>> {
  const res = await ctx.api<{ id: string }>('POST', '/collections', ctx.cast.owner, { name: 'matrix' });
  if (res.status !== 201) throw new Error(`collection: ${res.status}`);
  return { id: res.body.id };
}

async function ownersDocument(ctx: MatrixContext): Promise<Record<string, string>> {
  // Unique content per cell: the same content twice would be recognised as a duplicate.
  const res = await ctx.api<{ document: { id: string } }>('POST', '/documents', ctx.cast.owner, { filename: 'notes.md', content: `# Notes\n\n${randomBytes(8).toString('hex')}` });
  if (res.status !== 202) throw new Error(`document: ${res.status}`);
  return { id: res.body.document.id };
}

const upload = () => ({ filename: 'a.txt', content: `text ${randomBytes(8).toString('hex')}` });

const rows: AccessRow[] = [
  { method: 'POST', path: '/collections', scope: 'knowledge:write', body: { name: 'x' }, expect: anyUser(201) },
  { method: 'GET', path: '/collections', scope: 'knowledge:read', expect: anyUser(200) },
  { method: 'GET', path: '/collections/:id', scope: 'knowledge:read', setup: ownersCollection, expect: owners(200) },
  { method: 'PATCH', path: '/collections/:id', scope: 'knowledge:write', setup: ownersCollection, body: { name: 'renamed' }, expect: owners(200) },
  { method: 'DELETE', path: '/collections/:id', scope: 'knowledge:write', setup: ownersCollection, expect: owners(204) },
  { method: 'POST', path: '/documents', scope: 'knowledge:write', body: upload, expect: anyUser(202) },
  { method: 'GET', path: '/documents', scope: 'knowledge:read', expect: anyUser(200) },
  { method: 'GET', path: '/documents/:id', scope: 'knowledge:read', setup: ownersDocument, expect: owners(200) },
  { method: 'GET', path: '/documents/:id/file', scope: 'knowledge:read', setup: ownersDocument, expect: owners(200) },
  { method: 'GET', path: '/documents/:id/chunks', scope: 'knowledge:read', setup: ownersDocument, expect: owners(200) },
  { method: 'DELETE', path: '/documents/:id', scope: 'knowledge:write', setup: ownersDocument, expect: owners(204) },
  { method: 'POST', path: '/search', scope: 'knowledge:read', body: { query: 'anything' }, expect: anyUser(200) },
  { method: 'POST', path: '/search/llm', scope: 'knowledge:read', body: { query: 'anything' }, expect: anyUser(200) },
  { method: 'GET', path: '/stats', scope: 'knowledge:read', expect: anyUser(200) },
];

describeAccessMatrix('knowledge routes', rows);

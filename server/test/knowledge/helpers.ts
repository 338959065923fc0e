import { expect } from 'vitest';
import { bearer, type TestUser } from '../helpers/factories.js';
import { request, type TestServer } from '../helpers/server.js';

export interface DocumentBody {
  id: string;
  filename: string;
  kind: string;
  status: string;
  error: string | null;
  chunk_count: number;
  job_id: string | null;
  collection_id: string | null;
  embedding_model: string | null;
}

export interface UploadBody {
  document: DocumentBody;
  job: { id: string; status: string } | null;
  duplicate: boolean;
}

/** Uploads by JSON (text, or base64 bytes). */
export async function uploadJson(s: TestServer, user: TestUser, filename: string, content: string | Uint8Array, collectionId?: string) {
  const json = typeof content === 'string' ? { filename, content } : { filename, content: Buffer.from(content).toString('base64'), encoding: 'base64' };
  return request<UploadBody>(`${s.url}/documents`, { method: 'POST', headers: bearer(user.access_token), json: { ...json, ...(collectionId ? { collection_id: collectionId } : {}) } });
}

/** Uploads as multipart/form-data, the way a browser form does. */
export async function uploadMultipart(s: TestServer, user: TestUser, filename: string, content: string | Uint8Array, collectionId?: string) {
  const form = new FormData();
  if (collectionId) form.append('collection_id', collectionId);
  form.append('file', new Blob([typeof content === 'string' ? content : Buffer.from(content)]), filename);
  const res = await fetch(`${s.url}/documents`, { method: 'POST', headers: bearer(user.access_token), body: form });
  return { status: res.status, headers: res.headers, body: (await res.json()) as UploadBody };
}

/** Polls the document until its ingestion ended (ready or failed). */
export async function waitForDocument(s: TestServer, user: TestUser, id: string, timeoutMs = 20_000): Promise<DocumentBody> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const res = await request<DocumentBody>(`${s.url}/documents/${id}`, { headers: bearer(user.access_token) });
    expect(res.status).toBe(200);
    if (res.body.status === 'ready' || res.body.status === 'failed') return res.body;
    if (Date.now() > deadline) throw new Error(`document ${id} still ${res.body.status} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Uploads (JSON) and waits until the document is ready. */
export async function ingest(s: TestServer, user: TestUser, filename: string, content: string | Uint8Array, collectionId?: string): Promise<DocumentBody> {
  const res = await uploadJson(s, user, filename, content, collectionId);
  expect(res.status, JSON.stringify(res.body)).toBe(202);
  const doc = await waitForDocument(s, user, res.body.document.id);
  expect(doc.status, doc.error ?? '').toBe('ready');
  return doc;
}

export interface SearchBody {
  mode: string;
  results: Array<{ chunk_id: string; document_id: string; filename: string; heading: string | null; text: string; highlight: string; score: number; scores: { lexical?: number; vector?: number } }>;
}

export async function search(s: TestServer, user: TestUser, body: Record<string, unknown>) {
  return request<SearchBody>(`${s.url}/search`, { method: 'POST', headers: bearer(user.access_token), json: body });
}

import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeEachDatabase } from '../helpers/databases.js';
import { bearer, promoteToAdmin, signUp, type TestUser } from '../helpers/factories.js';
import { expectErrorShape, request, startServer, type TestServer } from '../helpers/server.js';
import { ingest, search, uploadJson, uploadMultipart, waitForDocument, type DocumentBody } from './helpers.js';
import { buildPdf } from './parsing/pdf-builder.js';

const unique = () => `zx${randomBytes(5).toString('hex')}`;
const makePdf = (pages: readonly string[]) => buildPdf(pages.map((text) => ({ lines: [text] })), { compress: true });

const OPENAPI = (marker: string) => `openapi: 3.0.3
info:
  title: Pet store ${marker}
  version: "1.0"
paths:
  /pets:
    get:
      operationId: listPets
      summary: List all pets
      parameters:
        - name: limit
          in: query
          schema: { type: integer }
      responses:
        "200":
          description: A page of pets
          content:
            application/json:
              schema:
                type: array
                items: { $ref: "#/components/schemas/Pet" }
    post:
      operationId: createPet
      summary: Create a pet
      requestBody:
        content:
          application/json:
            schema: { $ref: "#/components/schemas/Pet" }
      responses:
        "201": { description: Created }
  /pets/{petId}:
    get:
      operationId: showPetById
      summary: Info for a specific pet
      parameters:
        - { name: petId, in: path, required: true, schema: { type: string } }
      responses:
        "200": { description: The pet }
    delete:
      operationId: deletePet
      summary: Remove a pet
      responses:
        "204": { description: Gone }
components:
  schemas:
    Pet:
      type: object
      required: [name]
      properties:
        name: { type: string, description: The pet's ${marker}whiskername }
        tag: { type: string }
`;

describeEachDatabase('knowledge: documents over HTTP', (db) => {
  let s: TestServer;
  let owner: TestUser;
  let other: TestUser;

  beforeAll(async () => {
    s = await startServer(db(), { MAX_UPLOAD_SIZE_MB: '1', STORAGE_QUOTA_MB: '3', JOB_POLL_MS: '50' });
    owner = await signUp(s);
    other = await signUp(s);
  });
  afterAll(async () => {
    await s?.close();
  });

  it('every file type ingests and is found by a word only it contains', async () => {
    const words = { md: unique(), txt: unique(), json: unique(), yaml: unique(), html: unique(), pdf: unique(), openapi: unique() };
    const files: Array<[string, string | Uint8Array, string]> = [
      ['guide.md', `# Guide\n\n## Install\n\nRun the ${words.md} installer.\n`, 'markdown'],
      ['notes.txt', `Plain notes.\n\nThe ${words.txt} paragraph.\n`, 'text'],
      ['config.json', JSON.stringify({ server: { name: words.json, port: 8080 } }), 'json'],
      ['config.yaml', `database:\n  host: ${words.yaml}\n  port: 5432\n`, 'yaml'],
      ['page.html', `<html><head><title>Page</title><script>var ${unique()} = 1;</script></head><body><h1>Welcome</h1><p>The ${words.html} section.</p></body></html>`, 'html'],
      ['paper.pdf', makePdf([`First page mentions ${words.pdf} once.`, 'Second page.']), 'pdf'],
      ['petstore.yaml', OPENAPI(words.openapi), 'openapi'],
    ];
    const docs: DocumentBody[] = [];
    for (const [name, content, kind] of files) {
      // Half of them by multipart, the way a browser form uploads.
      const res = docs.length % 2 === 0 ? await uploadJson(s, owner, name, content) : await uploadMultipart(s, owner, name, content);
      expect(res.status, JSON.stringify(res.body)).toBe(202);
      expect(res.body.document).toMatchObject({ filename: name, status: 'pending', kind });
      expect(res.body.job?.id).toBe(res.body.document.job_id);
      expect(['pending', 'running', 'succeeded']).toContain(res.body.job?.status);
      docs.push(res.body.document);
    }
    for (const doc of docs) {
      const done = await waitForDocument(s, owner, doc.id);
      expect(done.status, `${doc.filename}: ${done.error}`).toBe('ready');
      expect(done.chunk_count).toBeGreaterThan(0);
    }
    const byWord = Object.entries(words).map(([type, word], i) => ({ type, word, doc: docs[i]! }));
    for (const { word, doc } of byWord) {
      const res = await search(s, owner, { query: word });
      expect(res.status).toBe(200);
      expect(res.body.mode).toBe('lexical');
      expect(res.body.results.map((r) => r.document_id), `${doc.filename} for ${word}`).toEqual([doc.id]);
      expect(res.body.results[0]!.highlight.toLowerCase()).toContain(`<mark>${word}</mark>`);
      expect(res.body.results[0]!.scores.lexical).toBeGreaterThan(0);
    }
    // HTML is searched as text: the script's content is not indexed, and no tags are.
    const chunks = await request<{ items: Array<{ text: string }> }>(`${s.url}/documents/${docs[4]!.id}/chunks`, { headers: bearer(owner.access_token) });
    expect(chunks.body.items.map((c) => c.text).join(' ')).not.toMatch(/<|var zx/);
    // The job is visible and finished.
    const job = await request<{ status: string; attempts: number; result: unknown }>(`${s.url}/jobs/${docs[0]!.job_id}`, { headers: bearer(owner.access_token) });
    expect(job.body).toMatchObject({ status: 'succeeded', attempts: 1 });
  });

  it('an OpenAPI file gives one chunk per operation, each found by what it does', async () => {
    const marker = unique();
    const doc = await ingest(s, owner, 'petstore-ops.yaml', OPENAPI(marker));
    expect(doc.kind).toBe('openapi');
    const chunks = await request<{ items: Array<{ heading: string | null; text: string }> }>(`${s.url}/documents/${doc.id}/chunks`, { headers: bearer(owner.access_token) });
    const operations = chunks.body.items.filter((c) => /^(GET|POST|PUT|PATCH|DELETE) /.test(c.heading ?? ''));
    expect(operations.map((c) => c.heading!.split(' · ')[0]).sort()).toEqual(['DELETE /pets/{petId}', 'GET /pets', 'GET /pets/{petId}', 'POST /pets']);
    // The $ref'd schema is inlined into the operation that uses it.
    const create = operations.find((c) => c.heading!.startsWith('POST /pets'))!;
    expect(create.text).toContain(`${marker}whiskername`);
    const found = await search(s, owner, { query: `createPet ${marker}whiskername` });
    expect(found.body.results[0]!.heading).toMatch(/^POST \/pets/);
  });

  it('too big → 413, a type not allowed or content that is not what it says → 415, nothing stored', async () => {
    const before = await request<{ documents: number; bytes: number }>(`${s.url}/stats`, { headers: bearer(owner.access_token) });
    const big = 'a'.repeat(1024 * 1024 + 1);
    for (const res of [await uploadJson(s, owner, 'big.txt', big), await uploadMultipart(s, owner, 'big.txt', big)]) {
      expect(res.status).toBe(413);
      expect(expectErrorShape(res.body).code).toBe('payload_too_large');
    }
    const png = Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52, 0, 0, 1, 0]);
    const refused: Array<[string, string | Uint8Array]> = [
      ['program.exe', 'MZ fake'],
      ['image.md', png],
      ['broken.json', '{"not": json'],
      ['fake.pdf', 'just text, not a PDF'],
    ];
    for (const [name, content] of refused) {
      const res = await uploadMultipart(s, owner, name, content);
      expect(res.status, name).toBe(415);
      expect(expectErrorShape(res.body).code).toBe('unsupported_media_type');
    }
    const after = await request<{ documents: number; bytes: number }>(`${s.url}/stats`, { headers: bearer(owner.access_token) });
    expect(after.body.documents).toBe(before.body.documents);
    expect(after.body.bytes).toBe(before.body.bytes);
  });

  it('path-traversal filenames are harmless: only a clean base name is kept', async () => {
    for (const name of ['../../etc/passwd.txt', '..\\..\\windows\\win.ini.txt', '/abs/path/x.txt']) {
      const res = await uploadMultipart(s, owner, name, `traversal ${unique()}`);
      expect(res.status).toBe(202);
      expect(res.body.document.filename).not.toMatch(/[/\\]|\.\./);
      expect(res.body.document.filename).toMatch(/\.txt$/);
    }
  });

  it('the same content twice in one collection is recognised; in another collection it is a new document', async () => {
    const a = await request<{ id: string }>(`${s.url}/collections`, { method: 'POST', headers: bearer(owner.access_token), json: { name: 'A' } });
    const b = await request<{ id: string }>(`${s.url}/collections`, { method: 'POST', headers: bearer(owner.access_token), json: { name: 'B' } });
    const content = `# Same\n\n${unique()}`;
    const first = await uploadJson(s, owner, 'same.md', content, a.body.id);
    const again = await uploadMultipart(s, owner, 'renamed.md', content, a.body.id);
    expect(first.status).toBe(202);
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ duplicate: true, document: { id: first.body.document.id, filename: 'same.md' } });
    const elsewhere = await uploadJson(s, owner, 'same.md', content, b.body.id);
    expect(elsewhere.status).toBe(202);
    expect(elsewhere.body.document.id).not.toBe(first.body.document.id);
    // Another user uploading the same bytes gets their own document.
    const theirs = await uploadJson(s, other, 'same.md', content);
    expect(theirs.status).toBe(202);
  });

  it('the original can be downloaded as uploaded', async () => {
    const pdf = makePdf([`Download ${unique()}`]);
    const res = await uploadMultipart(s, owner, 'download.pdf', pdf);
    const file = await fetch(`${s.url}/documents/${res.body.document.id}/file`, { headers: bearer(owner.access_token) });
    expect(file.status).toBe(200);
    expect(file.headers.get('content-type')).toBe('application/pdf');
    expect(Buffer.from(await file.arrayBuffer()).equals(Buffer.from(pdf))).toBe(true);
  });

  it('another user\'s documents and collections never appear in search, stats, lists or by id', async () => {
    const word = unique();
    const mine = await ingest(s, owner, 'secret.md', `# Secret\n\nThe ${word} plan.`);
    const col = await request<{ id: string }>(`${s.url}/collections`, { method: 'POST', headers: bearer(owner.access_token), json: { name: 'private' } });
    const theirs = bearer(other.access_token);
    expect((await search(s, other, { query: word })).body.results).toEqual([]);
    expect((await search(s, other, { query: word, collection_ids: [col.body.id] })).body.results).toEqual([]);
    for (const path of [`/documents/${mine.id}`, `/documents/${mine.id}/file`, `/documents/${mine.id}/chunks`, `/collections/${col.body.id}`, `/jobs/${mine.job_id}`]) {
      const res = await request(`${s.url}${path}`, { headers: theirs });
      expect(res.status, path).toBe(404);
    }
    for (const path of [`/documents/${mine.id}`, `/collections/${col.body.id}`]) {
      expect((await request(`${s.url}${path}`, { method: 'DELETE', headers: theirs })).status).toBe(404);
    }
    const list = await request<{ items: Array<{ id: string }> }>(`${s.url}/documents?limit=100`, { headers: theirs });
    expect(list.body.items.map((d) => d.id)).not.toContain(mine.id);
    // Uploading into someone else's collection is refused as if it did not exist.
    expect((await uploadJson(s, other, 'x.md', `# x ${unique()}`, col.body.id)).status).toBe(404);
    const stats = await request<{ chunks: number }>(`${s.url}/stats`, { headers: theirs });
    const ownerStats = await request<{ chunks: number }>(`${s.url}/stats`, { headers: bearer(owner.access_token) });
    expect(ownerStats.body.chunks).toBeGreaterThan(stats.body.chunks);
    expect((await search(s, owner, { query: word })).body.results.map((r) => r.document_id)).toEqual([mine.id]);
  });

  it('deleting a document or a collection removes its chunks from search and stats', async () => {
    const word = unique();
    const col = await request<{ id: string }>(`${s.url}/collections`, { method: 'POST', headers: bearer(owner.access_token), json: { name: 'temp' } });
    const loose = await ingest(s, owner, 'loose.md', `# Loose\n\n${word} alpha.`);
    await ingest(s, owner, 'grouped.md', `# Grouped\n\n${word} beta.`, col.body.id);
    expect((await search(s, owner, { query: word })).body.results).toHaveLength(2);
    expect((await search(s, owner, { query: word, collection_ids: [col.body.id] })).body.results).toHaveLength(1);
    const before = await request<{ chunks: number; documents: number }>(`${s.url}/stats`, { headers: bearer(owner.access_token) });

    expect((await request(`${s.url}/documents/${loose.id}`, { method: 'DELETE', headers: bearer(owner.access_token) })).status).toBe(204);
    expect((await request(`${s.url}/documents/${loose.id}`, { headers: bearer(owner.access_token) })).status).toBe(404);
    expect((await search(s, owner, { query: word })).body.results).toHaveLength(1);

    expect((await request(`${s.url}/collections/${col.body.id}`, { method: 'DELETE', headers: bearer(owner.access_token) })).status).toBe(204);
    expect((await search(s, owner, { query: word })).body.results).toEqual([]);
    const after = await request<{ chunks: number; documents: number }>(`${s.url}/stats`, { headers: bearer(owner.access_token) });
    expect(after.body.documents).toBe(before.body.documents - 2);
    expect(after.body.chunks).toBeLessThan(before.body.chunks);
    const left = await s.server.keel.context.database.db.selectFrom('chunks').select('id').where('document_id', '=', loose.id).execute();
    expect(left).toEqual([]);
  });

  it('GET /stats counts the caller\'s things by status; admins may ask for everyone\'s', async () => {
    const user = await signUp(s);
    await ingest(s, user, 'one.md', `# One\n\n${unique()}`);
    await ingest(s, user, 'two.txt', `two ${unique()}`);
    await request(`${s.url}/collections`, { method: 'POST', headers: bearer(user.access_token), json: { name: 'c' } });
    const stats = await request<Record<string, unknown>>(`${s.url}/stats`, { headers: bearer(user.access_token) });
    expect(stats.body).toMatchObject({ collections: 1, documents: 2, documents_by_status: { pending: 0, processing: 0, ready: 2, failed: 0 } });
    expect(stats.body.chunks).toBeGreaterThanOrEqual(2);
    expect(stats.body.bytes).toBeGreaterThan(0);
    expect((await request(`${s.url}/stats?scope=all`, { headers: bearer(user.access_token) })).status).toBe(403);
    await promoteToAdmin(s, user.id);
    const all = await request<{ documents: number }>(`${s.url}/stats?scope=all`, { headers: bearer(user.access_token) });
    expect(all.status).toBe(200);
    expect(all.body.documents).toBeGreaterThan(2);
  });

  it('a per-user storage quota refuses the upload that would pass it, with 413', async () => {
    const user = await signUp(s);
    const chunk = (c: string) => `${c.repeat(900 * 1024)}`;
    expect((await uploadJson(s, user, 'a.txt', chunk('a'))).status).toBe(202);
    expect((await uploadJson(s, user, 'b.txt', chunk('b'))).status).toBe(202);
    expect((await uploadJson(s, user, 'c.txt', chunk('c'))).status).toBe(202);
    const over = await uploadJson(s, user, 'd.txt', chunk('d'));
    expect(over.status).toBe(413);
    expect(expectErrorShape(over.body).code).toBe('storage_quota_exceeded');
  });

  it('bad input gets a clear 4xx: unknown collection, empty file, no file part, wrong types', async () => {
    expect((await uploadJson(s, owner, 'x.md', '# x', 'no-such-collection')).status).toBe(404);
    expect((await uploadJson(s, owner, 'empty.txt', '')).status).toBe(400);
    const form = new FormData();
    form.append('collection_id', 'x');
    const noFile = await fetch(`${s.url}/documents`, { method: 'POST', headers: bearer(owner.access_token), body: form });
    expect(noFile.status).toBe(400);
    expectErrorShape(await noFile.json());
    const wrong = await request(`${s.url}/documents`, { method: 'POST', headers: bearer(owner.access_token), json: { filename: 3, content: [] } });
    expect(wrong.status).toBe(400);
    const badSearch = await request(`${s.url}/search`, { method: 'POST', headers: bearer(owner.access_token), json: { query: '', limit: 'ten' } });
    expect(badSearch.status).toBe(400);
    // Query syntax that would break a naive full-text query is just text.
    const weird = await search(s, owner, { query: 'what\'s "foo" OR (bar AND -baz* NEAR/2' });
    expect(weird.status).toBe(200);
  });
});

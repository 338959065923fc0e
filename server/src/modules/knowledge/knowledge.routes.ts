import multipart from '@fastify/multipart';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Type, type Static } from 'typebox';
import { AppError } from '../../platform/errors.js';
import type { ModuleContext } from '../../platform/module.js';
import { ANY_CREDENTIAL, AUTHED_ERRORS, errorResponses, Page } from '../../platform/schemas.js';
import { abortOnClose, SseStream } from '../../platform/sse.js';
import type { AnswerEvent, AnswerService } from './answer.js';
import { tooLarge, type KnowledgeService } from './knowledge.service.js';

const tags = ['knowledge'];
const errors = { ...AUTHED_ERRORS, ...errorResponses(503) };
const Id = Type.String({ minLength: 1, maxLength: 64 });
const IdParams = Type.Object({ id: Id });
const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(t: T) => Type.Union([t, Type.Null()]);
const PageQuery = { limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20 })), cursor: Type.Optional(Type.String({ maxLength: 200 })) };

const CollectionBody = Type.Object({ name: Type.String({ minLength: 1, maxLength: 200 }), description: Type.Optional(Nullable(Type.String({ maxLength: 2000 }))) }, { additionalProperties: false });
const CollectionPatch = Type.Object({ name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })), description: Type.Optional(Nullable(Type.String({ maxLength: 2000 }))) }, { additionalProperties: false });
const Collection = Type.Object({ id: Type.String(), name: Type.String(), description: Nullable(Type.String()), document_count: Type.Integer(), created_at: Type.String(), updated_at: Type.String() });

const DocumentStatus = Type.Union([Type.Literal('pending'), Type.Literal('processing'), Type.Literal('ready'), Type.Literal('failed')]);
const Document = Type.Object({
  id: Type.String(), collection_id: Nullable(Type.String()), filename: Type.String(),
  kind: Type.String({ description: 'markdown | text | json | yaml | openapi | html | pdf — what the content turned out to be' }),
  media_type: Type.String(), bytes: Type.Integer(), sha256: Type.String(), status: DocumentStatus, error: Nullable(Type.String()), job_id: Nullable(Type.String()),
  chunk_count: Type.Integer(), embedding_model: Nullable(Type.String()), created_at: Type.String(), updated_at: Type.String(),
});
const Job = Type.Object({
  id: Type.String(), type: Type.String(), status: Type.String({ description: 'pending | running | succeeded | failed' }), attempts: Type.Integer(),
  progress: Nullable(Type.Number()), error: Nullable(Type.String()), result: Type.Unknown(), created_at: Type.String(), updated_at: Type.String(), finished_at: Nullable(Type.String()),
});
const UploadReply = Type.Object({ document: Document, job: Nullable(Job), duplicate: Type.Boolean({ description: 'true when this content was already uploaded to the collection: `document` is that earlier upload' }) });
const JsonUpload = Type.Object({
  filename: Type.String({ minLength: 1, maxLength: 1000 }),
  content: Type.String({ description: 'The file\'s text, or its bytes in base64 with `encoding: "base64"` (for PDFs).' }),
  encoding: Type.Optional(Type.Union([Type.Literal('utf8'), Type.Literal('base64')], { default: 'utf8' })),
  collection_id: Type.Optional(Nullable(Id)),
}, { additionalProperties: false });
const MultipartUpload = Type.Object({
  file: Type.String({ format: 'binary', description: 'The document.' }),
  collection_id: Type.Optional(Type.String()),
});

const SearchBody = Type.Object({
  query: Type.String({ minLength: 1, maxLength: 2000 }),
  collection_ids: Type.Optional(Type.Array(Id, { maxItems: 100 })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 50, default: 10 })),
  mode: Type.Optional(Type.Union([Type.Literal('hybrid'), Type.Literal('lexical'), Type.Literal('vector')])),
}, { additionalProperties: false });
const SearchResult = Type.Object({
  chunk_id: Type.String(), document_id: Type.String(), filename: Type.String(), heading: Nullable(Type.String()), text: Type.String(),
  highlight: Type.String({ description: 'An excerpt with the query\'s terms in <mark>…</mark>; the rest HTML-escaped' }),
  score: Type.Number(), scores: Type.Object({ lexical: Type.Optional(Type.Number()), vector: Type.Optional(Type.Number()) }),
});
const AnswerBody = Type.Object({
  query: Type.String({ minLength: 1, maxLength: 2000 }),
  collection_ids: Type.Optional(Type.Array(Id, { maxItems: 100 })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 20, default: 5 })),
  stream: Type.Optional(Type.Boolean()),
}, { additionalProperties: false });
const Citation = Type.Object({ n: Type.Integer(), chunk_id: Nullable(Type.String()), document_id: Nullable(Type.String()), filename: Type.String(), text: Type.String(), url: Type.Optional(Type.String()) });
const AnswerUsage = Type.Object({ prompt_tokens: Type.Integer(), completion_tokens: Type.Integer(), estimated: Type.Boolean(), cost_usd: Type.Number() });
const StatsReply = Type.Object({
  collections: Type.Integer(), documents: Type.Integer(), chunks: Type.Integer(), bytes: Type.Integer(),
  documents_by_status: Type.Object({ pending: Type.Integer(), processing: Type.Integer(), ready: Type.Integer(), failed: Type.Integer() }),
});

/** Collections, documents (upload by multipart or JSON), search, answers with citations, and stats. */
export async function knowledgeRoutes(app: FastifyInstance, ctx: ModuleContext, knowledge: KnowledgeService, answers: AnswerService): Promise<void> {
  const read = ctx.guards.scope('knowledge:read');
  const write = ctx.guards.scope('knowledge:write');
  const maxUploadBytes = ctx.config.maxUploadSizeMb * 1024 * 1024;
  // One file per request; its size limit is checked while it streams in, before it is buffered whole.
  await app.register(multipart, { limits: { fileSize: maxUploadBytes, files: 1, fields: 10, fieldSize: 1024, parts: 12 } });

  app.post('/collections', {
    preHandler: write, schema: { tags, summary: 'Create a collection', security: ANY_CREDENTIAL, body: CollectionBody, response: { 201: Collection, ...errors } },
  }, async (request, reply) => reply.code(201).send(await knowledge.createCollection(request.principal!, request.body as Static<typeof CollectionBody>)));

  app.get('/collections', {
    preHandler: read, schema: { tags, summary: 'The caller\'s collections, oldest first', security: ANY_CREDENTIAL, querystring: Type.Object(PageQuery), response: { 200: Page(Collection), ...errors } },
  }, async (request) => {
    const q = request.query as { limit?: number; cursor?: string };
    return knowledge.listCollections(request.principal!, q.limit ?? 20, q.cursor);
  });

  app.get('/collections/:id', {
    preHandler: read, schema: { tags, summary: 'One collection', security: ANY_CREDENTIAL, params: IdParams, response: { 200: Collection, ...errors } },
  }, async (request) => knowledge.getCollection(request.principal!, (request.params as Static<typeof IdParams>).id));

  app.patch('/collections/:id', {
    preHandler: write, schema: { tags, summary: 'Rename or describe a collection', security: ANY_CREDENTIAL, params: IdParams, body: CollectionPatch, response: { 200: Collection, ...errors } },
  }, async (request) => knowledge.updateCollection(request.principal!, (request.params as Static<typeof IdParams>).id, request.body as Static<typeof CollectionPatch>));

  app.delete('/collections/:id', {
    preHandler: write, schema: { tags, summary: 'Delete a collection with its documents, chunks and vectors', security: ANY_CREDENTIAL, params: IdParams, response: { 204: Type.Null(), ...errors } },
  }, async (request, reply) => {
    await knowledge.deleteCollection(request.principal!, (request.params as Static<typeof IdParams>).id);
    return reply.code(204).send();
  });

  app.post('/documents', {
    preHandler: write,
    // A JSON upload carries the file as text or base64 (4/3 larger), so its body may exceed the file limit.
    bodyLimit: Math.ceil(maxUploadBytes * 4 / 3) + 64 * 1024,
    schema: {
      tags, summary: 'Upload a document; it is parsed, chunked and embedded by a background job',
      description: `Multipart (\`file\`, optional \`collection_id\`) or JSON. Answers 202 with the pending document and its job (poll \`GET /jobs/{id}\` or \`GET /documents/{id}\`); 200 with \`duplicate: true\` when the same content is already in that collection. The content is checked, not only the extension: 413 over MAX_UPLOAD_SIZE_MB or the storage quota, 415 for a type outside ALLOWED_EXTENSIONS or content that is not what its name says.`,
      security: ANY_CREDENTIAL,
      body: { content: { 'application/json': { schema: JsonUpload }, 'multipart/form-data': { schema: MultipartUpload } } },
      response: { 200: UploadReply, 202: UploadReply, ...errors, ...errorResponses(413, 415) },
    },
  }, async (request, reply) => {
    const input = request.isMultipart() ? await readMultipart(request, maxUploadBytes) : readJson(request.body as Static<typeof JsonUpload>);
    const result = await knowledge.upload(request.principal!, input);
    return reply.code(result.duplicate ? 200 : 202).send(result);
  });

  app.get('/documents', {
    preHandler: read,
    schema: { tags, summary: 'The caller\'s documents, oldest first', security: ANY_CREDENTIAL, querystring: Type.Object({ ...PageQuery, collection_id: Type.Optional(Id), status: Type.Optional(DocumentStatus) }), response: { 200: Page(Document), ...errors } },
  }, async (request) => {
    const q = request.query as { limit?: number; cursor?: string; collection_id?: string; status?: string };
    return knowledge.listDocuments(request.principal!, { ...(q.collection_id ? { collectionId: q.collection_id } : {}), ...(q.status ? { status: q.status } : {}) }, q.limit ?? 20, q.cursor);
  });

  app.get('/documents/:id', {
    preHandler: read, schema: { tags, summary: 'One document and its ingestion status', security: ANY_CREDENTIAL, params: IdParams, response: { 200: Document, ...errors } },
  }, async (request) => knowledge.getDocument(request.principal!, (request.params as Static<typeof IdParams>).id));

  app.get('/documents/:id/file', {
    preHandler: read, schema: { tags, summary: 'Download the original upload', security: ANY_CREDENTIAL, params: IdParams, response: { ...errors } },
  }, async (request, reply) => {
    const { document, content } = await knowledge.documentFile(request.principal!, (request.params as Static<typeof IdParams>).id);
    return reply
      .header('content-type', document.media_type)
      .header('content-disposition', `attachment; filename*=UTF-8''${encodeURIComponent(document.filename).replace(/['()*!]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)}`)
      .header('x-content-type-options', 'nosniff')
      .send(Buffer.from(content));
  });

  app.get('/documents/:id/chunks', {
    preHandler: read,
    schema: {
      tags, summary: 'The document\'s chunks, in order: what search and answers see', security: ANY_CREDENTIAL, params: IdParams,
      querystring: Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200, default: 50 })), cursor: Type.Optional(Type.String({ maxLength: 20 })) }),
      response: { 200: Page(Type.Object({ id: Type.String(), ordinal: Type.Integer(), heading: Nullable(Type.String()), text: Type.String(), token_count: Type.Integer() })), ...errors },
    },
  }, async (request) => {
    const q = request.query as { limit?: number; cursor?: string };
    return knowledge.documentChunks(request.principal!, (request.params as Static<typeof IdParams>).id, q.limit ?? 50, q.cursor);
  });

  app.delete('/documents/:id', {
    preHandler: write, schema: { tags, summary: 'Delete a document with its original, chunks and vectors', security: ANY_CREDENTIAL, params: IdParams, response: { 204: Type.Null(), ...errors } },
  }, async (request, reply) => {
    await knowledge.deleteDocument(request.principal!, (request.params as Static<typeof IdParams>).id);
    return reply.code(204).send();
  });

  app.post('/search', {
    preHandler: read,
    schema: {
      tags, summary: 'Search the caller\'s documents: lexical (BM25), vector, or hybrid (reciprocal rank fusion)',
      description: '`mode` defaults to hybrid; without a configured embedder every search runs lexically and the reply\'s `mode` says `lexical`.',
      security: ANY_CREDENTIAL, body: SearchBody,
      response: { 200: Type.Object({ results: Type.Array(SearchResult), mode: Type.Union([Type.Literal('hybrid'), Type.Literal('lexical'), Type.Literal('vector')]) }), ...errors, ...errorResponses(502) },
    },
  }, async (request) => {
    const body = request.body as Static<typeof SearchBody>;
    return knowledge.search(request.principal!, { query: body.query, limit: body.limit ?? 10, ...(body.collection_ids ? { collectionIds: body.collection_ids } : {}), ...(body.mode ? { mode: body.mode } : {}) });
  });

  app.post('/search/llm', {
    preHandler: read,
    schema: {
      tags, summary: 'Answer a question from the caller\'s documents, citing them as [n]',
      description: '`[n]` in the answer refers to the citation with that `n`. When nothing relevant is found the answer says so (and no model is called). With `stream: true` (or `Accept: text/event-stream`): events `citations` `{citations}`, `delta` `{text}`, `done` `{answer, citations, usage}`, `error` `{code, message}`.',
      security: ANY_CREDENTIAL, body: AnswerBody,
      response: { 200: Type.Object({ answer: Type.String(), citations: Type.Array(Citation), usage: Nullable(AnswerUsage) }), ...errors, ...errorResponses(502, 504) },
    },
  }, async (request, reply) => {
    const body = request.body as Static<typeof AnswerBody>;
    const input = { query: body.query, limit: body.limit ?? 5, ...(body.collection_ids ? { collectionIds: body.collection_ids } : {}) };
    const wantsStream = body.stream === true || (request.headers.accept ?? '').includes('text/event-stream');
    if (!wantsStream) {
      const gone = abortOnClose(reply);
      let done: Extract<AnswerEvent, { type: 'done' }> | undefined;
      for await (const event of answers.answer(request.principal!, input, { requestId: String(request.id), signal: gone, endpoint: '/search/llm' })) {
        if (event.type === 'done') done = event;
      }
      return { answer: done!.answer, citations: done!.citations, usage: done!.usage };
    }
    const sse = new SseStream(reply, ctx.config.llm.heartbeatSeconds * 1000);
    try {
      for await (const event of answers.answer(request.principal!, input, { requestId: String(request.id), signal: sse.clientGone, endpoint: '/search/llm/stream' })) {
        if (event.type === 'citations') await sse.send(JSON.stringify({ citations: event.citations }), 'citations');
        else if (event.type === 'delta') await sse.send(JSON.stringify({ text: event.text }), 'delta');
        else await sse.send(JSON.stringify({ answer: event.answer, citations: event.citations, usage: event.usage }), 'done');
      }
    } catch (err) {
      // Before the stream opened, the error handler answers in the usual shape; after, it is an event.
      if (!sse.isOpen) throw err;
      const e = err instanceof AppError ? err : new AppError('answer_failed', 'The answer could not be completed.', 502);
      if (!sse.clientGone.aborted) await sse.send(JSON.stringify({ code: e.code, message: e.message }), 'error');
    } finally {
      if (sse.isOpen) sse.end();
    }
    return reply;
  });

  app.get('/stats', {
    preHandler: read,
    schema: {
      tags, summary: 'Counts of the caller\'s collections, documents (by status), chunks and stored bytes', description: 'Admins may ask `?scope=all` for every user\'s totals.',
      security: ANY_CREDENTIAL, querystring: Type.Object({ scope: Type.Optional(Type.Union([Type.Literal('mine'), Type.Literal('all')], { default: 'mine' })) }), response: { 200: StatsReply, ...errors },
    },
  }, async (request) => knowledge.stats(request.principal!, (request.query as { scope?: 'mine' | 'all' }).scope ?? 'mine'));
}

function readJson(body: Static<typeof JsonUpload>): { filename: string; bytes: Uint8Array; collectionId: string | null } {
  const bytes = body.encoding === 'base64' ? Buffer.from(body.content, 'base64') : Buffer.from(body.content, 'utf8');
  return { filename: body.filename, bytes, collectionId: body.collection_id ?? null };
}

/** Reads the one `file` part (and `collection_id`), refusing it as soon as it passes the size limit. */
async function readMultipart(request: FastifyRequest, maxBytes: number): Promise<{ filename: string; bytes: Uint8Array; collectionId: string | null }> {
  let file: { filename: string; bytes: Uint8Array } | undefined;
  let collectionId: string | null = null;
  try {
    for await (const part of request.parts()) {
      if (part.type === 'file') {
        if (part.fieldname !== 'file' || file) {
          part.file.resume();
          throw AppError.badRequest('Send exactly one file, in the field `file`.', [{ field: part.fieldname, message: 'unexpected file' }]);
        }
        const bytes = await part.toBuffer();
        file = { filename: part.filename, bytes };
      } else if (part.fieldname === 'collection_id' && typeof part.value === 'string' && part.value !== '') {
        collectionId = part.value;
      }
    }
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'FST_REQ_FILE_TOO_LARGE') throw tooLarge(maxBytes);
    if (code === 'FST_FILES_LIMIT') throw AppError.badRequest('Send exactly one file, in the field `file`.', [{ field: 'file', message: 'too many files' }]);
    if (code?.startsWith('FST_')) throw AppError.badRequest(`The multipart body could not be read: ${(err as Error).message}`);
    throw err;
  }
  if (!file) throw AppError.badRequest('The multipart body has no `file` part.', [{ field: 'file', message: 'is required' }]);
  return { ...file, collectionId };
}

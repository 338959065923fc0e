import { Writable } from 'node:stream';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { openDatabase, type Database } from '../../../src/db/database.js';
import { migrateToLatest } from '../../../src/db/migrate.js';
import { createKnowledgeIndex, type KnowledgeIndex, type SearchHit } from '../../../src/modules/knowledge/search/index.js';
import { createLogger } from '../../../src/platform/logger.js';
import { describeEachDatabase } from '../../helpers/databases.js';
import { testConfig } from '../../helpers/server.js';
import { knowledgeRows, vec } from './rows.js';

const MODEL = 'test-embed-8';

describeEachDatabase('knowledge search index', (db) => {
  let database: Database;
  let index: KnowledgeIndex;
  let rows: ReturnType<typeof knowledgeRows>;
  let vectorTable: string;
  const logLines: string[] = [];

  beforeAll(async () => {
    const logger = createLogger({ logLevel: 'info' }, new Writable({
      write(chunk: Buffer, _enc, cb) {
        logLines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
        cb();
      },
    }));
    database = openDatabase(testConfig(db()).database, logger);
    await migrateToLatest(database.db);
    index = await createKnowledgeIndex(database, logger);
    rows = knowledgeRows(database);
    vectorTable = index.vectorBackend === 'pgvector' ? 'chunk_vectors_pgvector' : 'chunk_vectors';
  });
  afterAll(() => database?.close());

  const ids = (hits: SearchHit[]) => hits.map((h) => h.chunk_id);

  it('uses sqlite-vec on SQLite, and on Postgres without pgvector the exact scan, with one warning at start', async () => {
    if (database.dialect.name === 'sqlite') {
      expect(index.vectorBackend).toBe('sqlite-vec');
    } else {
      expect(['exact', 'pgvector']).toContain(index.vectorBackend);
      if (index.vectorBackend === 'exact') {
        expect(logLines.filter((l) => /pgvector/.test(l) && /"level":"warn"/.test(l))).toHaveLength(1);
      }
    }
    // A second index on the same database (another process, a restart) finds its tables in place.
    await expect(createKnowledgeIndex(database, createLogger({ logLevel: 'silent' }))).resolves.toBeDefined();
  });

  it('lexical: ranks by BM25 / ts_rank_cd, higher is better, and highlights the matches with escaped HTML around them', async () => {
    const user = await rows.user();
    const doc = await rows.document(user, null, 'guide.md');
    const both = await rows.chunk(doc, 'To rotate an API key & its secret (when a < b), open Settings and choose rotate key. The old key stops working, the <new> one is shown once.', 'Keys > Rotation');
    const one = await rows.chunk(doc, 'Settings hold your profile, your e-mail address and a key for the API, among other things.');
    await rows.chunk(doc, 'Nothing about the subject here: weather, lunch and trains.');

    const hits = await index.lexical({ userId: user }, 'How do I rotate my API key?', 10);
    expect(ids(hits)).toEqual([both.id, one.id]);
    expect(hits[0]!.score).toBeGreaterThan(hits[1]!.score);
    expect(hits[1]!.score).toBeGreaterThan(0);
    expect(hits[0]!.scores).toEqual({ lexical: hits[0]!.score });
    expect(hits[0]).toMatchObject({ document_id: doc, filename: 'guide.md', heading: 'Keys > Rotation' });
    expect(hits[0]!.text).toContain('<new>');
    const highlight = hits[0]!.highlight;
    expect(highlight).toMatch(/<mark>rotate<\/mark>/i);
    expect(highlight).toMatch(/<mark>key<\/mark>/i);
    expect(highlight).toContain('&amp;');
    expect(highlight).toContain('a &lt; b');
    expect(highlight.replace(/<\/?mark>/g, '')).not.toMatch(/[<>]/);
  });

  it('lexical: user query syntax never reaches the engine as syntax', async () => {
    const user = await rows.user();
    const doc = await rows.document(user);
    const foo = await rows.chunk(doc, 'The foo widget is configured with a bar and a baz.');
    const weird = [
      `what's "foo" OR (bar`, 'foo AND', 'NOT foo', 'foo*', '^foo', 'heading:foo', 'NEAR(foo bar', '"', "'", '\\', '((', '-foo',
      'foo -- drop table chunks;', '{foo} [bar]', 'f"o"o', 'foo:*', 'foo & bar | !baz', '<->', 'fóo BAR 🎉', 'a'.repeat(5000), 'x '.repeat(500),
    ];
    for (const q of weird) await expect(index.lexical({ userId: user }, q, 10), q).resolves.toBeInstanceOf(Array);
    expect(ids(await index.lexical({ userId: user }, `what's "foo" OR (bar`, 10))).toEqual([foo.id]);
    // Nothing searchable (only punctuation or stopwords): no results rather than everything.
    for (const q of ['', '   ', '?!', '"" OR ()', 'the and of', 'OR']) expect(await index.lexical({ userId: user }, q, 10), q).toEqual([]);
  });

  it("lexical: only the user's chunks, and only the given collections when some are given", async () => {
    const alice = await rows.user();
    const bob = await rows.user();
    const work = await rows.collection(alice, 'work');
    const home = await rows.collection(alice, 'home');
    const inWork = await rows.chunk(await rows.document(alice, work), 'Quarterly zebra migration report.');
    const inHome = await rows.chunk(await rows.document(alice, home), 'The zebra at the zoo.');
    const loose = await rows.chunk(await rows.document(alice, null), 'A zebra without a collection.');
    const bobs = await rows.chunk(await rows.document(bob, await rows.collection(bob)), 'Zebra zebra zebra: the best zebra chunk of all.');

    expect(ids(await index.lexical({ userId: alice }, 'zebra', 10)).sort()).toEqual([inWork.id, inHome.id, loose.id].sort());
    expect(ids(await index.lexical({ userId: alice, collectionIds: [] }, 'zebra', 10))).toHaveLength(3);
    expect(ids(await index.lexical({ userId: alice, collectionIds: [work] }, 'zebra', 10))).toEqual([inWork.id]);
    expect(ids(await index.lexical({ userId: alice, collectionIds: [work, home] }, 'zebra', 10)).sort()).toEqual([inWork.id, inHome.id].sort());
    expect(ids(await index.lexical({ userId: bob }, 'zebra', 10))).toEqual([bobs.id]);
    // Bob naming Alice's collection gets nothing of hers.
    expect(await index.lexical({ userId: bob, collectionIds: [work] }, 'zebra', 10)).toEqual([]);
    expect(await index.lexical({ userId: alice }, 'zebra', 0)).toEqual([]);
    expect(await index.lexical({ userId: alice }, 'zebra', 2)).toHaveLength(2);
  });

  it("lexical: finds the user's few matches when another user's many matches rank above them", async () => {
    const small = await rows.user();
    const big = await rows.user();
    const bigDoc = await rows.document(big);
    for (let i = 0; i < 120; i++) await rows.chunk(bigDoc, `Okapi okapi okapi, note ${i}.`);
    const mine = [];
    for (let i = 0; i < 3; i++) mine.push(await rows.chunk(await rows.document(small), `A long note that mentions the okapi only once, among many other words about zoos, animals, keepers and visitors, number ${i}.`));
    for (let round = 0; round < 2; round++) {
      expect(ids(await index.lexical({ userId: small }, 'okapi', 10)).sort(), `round ${round}`).toEqual(mine.map((c) => c.id).sort());
    }
    expect(await index.lexical({ userId: big }, 'okapi', 10)).toHaveLength(10);
  });

  it('vector: nearest first by cosine similarity, owner- and collection-scoped', async () => {
    const alice = await rows.user();
    const bob = await rows.user();
    const col = await rows.collection(alice);
    const doc = await rows.document(alice, col);
    const near = await rows.chunk(doc, 'near');
    const mid = await rows.chunk(doc, 'mid');
    const far = await rows.chunk(doc, 'far');
    const outside = await rows.chunk(await rows.document(alice, null), 'outside the collection');
    const bobs = await rows.chunk(await rows.document(bob), "bob's exact match");
    const put = (c: { seq: number; id: string; userId: string; collectionId: string | null }, vector: Float32Array) => ({ chunkSeq: c.seq, chunkId: c.id, userId: c.userId, collectionId: c.collectionId, vector });
    await index.putVectors(database.db, MODEL, [
      put(near, vec(1, 0.1, 0, 0, 0, 0, 0, 0)),
      put(mid, vec(1, 1, 0, 0, 0, 0, 0, 0)),
      put(far, vec(-1, 0, 0, 0, 0, 0, 0, 0)),
      put(outside, vec(3, 0, 0, 0, 0, 0, 0, 0.2)),
      put(bobs, vec(5, 0, 0, 0, 0, 0, 0, 0)),
    ]);
    const query = { model: MODEL, vector: vec(2, 0, 0, 0, 0, 0, 0, 0) };

    const hits = await index.vector({ userId: alice, collectionIds: [col] }, query, 10);
    expect(ids(hits)).toEqual([near.id, mid.id, far.id]);
    expect(hits[0]!.score).toBeCloseTo(1 / Math.sqrt(1.01), 5);
    expect(hits[1]!.score).toBeCloseTo(Math.SQRT1_2, 5);
    expect(hits[2]!.score).toBeCloseTo(-1, 5);
    expect(hits[0]!.scores).toEqual({ vector: hits[0]!.score });
    expect(hits[0]!.highlight).toBe('near');

    expect(ids(await index.vector({ userId: alice }, query, 2))).toEqual([outside.id, near.id]);
    expect(ids(await index.vector({ userId: bob }, query, 10))).toEqual([bobs.id]);
    expect(await index.vector({ userId: bob, collectionIds: [col] }, query, 10)).toEqual([]);
    // No vectors of that model: nothing, not an error; another dimension: a clear error.
    expect(await index.vector({ userId: alice }, { model: 'never-used', vector: vec(1, 2) }, 10)).toEqual([]);
    await expect(index.vector({ userId: alice }, { model: MODEL, vector: vec(1, 2, 3) }, 10)).rejects.toThrow(/3 dimensions/);
    await expect(index.putVectors(database.db, MODEL, [put(near, vec(1, 2, 3))])).rejects.toThrow(/dimensions/);
  });

  it('vector: exact below the candidate count, on a few hundred random vectors', async () => {
    const user = await rows.user();
    const doc = await rows.document(user);
    const dims = 32;
    let seed = 7;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;
    const stored: Array<{ id: string; v: Float32Array }> = [];
    const puts = [];
    for (let i = 0; i < 300; i++) {
      const c = await rows.chunk(doc, `chunk ${i}`);
      const v = Float32Array.from({ length: dims }, random);
      stored.push({ id: c.id, v });
      puts.push({ chunkSeq: c.seq, chunkId: c.id, userId: user, collectionId: null, vector: v });
    }
    await index.putVectors(database.db, 'random-32', puts);
    const norm = (v: Float32Array) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
    for (let q = 0; q < 5; q++) {
      const query = Float32Array.from({ length: dims }, random);
      const exact = stored
        .map((s) => ({ id: s.id, score: s.v.reduce((acc, x, i) => acc + x * query[i]!, 0) / (norm(s.v) * norm(query)) }))
        .sort((a, b) => b.score - a.score)
        .slice(0, 10);
      const hits = await index.vector({ userId: user }, { model: 'random-32', vector: query }, 10);
      expect(ids(hits)).toEqual(exact.map((e) => e.id));
      hits.forEach((h, i) => expect(h.score).toBeCloseTo(exact[i]!.score, 5));
    }
  });

  it('hybrid: finds what only the vectors find, and ranks what both find first', async () => {
    const user = await rows.user();
    const other = await rows.user();
    const doc = await rows.document(user, null, 'account.md');
    const both = await rows.chunk(doc, 'To reset your password, open the sign-in page and choose "reset password".');
    const paraphrase = await rows.chunk(doc, 'Forgot your credentials? You can recover access to the account from the login screen.');
    const wordsOnly = await rows.chunk(doc, 'Password rules: at least twelve characters. Reset tokens expire after an hour.');
    const unrelated = await rows.chunk(doc, 'Invoices are sent on the first day of each month.');
    const foreign = await rows.chunk(await rows.document(other), 'reset password reset password');
    const q = vec(1, 0, 0, 0, 0, 0, 0, 0);
    const put = (c: { seq: number; id: string; userId: string }, vector: Float32Array) => ({ chunkSeq: c.seq, chunkId: c.id, userId: c.userId, collectionId: null, vector });
    await index.putVectors(database.db, MODEL, [
      put(both, vec(0.95, 0.3, 0, 0, 0, 0, 0, 0)),
      put(paraphrase, vec(0.9, 0.35, 0.1, 0, 0, 0, 0, 0)),
      put(wordsOnly, vec(0, 0, 1, 0, 0, 0, 0, 0)),
      put(unrelated, vec(0, 0, 0, 1, 0, 0, 0, 0)),
      put(foreign, vec(1, 0, 0, 0, 0, 0, 0, 0)),
    ]);

    const lexical = await index.lexical({ userId: user }, 'How can I reset my password?', 10);
    expect(ids(lexical)).not.toContain(paraphrase.id);
    const hits = await index.hybrid({ userId: user }, 'How can I reset my password?', { model: MODEL, vector: q }, 10);
    expect(hits[0]!.chunk_id).toBe(both.id);
    expect(hits[0]!.scores.lexical).toBeGreaterThan(0);
    expect(hits[0]!.scores.vector).toBeGreaterThan(0.9);
    expect(hits[0]!.score).toBeCloseTo(2 / 61, 6);
    const found = hits.find((h) => h.chunk_id === paraphrase.id);
    expect(found).toBeDefined();
    expect(found!.scores.lexical).toBeUndefined();
    expect(found!.scores.vector).toBeGreaterThan(0.9);
    expect(found!.highlight).toMatch(/^Forgot your credentials\?/);
    const rules = hits.find((h) => h.chunk_id === wordsOnly.id)!;
    expect(rules.highlight).toMatch(/<mark>/);
    expect(ids(hits)).not.toContain(foreign.id);
    expect(new Set(ids(hits)).size).toBe(hits.length);
    for (let i = 1; i < hits.length; i++) expect(hits[i]!.score).toBeLessThanOrEqual(hits[i - 1]!.score);

    // With no searchable words, hybrid is the vector ranking; with no vectors for the model, the lexical one.
    expect(ids(await index.hybrid({ userId: user }, '?!', { model: MODEL, vector: q }, 2))).toEqual([both.id, paraphrase.id]);
    expect(ids(await index.hybrid({ userId: user }, 'reset password', { model: 'no-such-model', vector: q }, 10))).toEqual(ids(await index.lexical({ userId: user }, 'reset password', 10)));
  });

  it('vector-only hits are highlighted in JS from the query words, escaped', async () => {
    const user = await rows.user();
    const doc = await rows.document(user);
    const c = await rows.chunk(doc, `${'Intro words here. '.repeat(10)}Configuration of <b>hooks</b> & retries is covered in this part. ${'Tail words. '.repeat(20)}`);
    await index.putVectors(database.db, MODEL, [{ chunkSeq: c.seq, chunkId: c.id, userId: user, collectionId: null, vector: vec(0, 0, 0, 0, 0, 0, 1, 0) }]);
    // Neither stemmer turns "config" into "configuration", so only the vector signal finds the chunk.
    expect(await index.lexical({ userId: user }, 'config', 5)).toEqual([]);
    const hits = await index.hybrid({ userId: user }, 'config', { model: MODEL, vector: vec(0, 0, 0, 0, 0, 0, 1, 0) }, 5);
    expect(ids(hits)).toEqual([c.id]);
    expect(hits[0]!.scores.lexical).toBeUndefined();
    const highlight = hits[0]!.highlight;
    expect(highlight).toMatch(/^… .*<mark>Configuration<\/mark> of &lt;b&gt;hooks&lt;\/b&gt; &amp; retries/);
    expect(highlight.endsWith(' …')).toBe(true);
  });

  it('putVectors: idempotent, replaces on re-put, works inside a transaction, never stores for a chunk of someone else', async () => {
    const user = await rows.user();
    const intruder = await rows.user();
    const doc = await rows.document(user);
    const a = await rows.chunk(doc, 'alpha');
    const b = await rows.chunk(doc, 'beta');
    const before = await rows.vectorCount(vectorTable);
    const row = (c: typeof a, vector: Float32Array) => ({ chunkSeq: c.seq, chunkId: c.id, userId: c.userId, collectionId: null, vector });
    const q = { model: MODEL, vector: vec(0, 0, 0, 0, 1, 0, 0, 0) };

    await index.putVectors(database.db, MODEL, [row(a, vec(0, 0, 0, 0, 1, 0, 0, 0)), row(b, vec(0, 0, 0, 0, 0.5, 1, 0, 0))]);
    await index.putVectors(database.db, MODEL, [row(a, vec(0, 0, 0, 0, 1, 0, 0, 0))]);
    expect(await rows.vectorCount(vectorTable)).toBe(before + 2);
    expect(ids(await index.vector({ userId: user }, q, 10))).toEqual([a.id, b.id]);

    // Re-put: a's vector now points away, b's toward the query.
    await database.db.transaction().execute(async (trx) => {
      await index.putVectors(trx, MODEL, [row(a, vec(0, 0, 0, 0, -1, 0, 0, 0)), row(b, vec(0, 0, 0, 0, 1, 0, 0, 0))]);
    });
    expect(await rows.vectorCount(vectorTable)).toBe(before + 2);
    const hits = await index.vector({ userId: user }, q, 10);
    expect(ids(hits)).toEqual([b.id, a.id]);
    expect(hits[0]!.score).toBeCloseTo(1, 5);

    // A transaction that rolls back stores nothing.
    const c = await rows.chunk(doc, 'gamma');
    await expect(database.db.transaction().execute(async (trx) => {
      await index.putVectors(trx, MODEL, [row(c, vec(0, 0, 0, 0, 1, 0, 0, 0))]);
      throw new Error('rollback');
    })).rejects.toThrow('rollback');
    expect(await rows.vectorCount(vectorTable)).toBe(before + 2);

    // Rows naming the wrong owner or a missing chunk are skipped.
    await index.putVectors(database.db, MODEL, [
      { ...row(c, vec(0, 0, 0, 0, 1, 0, 0, 0)), userId: intruder },
      { chunkSeq: 99_999_999, chunkId: 'missing', userId: user, collectionId: null, vector: vec(0, 0, 0, 0, 1, 0, 0, 0) },
    ]);
    expect(await rows.vectorCount(vectorTable)).toBe(before + 2);
    expect(await index.vector({ userId: intruder }, q, 10)).toEqual([]);
  });

  it('deleting chunks or their document removes their vectors; moving a chunk moves its vector', async () => {
    const user = await rows.user();
    const col = await rows.collection(user);
    const doc = await rows.document(user, col);
    const chunks = [];
    for (let i = 0; i < 4; i++) chunks.push(await rows.chunk(doc, `chunk ${i}`));
    const before = await rows.vectorCount(vectorTable);
    await index.putVectors(database.db, MODEL, chunks.map((c, i) => ({ chunkSeq: c.seq, chunkId: c.id, userId: user, collectionId: col, vector: vec(1, i, 0, 0, 0, 0, 0, 0) })));
    expect(await rows.vectorCount(vectorTable)).toBe(before + 4);

    await database.db.deleteFrom('chunks').where('id', '=', chunks[0]!.id).execute();
    expect(await rows.vectorCount(vectorTable)).toBe(before + 3);
    const q = { model: MODEL, vector: vec(1, 0, 0, 0, 0, 0, 0, 0) };
    expect(ids(await index.vector({ userId: user }, q, 10))).toEqual(chunks.slice(1).map((c) => c.id));

    const other = await rows.collection(user, 'other');
    await database.db.updateTable('chunks').set({ collection_id: other }).where('id', '=', chunks[1]!.id).execute();
    expect(ids(await index.vector({ userId: user, collectionIds: [other] }, q, 10))).toEqual([chunks[1]!.id]);
    expect(ids(await index.vector({ userId: user, collectionIds: [col] }, q, 10))).toEqual([chunks[2]!.id, chunks[3]!.id]);

    await database.db.deleteFrom('documents').where('id', '=', doc).execute();
    expect(await rows.vectorCount(vectorTable)).toBe(before);
    expect(await index.vector({ userId: user }, q, 10)).toEqual([]);
    expect(await index.lexical({ userId: user }, 'chunk', 10)).toEqual([]);
  });

  it('chunksMissingVectors and dropVectorsExcept follow a model change', async () => {
    // Start from no vectors at all, so the counts below are this test's own.
    await index.dropVectorsExcept('nothing');
    expect(await rows.vectorCount(vectorTable)).toBe(0);
    const user = await rows.user();
    const doc = await rows.document(user);
    const a = await rows.chunk(doc, 'one');
    const b = await rows.chunk(doc, 'two');
    const c = await rows.chunk(doc, 'three');
    const row = (x: typeof a, vector: Float32Array) => ({ chunkSeq: x.seq, chunkId: x.id, userId: user, collectionId: null, vector });
    await index.putVectors(database.db, 'old-model', [row(a, vec(1, 0, 0)), row(b, vec(0, 1, 0)), row(c, vec(0, 0, 1))]);

    const missingNew = await index.chunksMissingVectors('new-model', 100_000);
    expect(missingNew.map((m) => m.id)).toEqual(expect.arrayContaining([a.id, b.id, c.id]));
    const mine = missingNew.filter((m) => m.user_id === user);
    expect(mine.map((m) => m.seq)).toEqual([a.seq, b.seq, c.seq]);
    expect(mine[0]).toEqual({ seq: a.seq, id: a.id, user_id: user, collection_id: null, document_id: doc, heading: null, text: 'one' });
    expect(await index.chunksMissingVectors('new-model', 2)).toHaveLength(2);
    expect((await index.chunksMissingVectors('old-model', 100_000)).map((m) => m.id)).not.toContain(a.id);

    // Re-embedding with a model of another dimension: a and b are done, c is not yet.
    await index.putVectors(database.db, 'new-model', [row(a, vec(1, 0, 0, 0, 0)), row(b, vec(0, 1, 0, 0, 0))]);
    const stillMissing = (await index.chunksMissingVectors('new-model', 100_000)).map((m) => m.id);
    expect(stillMissing).toContain(c.id);
    expect(stillMissing).not.toContain(a.id);
    expect(ids(await index.vector({ userId: user }, { model: 'new-model', vector: vec(1, 0, 0, 0, 0) }, 10))).toEqual([a.id, b.id]);
    expect(ids(await index.vector({ userId: user }, { model: 'old-model', vector: vec(0, 0, 1) }, 10))).toEqual([c.id]);

    await index.dropVectorsExcept('new-model');
    expect(await rows.vectorCount(vectorTable)).toBe(2);
    expect(await index.vector({ userId: user }, { model: 'old-model', vector: vec(0, 0, 1) }, 10)).toEqual([]);
    expect((await index.chunksMissingVectors('new-model', 100_000)).map((m) => m.id)).toContain(c.id);
    // The old model's dimension is forgotten with it: the name may come back with another.
    await index.putVectors(database.db, 'old-model', [row(c, vec(1, 0, 0, 0))]);
    expect(ids(await index.vector({ userId: user }, { model: 'old-model', vector: vec(1, 0, 0, 0) }, 10))).toEqual([c.id]);
  });
});

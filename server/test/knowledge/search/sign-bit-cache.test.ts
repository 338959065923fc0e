import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type Database } from '../../../src/db/database.js';
import { migrateToLatest } from '../../../src/db/migrate.js';
import { createKnowledgeIndex, type KnowledgeIndex } from '../../../src/modules/knowledge/search/index.js';
import { hammingDistances, nearestByHamming, packedBytes, packPart, packQuery, SignBitCache } from '../../../src/modules/knowledge/search/sign-bit-cache.js';
import { createSqliteBackend } from '../../../src/modules/knowledge/search/sqlite-backend.js';
import { normalize, signBits } from '../../../src/modules/knowledge/search/vector-math.js';
import { createLogger } from '../../../src/platform/logger.js';
import { createSqliteDatabase, type TestDatabase } from '../../helpers/databases.js';
import { testConfig } from '../../helpers/server.js';
import { knowledgeRows, vec } from './rows.js';

function prng(seed: number): () => number {
  return () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;
}

describe('sign-bit scan in JS', () => {
  it('gives the Hamming distances sqlite-vec would, and the nearest with ties cut in order', () => {
    const random = prng(3);
    for (const dims of [384, 40, 8]) {
      const vectors = Array.from({ length: 500 }, () => Float32Array.from({ length: dims }, random));
      const part = packPart(vectors.map((v, i) => ({ seq: i + 1, bits: signBits(v) })), Math.ceil(dims / 8));
      const q = Float32Array.from({ length: dims }, random);
      const query = packQuery(signBits(q));
      const expected = vectors.map((v) => v.reduce((d, x, i) => d + ((x > 0) !== (q[i]! > 0) ? 1 : 0), 0));
      expect([...hammingDistances(part, query)]).toEqual(expected);

      const order = expected.map((d, i) => ({ d, seq: i + 1 })).sort((a, b) => a.d - b.d || a.seq - b.seq);
      expect(nearestByHamming([part], query, 37).sort((a, b) => a - b)).toEqual(order.slice(0, 37).map((o) => o.seq).sort((a, b) => a - b));
      expect(nearestByHamming([part], query, 1000)).toHaveLength(500);
      expect(nearestByHamming([part], query, 0)).toEqual([]);
    }
    // Over several parts, the nearest of them all.
    const a = packPart([{ seq: 1, bits: Uint8Array.of(0b1111) }, { seq: 2, bits: Uint8Array.of(0) }], 1);
    const b = packPart([{ seq: 3, bits: Uint8Array.of(0b1) }, { seq: 4, bits: Uint8Array.of(0b11111111) }], 1);
    expect(nearestByHamming([a, b], packQuery(Uint8Array.of(0)), 2)).toEqual([2, 3]);
  });

  it('caches parts under their version, least recently used evicted beyond the budget', () => {
    const part = (n: number) => packPart(Array.from({ length: n }, (_, i) => ({ seq: i, bits: new Uint8Array(48) })), 48);
    const size = packedBytes(part(100));
    const cache = new SignBitCache(size * 2 + 10);
    expect(cache.set(1, 5, part(100))).toBe(true);
    expect(cache.set(2, 7, part(100))).toBe(true);
    expect(cache.bytes).toBe(size * 2);
    expect(cache.get(1, 5)).toBeDefined(); // 1 is now the most recently used
    expect(cache.set(3, 1, part(100))).toBe(true);
    expect(cache.partIds).toEqual([1, 3]);
    expect(cache.bytes).toBeLessThanOrEqual(cache.budgetBytes);
    // Another version: not returned, and forgotten.
    expect(cache.get(3, 2)).toBeUndefined();
    expect(cache.partIds).toEqual([1]);
    expect(cache.bytes).toBe(size);
    // Larger than the whole budget: not cached, nothing evicted for it.
    expect(cache.set(4, 1, part(1000))).toBe(false);
    expect(cache.partIds).toEqual([1]);
  });
});

describe('SQLite sign-bit cache against the database', () => {
  let testDb: TestDatabase;
  let first: Database;
  let second: Database;
  let index: KnowledgeIndex;
  let otherIndex: KnowledgeIndex;
  let rows: ReturnType<typeof knowledgeRows>;
  let otherRows: ReturnType<typeof knowledgeRows>;
  const logger = createLogger({ logLevel: 'silent' });
  const MODEL = 'cache-test-8';

  beforeAll(async () => {
    testDb = await createSqliteDatabase();
    first = openDatabase(testConfig(testDb).database, logger);
    await migrateToLatest(first.db);
    index = await createKnowledgeIndex(first, logger);
    // Another connection to the same file: what another process (a worker, a second server) is.
    second = openDatabase(testConfig(testDb).database, logger);
    otherIndex = await createKnowledgeIndex(second, logger);
    rows = knowledgeRows(first);
    otherRows = knowledgeRows(second);
  });
  afterAll(async () => {
    await first?.close();
    await second?.close();
    await testDb?.cleanup();
  });

  type ChunkRef = { seq: number; id: string; userId: string; collectionId: string | null };
  const put = (c: ChunkRef, vector: Float32Array) => ({ chunkSeq: c.seq, chunkId: c.id, userId: c.userId, collectionId: c.collectionId, vector });
  const q = (...xs: number[]) => ({ model: MODEL, vector: vec(...xs) });
  const ids = (hits: Array<{ chunk_id: string }>) => hits.map((h) => h.chunk_id);

  it('sees vectors dropped and re-put by another connection under a reused part id', async () => {
    // First in this file: the only part there is, so its id is the one SQLite hands out again.
    const backend = await createSqliteBackend(first);
    const user = await rows.user();
    const doc = await rows.document(user);
    const a = await rows.chunk(doc, 'a');
    const b = await rows.chunk(doc, 'b');
    await index.putVectors(first.db, 'm-old', [put(a, vec(1, 0, 0, 0))]);
    const partIds = async () => (await sql<{ id: number }>`select id from chunk_vector_parts`.execute(first.db)).rows.map((r) => r.id);
    const [before] = await partIds();
    expect((await backend.vector({ userId: user }, 'm-old', normalize(vec(1, 0, 0, 0)), 10)).map((r) => r.seq)).toEqual([a.seq]);
    // The other connection drops every other model, then the same model (same dimension) comes back
    // with another chunk's vector: the new part may get the dropped one's id.
    await otherIndex.dropVectorsExcept('nothing');
    await otherIndex.putVectors(second.db, 'm-old', [put(b, vec(1, 0, 0, 0))]);
    expect(await partIds()).toEqual([before]);
    expect((await backend.vector({ userId: user }, 'm-old', normalize(vec(1, 0, 0, 0)), 10)).map((r) => r.seq)).toEqual([b.seq]);
  });

  it("sees another connection's puts, re-puts, deletes, moves and cascades at its next query", async () => {
    const backend = await createSqliteBackend(first);
    const user = await rows.user();
    const col = await rows.collection(user);
    const doc = await rows.document(user, col);
    const a = await rows.chunk(doc, 'a');
    const b = await rows.chunk(doc, 'b');
    await index.putVectors(first.db, MODEL, [put(a, vec(1, 0, 0, 0, 0, 0, 0, 0)), put(b, vec(0, 1, 0, 0, 0, 0, 0, 0))]);
    const unit = normalize(vec(1, 0.1, 0, 0, 0, 0, 0, 0));
    const seqs = async (collectionIds?: string[]) => (await backend.vector({ userId: user, collectionIds }, MODEL, unit, 10)).map((r) => r.seq);
    expect(await seqs()).toEqual([a.seq, b.seq]);
    expect(backend.signBitCache.partIds).toHaveLength(1);
    expect(ids(await index.vector({ userId: user }, q(1, 0.1, 0, 0, 0, 0, 0, 0), 10))).toEqual([a.id, b.id]);

    // A new chunk's vector, put by the other connection.
    const c = await otherRows.chunk(doc, 'c');
    await otherIndex.putVectors(second.db, MODEL, [put(c, vec(1, 0.1, 0, 0, 0, 0, 0, 0))]);
    expect(await seqs()).toEqual([c.seq, a.seq, b.seq]);
    expect(ids(await index.vector({ userId: user }, q(1, 0.1, 0, 0, 0, 0, 0, 0), 10))).toEqual([c.id, a.id, b.id]);

    // Re-put there: c now points away, b toward the query (same part, same row count).
    await second.db.transaction().execute(async (trx) => {
      await otherIndex.putVectors(trx, MODEL, [put(c, vec(-1, 0, 0, 0, 0, 0, 0, 0)), put(b, vec(1, 0.1, 0, 0, 0, 0, 0, 0))]);
    });
    const hits = await backend.vector({ userId: user }, MODEL, unit, 10);
    expect(hits.map((h) => h.seq)).toEqual([b.seq, a.seq, c.seq]);
    expect(hits[0]!.score).toBeCloseTo(1, 5);

    // A chunk moved to another collection there: its vector follows into that collection's part.
    const other = await otherRows.collection(user, 'other');
    await second.db.updateTable('chunks').set({ collection_id: other }).where('id', '=', a.id).execute();
    expect(await seqs([col])).toEqual([b.seq, c.seq]);
    expect(await seqs([other])).toEqual([a.seq]);
    expect(await seqs()).toEqual([b.seq, a.seq, c.seq]);

    // A chunk deleted there (its vector goes by cascade).
    await second.db.deleteFrom('chunks').where('id', '=', b.id).execute();
    expect(await seqs()).toEqual([a.seq, c.seq]);

    // A rolled-back write there changes nothing.
    await expect(second.db.transaction().execute(async (trx) => {
      await otherIndex.putVectors(trx, MODEL, [put(c, vec(1, 0, 0, 0, 0, 0, 0, 0))]);
      expect(await seqs()).toEqual([a.seq, c.seq]);
      throw new Error('rollback');
    })).rejects.toThrow('rollback');
    expect(await seqs()).toEqual([a.seq, c.seq]);

    // The whole document deleted (here, by the first connection): chunks and vectors go by cascade.
    await first.db.deleteFrom('documents').where('id', '=', doc).execute();
    expect(await seqs()).toEqual([]);
    expect(ids(await index.vector({ userId: user }, q(1, 0, 0, 0, 0, 0, 0, 0), 10))).toEqual([]);
    expect(ids(await index.hybrid({ userId: user }, 'a b c', q(1, 0, 0, 0, 0, 0, 0, 0), 10))).toEqual([]);
  });

  it('stays within its memory budget: evicts the least recently used part, scans a too-large part in SQL', async () => {
    const dims = 64;
    const random = prng(11);
    const users: Array<{ id: string; stored: Array<{ seq: number; v: Float32Array }> }> = [];
    for (let u = 0; u < 3; u++) {
      const user = await rows.user();
      const doc = await rows.document(user);
      const stored = [];
      const puts = [];
      for (let i = 0; i < 50 * (u + 1); i++) {
        const c = await rows.chunk(doc, `chunk ${i}`);
        const v = normalize(Float32Array.from({ length: dims }, random));
        stored.push({ seq: c.seq, v });
        puts.push(put(c, v));
      }
      await index.putVectors(first.db, 'budget-64', puts);
      users.push({ id: user, stored });
    }
    const exact = (u: number, query: Float32Array) => users[u]!.stored
      .map((s) => ({ seq: s.seq, score: s.v.reduce((acc, x, i) => acc + x * query[i]!, 0) }))
      .sort((x, y) => y.score - x.score).slice(0, 5).map((e) => e.seq);
    // Room for the first two users' parts (50 and 100 vectors) but not all three; the third (150) fits alone.
    const perVector = 8 + 8; // seq (float64) + 64 sign bits
    const backend = await createSqliteBackend(first, { vectorCacheBytes: perVector * 180 + 200 });
    const search = async (u: number) => {
      const query = normalize(Float32Array.from({ length: dims }, random));
      expect((await backend.vector({ userId: users[u]!.id }, 'budget-64', query, 5)).map((r) => r.seq), `user ${u}`).toEqual(exact(u, query));
    };
    await search(0);
    await search(1);
    expect(backend.signBitCache.partIds).toHaveLength(2);
    await search(2);
    expect(backend.signBitCache.partIds).toHaveLength(1);
    expect(backend.signBitCache.bytes).toBeLessThanOrEqual(backend.signBitCache.budgetBytes);
    await search(0);
    expect(backend.signBitCache.partIds).toHaveLength(1);

    // A budget below any part: nothing cached, every search still exact (scanned in SQL).
    const tiny = await createSqliteBackend(first, { vectorCacheBytes: 100 });
    for (let u = 0; u < 3; u++) {
      const query = normalize(Float32Array.from({ length: dims }, random));
      for (let round = 0; round < 2; round++) {
        expect((await tiny.vector({ userId: users[u]!.id }, 'budget-64', query, 5)).map((r) => r.seq)).toEqual(exact(u, query));
      }
    }
    expect(tiny.signBitCache.partIds).toEqual([]);
    expect(tiny.signBitCache.bytes).toBe(0);
  });

  it('loads a part larger than a page in the background, scanning it in SQL meanwhile, and again after a write', async () => {
    const dims = 32;
    const random = prng(23);
    const user = await rows.user();
    const doc = await rows.document(user);
    const stored: Array<{ chunk: ChunkRef; v: Float32Array }> = [];
    for (let i = 0; i < 130; i++) stored.push({ chunk: await rows.chunk(doc, `chunk ${i}`), v: normalize(Float32Array.from({ length: dims }, random)) });
    await index.putVectors(first.db, 'paged-32', stored.map((s) => put(s.chunk, s.v)));
    const exact = (query: Float32Array) => stored
      .map((s) => ({ seq: s.chunk.seq, score: s.v.reduce((acc, x, i) => acc + x * query[i]!, 0) }))
      .sort((x, y) => y.score - x.score).slice(0, 5).map((e) => e.seq);
    const backend = await createSqliteBackend(first, { vectorCacheLoadPageRows: 40 });
    const search = async () => {
      const query = normalize(Float32Array.from({ length: dims }, random));
      expect((await backend.vector({ userId: user }, 'paged-32', query, 5)).map((r) => r.seq)).toEqual(exact(query));
    };
    await search();
    expect(backend.signBitCache.partIds).toEqual([]);
    await backend.signBitCacheIdle();
    expect(backend.signBitCache.partIds).toHaveLength(1);
    expect(backend.signBitCache.bytes).toBe(130 * (8 + 4) + 64); // every row: seq (float64) and 32 sign bits
    await search();

    // Another connection moves one vector: the next searches see it, whether or not the reload is done.
    const moved = stored[77]!;
    moved.v = normalize(Float32Array.from({ length: dims }, random));
    await otherIndex.putVectors(second.db, 'paged-32', [put(moved.chunk, moved.v)]);
    const target = { userId: user };
    const hits = await backend.vector(target, 'paged-32', moved.v, 1);
    expect(hits.map((h) => h.seq)).toEqual([moved.chunk.seq]);
    expect(hits[0]!.score).toBeCloseTo(1, 5);
    await backend.signBitCacheIdle();
    await search();
    await new Promise((resolve) => setTimeout(resolve, 50));
    await search();
    await backend.signBitCacheIdle();
    const again = await backend.vector(target, 'paged-32', moved.v, 1);
    expect(again.map((h) => h.seq)).toEqual([moved.chunk.seq]);
  });

  it('adds the version column to a database set up before it existed', async () => {
    const fresh = await createSqliteDatabase();
    const database = openDatabase(testConfig(fresh).database, logger);
    try {
      await migrateToLatest(database.db);
      await sql`create table chunk_vector_parts (id integer primary key, model text not null, user_id text not null, collection_key text not null, unique (model, user_id, collection_key))`.execute(database.db);
      await sql`insert into chunk_vector_parts (model, user_id, collection_key) values ('m', 'u', '')`.execute(database.db);
      await createSqliteBackend(database);
      await createSqliteBackend(database);
      const { rows: parts } = await sql<{ version: number }>`select version from chunk_vector_parts`.execute(database.db);
      expect(parts).toEqual([{ version: 0 }]);
    } finally {
      await database.close();
      await fresh.cleanup();
    }
  });
});

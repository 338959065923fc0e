// The knowledge suite (`npm run bench -- --suite knowledge`, issue #6): the knowledge base's search
// index (server/src/modules/knowledge/search) measured in process — no HTTP, no embedding model. On
// each database, one user's chunks are grown level by level (10k, then 100k by default) beside a
// tenth as many of three other users, with generated text and clustered random unit vectors; at
// each level lexical, vector and hybrid searches (limit 10) are timed call by call. Chunk inserts
// (chunks + FTS5 / tsvector) and vector writes are timed on the way.
import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { sql } from 'kysely';
import type { DatabaseConfig } from '../../server/src/config.js';
import { openDatabase, type Database } from '../../server/src/db/database.js';
import { migrateToLatest } from '../../server/src/db/migrate.js';
import { createKnowledgeIndex, type KnowledgeIndex, type SearchHit, type VectorRow } from '../../server/src/modules/knowledge/search/index.js';
import { uuidv7 } from '../../server/src/platform/ids.js';
import { createLogger } from '../../server/src/platform/logger.js';
import { gitInfo, machineInfo, type GitInfo, type MachineInfo } from '../lib/environment.js';
import type { BenchOptions, DatabaseKind } from '../lib/options.js';
import { benchSchemaName, createSchema, dropSchema, postgresVersion, redactUrl } from '../lib/postgres-schema.js';
import { ascending, percentile } from '../lib/streams.js';
import { recordSection, type SuiteContext } from '../lib/suite.js';

const DIMS = 384;
const LIMIT = 10;
const MODEL = 'bench-embed-384';
const OTHER_USERS = 3;
/** The other users together get this share of the searched user's chunks. */
const OTHER_SHARE = 0.1;
const CHUNKS_PER_DOCUMENT = 20;
const COLLECTIONS_PER_USER = 4;
/** Rows per INSERT statement and per transaction while seeding. */
const INSERT_ROWS = 1000;
const TRANSACTION_ROWS = 5000;
/** Rows per putVectors call (each in its own transaction). */
const VECTOR_ROWS = 1000;
const WARMUP_QUERIES = 20;
/** A mode stops early once it has spent this long at one level (the exact scan at 100k is slow). */
const MODE_BUDGET_MS = 120_000;
const MIN_QUERIES = 30;
/** Queries whose vector results are compared with an exact scan done here. */
const RECALL_QUERIES = 50;
/** Topic centroids the vectors cluster around. */
const TOPICS = 256;
/** Issue #6's target: hybrid p50 under this at `TARGET_CHUNKS` on SQLite. */
const TARGET_HYBRID_P50_MS = 25;
const TARGET_CHUNKS = 100_000;

type Mode = 'lexical' | 'vector' | 'hybrid';
const MODES: readonly Mode[] = ['lexical', 'vector', 'hybrid'];

interface Latency {
  readonly queries: number;
  readonly p50: number;
  readonly p99: number;
  readonly mean: number;
  /** Share of queries whose target chunk (the one the query was made from) was in the top 10. */
  readonly targetInTop: number;
  readonly cappedByBudget: boolean;
}

interface LevelResult {
  readonly database: DatabaseKind;
  readonly userChunks: number;
  readonly totalChunks: number;
  readonly vectorBackend: string;
  /** Chunks (with their documents) inserted per second at this level, FTS5 triggers / tsvector and GIN included. */
  readonly insertChunksPerS: number;
  readonly putVectorsPerS: number;
  readonly latency: Record<Mode, Latency>;
  /** Mean share of the exact top 10 (brute force here) that vector search returned. */
  readonly recallAt10: number;
  /** Median number of the database's chunks (all users) matching a query's terms (OR). */
  readonly medianMatches: number;
  readonly sizeMiB: number;
}

interface KnowledgeSection {
  readonly date: Date;
  readonly command: string;
  readonly machine: MachineInfo;
  readonly git: GitInfo;
  readonly postgresVersion: string | undefined;
  readonly postgresTarget: string | undefined;
  readonly options: BenchOptions;
  readonly levels: readonly LevelResult[];
  readonly loadAverage: { readonly start: number; readonly end: number; readonly mean: number; readonly max: number };
  readonly notes: readonly string[];
}

export async function runKnowledgeSuite(ctx: SuiteContext): Promise<number> {
  const { options, cleanup, say } = ctx;
  const date = new Date();
  const loadAtStart = os.loadavg()[0] ?? 0;
  const usesPostgres = options.databases.includes('postgres');
  const pgVersion = usesPostgres ? await postgresVersion(options.postgresUrl) : undefined;
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'keel-bench-knowledge-'));
  cleanup.defer('remove the knowledge temp dir', () => rm(tmp, { recursive: true, force: true }));
  say(`bench: knowledge suite on ${options.databases.join(' then ')}; the searched user's chunks ${options.chunks.join(' then ')}; ${options.queries} searches per mode and level (limit ${LIMIT}), in process`);

  const notes: string[] = [];
  const levels: LevelResult[] = [];
  for (const database of options.databases) {
    const warnings: string[] = [];
    const logger = createLogger({ logLevel: 'warn' }, new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) warnings.push(String((JSON.parse(line) as { msg?: string }).msg));
        cb();
      },
    }));
    let config: DatabaseConfig;
    let release: () => Promise<void>;
    const file = path.join(tmp, `${database}.db`);
    if (database === 'sqlite') {
      config = { kind: 'sqlite', url: file, schema: undefined, poolMax: 1, connectTimeoutMs: 5000, migrateOnStart: false, explicit: true };
      release = async () => {};
    } else {
      const schema = benchSchemaName();
      await createSchema(options.postgresUrl, schema);
      release = cleanup.defer(`drop schema ${schema}`, () => dropSchema(options.postgresUrl, schema));
      config = { kind: 'postgres', url: options.postgresUrl, schema, poolMax: 10, connectTimeoutMs: 5000, migrateOnStart: false, explicit: true };
    }
    const db = openDatabase(config, logger);
    const close = cleanup.defer(`close the ${database} database`, () => db.close());
    await migrateToLatest(db.db);
    const index = await createKnowledgeIndex(db, logger);
    say(`\n${database}: vector backend ${index.vectorBackend}${warnings.length > 0 ? ` (warned: ${warnings.join('; ')})` : ''}`);
    if (warnings.length > 0) notes.push(`${database}: the index warned at start: "${warnings.join('; ')}"`);

    const corpus = new Corpus(1);
    const seeded = await seedUsers(db, corpus);
    for (const target of options.chunks) {
      const grown = await grow(db, index, corpus, seeded, target, say, database);
      if (database === 'postgres') await sql`analyze`.execute(db.db);
      const result = await measureLevel(db, index, corpus, seeded, database, options.queries, say);
      const sizeMiB = database === 'sqlite' ? await sqliteSize(file) : await postgresSize(db);
      levels.push({ ...result, ...grown, sizeMiB });
    }
    await close();
    await release();
  }

  const section: KnowledgeSection = {
    date,
    command: ctx.command,
    machine: machineInfo(),
    git: await gitInfo(ctx.repoRoot),
    postgresVersion: pgVersion,
    postgresTarget: usesPostgres ? redactUrl(options.postgresUrl) : undefined,
    options,
    levels,
    loadAverage: {
      start: loadAtStart,
      end: os.loadavg()[0] ?? 0,
      mean: LOAD_SAMPLES.reduce((a, b) => a + b, 0) / Math.max(1, LOAD_SAMPLES.length),
      max: Math.max(loadAtStart, ...LOAD_SAMPLES),
    },
    notes,
  };
  const problems = levels.filter((l) => l.latency.hybrid.targetInTop < 0.9).map((l) => `${l.database} at ${l.userChunks}: hybrid found the target chunk in the top ${LIMIT} for only ${pct(l.latency.hybrid.targetInTop)} of queries`);
  return recordSection(ctx, 'knowledge', formatKnowledgeSection(section), problems);
}

/**
 * The machine is shared (other test runs may be going on), so the load average is sampled every 5 s,
 * from the suite's loops: a timer would starve while better-sqlite3 works synchronously.
 */
const LOAD_SAMPLES: number[] = [];
let lastSample = 0;
function sampleLoad(): void {
  if (performance.now() - lastSample < 5_000) return;
  lastSample = performance.now();
  LOAD_SAMPLES.push(os.loadavg()[0] ?? 0);
}

// ---- data ----------------------------------------------------------------------------------------

/** A small seeded PRNG (mulberry32), so every run searches the same corpus. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** English function words, in about their frequency order: the head of the Zipf distribution. */
const FUNCTION_WORDS = 'the of and to a in is that for it as with was on be by this are or from at which an have not but can all will one has its their if more also when been other into there these would them so some what than then only may'.split(' ');
/** Everyday words of technical documentation, next in frequency. */
const CONTENT_WORDS = `use used using data system file user server request value example set new first two make time number
name type list key field default error response client service api configuration option model version table query index
page document section step support feature access token account password session message event log output input function
method call return string object array format header body status code path url route endpoint database schema column row
record update delete create read write change start stop run build test deploy release install package module library
network connection port host address proxy cache memory disk storage backup restore limit rate quota usage cost price plan
team member role permission policy rule group project workspace setting environment variable secret certificate domain
search result filter sort order range date hour minute second day week month year report chart metric alert monitor
upload download image video audio text content language translation prompt answer question chat conversation reply
vector embedding chunk collection knowledge retrieval ranking score match highlight summary title heading paragraph
device phone mobile desktop browser window screen button link menu form dialog notification email invite sign login
logout reset verify confirm enable disable allow deny block retry timeout queue job worker task schedule trigger webhook`.split(/\s+/);
const SYLLABLES = ['ka', 'lo', 'mer', 'tin', 'sa', 'vo', 'ri', 'den', 'pa', 'qua', 'lex', 'mon', 'tor', 'zi', 'bel', 'cor', 'dra', 'fen', 'gul', 'hap', 'jis', 'ken', 'lum', 'nor', 'pex', 'rud', 'sor', 'tav', 'ulm', 'vex', 'wim', 'yor'];
const SUFFIXES = ['', '', '', 's', 'ing', 'ed', 'ation', 'er', 'ly'];
/** Made-up words for the long tail (real text's rare words: names, terms, identifiers). */
const TAIL_WORDS = 30_000;

/**
 * Generated text with a Zipf (s = 1) word distribution over function words, common documentation
 * words and a long tail of made-up words; sentences of 8–21 words, chunks of 100–200 words; and
 * unit vectors around 256 topic centroids.
 */
class Corpus {
  readonly vocabulary: string[];
  private readonly cdf: Float64Array;
  private readonly random: () => number;
  private readonly centroids: Float32Array[];

  constructor(seed: number) {
    this.random = prng(seed);
    const made = new Set<string>();
    const syllables = prng(99);
    while (made.size < TAIL_WORDS) {
      let w = '';
      const n = 2 + Math.floor(syllables() * 3);
      for (let j = 0; j < n; j++) w += SYLLABLES[Math.floor(syllables() * SYLLABLES.length)]!;
      made.add(w + SUFFIXES[Math.floor(syllables() * SUFFIXES.length)]!);
    }
    this.vocabulary = [...FUNCTION_WORDS, ...CONTENT_WORDS.filter((w) => !FUNCTION_WORDS.includes(w)), ...made];
    this.cdf = new Float64Array(this.vocabulary.length);
    let total = 0;
    for (let i = 0; i < this.vocabulary.length; i++) total += 1 / (i + 1);
    let acc = 0;
    for (let i = 0; i < this.vocabulary.length; i++) this.cdf[i] = acc += 1 / (i + 1) / total;
    this.centroids = Array.from({ length: TOPICS }, () => this.gaussianUnit());
  }

  word(): string {
    const r = this.random();
    let lo = 0;
    let hi = this.cdf.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.cdf[mid]! < r) lo = mid + 1;
      else hi = mid;
    }
    return this.vocabulary[lo]!;
  }

  text(): string {
    const target = 100 + Math.floor(this.random() * 101);
    const sentences: string[] = [];
    let words = 0;
    while (words < target) {
      const n = Math.min(8 + Math.floor(this.random() * 14), target - words + 3);
      const ws = Array.from({ length: n }, () => this.word());
      ws[0] = ws[0]!.charAt(0).toUpperCase() + ws[0]!.slice(1);
      sentences.push(`${ws.join(' ')}${this.random() < 0.1 ? '?' : '.'}`);
      words += n;
    }
    return sentences.join(' ');
  }

  heading(): string {
    return `${this.word()} ${this.word()} > ${this.word()}`;
  }

  /** A chunk's vector: its topic's centroid plus as much noise, at unit length. */
  chunkVector(): Float32Array {
    return mix(this.centroids[Math.floor(this.random() * TOPICS)]!, this.gaussianUnit(), 0.5);
  }

  /** A query's vector: close to its target chunk's (a paraphrase of it). */
  queryVector(target: Float32Array): Float32Array {
    return mix(target, this.gaussianUnit(), 0.7);
  }

  /** Three distinct content words of `text`: one drawn by occurrence (often a common word), two by distinct word. */
  queryWords(text: string): string[] {
    const tokens = (text.toLowerCase().match(/[a-z]+/g) ?? []).filter((w) => !FUNCTION_WORDS.includes(w));
    if (tokens.length === 0) return ['data'];
    const distinct = [...new Set(tokens)];
    const picked = new Set<string>([tokens[Math.floor(this.random() * tokens.length)]!]);
    for (let tries = 0; picked.size < 3 && tries < 50; tries++) picked.add(distinct[Math.floor(this.random() * distinct.length)]!);
    return [...picked];
  }

  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)]!;
  }

  /** A whole number from 0 to n − 1. */
  below(n: number): number {
    return Math.floor(this.random() * n);
  }

  private gaussianUnit(): Float32Array {
    const v = new Float32Array(DIMS);
    for (let i = 0; i < DIMS; i++) v[i] = Math.sqrt(-2 * Math.log(1 - this.random())) * Math.cos(2 * Math.PI * this.random());
    return unit(v);
  }
}

function unit(v: Float32Array): Float32Array {
  let s = 0;
  for (const x of v) s += x * x;
  const k = 1 / Math.sqrt(s);
  for (let i = 0; i < v.length; i++) v[i]! *= k;
  return v;
}

function mix(a: Float32Array, b: Float32Array, weightOfA: number): Float32Array {
  return unit(a.map((x, i) => x * weightOfA + b[i]! * (1 - weightOfA)));
}

interface SeedUser {
  readonly id: string;
  readonly collections: readonly string[];
  chunks: number;
}

interface Seeded {
  readonly searched: SeedUser;
  readonly others: readonly SeedUser[];
  /** The searched user's chunks: ids, texts and vectors, in insertion order (for queries and recall). */
  readonly ids: string[];
  readonly texts: string[];
  vectors: Float32Array;
}

async function seedUsers(db: Database, corpus: Corpus): Promise<Seeded> {
  const now = new Date().toISOString();
  const users: SeedUser[] = [];
  for (let u = 0; u <= OTHER_USERS; u++) {
    const id = uuidv7();
    await db.db.insertInto('users').values({ id, email: `bench-${u}-${id}@example.test`, name: null, password_hash: null, created_at: now, updated_at: now }).execute();
    const collections: string[] = [];
    for (let c = 0; c < COLLECTIONS_PER_USER; c++) {
      const cid = uuidv7();
      await db.db.insertInto('collections').values({ id: cid, user_id: id, name: `${corpus.word()} ${c}`, description: null, created_at: now, updated_at: now }).execute();
      collections.push(cid);
    }
    users.push({ id, collections, chunks: 0 });
  }
  return { searched: users[0]!, others: users.slice(1), ids: [], texts: [], vectors: new Float32Array(0) };
}

/**
 * Adds the searched user's chunks up to `target` (and the others' in proportion): documents and
 * chunks through Kysely in transactions of {@link TRANSACTION_ROWS} rows, then their vectors through
 * putVectors. Returns the throughputs of both.
 */
async function grow(db: Database, index: KnowledgeIndex, corpus: Corpus, seeded: Seeded, target: number, say: (line: string) => void, database: DatabaseKind): Promise<{ userChunks: number; totalChunks: number; vectorBackend: string; insertChunksPerS: number; putVectorsPerS: number }> {
  const plan: Array<{ user: SeedUser; count: number }> = [{ user: seeded.searched, count: target - seeded.searched.chunks }];
  const othersTarget = Math.round((target * OTHER_SHARE) / OTHER_USERS);
  for (const other of seeded.others) plan.push({ user: other, count: othersTarget - other.chunks });

  // The rows are generated before the clock starts: the figure is the database's, not the generator's.
  type ChunkInsert = { id: string; document_id: string; user_id: string; collection_id: string | null; ordinal: number; heading: string | null; text: string; token_count: number; created_at: string };
  type DocumentInsert = { id: string; user_id: string; collection_id: string | null };
  const docs: DocumentInsert[] = [];
  const chunks: ChunkInsert[] = [];
  const now = new Date().toISOString();
  for (const { user, count } of plan) {
    for (let made = 0; made < count; made += CHUNKS_PER_DOCUMENT) {
      const doc: DocumentInsert = { id: uuidv7(), user_id: user.id, collection_id: corpus.pick([...user.collections, null]) };
      docs.push(doc);
      const heading = corpus.heading();
      for (let i = 0; i < Math.min(CHUNKS_PER_DOCUMENT, count - made); i++) {
        const text = corpus.text();
        chunks.push({ id: uuidv7(), document_id: doc.id, user_id: user.id, collection_id: doc.collection_id, ordinal: i, heading, text, token_count: text.split(' ').length, created_at: now });
      }
    }
    user.chunks += Math.max(0, count);
  }

  // Transactions of whole documents, about TRANSACTION_ROWS chunks each.
  const parts: Array<{ docs: DocumentInsert[]; chunks: ChunkInsert[] }> = [];
  const chunksOf = new Map<string, ChunkInsert[]>();
  for (const c of chunks) {
    const list = chunksOf.get(c.document_id);
    if (list) list.push(c);
    else chunksOf.set(c.document_id, [c]);
  }
  for (const doc of docs) {
    let part = parts[parts.length - 1];
    if (part === undefined || part.chunks.length >= TRANSACTION_ROWS) parts.push((part = { docs: [], chunks: [] }));
    part.docs.push(doc);
    part.chunks.push(...(chunksOf.get(doc.id) ?? []));
  }
  const stored: Array<{ seq: number; id: string; user_id: string }> = [];
  const started = performance.now();
  for (const { docs: partDocs, chunks: part } of parts) {
    sampleLoad();
    await db.db.transaction().execute(async (trx) => {
      for (let i = 0; i < partDocs.length; i += INSERT_ROWS) {
        await trx.insertInto('documents').values(partDocs.slice(i, i + INSERT_ROWS).map((d) => ({
          id: d.id, user_id: d.user_id, collection_id: d.collection_id, filename: `${d.id}.md`, kind: 'markdown', media_type: 'text/markdown',
          bytes: 1, sha256: d.id, dedupe_scope: d.collection_id ?? '', status: 'ready', error: null, job_id: null, embedding_model: MODEL,
          created_at: now, updated_at: now,
        }))).execute();
      }
      for (let i = 0; i < part.length; i += INSERT_ROWS) {
        const rows = await trx.insertInto('chunks').values(part.slice(i, i + INSERT_ROWS)).returning(['seq', 'id', 'user_id']).execute();
        stored.push(...rows.map((r) => ({ seq: Number(r.seq), id: r.id, user_id: r.user_id })));
      }
    });
  }
  const insertS = (performance.now() - started) / 1000;

  const searchedBefore = seeded.ids.length;
  const vectorRows: VectorRow[] = [];
  const byId = new Map(chunks.map((c) => [c.id, c]));
  const grownVectors = new Float32Array((searchedBefore + plan[0]!.count) * DIMS);
  grownVectors.set(seeded.vectors);
  for (const s of stored) {
    const vector = corpus.chunkVector();
    const c = byId.get(s.id)!;
    vectorRows.push({ chunkSeq: s.seq, chunkId: s.id, userId: s.user_id, collectionId: c.collection_id, vector });
    if (s.user_id === seeded.searched.id) {
      grownVectors.set(vector, seeded.ids.length * DIMS);
      seeded.ids.push(s.id);
      seeded.texts.push(c.text);
    }
  }
  seeded.vectors = grownVectors;
  const vectorsStarted = performance.now();
  for (let i = 0; i < vectorRows.length; i += VECTOR_ROWS) {
    sampleLoad();
    await db.db.transaction().execute((trx) => index.putVectors(trx, MODEL, vectorRows.slice(i, i + VECTOR_ROWS)));
  }
  const vectorsS = (performance.now() - vectorsStarted) / 1000;
  const totalChunks = seeded.searched.chunks + seeded.others.reduce((n, o) => n + o.chunks, 0);
  const result = {
    userChunks: seeded.searched.chunks,
    totalChunks,
    vectorBackend: index.vectorBackend,
    insertChunksPerS: chunks.length / insertS,
    putVectorsPerS: vectorRows.length / vectorsS,
  };
  say(`${database}: ${result.userChunks} chunks of the searched user (${totalChunks} in all): inserted ${chunks.length} at ${Math.round(result.insertChunksPerS)} chunks/s, their vectors at ${Math.round(result.putVectorsPerS)}/s`);
  return result;
}

// ---- measurement ---------------------------------------------------------------------------------

async function measureLevel(db: Database, index: KnowledgeIndex, corpus: Corpus, seeded: Seeded, database: DatabaseKind, queryCount: number, say: (line: string) => void): Promise<Pick<LevelResult, 'database' | 'latency' | 'recallAt10' | 'medianMatches'>> {
  const scope = { userId: seeded.searched.id };
  const warmup = Array.from({ length: WARMUP_QUERIES }, () => makeQuery(corpus, seeded));
  const queries = Array.from({ length: queryCount }, () => makeQuery(corpus, seeded));
  const run = (mode: Mode, q: Query): Promise<SearchHit[]> => {
    const qv = { model: MODEL, vector: q.vector };
    if (mode === 'lexical') return index.lexical(scope, q.text, LIMIT);
    if (mode === 'vector') return index.vector(scope, qv, LIMIT);
    return index.hybrid(scope, q.text, qv, LIMIT);
  };
  const latency = {} as Record<Mode, Latency>;
  for (const mode of MODES) {
    for (const q of warmup) await run(mode, q);
    const times: number[] = [];
    let hitsTarget = 0;
    let capped = false;
    const started = performance.now();
    for (const q of queries) {
      sampleLoad();
      const t0 = performance.now();
      const hits = await run(mode, q);
      times.push(performance.now() - t0);
      if (hits.some((h) => h.chunk_id === q.targetId)) hitsTarget++;
      if (times.length >= MIN_QUERIES && times.length < queries.length && performance.now() - started > MODE_BUDGET_MS) {
        capped = true;
        break;
      }
    }
    const sorted = ascending(times);
    latency[mode] = {
      queries: times.length,
      p50: percentile(sorted, 50),
      p99: percentile(sorted, 99),
      mean: times.reduce((a, b) => a + b, 0) / times.length,
      targetInTop: hitsTarget / times.length,
      cappedByBudget: capped,
    };
    say(`${database}: ${seeded.searched.chunks} chunks: ${mode.padEnd(7)} p50 ${ms(latency[mode].p50)} ms, p99 ${ms(latency[mode].p99)} ms over ${times.length} searches${capped ? ' (time budget reached)' : ''}; target in top ${LIMIT}: ${pct(latency[mode].targetInTop)}`);
  }

  // Vector recall against an exact scan done here, and how many chunks the queries' terms match.
  let recall = 0;
  const matches: number[] = [];
  const recallSet = queries.slice(0, RECALL_QUERIES);
  for (const q of recallSet) {
    const exact = exactTop(seeded, q.vector, LIMIT);
    const got = new Set((await index.vector(scope, { model: MODEL, vector: q.vector }, LIMIT)).map((h) => h.chunk_id));
    recall += exact.filter((id) => got.has(id)).length / exact.length;
    matches.push(await matchCount(db, q.terms));
  }
  const recallAt10 = recall / recallSet.length;
  const medianMatches = percentile(ascending(matches), 50);
  say(`${database}: ${seeded.searched.chunks} chunks: vector recall@${LIMIT} ${recallAt10.toFixed(3)} (${recallSet.length} queries against an exact scan); a query's terms match ${medianMatches} chunks (median, all users)`);
  return { database, latency, recallAt10, medianMatches };
}

interface Query {
  readonly text: string;
  readonly terms: readonly string[];
  readonly vector: Float32Array;
  readonly targetId: string;
}

/** A question made from three words of one of the searched user's chunks, with a vector near that chunk's. */
function makeQuery(corpus: Corpus, seeded: Seeded): Query {
  const i = corpus.below(seeded.ids.length);
  const terms = corpus.queryWords(seeded.texts[i]!);
  return {
    text: `How do I ${terms[0]} the ${terms[1] ?? ''} with ${terms[2] ?? ''}?`,
    terms,
    vector: corpus.queryVector(seeded.vectors.slice(i * DIMS, (i + 1) * DIMS)),
    targetId: seeded.ids[i]!,
  };
}

function exactTop(seeded: Seeded, query: Float32Array, k: number): string[] {
  const q = unit(Float32Array.from(query));
  const scores: Array<[number, number]> = [];
  for (let i = 0; i < seeded.ids.length; i++) {
    let s = 0;
    const off = i * DIMS;
    for (let d = 0; d < DIMS; d++) s += seeded.vectors[off + d]! * q[d]!;
    scores.push([s, i]);
  }
  return scores.sort((a, b) => b[0] - a[0]).slice(0, k).map(([, i]) => seeded.ids[i]!);
}

async function matchCount(db: Database, terms: readonly string[]): Promise<number> {
  if (db.dialect.fullText === 'fts5') {
    const { rows } = await sql<{ n: number }>`select count(*) as n from chunks_fts where chunks_fts match ${terms.map((t) => `"${t}"`).join(' OR ')}`.execute(db.db);
    return Number(rows[0]!.n);
  }
  const { rows } = await sql<{ n: number }>`select count(*) as n from chunks where tsv @@ to_tsquery('english', ${terms.map((t) => `'${t}'`).join(' | ')})`.execute(db.db);
  return Number(rows[0]!.n);
}

async function sqliteSize(file: string): Promise<number> {
  let bytes = 0;
  for (const f of [file, `${file}-wal`]) bytes += await stat(f).then((s) => s.size, () => 0);
  return bytes / 1024 ** 2;
}

async function postgresSize(db: Database): Promise<number> {
  const { rows } = await sql<{ bytes: number }>`
    select coalesce(sum(pg_total_relation_size(c.oid)), 0) as bytes from pg_class c
    join pg_namespace n on n.oid = c.relnamespace where n.nspname = current_schema() and c.relkind = 'r'`.execute(db.db);
  return Number(rows[0]!.bytes) / 1024 ** 2;
}

// ---- results -------------------------------------------------------------------------------------

const ms = (x: number): string => (x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : Math.round(x).toString());
const pct = (x: number): string => `${Math.round(x * 100)}%`;

function formatKnowledgeSection(s: KnowledgeSection): string {
  const { machine: m, options: o } = s;
  const dirty = s.git.changedPaths > 0
    ? ` — working tree dirty (${s.git.changedPaths} changed path${s.git.changedPaths === 1 ? '' : 's'}), so the measured code includes uncommitted changes`
    : ' (clean working tree)';
  const capped = s.levels.flatMap((l) => MODES.filter((mode) => l.latency[mode].cappedByBudget).map((mode) => `${l.database} ${l.userChunks} ${mode}`));
  const lines = [
    `## ${s.date.toISOString()} — Knowledge search index`,
    '',
    `- **Command:** \`${s.command}\``,
    `- **Commit:** \`${s.git.commit}\`${dirty}`,
    `- **Machine:** ${m.os}; ${m.cpuCount} × ${m.cpuModel}; ${m.totalMemoryGiB} GiB RAM; Node ${m.node}; 1-minute load average ${s.loadAverage.start.toFixed(2)} at the start, ${s.loadAverage.mean.toFixed(2)} on average and ${s.loadAverage.max.toFixed(2)} at most during the run (sampled every 5 s), ${s.loadAverage.end.toFixed(2)} at the end. The suite itself keeps about one core busy (and Postgres another, on its half); anything above that is other work on the machine (other engineers' test runs share it), which slows the figures down`,
    ...(s.postgresVersion ? [`- **Postgres:** ${s.postgresVersion}, at ${s.postgresTarget}, in a throwaway schema (dropped afterwards); \`analyze\` after each level's inserts; pool of 10`] : []),
    `- **What is timed:** in-process calls to the knowledge search index (\`createKnowledgeIndex\` in \`server/src/modules/knowledge/search\`), one at a time — no HTTP, no authentication, no embedding model. A latency is one awaited \`lexical\`, \`vector\` or \`hybrid\` call with limit ${LIMIT}, from the call to the hits with their chunk text, file name and highlight. SQLite is a file (WAL) opened as Keel opens it; Postgres is reached over loopback TCP.`,
    `- **Data:** the searched user owns the level's number of chunks (levels are cumulative: ${o.chunks.join(', then ')}); ${OTHER_USERS} other users own ${Math.round(OTHER_SHARE * 100)}% as many between them, so the tables hold ${1 + OTHER_SHARE}× the level. ${CHUNKS_PER_DOCUMENT} chunks per document, documents spread over ${COLLECTIONS_PER_USER} collections and none (searches are not filtered by collection). Chunk text: 100–200 words in sentences of 8–21 words, drawn with a Zipf (s = 1) distribution over ${FUNCTION_WORDS.length} English function words, ${CONTENT_WORDS.length} common documentation words and ${TAIL_WORDS.toLocaleString('en-US')} made-up words (the long tail of rare words), plus a three-word heading. Vectors: ${DIMS}-d unit vectors, each a random one of ${TOPICS} random topic centroids mixed half and half with Gaussian noise, model name \`${MODEL}\`.`,
    `- **Queries:** ${o.queries} per mode and level (after ${WARMUP_QUERIES} unrecorded warmup queries per mode), the same ones in each mode. Each is made from one of the searched user's chunks (its *target*): "How do I ‹w1› the ‹w2› with ‹w3›?" where w1 is a word of the chunk drawn by occurrence (so often a common word) and w2, w3 are drawn among its distinct words, function words excluded; the query vector is the target's vector mixed 70/30 with noise (a paraphrase). A mode stops early once it has run for ${MODE_BUDGET_MS / 1000} s and made at least ${MIN_QUERIES} searches${capped.length > 0 ? ` (it did: ${capped.join(', ')})` : ' (none did)'}. Percentiles are nearest-rank over the measured searches.`,
    `- **Writes:** *insert* = documents and chunks inserted through Kysely, ${INSERT_ROWS} rows per INSERT, transactions of about ${TRANSACTION_ROWS} chunks, rows generated before the clock starts; the database maintains FTS5 (triggers) or the generated \`tsvector\` and its GIN index. *put vectors* = \`putVectors\` in transactions of ${VECTOR_ROWS} rows (normalization, sign bits, upsert), no embedding.`,
    `- **Vector search:** SQLite (\`sqlite-vec\`): the user's vectors' sign bits are scanned for Hamming distance in JS, from an in-process cache of them kept current by a per-part version the database bumps on every vector write (loaded during the warmup queries; a part being loaded, or too large for the cache's 256 MiB, is scanned in SQL with \`vec_distance_hamming\`), and the nearest max(10 × limit, 400) are rescored exactly (cosine, their float vectors read by key); \`recall@${LIMIT}\` compares the top ${LIMIT} with an exact scan of the same vectors done by the harness (${RECALL_QUERIES} queries). Postgres \`exact\`: every vector in scope is read (pages of 2,048) and scored in Node; \`pgvector\`: HNSW.`,
    '',
    '### Latency',
    '',
    '| database | searched user\'s chunks (all chunks) | vector backend | lexical p50 ms | lexical p99 ms | vector p50 ms | vector p99 ms | hybrid p50 ms | hybrid p99 ms | searches per mode |',
    '|---|---:|---|---:|---:|---:|---:|---:|---:|---|',
    ...s.levels.map((l) => `| ${l.database} | ${l.userChunks.toLocaleString('en-US')} (${l.totalChunks.toLocaleString('en-US')}) | ${l.vectorBackend} | ${ms(l.latency.lexical.p50)} | ${ms(l.latency.lexical.p99)} | ${ms(l.latency.vector.p50)} | ${ms(l.latency.vector.p99)} | ${ms(l.latency.hybrid.p50)} | ${ms(l.latency.hybrid.p99)} | ${MODES.map((mode) => l.latency[mode].queries).join(' / ')} |`),
    '',
    '### Quality, writes and size',
    '',
    `| database | searched user's chunks | insert chunks/s | put vectors/s | vector recall@${LIMIT} | target in top ${LIMIT}: lexical / vector / hybrid | chunks matching a query's terms (median, all users) | database size MiB |`,
    '|---|---:|---:|---:|---:|---|---:|---:|',
    ...s.levels.map((l) => `| ${l.database} | ${l.userChunks.toLocaleString('en-US')} | ${Math.round(l.insertChunksPerS).toLocaleString('en-US')} | ${Math.round(l.putVectorsPerS).toLocaleString('en-US')} | ${l.recallAt10.toFixed(3)} | ${MODES.map((mode) => pct(l.latency[mode].targetInTop)).join(' / ')} | ${l.medianMatches.toLocaleString('en-US')} | ${Math.round(l.sizeMiB).toLocaleString('en-US')} |`),
    '',
    verdict(s.levels),
  ];
  if (s.notes.length > 0) lines.push('', ...s.notes.map((n) => `- ${n}`));
  return `${lines.join('\n')}\n`;
}

function verdict(levels: readonly LevelResult[]): string {
  const level = levels.find((l) => l.database === 'sqlite' && l.userChunks === TARGET_CHUNKS);
  if (!level) return `Issue #6's target (hybrid p50 under ${TARGET_HYBRID_P50_MS} ms at ${TARGET_CHUNKS.toLocaleString('en-US')} chunks on SQLite) was not measured by this run.`;
  const p50 = level.latency.hybrid.p50;
  return `**Target** (issue #6): hybrid p50 under ${TARGET_HYBRID_P50_MS} ms at ${TARGET_CHUNKS.toLocaleString('en-US')} chunks on SQLite — **${p50 < TARGET_HYBRID_P50_MS ? 'met' : 'missed'}**: ${ms(p50)} ms (lexical alone ${ms(level.latency.lexical.p50)} ms, vector alone ${ms(level.latency.vector.p50)} ms; on SQLite the two run one after the other).`;
}

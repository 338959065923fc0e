// The ingestion suite (`npm run bench -- --suite ingestion`, issue #6): documents uploaded over HTTP
// to a real `keel serve` (the built server, production mode, no embedder), ingested by its job workers
// (parse, chunk, replace the document's chunks with the lexical index in one transaction), timed from
// the first upload until every document is `ready`. Embedding is excluded by design: no
// EMBEDDINGS_MODEL is set, so the figure is Keel's own pipeline, not a model's speed.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { gitInfo, machineInfo } from '../lib/environment.js';
import { createAccount, login } from '../lib/identity.js';
import { benchSchemaName, createSchema, dropSchema, postgresVersion } from '../lib/postgres-schema.js';
import { serverEnv, startServer } from '../lib/server-process.js';
import { percentile, ascending } from '../lib/streams.js';
import { recordSection, type SuiteContext } from '../lib/suite.js';

const DOCUMENTS = 200;
const SECTIONS_PER_DOCUMENT = 24;
const UPLOAD_CONCURRENCY = 8;
const JOB_WORKERS = 2;
const READY_TIMEOUT_MS = 10 * 60_000;

const WORDS = 'lighthouse keeper lamp lens tide harbour signal beacon storm vessel rope anchor chart compass gale fog horn mast keel hull deck cargo pilot buoy reef current channel'.split(' ');

/** A Markdown document of `SECTIONS_PER_DOCUMENT` sections of ~120 words, unique per `n`. */
function document(n: number): string {
  let seed = n * 7919 + 1;
  const word = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return WORDS[seed % WORDS.length]!;
  };
  const sections = Array.from({ length: SECTIONS_PER_DOCUMENT }, (_, s) => {
    const sentences = Array.from({ length: 10 }, () => `${Array.from({ length: 12 }, word).join(' ')}.`);
    return `## Part ${s} of document ${n}\n\n${sentences.join(' ')}\n`;
  });
  return `# Logbook ${n}\n\n${sections.join('\n')}`;
}

interface DatabaseResult {
  database: string;
  documents: number;
  chunks: number;
  bytes: number;
  uploadP50Ms: number;
  uploadP99Ms: number;
  uploadSeconds: number;
  totalSeconds: number;
  failed: number;
}

export async function runIngestionSuite(ctx: SuiteContext): Promise<number> {
  const { options, cleanup, say } = ctx;
  const date = new Date();
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'keel-bench-ingestion-'));
  cleanup.defer('remove the ingestion temp dir', () => rm(tmp, { recursive: true, force: true }));
  const docs = Array.from({ length: DOCUMENTS }, (_, i) => document(i));
  const problems: string[] = [];
  const results: DatabaseResult[] = [];
  const pgVersion = options.databases.includes('postgres') ? await postgresVersion(options.postgresUrl) : undefined;
  const loadStart = os.loadavg()[0]!;
  say(`bench: ingestion suite on ${options.databases.join(' then ')}: ${DOCUMENTS} Markdown documents (${SECTIONS_PER_DOCUMENT} sections each) over HTTP, ${JOB_WORKERS} job workers, no embedder`);

  for (const database of options.databases) {
    const dataDir = path.join(tmp, database);
    let dbEnv: Record<string, string>;
    let release = async (): Promise<void> => {};
    if (database === 'sqlite') {
      dbEnv = { DATABASE_URL: path.join(dataDir, 'keel.db') };
    } else {
      const schema = benchSchemaName();
      await createSchema(options.postgresUrl, schema);
      release = cleanup.defer(`drop schema ${schema}`, () => dropSchema(options.postgresUrl, schema));
      dbEnv = { DATABASE_URL: options.postgresUrl, DATABASE_SCHEMA: schema };
    }
    const env = serverEnv(dataDir, { ...dbEnv, JOB_WORKERS: String(JOB_WORKERS), JOB_POLL_MS: '200', STORAGE_QUOTA_MB: '0' });
    const server = await startServer({ entry: ctx.serverEntry, cwd: tmp, env });
    const stop = cleanup.defer(`stop the ${database} server`, async () => {
      await server.stop();
    });
    const account = await createAccount(ctx.serverEntry, tmp, env);
    const { accessToken } = await login(server.baseUrl, account);
    const headers = { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json' };

    const started = performance.now();
    const uploadMs: number[] = [];
    let next = 0;
    const uploader = async (): Promise<void> => {
      while (next < docs.length) {
        const i = next++;
        const t = performance.now();
        const res = await fetch(`${server.baseUrl}/documents`, { method: 'POST', headers, body: JSON.stringify({ filename: `logbook-${i}.md`, content: docs[i] }) });
        await res.arrayBuffer();
        uploadMs.push(performance.now() - t);
        if (res.status !== 202) problems.push(`${database}: upload ${i} answered ${res.status}`);
      }
    };
    await Promise.all(Array.from({ length: UPLOAD_CONCURRENCY }, uploader));
    const uploaded = performance.now();

    let stats: { chunks: number; bytes: number; documents_by_status: { ready: number; failed: number } } | undefined;
    for (;;) {
      const res = await fetch(`${server.baseUrl}/stats`, { headers });
      stats = (await res.json()) as typeof stats;
      if (stats!.documents_by_status.ready + stats!.documents_by_status.failed >= DOCUMENTS) break;
      if (performance.now() - started > READY_TIMEOUT_MS) {
        problems.push(`${database}: not every document was ready after ${READY_TIMEOUT_MS / 1000} s`);
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    const finished = performance.now();
    if (stats!.documents_by_status.failed > 0) problems.push(`${database}: ${stats!.documents_by_status.failed} documents failed`);
    const sortedUploads = ascending(uploadMs);
    const result: DatabaseResult = {
      database, documents: DOCUMENTS, chunks: stats!.chunks, bytes: stats!.bytes,
      uploadP50Ms: percentile(sortedUploads, 50), uploadP99Ms: percentile(sortedUploads, 99),
      uploadSeconds: (uploaded - started) / 1000, totalSeconds: (finished - started) / 1000, failed: stats!.documents_by_status.failed,
    };
    results.push(result);
    say(`${database}: ${result.chunks} chunks from ${DOCUMENTS} documents in ${result.totalSeconds.toFixed(1)} s → ${Math.round(result.chunks / result.totalSeconds)} chunks/s`);
    await stop();
    await release();
  }

  const git = await gitInfo(ctx.repoRoot);
  const m = machineInfo();
  const text = [
    `## ${date.toISOString()} — Knowledge ingestion over HTTP`,
    '',
    `- **Command:** \`${ctx.command}\``,
    `- **Commit:** \`${git.commit}\`${git.changedPaths > 0 ? ` — working tree dirty (${git.changedPaths} changed paths)` : ' (clean working tree)'}`,
    `- **Machine:** ${m.os}; ${m.cpuCount} × ${m.cpuModel}; ${m.totalMemoryGiB} GiB RAM; Node ${m.node}; 1-minute load average ${loadStart.toFixed(2)} at the start, ${os.loadavg()[0]!.toFixed(2)} at the end (the client, the server and Postgres share the 2 cores)`,
    ...(pgVersion ? [`- **Postgres:** ${pgVersion}, throwaway schema`] : []),
    `- **What:** ${DOCUMENTS} Markdown documents of ${SECTIONS_PER_DOCUMENT} sections (~${Math.round(Buffer.byteLength(docs[0]!) / 1024)} KiB each) uploaded as JSON by ${UPLOAD_CONCURRENCY} concurrent clients to the built server (\`keel serve\`, production mode, ${JOB_WORKERS} in-process job workers, no embedder: embedding excluded), timed from the first upload until \`GET /stats\` shows every document \`ready\`. Each job parses, chunks (400 tokens, 50 overlap) and replaces the document's chunks and their FTS5 / tsvector entries in one transaction.`,
    '',
    '| database | documents | chunks | upload p50 / p99 ms | all uploaded after s | all ready after s | chunks/s | documents/s | failed |',
    '|---|---:|---:|---|---:|---:|---:|---:|---:|',
    ...results.map((r) => `| ${r.database} | ${r.documents} | ${r.chunks.toLocaleString('en-US')} | ${r.uploadP50Ms.toFixed(1)} / ${r.uploadP99Ms.toFixed(1)} | ${r.uploadSeconds.toFixed(1)} | ${r.totalSeconds.toFixed(1)} | ${Math.round(r.chunks / r.totalSeconds).toLocaleString('en-US')} | ${(r.documents / r.totalSeconds).toFixed(1)} | ${r.failed} |`),
    '',
  ].join('\n');
  return recordSection(ctx, 'ingestion', text, problems);
}

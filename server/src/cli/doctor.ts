import { accessSync, constants, existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { ConfigError, loadConfig, type Config } from '../config.js';
import { openDatabase } from '../db/database.js';
import { migrationStatus } from '../db/migrate.js';
import { createLogger } from '../platform/logger.js';
import { closeRedis, createRedis, waitForRedis } from '../platform/redis.js';
import { DEFAULT_WEB_DIR } from '../web.js';
import { createEmbedder } from '../modules/knowledge/embeddings/index.js';
import { createProviders } from '../modules/llm/providers/index.js';

interface Finding {
  ok: boolean;
  warn?: boolean;
  text: string;
}

/**
 * `keel doctor`: checks configuration, the data directory, the database and its migrations, Redis,
 * and the web console, and says in plain words what is wrong and how to fix it. Exit 1 on any problem.
 */
export async function runDoctor(env: Record<string, string | undefined>, out: (line: string) => void = (l) => process.stdout.write(`${l}\n`)): Promise<number> {
  const findings: Finding[] = [];
  let config: Config;
  try {
    config = loadConfig(env, { persistDevSecret: false });
    findings.push({ ok: true, text: `configuration is valid (NODE_ENV=${config.env})` });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const p of err.problems) findings.push({ ok: false, text: p });
    report(findings, out);
    return 1;
  }

  if (config.secretKeySource !== 'env') findings.push({ ok: true, warn: true, text: 'SECRET_KEY is not set: development uses a generated one kept in the data directory; production refuses to start without it' });
  findings.push(checkDataDir(config.dataDir));

  const logger = createLogger({ logLevel: 'silent' });
  const database = openDatabase({ ...config.database, connectTimeoutMs: Math.min(config.database.connectTimeoutMs, 3000) }, logger);
  try {
    await database.ping(3000);
    findings.push({ ok: true, text: `database reachable (${database.dialect.name}: ${describeDb(config)})` });
    const { applied, pending } = await migrationStatus(database.db);
    findings.push(pending.length === 0
      ? { ok: true, text: `migrations up to date (${applied.length} applied)` }
      : { ok: false, warn: config.database.migrateOnStart, text: `${pending.length} migration(s) pending: ${pending.join(', ')}${config.database.migrateOnStart ? ' (they will be applied when the server starts)' : ' — run `keel migrate`'}` });
  } catch (err) {
    findings.push({ ok: false, text: `cannot reach the database (${describeDb(config)}): ${(err as Error).message}` });
  } finally {
    await database.close();
  }

  if (config.redisUrl) {
    const redis = createRedis(config.redisUrl, logger, 'keel-doctor');
    try {
      await waitForRedis(redis, 3000);
      await redis.ping();
      findings.push({ ok: true, text: 'Redis reachable: rate limits and events are shared across instances' });
    } catch (err) {
      findings.push({ ok: false, text: `cannot reach Redis at REDIS_URL: ${(err as Error).message}` });
    } finally {
      await closeRedis(redis);
    }
  } else {
    findings.push({ ok: true, warn: true, text: 'REDIS_URL is not set: rate limits and events stay in this process (fine for one instance)' });
  }

  findings.push(...(await checkProviders(config)));
  findings.push(await checkEmbeddings(config));

  const webDir = config.webDir ?? DEFAULT_WEB_DIR;
  findings.push(existsSync(path.join(webDir, 'index.html'))
    ? { ok: true, text: `web console built (${webDir})` }
    : { ok: true, warn: true, text: `web console not built (${webDir}): run \`npm run build\`; the API works without it` });

  report(findings, out);
  return findings.some((f) => !f.ok && !f.warn) ? 1 : 0;
}

/** Asks every configured LLM provider whether it answers (5 s each, in parallel). */
async function checkProviders(config: Config): Promise<Finding[]> {
  const providers = createProviders(config.llm);
  if (providers.size === 0) return [{ ok: true, warn: true, text: 'no LLM provider configured: set LLM_BASE_URL + LLM_API_KEY + LLM_MODEL, a provider key, or keel.config.yaml (docs/llm.md)' }];
  return Promise.all([...providers.values()].map(async (p) => {
    const { ok, detail } = await p.check({ signal: AbortSignal.timeout(5000) });
    return ok ? { ok: true, text: `LLM provider ${p.name}: ${detail}` } : { ok: false, text: `LLM provider ${p.name} does not answer: ${detail}` };
  }));
}

/** Asks the knowledge base's embeddings provider for one tiny embedding (its key, model and reachability). */
async function checkEmbeddings(config: Config): Promise<Finding> {
  const embedder = createEmbedder(config.knowledge.embeddings, createLogger({ logLevel: 'silent' }));
  if (!embedder) return { ok: true, warn: true, text: 'no embeddings configured (EMBEDDINGS_MODEL): knowledge search is lexical only (docs/knowledge.md)' };
  const { ok, detail } = await embedder.check();
  return ok ? { ok: true, text: `embeddings ${embedder.model}: ${detail}` } : { ok: false, text: `embeddings ${embedder.model} do not answer: ${detail}` };
}

function checkDataDir(dir: string): Finding {
  try {
    mkdirSync(dir, { recursive: true });
    accessSync(dir, constants.W_OK);
    return { ok: true, text: `data directory writable (${dir})` };
  } catch (err) {
    return { ok: false, text: `data directory ${dir} is not writable: ${(err as Error).message}` };
  }
}

function describeDb(config: Config): string {
  if (config.database.kind === 'sqlite') return config.database.url;
  const u = new URL(config.database.url);
  return `${u.hostname}:${u.port || '5432'}${u.pathname}`;
}

function report(findings: Finding[], out: (line: string) => void): void {
  for (const f of findings) out(`${f.ok ? (f.warn ? '!' : '✓') : '✗'} ${f.text}`);
  const problems = findings.filter((f) => !f.ok && !f.warn).length;
  out(problems === 0 ? '\nNo problems found.' : `\n${problems} problem(s) found.`);
}

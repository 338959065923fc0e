// `npm run bench`: starts the built server and measures it, then appends what it measured to
// bench/RESULTS.md. Suites (`--suite`): `http` (default) loads each HTTP scenario with autocannon on
// SQLite, then on Postgres; `gateway` (bench/gateway.ts) measures the LLM gateway's overhead against
// a fake upstream; `chat` (bench/chat.ts) the chat WebSockets held and chat streamed over SSE and
// WebSocket; `all` runs the three; `knowledge` (bench/suites/knowledge.ts) the knowledge base's search
// index, in process. See bench/README.md.
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Cleanup } from './lib/cleanup.js';
import { gitInfo, machineInfo, packageVersion } from './lib/environment.js';
import { builtArgon2Params, createAccount, describeArgon2 } from './lib/identity.js';
import { isClean, loadScenario, type LoadMeasurement, type LoadSettings } from './lib/load.js';
import { BENCH_ENV_VARIABLES, parseOptions, USAGE, UsageError, type BenchOptions, type DatabaseKind } from './lib/options.js';
import { benchSchemaName, createSchema, dropSchema, postgresVersion, redactUrl } from './lib/postgres-schema.js';
import { appendResults, formatSection, type ResultsSection, type RunRecord } from './lib/results.js';
import { SCENARIOS } from './lib/scenarios.js';
import { serverEnv, startServer } from './lib/server-process.js';
import { runChatSuite } from './chat.js';
import { runGatewaySuite } from './gateway.js';
import { runIngestionSuite } from './suites/ingestion.js';
import { runKnowledgeSuite } from './suites/knowledge.js';

const REPO_ROOT = path.resolve(import.meta.dirname, '..');
const SERVER_ENTRY = path.join(REPO_ROOT, 'server/dist/main.js');
/** The built module that hashes passwords: the argon2id parameters are read from it. */
const PASSWORDS_MODULE = path.join(REPO_ROOT, 'server/dist/modules/auth/passwords.js');
const RESULTS_FILE = path.join(REPO_ROOT, 'bench/RESULTS.md');

async function main(argv: readonly string[]): Promise<number> {
  let options: BenchOptions;
  try {
    options = parseOptions(argv, process.env);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`bench: ${err.message}\n\n${USAGE}\n`);
    return 64;
  }
  if (options.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (!existsSync(SERVER_ENTRY)) {
    process.stderr.write(`bench: ${path.relative(REPO_ROOT, SERVER_ENTRY)} is missing: run \`npm run build\` first (\`npm run bench\` does).\n`);
    return 1;
  }

  const cleanup = new Cleanup();
  const onSignal = (signal: NodeJS.Signals): void => {
    process.stderr.write(`\nbench: ${signal}: stopping the server and cleaning up; nothing is recorded\n`);
    void cleanup.runAll().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const command = commandLine(argv, process.env);
    let code = 0;
    if (options.suite === 'http' || options.suite === 'all') code = Math.max(code, await httpSuite(options, command, cleanup));
    if (options.suite === 'gateway' || options.suite === 'all') {
      if (options.suite === 'all') say('');
      code = Math.max(code, await runGatewaySuite({ options, command, cleanup, repoRoot: REPO_ROOT, serverEntry: SERVER_ENTRY, resultsFile: RESULTS_FILE, say }));
    }
    if (options.suite === 'chat' || options.suite === 'all') {
      if (options.suite === 'all') say('');
      code = Math.max(code, await runChatSuite({ options, command, cleanup, repoRoot: REPO_ROOT, serverEntry: SERVER_ENTRY, resultsFile: RESULTS_FILE, say }));
    }
    if (options.suite === 'knowledge') {
      code = Math.max(code, await runKnowledgeSuite({ options, command, cleanup, repoRoot: REPO_ROOT, serverEntry: SERVER_ENTRY, resultsFile: RESULTS_FILE, say }));
    }
    if (options.suite === 'ingestion') {
      code = Math.max(code, await runIngestionSuite({ options, command, cleanup, repoRoot: REPO_ROOT, serverEntry: SERVER_ENTRY, resultsFile: RESULTS_FILE, say }));
    }
    return code;
  } finally {
    await cleanup.runAll();
  }
}

/** The HTTP scenarios (README "Scenarios") on each database; one section in RESULTS.md. */
async function httpSuite(options: BenchOptions, command: string, cleanup: Cleanup): Promise<number> {
  const date = new Date();
  const usesPostgres = options.databases.includes('postgres');
  const pgVersion = usesPostgres ? await reachPostgres(options.postgresUrl) : undefined;
  const argon2 = await builtArgon2Params(PASSWORDS_MODULE);

  const tmp = await mkdtemp(path.join(os.tmpdir(), 'keel-bench-'));
  cleanup.defer('remove the temp dir', () => rm(tmp, { recursive: true, force: true }));

  say(`bench: http suite on ${options.databases.join(' then ')}; per scenario ${options.warmupS} s warmup + ${options.durationS} s measured, ${options.connections} connections, pipelining ${options.pipelining} (unless a scenario sets its own)`);
  say(`bench: passwords hashed with ${describeArgon2(argon2)} (read from the built server)`);
  const runs: RunRecord[] = [];
  const notes: string[] = [];
  for (const database of options.databases) {
    const dataDir = path.join(tmp, database);
    await mkdir(dataDir);
    const target = await prepareDatabase(database, options.postgresUrl, dataDir, cleanup);
    say(`\n${database}: starting node server/dist/main.js serve (${target.description})`);
    const env = serverEnv(dataDir, target.env);
    const server = await startServer({ entry: SERVER_ENTRY, cwd: dataDir, env });
    const stopServer = cleanup.defer(`stop the ${database} server`, async () => {
      const exit = await server.stop();
      if (exit.killed) notes.push(`The ${database} server did not exit within 20 s of SIGTERM and was killed.`);
      else if (exit.code !== 0) notes.push(`The ${database} server exited with ${exit.signal ?? `code ${exit.code}`} after SIGTERM.`);
    });
    say(`${database}: ready at ${server.baseUrl} (pid ${server.pid ?? '?'})`);

    // The account the identity scenarios sign in with, made by the built CLI in the server's database.
    const account = await createAccount(SERVER_ENTRY, dataDir, env);
    say(`${database}: created ${account.email} with keel create-admin`);

    for (const scenario of SCENARIOS) {
      const settings: LoadSettings = {
        ...options,
        connections: scenario.connections ?? options.connections,
        pipelining: scenario.pipelining ?? options.pipelining,
      };
      const prepared = await scenario.setup(server.baseUrl, { account });
      const { warmup, warmupProblems, measured, problems } = await loadScenario(server.baseUrl, settings, (n) => prepared.plan(n));
      if (warmup !== undefined && (!isClean(warmup) || warmupProblems.length > 0)) {
        say(`  ${scenario.name}: warning: the warmup had ${warmup.non2xx} non-2xx and ${warmup.errors} errors${warmupProblems.length > 0 ? `; ${warmupProblems.join('; ')}` : ''}`);
      }
      say(`  ${scenario.name.padEnd(20)} ${describe(measured, settings)}${problems.length > 0 ? `  ⚠ ${problems.join('; ')}` : ''}`);
      runs.push({ scenario: scenario.name, database, connections: settings.connections, pipelining: settings.pipelining, measured, problems });
    }
    await stopServer();
    await target.release();
  }

  const git = await gitInfo(REPO_ROOT);
  const section: ResultsSection = {
    date,
    command,
    machine: machineInfo(),
    postgresVersion: pgVersion,
    git,
    autocannonVersion: packageVersion('autocannon'),
    argon2: describeArgon2(argon2),
    options,
    postgresTarget: usesPostgres ? redactUrl(options.postgresUrl) : undefined,
    runs,
    notes,
  };
  say(`\n${formatSection(section)}`);
  if (options.write) {
    await appendResults(RESULTS_FILE, section);
    say(`bench: appended to ${path.relative(REPO_ROOT, RESULTS_FILE)}`);
  } else {
    say('bench: --no-write: RESULTS.md left as it was');
  }

  const flagged = runs.filter((r) => !isClean(r.measured) || r.problems.length > 0).length;
  if (flagged > 0 || notes.length > 0) {
    process.stderr.write(`bench: ${flagged} run(s) had non-2xx responses, errors or failed checks${notes.length > 0 ? `; ${notes.join(' ')}` : ''}\n`);
    return 1;
  }
  return 0;
}

interface DatabaseTarget {
  /** DATABASE_URL (and DATABASE_SCHEMA) for the server. */
  readonly env: Readonly<Record<string, string>>;
  readonly description: string;
  /** Drops what `prepareDatabase` created (the SQLite file goes with the temp dir). */
  release(): Promise<void>;
}

async function prepareDatabase(database: DatabaseKind, postgresUrl: string, dataDir: string, cleanup: Cleanup): Promise<DatabaseTarget> {
  if (database === 'sqlite') {
    const file = path.join(dataDir, 'keel.db');
    return { env: { DATABASE_URL: file }, description: `SQLite file ${file}`, release: async () => {} };
  }
  const schema = benchSchemaName();
  await createSchema(postgresUrl, schema);
  const release = cleanup.defer(`drop schema ${schema}`, async () => {
    await dropSchema(postgresUrl, schema);
    say(`postgres: dropped schema ${schema}`);
  });
  return {
    env: { DATABASE_URL: postgresUrl, DATABASE_SCHEMA: schema },
    description: `schema ${schema} in ${redactUrl(postgresUrl)}`,
    release,
  };
}

async function reachPostgres(url: string): Promise<string> {
  try {
    return await postgresVersion(url);
  } catch (err) {
    throw new Error(`Postgres at ${redactUrl(url)} is not reachable (${(err as Error).message}): start it, point --postgres-url or BENCH_POSTGRES_URL at one, or run with --only sqlite`);
  }
}

/** The command as typed, with the BENCH_* variables that shaped it and any password redacted. */
function commandLine(argv: readonly string[], env: NodeJS.ProcessEnv): string {
  const vars = BENCH_ENV_VARIABLES
    .filter((name) => (env[name] ?? '').trim() !== '')
    .map((name) => `${name}=${shellQuote(name === 'BENCH_POSTGRES_URL' ? redactUrl(env[name] ?? '') : env[name] ?? '')}`);
  const args = argv.map((a) => shellQuote(/^postgres(ql)?:\/\//i.test(a) ? redactUrl(a) : a));
  const base = env.npm_lifecycle_event === 'bench'
    ? ['npm run bench', ...(args.length > 0 ? ['--', ...args] : [])]
    : ['node --import tsx bench/run.ts', ...args];
  return [...vars, ...base].join(' ');
}

function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

function describe(m: LoadMeasurement, settings: LoadSettings): string {
  const flag = isClean(m) ? '' : '  ⚠';
  return `${Math.round(m.requestsPerSecond)} req/s, p50 ${m.latencyP50Ms} ms, p99 ${m.latencyP99Ms} ms, ${m.totalRequests} requests, ${settings.connections} conn, non-2xx ${m.non2xx}, errors ${m.errors}${flag}`;
}

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);

import { appendFile, readFile, writeFile } from 'node:fs/promises';
import type { GitInfo, MachineInfo } from './environment.js';
import { isClean, type LoadMeasurement } from './load.js';
import type { BenchOptions, DatabaseKind } from './options.js';

export interface RunRecord {
  readonly scenario: string;
  readonly database: DatabaseKind;
  /** What this scenario ran with (a scenario may override the options). */
  readonly connections: number;
  readonly pipelining: number;
  readonly measured: LoadMeasurement;
  /** Checks beyond the status codes that failed, e.g. a refresh that did not rotate. */
  readonly problems: readonly string[];
}

function isFlagged(r: RunRecord): boolean {
  return !isClean(r.measured) || r.problems.length > 0;
}

/** Everything one benchmark run records. */
export interface ResultsSection {
  readonly date: Date;
  readonly command: string;
  readonly machine: MachineInfo;
  /** `select version()`, or undefined when Postgres was not part of the run. */
  readonly postgresVersion: string | undefined;
  readonly git: GitInfo;
  readonly autocannonVersion: string;
  /** The argon2id parameters of the built server, as `describeArgon2` words them. */
  readonly argon2: string;
  readonly options: BenchOptions;
  /** Where the throwaway Postgres schema lived (password redacted). */
  readonly postgresTarget: string | undefined;
  readonly runs: readonly RunRecord[];
  /** Anything else the reader must know, e.g. a server that did not exit cleanly. */
  readonly notes: readonly string[];
}

const HEADER = `# Benchmark results

Each \`npm run bench\` appends one section here, newest last; numbers are written by \`bench/run.ts\`
from the run itself, never by hand. How the runs are made and what each scenario measures:
[README.md](README.md).

How to read a table:

- **req/s**: completed requests per second, averaged over the one-second samples of the measured run
  (the warmup before it is discarded). It counts every response, so it only means "served" when
  **non-2xx** and **errors** are 0; a run where they are not is flagged under its table.
- **p50 ms / p99 ms**: latency percentiles as the client saw them, over keep-alive connections,
  time queued in the server included; autocannon's histogram records whole milliseconds.
- **errors**: socket errors and timeouts (a request unanswered after 10 s).
- The load generator runs on the same machine as the server and competes with it for the same CPU
  cores, so every figure is a lower bound of what the server does with the machine to itself.
- The server is the production build with \`RATE_LIMIT_ENABLED=false\`: the global rate limiter, and
  the per-address, per-account and per-token limits of the sign-in routes, would otherwise answer 429
  to almost every request of a load test coming from one address and one account.

Reproduce with \`npm run bench\` (SQLite and Postgres; \`npm run bench -- --only sqlite\` without a
Postgres), options in [README.md](README.md).

Sections titled "LLM gateway overhead" come from \`npm run bench -- --suite gateway\` and explain
their own tables (method: [README.md](README.md#gateway-suite)); sections titled "Chat" from
\`npm run bench -- --suite chat\` (method: [README.md](README.md#chat-suite)).
`;

/** Appends the section to `file`, creating it with the explanatory header first when it is missing. */
export async function appendResults(file: string, section: ResultsSection): Promise<void> {
  await appendSection(file, formatSection(section));
}

/** Appends an already formatted section (the gateway suite's) to `file`, creating it with the header first when it is missing. */
export async function appendSection(file: string, text: string): Promise<void> {
  const existing = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (existing === undefined) {
    await writeFile(file, `${HEADER}\n${text}`);
    return;
  }
  const separator = existing.endsWith('\n\n') ? '' : existing.endsWith('\n') ? '\n' : '\n\n';
  await appendFile(file, `${separator}${text}`);
}

export function formatSection(s: ResultsSection): string {
  const { options: o, machine: m } = s;
  const dirty = s.git.changedPaths > 0
    ? ` — working tree dirty (${s.git.changedPaths} changed path${s.git.changedPaths === 1 ? '' : 's'}), so the measured build includes uncommitted changes`
    : ' (clean working tree)';
  const databases: string[] = [];
  if (o.databases.includes('sqlite')) databases.push('SQLite: a fresh file in a temp dir');
  if (o.databases.includes('postgres')) databases.push(`Postgres: a fresh schema \`keel_bench_<random>\` in \`${s.postgresTarget ?? o.postgresUrl}\`, dropped afterwards; default pool (DATABASE_POOL_MAX 10)`);

  const overrides = (pick: (r: RunRecord) => number, global: number): string => {
    const differing = new Map<string, number>();
    for (const r of s.runs) if (pick(r) !== global) differing.set(r.scenario, pick(r));
    return differing.size === 0 ? '' : ` (${[...differing].map(([name, n]) => `${name}: ${n}`).join('; ')})`;
  };

  const lines = [
    `## ${s.date.toISOString()}`,
    '',
    `- **Command:** \`${s.command}\``,
    `- **Commit:** \`${s.git.commit}\`${dirty}`,
    `- **Machine:** ${m.os}; ${m.cpuCount} × ${m.cpuModel}; ${m.totalMemoryGiB} GiB RAM; Node ${m.node}`,
    `- **Postgres:** ${s.postgresVersion ?? 'not part of this run'}`,
    `- **Load:** autocannon ${s.autocannonVersion}, ${o.connections} connections${overrides((r) => r.connections, o.connections)}, pipelining ${o.pipelining}${overrides((r) => r.pipelining, o.pipelining)}; per scenario ${o.warmupS} s warmup (discarded), then ${o.durationS} s measured. It runs on the same ${m.cpuCount}-core machine as the server, so the numbers are a lower bound.`,
    `- **Server:** \`node server/dist/main.js serve\` on 127.0.0.1 with NODE_ENV=production, a random 64-hex SECRET_KEY, CORS_ORIGINS=http://localhost, no REDIS_URL; **RATE_LIMIT_ENABLED=false** (the global limiter, and the per-address, per-account and per-refresh-token limits of the sign-in routes, would answer 429 to a load test from one address and one account); **LOG_LEVEL=info** with stdout to /dev/null, so the access log is written and paid for.`,
    `- **Passwords:** argon2id parameters of the built server, read from a hash its \`hashPassword\` makes (and checked against \`ARGON2_PARAMS\`): **${s.argon2}**. Every \`POST /auth/login\` verifies one such hash.`,
    `- **Identity scenarios:** one verified account per database, made with \`keel create-admin\` (the built CLI) once the server is ready. \`GET /me (JWT)\`: one signed-in session's access token on every request. \`GET /me (API key)\`: one key (scope \`llm\`) in \`X-API-Key\`. \`POST /auth/refresh\`: real rotation — each connection has its own session (one login per connection, afresh for the warmup and for the measured run) and presents the refresh token the previous response returned; every 200 is checked to carry a token not seen before. \`POST /auth/login\`: the same e-mail and password on every request, each creating a device, session and refresh token.`,
    `- **Databases:** ${databases.join('; ')}.`,
    '',
    '| scenario | database | connections | req/s | p50 ms | p99 ms | non-2xx | errors |',
    '|---|---|---:|---:|---:|---:|---:|---:|',
    ...s.runs.map((r) => {
      const x = r.measured;
      const flag = isClean(x) ? '' : ' ⚠';
      const errors = x.timeouts > 0 ? `${x.errors} (${x.timeouts} timeouts)` : String(x.errors);
      return `| ${r.scenario} | ${r.database} | ${r.connections} | ${Math.round(x.requestsPerSecond)}${r.problems.length > 0 ? ' ⚠' : ''} | ${ms(x.latencyP50Ms)} | ${ms(x.latencyP99Ms)} | ${x.non2xx}${flag} | ${errors}${flag} |`;
    }),
    '',
  ];

  const flagged = s.runs.filter(isFlagged);
  if (flagged.length === 0) {
    lines.push(`Every measured request answered 2xx, with no errors (${s.runs.map((r) => `${r.scenario} on ${r.database}: ${r.measured.totalRequests} requests`).join('; ')}).`);
  } else {
    lines.push(`**⚠ ${flagged.length} run${flagged.length === 1 ? '' : 's'} had non-2xx responses, errors or failed checks; their req/s is not a rate of successful requests:**`, '');
    for (const r of flagged) {
      const codes = Object.entries(r.measured.statusCodes).map(([code, n]) => `${code}: ${n}`).join(', ');
      const checks = r.problems.length > 0 ? `; ${r.problems.join('; ')}` : '';
      lines.push(`- ${r.scenario} on ${r.database}: ${r.measured.totalRequests} responses (${codes || 'none'}), ${r.measured.errors} errors, ${r.measured.timeouts} timeouts${checks}`);
    }
  }
  if (s.notes.length > 0) {
    lines.push('', 'Notes:', '', ...s.notes.map((n) => `- ${n}`));
  }
  lines.push('');
  return lines.join('\n');
}

/** Milliseconds with at most two decimals. */
function ms(value: number): string {
  return String(Math.round(value * 100) / 100);
}

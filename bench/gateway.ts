// The gateway suite (`npm run bench -- --suite gateway`, issue #4): what Keel's LLM gateway adds to
// a call, measured against calling the same fake OpenAI-compatible upstream directly. Streams at each
// concurrency level (1, 64, 256 by default) are timed to the first content chunk and to `[DONE]`,
// alternately against the fake and through Keel; non-streamed calls are loaded with autocannon; every
// call through Keel is checked to have written its one usage row. See README.md ("Gateway suite").
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import type http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { gitInfo, machineInfo, packageVersion, type GitInfo, type MachineInfo } from './lib/environment.js';
import { startFakeUpstream, type Behaviour, type FakeStats, type FakeUpstream } from './lib/fake-upstream.js';
import { createAccount, createApiKey, login } from './lib/identity.js';
import { isClean, loadScenario, type LoadMeasurement, type LoadOutcome } from './lib/load.js';
import type { BenchOptions } from './lib/options.js';
import { cpuTimeMs, eventLoopDelay, type EventLoopDelay } from './lib/process-memory.js';
import { CHUNK_DELAY_MS, MODEL, recordSection, STREAM_BEHAVIOUR, STREAM_USAGE, TEXT_PIECES, type SuiteContext } from './lib/suite.js';
import { inheritedEnv, serverEnv, startServer } from './lib/server-process.js';
import {
  ascending, failureCount, oneStream, percentile, runSegment, streamAgent,
  type SegmentResult, type StreamPlan, type StreamTarget,
} from './lib/streams.js';
import { openUsageReader, settledUsage, sumUsage, usageDelta, type UsageCounts, type UsageReader } from './lib/usage-rows.js';

export type GatewaySuiteContext = SuiteContext;

/** Non-streamed calls: a five-word reply, at once. */
const PLAIN_REPLY = 'Hello from the fake upstream.';
const PLAIN_BEHAVIOUR: Behaviour = { route: 'chat', reply: PLAIN_REPLY, usage: { prompt_tokens: 12, completion_tokens: 5 } };
/** The data events of a complete stream with include_usage: the role chunk, the text, the finish chunk, the usage chunk. */
const EXPECTED_EVENTS = 1 + TEXT_PIECES.length + 1 + 1;
/** Every chunk after the first comes `CHUNK_DELAY_MS` after the previous one. */
const NOMINAL_STREAM_MS = (EXPECTED_EVENTS - 1) * CHUNK_DELAY_MS;
const MESSAGES = [
  { role: 'system', content: 'You are a terse assistant.' },
  { role: 'user', content: 'Count to twenty in words, one word per token.' },
];
const STREAM_BODY = JSON.stringify({ model: MODEL, messages: MESSAGES, stream: true, stream_options: { include_usage: true } });
const PLAIN_BODY = JSON.stringify({ model: MODEL, messages: MESSAGES });
const ENDPOINT = '/v1/chat/completions';
/** Measured time per target and level is split into segments of about this long, alternating targets. */
const SEGMENT_TARGET_MS = 2_500;
const STREAM_TIMEOUT_MS = 10_000;
/** Issue #4's target: p99 added latency under this many ms at `TARGET_STREAMS` concurrent streams. */
const TARGET_ADDED_P99_MS = 2;
const TARGET_STREAMS = 64;

type TargetLabel = StreamTarget['label'];
const TARGET_NAMES: Record<TargetLabel, string> = { direct: 'direct (fake upstream)', keel: 'through Keel' };

interface Distribution {
  readonly measured: number;
  readonly streamsPerSecond: number;
  readonly ttfbP50: number;
  readonly ttfbP99: number;
  readonly completionP50: number;
  readonly completionP99: number;
}

interface Accounting {
  /** Streams started, warmup and ramps included. */
  readonly started: number;
  readonly completed: number;
  readonly failures: Readonly<Record<string, number>>;
  /** What the fake upstream received while this target was loaded. */
  readonly upstream: FakeStats;
}

/** CPU time per stream (or request) of a phase, in ms: Keel's and the fake upstream's. */
interface CpuPerCall {
  readonly keel: number;
  readonly fake: number;
}

/** The pids whose CPU time is read around each phase (undefined when unknown: no CPU figures then), and Keel's URL (its event-loop delay). */
interface Pids {
  readonly keel: number | undefined;
  readonly fake: number | undefined;
  readonly keelUrl: string;
}

interface LevelResult {
  readonly streams: number;
  readonly segmentsPerTarget: number;
  readonly segmentMs: number;
  readonly dist: Record<TargetLabel, Distribution>;
  /** Failures of the warmup segments, by target. */
  readonly warmupFailures: Record<TargetLabel, Readonly<Record<string, number>>>;
  /** Failures of the measured segments (ramps included), by target. */
  readonly measuredFailures: Record<TargetLabel, Readonly<Record<string, number>>>;
  readonly accounting: Record<TargetLabel, Accounting>;
  /** Usage rows Keel wrote during this level. */
  readonly usage: UsageCounts;
  /** CPU per stream started in the measured segments of each target (direct: Keel idles beside the load). */
  readonly cpu: Record<TargetLabel, CpuPerCall>;
  /** Keel's event-loop delay during its measured segments: the median segment's p50, the worst segment's p99 and max. */
  readonly loopDelay: EventLoopDelay | undefined;
  /** Percentile differences between the direct streams of odd and of even segments (no gateway involved). */
  readonly aa: { readonly ttfbP99: number; readonly completionP99: number } | undefined;
  readonly problems: readonly string[];
}

interface PlainResult {
  readonly outcome: Record<TargetLabel, LoadOutcome>;
  /** CPU per request sent (warmup and measured run together). */
  readonly cpu: Record<TargetLabel, CpuPerCall>;
  readonly upstream: Record<TargetLabel, FakeStats>;
  readonly usage: UsageCounts;
  readonly problems: readonly string[];
}

interface GatewaySection {
  readonly date: Date;
  readonly command: string;
  readonly machine: MachineInfo;
  readonly git: GitInfo;
  readonly autocannonVersion: string;
  readonly options: BenchOptions;
  readonly levels: readonly LevelResult[];
  readonly plain: PlainResult;
  /** os.loadavg() 1-minute figures at the start and at the end of the suite: other work on the machine. */
  readonly loadAverage: { readonly start: number; readonly end: number };
  readonly notes: readonly string[];
}

export async function runGatewaySuite(ctx: GatewaySuiteContext): Promise<number> {
  const { options, cleanup, say } = ctx;
  const date = new Date();
  const loadAtStart = os.loadavg()[0] ?? 0;
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'keel-bench-gateway-'));
  cleanup.defer('remove the gateway temp dir', () => rm(tmp, { recursive: true, force: true }));
  const notes: string[] = [];

  say(`bench: gateway suite; streams at ${options.streams.join(', ')} concurrent: per level and target ${options.warmupS} s warmup + ${options.durationS} s measured; non-streamed: ${options.connections} connections`);
  const upstreamKey = `sk-bench-${randomBytes(16).toString('hex')}`;
  const fake = await startFakeUpstream({ apiKey: upstreamKey, env: inheritedEnv() });
  const stopFake = cleanup.defer('stop the fake upstream', () => fake.stop());
  say(`gateway: fake upstream at ${fake.url} (pid ${fake.pid ?? '?'})`);
  await fake.behave(STREAM_BEHAVIOUR);

  const databaseFile = path.join(tmp, 'keel.db');
  const env = serverEnv(tmp, { DATABASE_URL: databaseFile, LLM_BASE_URL: fake.url, LLM_API_KEY: upstreamKey, LLM_MODEL: MODEL });
  const server = await startServer({ entry: ctx.serverEntry, cwd: tmp, env });
  const stopServer = cleanup.defer('stop the gateway server', async () => {
    const exit = await server.stop();
    if (exit.killed) notes.push('Keel did not exit within 20 s of SIGTERM and was killed.');
    else if (exit.code !== 0) notes.push(`Keel exited with ${exit.signal ?? `code ${exit.code}`} after SIGTERM.`);
  });
  say(`gateway: Keel ready at ${server.baseUrl} (pid ${server.pid ?? '?'}), SQLite ${databaseFile}`);
  const account = await createAccount(ctx.serverEntry, tmp, env);
  const { accessToken } = await login(server.baseUrl, account);
  const apiKey = await createApiKey(server.baseUrl, accessToken, ['llm']);
  say(`gateway: ${account.email} (keel create-admin) with an API key of scope llm`);

  const targets: Record<TargetLabel, StreamTarget> = {
    direct: { label: 'direct', origin: fake.origin, path: ENDPOINT, headers: { authorization: `Bearer ${upstreamKey}` } },
    keel: { label: 'keel', origin: server.baseUrl, path: ENDPOINT, headers: { authorization: `Bearer ${apiKey}` } },
  };
  const plan: StreamPlan = { body: STREAM_BODY, expectedEvents: EXPECTED_EVENTS, nominalStreamMs: NOMINAL_STREAM_MS, timeoutMs: STREAM_TIMEOUT_MS };
  await checkOneStream(targets, plan);

  const usage = openUsageReader(ctx.repoRoot, databaseFile);
  cleanup.defer('close the usage reader', async () => usage.close());
  await fake.take();

  const pids: Pids = { keel: server.pid, fake: fake.pid, keelUrl: server.baseUrl };
  const levels: LevelResult[] = [];
  for (const streams of options.streams) {
    levels.push(await streamLevel(streams, targets, plan, fake, usage, pids, options, say));
  }
  const plain = await plainCalls(targets, fake, usage, pids, options, say);

  await stopServer();
  await stopFake();

  const section: GatewaySection = {
    date,
    command: ctx.command,
    machine: machineInfo(),
    git: await gitInfo(ctx.repoRoot),
    autocannonVersion: packageVersion('autocannon'),
    options,
    levels,
    plain,
    loadAverage: { start: loadAtStart, end: os.loadavg()[0] ?? 0 },
    notes,
  };
  return recordSection(ctx, 'gateway', formatGatewaySection(section), [...levels.flatMap((l) => l.problems), ...plain.problems, ...notes]);
}

/** One stream to each target before any load, so a misconfiguration fails at once with its reason. */
async function checkOneStream(targets: Record<TargetLabel, StreamTarget>, plan: StreamPlan): Promise<void> {
  for (const target of Object.values(targets)) {
    const agent = streamAgent(1);
    const url = new URL(target.origin);
    const body = Buffer.byteLength(plan.body);
    const outcome = await oneStream({ agent, hostname: url.hostname, port: url.port, path: target.path, method: 'POST', headers: { ...target.headers, 'content-type': 'application/json', 'content-length': String(body) } }, plan);
    agent.destroy();
    if (!outcome.ok) throw new Error(`a first stream ${TARGET_NAMES[target.label]} failed: ${outcome.failure}`);
  }
}

/** The order of the measured segments: direct, Keel, Keel, direct, direct, Keel… (ABBA), so a drift over time weighs on both alike. */
function segmentOrder(segments: number): TargetLabel[] {
  const order: TargetLabel[] = [];
  for (let k = 0; k < segments; k++) order.push(...(k % 2 === 0 ? ['direct', 'keel'] as const : ['keel', 'direct'] as const));
  return order;
}

function addCounts(into: Record<string, number>, from: Readonly<Record<string, number>>): void {
  for (const [k, n] of Object.entries(from)) into[k] = (into[k] ?? 0) + n;
}

function addStats(a: FakeStats, b: FakeStats): FakeStats {
  const byPath = { ...a.byPath };
  addCounts(byPath, b.byPath);
  return { received: a.received + b.received, finished: a.finished + b.finished, aborted: a.aborted + b.aborted, broken: a.broken + b.broken, byPath };
}

const NO_STATS: FakeStats = { received: 0, finished: 0, aborted: 0, broken: 0, byPath: {} };

/** CPU time so far of each pid (NaN when a pid is unknown or gone). */
async function cpuNow(pids: Pids): Promise<{ keel: number; fake: number }> {
  const read = async (pid: number | undefined): Promise<number> => (pid === undefined ? Number.NaN : cpuTimeMs(pid).catch(() => Number.NaN));
  const [keel, fake] = await Promise.all([read(pids.keel), read(pids.fake)]);
  return { keel, fake };
}

async function streamLevel(
  streams: number,
  targets: Record<TargetLabel, StreamTarget>,
  plan: StreamPlan,
  fake: FakeUpstream,
  usage: UsageReader,
  pids: Pids,
  options: BenchOptions,
  say: (line: string) => void,
): Promise<LevelResult> {
  const segmentsPerTarget = Math.max(1, Math.round((options.durationS * 1000) / SEGMENT_TARGET_MS));
  const segmentMs = (options.durationS * 1000) / segmentsPerTarget;
  const agents: Record<TargetLabel, http.Agent> = { direct: streamAgent(streams), keel: streamAgent(streams) };
  const started: Record<TargetLabel, number> = { direct: 0, keel: 0 };
  const completed: Record<TargetLabel, number> = { direct: 0, keel: 0 };
  const upstream: Record<TargetLabel, FakeStats> = { direct: NO_STATS, keel: NO_STATS };
  const warmupFailures: Record<TargetLabel, Record<string, number>> = { direct: {}, keel: {} };
  const measuredFailures: Record<TargetLabel, Record<string, number>> = { direct: {}, keel: {} };
  const measured: Record<TargetLabel, SegmentResult[]> = { direct: [], keel: [] };
  const cpuSpent: Record<TargetLabel, { keel: number; fake: number; streams: number }> = { direct: { keel: 0, fake: 0, streams: 0 }, keel: { keel: 0, fake: 0, streams: 0 } };
  const delays: EventLoopDelay[] = [];

  await fake.take();
  const usageBefore = usage.count(ENDPOINT);
  let leftOpen = 0;
  const run = async (label: TargetLabel, ms: number): Promise<SegmentResult> => {
    const result = await runSegment(targets[label], agents[label], streams, ms, plan);
    started[label] += result.started;
    completed[label] += result.completed;
    const seen = await fake.take();
    upstream[label] = addStats(upstream[label], seen);
    leftOpen += seen.inFlight ?? 0;
    return result;
  };
  try {
    if (options.warmupS > 0) {
      for (const label of ['direct', 'keel'] as const) {
        const w = await run(label, options.warmupS * 1000);
        addCounts(warmupFailures[label], w.failures);
        if (failureCount(w) > 0) say(`  ${streams} streams, warmup ${label}: ⚠ ${describeFailures(w.failures)}`);
      }
    }
    for (const label of segmentOrder(segmentsPerTarget)) {
      // A scrape starts a fresh event-loop delay window; the one after the segment reads it.
      if (label === 'keel') await eventLoopDelay(pids.keelUrl).catch(() => undefined);
      const before = await cpuNow(pids);
      const r = await run(label, segmentMs);
      const after = await cpuNow(pids);
      if (label === 'keel') {
        const delay = await eventLoopDelay(pids.keelUrl).catch(() => undefined);
        if (delay) delays.push(delay);
      }
      cpuSpent[label].keel += after.keel - before.keel;
      cpuSpent[label].fake += after.fake - before.fake;
      cpuSpent[label].streams += r.started;
      measured[label].push(r);
      addCounts(measuredFailures[label], r.failures);
    }
  } finally {
    agents.direct.destroy();
    agents.keel.destroy();
  }
  const usageRows = await settledUsage(usage, ENDPOINT, usageBefore, started.keel);
  const perStream = (label: TargetLabel): CpuPerCall => ({ keel: cpuSpent[label].keel / cpuSpent[label].streams, fake: cpuSpent[label].fake / cpuSpent[label].streams });
  const cpu = { direct: perStream('direct'), keel: perStream('keel') };
  const loopDelay = delays.length === 0 ? undefined : {
    p50: ascending(delays.map((d) => d.p50))[Math.floor((delays.length - 1) / 2)]!,
    p99: Math.max(...delays.map((d) => d.p99)),
    max: Math.max(...delays.map((d) => d.max)),
  };

  const measuredS = (segmentsPerTarget * segmentMs) / 1000;
  const dist = { direct: distribution(measured.direct, measuredS), keel: distribution(measured.keel, measuredS) };
  const odd = measured.direct.filter((_, i) => i % 2 === 0);
  const even = measured.direct.filter((_, i) => i % 2 === 1);
  const aa = even.length > 0
    ? { ttfbP99: distribution(odd, 1).ttfbP99 - distribution(even, 1).ttfbP99, completionP99: distribution(odd, 1).completionP99 - distribution(even, 1).completionP99 }
    : undefined;

  const accounting: Record<TargetLabel, Accounting> = {
    direct: { started: started.direct, completed: completed.direct, failures: sumRecords(measuredFailures.direct, warmupFailures.direct), upstream: upstream.direct },
    keel: { started: started.keel, completed: completed.keel, failures: sumRecords(measuredFailures.keel, warmupFailures.keel), upstream: upstream.keel },
  };
  const problems: string[] = [];
  for (const label of ['direct', 'keel'] as const) {
    const failed = accounting[label].failures;
    if (Object.keys(failed).length > 0) problems.push(`${streams} streams ${TARGET_NAMES[label]}: ${describeFailures(failed)}`);
    if (dist[label].measured === 0) problems.push(`${streams} streams ${TARGET_NAMES[label]}: no stream measured`);
  }
  const upstreamCalls = (s: FakeStats): number => s.byPath[ENDPOINT] ?? 0;
  if (upstreamCalls(upstream.direct) !== started.direct) problems.push(`${streams} streams direct: the fake received ${upstreamCalls(upstream.direct)} chat requests for ${started.direct} streams`);
  if (upstreamCalls(upstream.keel) !== started.keel) problems.push(`${streams} streams through Keel: the fake received ${upstreamCalls(upstream.keel)} upstream calls for ${started.keel} streams (one each expected)`);
  if (leftOpen > 0) problems.push(`${streams} streams: ${leftOpen} upstream requests were still open after every stream of their segment had ended`);
  if (upstream.keel.aborted > 0) problems.push(`${streams} streams through Keel: ${upstream.keel.aborted} upstream calls were cancelled by Keel`);
  if (usageRows.total !== started.keel) problems.push(`${streams} streams through Keel: ${usageRows.total} usage rows for ${started.keel} streams (one each expected)`);
  if ((usageRows.byStatus.ok ?? 0) !== completed.keel) problems.push(`${streams} streams through Keel: ${usageRows.byStatus.ok ?? 0} usage rows with status ok for ${completed.keel} complete streams`);
  if (usageRows.estimated > 0) problems.push(`${streams} streams through Keel: ${usageRows.estimated} usage rows estimated although the upstream reported usage`);

  const result: LevelResult = { streams, segmentsPerTarget, segmentMs, dist, warmupFailures, measuredFailures, accounting, usage: usageRows, cpu, loopDelay, aa, problems };
  const d = dist.direct;
  const k = dist.keel;
  say(`  ${String(streams).padStart(3)} streams: direct ${d.measured} measured, TTFB p50/p99 ${ms(d.ttfbP50)}/${ms(d.ttfbP99)} ms, completion ${ms(d.completionP50)}/${ms(d.completionP99)} ms`);
  say(`  ${' '.repeat(3)}          Keel   ${k.measured} measured, TTFB p50/p99 ${ms(k.ttfbP50)}/${ms(k.ttfbP99)} ms, completion ${ms(k.completionP50)}/${ms(k.completionP99)} ms`);
  say(`  ${' '.repeat(3)}          added: TTFB p50 ${signed(k.ttfbP50 - d.ttfbP50)}, p99 ${signed(k.ttfbP99 - d.ttfbP99)}; completion p50 ${signed(k.completionP50 - d.completionP50)}, p99 ${signed(k.completionP99 - d.completionP99)} ms; Keel CPU ${ms(cpu.keel.keel)} ms per stream, event-loop delay p99 ${loopDelay ? ms(loopDelay.p99) : '–'} ms; usage rows ${usageRows.total} for ${started.keel} streams${problems.length > 0 ? `  ⚠ ${problems.join('; ')}` : ''}`);
  return result;
}

function sumRecords(a: Readonly<Record<string, number>>, b: Readonly<Record<string, number>>): Record<string, number> {
  const out: Record<string, number> = { ...a };
  addCounts(out, b);
  return out;
}

function distribution(segments: readonly SegmentResult[], measuredS: number): Distribution {
  const ttfb = ascending(segments.flatMap((s) => s.ttfbMs));
  const completion = ascending(segments.flatMap((s) => s.completionMs));
  return {
    measured: ttfb.length,
    streamsPerSecond: ttfb.length / measuredS,
    ttfbP50: percentile(ttfb, 50),
    ttfbP99: percentile(ttfb, 99),
    completionP50: percentile(completion, 50),
    completionP99: percentile(completion, 99),
  };
}

/** Non-streamed calls with autocannon: the fake directly, then through Keel, each with its warmup. */
async function plainCalls(
  targets: Record<TargetLabel, StreamTarget>,
  fake: FakeUpstream,
  usage: UsageReader,
  pids: Pids,
  options: BenchOptions,
  say: (line: string) => void,
): Promise<PlainResult> {
  await fake.behave(PLAIN_BEHAVIOUR);
  await fake.take();
  const settings = { connections: options.connections, pipelining: 1, durationS: options.durationS, warmupS: options.warmupS };
  const outcome = {} as Record<TargetLabel, LoadOutcome>;
  const upstream = {} as Record<TargetLabel, FakeStats>;
  const cpu = {} as Record<TargetLabel, CpuPerCall>;
  let usageRows: UsageCounts = { total: 0, byStatus: {}, estimated: 0 };
  for (const label of ['direct', 'keel'] as const) {
    const target = targets[label];
    const before = usage.count(ENDPOINT);
    const cpuBefore = await cpuNow(pids);
    outcome[label] = await loadScenario(target.origin, settings, async () => ({
      method: 'POST',
      path: target.path,
      headers: { ...target.headers, 'content-type': 'application/json' },
      body: PLAIN_BODY,
    }));
    const cpuAfter = await cpuNow(pids);
    const sentAll = [outcome[label].warmup, outcome[label].measured].reduce((n, m) => n + (m?.sentRequests ?? 0), 0);
    cpu[label] = { keel: (cpuAfter.keel - cpuBefore.keel) / sentAll, fake: (cpuAfter.fake - cpuBefore.fake) / sentAll };
    // Requests autocannon cut off at the end of a run are metered as aborted once Keel notices.
    await delay(1_000);
    upstream[label] = await fake.take();
    if (label === 'keel') usageRows = usageDelta(before, usage.count(ENDPOINT));
    const m = outcome[label].measured;
    say(`  non-streamed ${label.padEnd(6)} ${Math.round(m.requestsPerSecond)} req/s, p50 ${m.latencyP50Ms} ms, p99 ${m.latencyP99Ms} ms, ${m.totalRequests} requests, non-2xx ${m.non2xx}, errors ${m.errors}; CPU per request: Keel ${ms(cpu[label].keel)} ms, fake ${ms(cpu[label].fake)} ms`);
  }

  const problems: string[] = [];
  const runs = (label: TargetLabel): LoadMeasurement[] => [outcome[label].warmup, outcome[label].measured].filter((m): m is LoadMeasurement => m !== undefined);
  for (const label of ['direct', 'keel'] as const) {
    for (const m of runs(label)) {
      if (!isClean(m)) problems.push(`non-streamed ${TARGET_NAMES[label]}${m === outcome[label].warmup ? ' (warmup)' : ''}: ${m.non2xx} non-2xx (${Object.entries(m.statusCodes).map(([c, n]) => `${c}: ${n}`).join(', ')}), ${m.errors} errors, ${m.timeouts} timeouts`);
    }
  }
  const keelRuns = runs('keel');
  const ok2xx = keelRuns.reduce((n, m) => n + twoHundreds(m), 0);
  const sent = keelRuns.reduce((n, m) => n + m.sentRequests, 0);
  if ((usageRows.byStatus.ok ?? 0) < ok2xx) problems.push(`non-streamed through Keel: ${usageRows.byStatus.ok ?? 0} usage rows with status ok for ${ok2xx} 2xx responses`);
  if (usageRows.total > sent) problems.push(`non-streamed through Keel: ${usageRows.total} usage rows for ${sent} requests sent`);
  if ((usageRows.byStatus.error ?? 0) > 0) problems.push(`non-streamed through Keel: ${usageRows.byStatus.error ?? 0} usage rows with status error`);
  return { outcome, upstream, cpu, usage: usageRows, problems };
}

function twoHundreds(m: LoadMeasurement): number {
  return Object.entries(m.statusCodes).filter(([code]) => code.startsWith('2')).reduce((n, [, k]) => n + k, 0);
}

function describeFailures(failures: Readonly<Record<string, number>>): string {
  return Object.entries(failures).map(([why, n]) => `${n} × ${why}`).join(', ');
}

/** Milliseconds with two decimals ("–" when there is no value). */
function ms(value: number): string {
  return Number.isFinite(value) ? value.toFixed(2) : '–';
}

function signed(value: number): string {
  if (!Number.isFinite(value)) return '–';
  const fixed = value.toFixed(2);
  return value >= 0 ? `+${fixed}` : `−${fixed.slice(1)}`;
}

function added(level: LevelResult): { ttfbP50: number; ttfbP99: number; completionP50: number; completionP99: number } {
  const { direct: d, keel: k } = level.dist;
  return { ttfbP50: k.ttfbP50 - d.ttfbP50, ttfbP99: k.ttfbP99 - d.ttfbP99, completionP50: k.completionP50 - d.completionP50, completionP99: k.completionP99 - d.completionP99 };
}

/** Issue #4's target, in words: met, not met, or not measured (and why). */
function verdict(levels: readonly LevelResult[]): string {
  const level = levels.find((l) => l.streams === TARGET_STREAMS);
  const goal = `p99 added latency under ${TARGET_ADDED_P99_MS} ms at ${TARGET_STREAMS} concurrent streams, to the first content chunk and to completion`;
  if (level === undefined) return `**Target (${goal}): not measured** — this run had no ${TARGET_STREAMS}-stream level.`;
  const a = added(level);
  const figures = `added p99 to the first content chunk ${signed(a.ttfbP99)} ms, to completion ${signed(a.completionP99)} ms`;
  if (level.problems.length > 0) return `**Target (${goal}): not established** — the ${TARGET_STREAMS}-stream level had failures or failed checks (below); ${figures}.`;
  const met = a.ttfbP99 < TARGET_ADDED_P99_MS && a.completionP99 < TARGET_ADDED_P99_MS;
  const which = !met
    ? ` (${[a.ttfbP99 >= TARGET_ADDED_P99_MS ? 'first content chunk' : '', a.completionP99 >= TARGET_ADDED_P99_MS ? 'completion' : ''].filter((s) => s).join(' and ')} over the target)`
    : '';
  return `**Target (${goal}): ${met ? 'met' : 'NOT met'}** — ${figures}${which}.`;
}

function formatGatewaySection(s: GatewaySection): string {
  const { options: o, machine: m } = s;
  const dirty = s.git.changedPaths > 0
    ? ` — working tree dirty (${s.git.changedPaths} changed path${s.git.changedPaths === 1 ? '' : 's'}), so the measured build includes uncommitted changes`
    : ' (clean working tree)';
  const first = s.levels[0];
  const segments = first === undefined ? '' : `${first.segmentsPerTarget} segment${first.segmentsPerTarget === 1 ? '' : 's'} of ${(first.segmentMs / 1000).toFixed(2)} s per target`;
  const lines: string[] = [
    `## ${s.date.toISOString()} — LLM gateway overhead`,
    '',
    `- **Command:** \`${s.command}\``,
    `- **Commit:** \`${s.git.commit}\`${dirty}`,
    `- **Machine:** ${m.os}; ${m.cpuCount} × ${m.cpuModel}; ${m.totalMemoryGiB} GiB RAM; Node ${m.node}; load average (1 min) ${s.loadAverage.start.toFixed(2)} at the start, ${s.loadAverage.end.toFixed(2)} at the end (the suite's own processes included at the end)`,
    `- **Processes:** three on the same ${m.cpuCount} cores — the load generator (the benchmark process: node:http keep-alive agents with a socket per concurrent stream; autocannon ${s.autocannonVersion} for non-streamed calls), the fake upstream (\`server/test/helpers/fake-openai.ts\`, unchanged, in a child process of its own) and Keel (\`node server/dist/main.js serve\`). Through Keel, all three work on every call and share the cores; direct, Keel idles. The added latency includes that contention, so it overstates, and Keel's throughput understates, what Keel does on a machine of its own.`,
    `- **Upstream schedule:** every chat completion streams the role chunk at once, then ${TEXT_PIECES.length} one-word text chunks, the finish chunk and the usage chunk (prompt ${STREAM_USAGE.prompt_tokens}, completion ${STREAM_USAGE.completion_tokens} tokens), each ${CHUNK_DELAY_MS} ms after the previous, then \`[DONE]\`: ${EXPECTED_EVENTS} data events over ≈${NOMINAL_STREAM_MS} ms. The first content chunk therefore comes ≈${CHUNK_DELAY_MS} ms after the headers, in both cases. Non-streamed calls answer "${PLAIN_REPLY}" at once.`,
    `- **Keel:** SQLite (a fresh file), LLM_BASE_URL = the fake, LLM_API_KEY, LLM_MODEL=${MODEL}, no usage limits configured (Keel's default: each call reads the user's limit overrides before calling the upstream — no counters are kept for windows no limit watches — and inserts its one usage row just after its response has ended, off the client's path); the requested model is LLM_MODEL itself (no alias), so Keel relays the upstream's SSE bytes as they arrive instead of re-serializing each chunk; NODE_ENV=production, **RATE_LIMIT_ENABLED=false**, **LOG_LEVEL=info** with stdout to /dev/null. Credential: an API key (scope \`llm\`) of an account made with \`keel create-admin\`, sent as \`Authorization: Bearer\` as the OpenAI SDKs send it; the direct calls send the upstream key the same way.`,
    `- **Streams:** the same request to both targets (\`stream: true\`, \`stream_options.include_usage\`). Per level: ${o.warmupS} s warmup per target (discarded), then ${o.durationS} s measured per target in ${segments}, alternating direct and Keel in ABBA order (D K K D D K…). Within a segment, N workers each issue one stream after another; their first starts are spread over one stream length, and a stream is measured when it starts inside the segment's window, which opens once every worker is streaming and whose streams all run alongside N − 1 others to their end. **TTFB** = request written → the chunk with the first non-empty \`delta.content\` read; **completion** = request written → \`data: [DONE]\` read. A stream counts only with status 200, all ${EXPECTED_EVENTS} data events, no error event and \`[DONE]\`.`,
    '- **Added latency** = Keel\'s percentile minus the direct percentile, percentile by percentile (the streams are different requests, so these are differences between the two distributions, not per-request differences). **A/A** = the same p99 difference between the direct streams of odd and of even segments, with no gateway involved: how much a p99 difference moves by chance at that level. Percentiles are nearest-rank over every measured stream; p99 of a few hundred streams rests on its few slowest.',
    `- **Non-streamed:** autocannon, ${o.connections} connections, pipelining 1, ${o.warmupS} s warmup then ${o.durationS} s measured, direct then through Keel; latency in whole milliseconds (autocannon's histogram).`,
    '',
    '### Streams: added latency (Keel − direct)',
    '',
    '| concurrent streams | TTFB p50 ms | TTFB p99 ms | completion p50 ms | completion p99 ms | A/A TTFB p99 ms | A/A completion p99 ms |',
    '|---:|---:|---:|---:|---:|---:|---:|',
    ...s.levels.map((l) => {
      const a = added(l);
      const flag = l.problems.length > 0 ? ' ⚠' : '';
      return `| ${l.streams}${flag} | ${signed(a.ttfbP50)} | ${signed(a.ttfbP99)} | ${signed(a.completionP50)} | ${signed(a.completionP99)} | ${l.aa ? signed(l.aa.ttfbP99) : '–'} | ${l.aa ? signed(l.aa.completionP99) : '–'} |`;
    }),
    '',
    verdict(s.levels),
    '',
    '### Streams: both distributions',
    '',
    '| concurrent streams | target | measured streams | streams/s | TTFB p50 ms | TTFB p99 ms | completion p50 ms | completion p99 ms | failures |',
    '|---:|---|---:|---:|---:|---:|---:|---:|---:|',
    ...s.levels.flatMap((l) => (['direct', 'keel'] as const).map((label) => {
      const d = l.dist[label];
      const failures = failureCountOf(l.accounting[label].failures);
      return `| ${l.streams} | ${TARGET_NAMES[label]} | ${d.measured} | ${d.streamsPerSecond.toFixed(1)} | ${ms(d.ttfbP50)} | ${ms(d.ttfbP99)} | ${ms(d.completionP50)} | ${ms(d.completionP99)} | ${failures}${failures > 0 ? ' ⚠' : ''} |`;
    })),
    '',
    ...saturation(s.levels),
    '### CPU per call',
    '',
    'CPU time (user + system, from `/proc/<pid>/stat`, 10 ms ticks) each process used during the measured segments of a level, divided by the streams started in them; non-streamed: during warmup and measured run, divided by the requests sent. "Keel, idle" is Keel\'s own background work while the direct segments ran and it served nothing. Other work on the machine moves these figures far less than it moves latency.',
    '',
    '| phase | Keel ms per call (through Keel) | Keel ms per call, idle (direct) | fake upstream ms per call (direct / through Keel) |',
    '|---|---:|---:|---:|',
    ...s.levels.map((l) => `| ${l.streams} streams | ${ms(l.cpu.keel.keel)} | ${ms(l.cpu.direct.keel)} | ${ms(l.cpu.direct.fake)} / ${ms(l.cpu.keel.fake)} |`),
    `| non-streamed | ${ms(s.plain.cpu.keel.keel)} | ${ms(s.plain.cpu.direct.keel)} | ${ms(s.plain.cpu.direct.fake)} / ${ms(s.plain.cpu.keel.fake)} |`,
    '',
    'Keel\'s event-loop delay while it carried the streams (`nodejs_eventloop_lag_*` of its GET /metrics, Node\'s monitorEventLoopDelay sampled every 10 ms, less those 10 ms; one window per measured Keel segment): how long a piece of work that was ready waited for the loop — every relayed chunk and every new request can wait that long before Keel even looks at it.',
    '',
    '| concurrent streams | delay p50 ms (median segment) | delay p99 ms (worst segment) | delay max ms |',
    '|---:|---:|---:|---:|',
    ...s.levels.map((l) => `| ${l.streams} | ${l.loopDelay ? ms(l.loopDelay.p50) : '–'} | ${l.loopDelay ? ms(l.loopDelay.p99) : '–'} | ${l.loopDelay ? ms(l.loopDelay.max) : '–'} |`),
    '',
    '### Non-streamed calls',
    '',
    '| target | connections | req/s | p50 ms | p99 ms | requests | non-2xx | errors |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
    ...(['direct', 'keel'] as const).map((label) => {
      const x = s.plain.outcome[label].measured;
      const flag = isClean(x) ? '' : ' ⚠';
      const errors = x.timeouts > 0 ? `${x.errors} (${x.timeouts} timeouts)` : String(x.errors);
      return `| ${TARGET_NAMES[label]} | ${o.connections} | ${Math.round(x.requestsPerSecond)} | ${x.latencyP50Ms} | ${x.latencyP99Ms} | ${x.totalRequests} | ${x.non2xx}${flag} | ${errors}${flag} |`;
    }),
    '',
    `Through Keel, non-streamed: ${plainRatio(s.plain)} of the direct rate. At ${o.connections} connections both targets are saturated, so the latencies are mostly queueing; the rates compare the cost per call.`,
    '',
    '### Metering: usage rows written by Keel',
    '',
    'Counted in the server\'s SQLite file (`usage_events`, endpoint `/v1/chat/completions`) before and after each phase, warmups included (Keel writes a call\'s row just after the call\'s response ended, so the count after a phase waits up to 5 s for the last rows); "upstream calls" are the chat requests the fake received while Keel was loaded.',
    '',
    '| phase | calls to Keel | completed | upstream calls | usage rows | ok | aborted | error | one row per call |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---|',
    ...s.levels.map((l) => {
      const k = l.accounting.keel;
      const rows = l.usage;
      const good = rows.total === k.started && (rows.byStatus.ok ?? 0) === k.completed;
      return `| ${l.streams} streams | ${k.started} | ${k.completed} | ${k.upstream.byPath[ENDPOINT] ?? 0} | ${rows.total} | ${rows.byStatus.ok ?? 0} | ${rows.byStatus.aborted ?? 0} | ${rows.byStatus.error ?? 0} | ${good ? 'yes' : '**no** ⚠'} |`;
    }),
    (() => {
      const runs = [s.plain.outcome.keel.warmup, s.plain.outcome.keel.measured].filter((x): x is LoadMeasurement => x !== undefined);
      const sent = runs.reduce((n, x) => n + x.sentRequests, 0);
      const done = runs.reduce((n, x) => n + twoHundreds(x), 0);
      const rows = s.plain.usage;
      const good = (rows.byStatus.ok ?? 0) >= done && rows.total <= sent && (rows.byStatus.error ?? 0) === 0;
      return `| non-streamed | ${sent} sent | ${done} | ${s.plain.upstream.keel.byPath[ENDPOINT] ?? 0} | ${rows.total} | ${rows.byStatus.ok ?? 0} | ${rows.byStatus.aborted ?? 0} | ${rows.byStatus.error ?? 0} | ${good ? 'yes' : '**no** ⚠'} |`;
    })(),
    '',
    `Streams: every call must have exactly one row, with status ok for each complete stream, and exact (not estimated) tokens. Non-streamed: autocannon cuts off the requests in flight when a run ends; Keel meters those as aborted (or ok, when the answer was already on its way), so the check there is that every 2xx has its ok row, no row lacks a request, and none is an error. Total rows: ${sumUsage([...s.levels.map((l) => l.usage), s.plain.usage]).total}.`,
    '',
  ];

  const problems = [...s.levels.flatMap((l) => l.problems), ...s.plain.problems];
  if (problems.length === 0) {
    lines.push('Every stream and call, warmups included, answered 200 with a complete body, and every call through Keel was metered as checked above.');
  } else {
    lines.push(`**⚠ ${problems.length} problem${problems.length === 1 ? '' : 's'} in this run; the figures they touch are not clean measurements:**`, '', ...problems.map((p) => `- ${p}`));
  }
  if (s.notes.length > 0) lines.push('', 'Notes:', '', ...s.notes.map((n) => `- ${n}`));
  lines.push('');
  return lines.join('\n');
}

/** A computed remark for each level where Keel served clearly fewer streams per second than the direct target. */
function saturation(levels: readonly LevelResult[]): string[] {
  const lines = levels
    .filter((l) => l.dist.keel.streamsPerSecond < 0.9 * l.dist.direct.streamsPerSecond)
    .map((l) => `- At ${l.streams} concurrent streams Keel completed ${l.dist.keel.streamsPerSecond.toFixed(1)} streams/s where the direct target completed ${l.dist.direct.streamsPerSecond.toFixed(1)}: with N workers streaming back to back, streams/s is N ÷ the mean stream time, so Keel's streams took that much longer end to end; at that level the added latency includes time queued behind other streams' work in the gateway, not only each stream's own.`);
  return lines.length > 0 ? [...lines, ''] : [];
}

function failureCountOf(failures: Readonly<Record<string, number>>): number {
  return Object.values(failures).reduce((n, k) => n + k, 0);
}

function plainRatio(p: PlainResult): string {
  const direct = p.outcome.direct.measured.requestsPerSecond;
  const keel = p.outcome.keel.measured.requestsPerSecond;
  return direct > 0 ? `${Math.round((keel / direct) * 100)} %` : '–';
}

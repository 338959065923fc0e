// The chat suite (`npm run bench -- --suite chat`, issue #5): how many chat WebSockets Keel holds and
// what each costs in memory, idle and streaming, and how many chat messages per second it streams
// over SSE and over the WebSocket at 100 (and 500) concurrent generations, against the fake OpenAI
// upstream. Every part runs on a fresh server. See README.md ("Chat suite").
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import {
  ChatSocket, runChatLoad, SseChatClient, WsChatClient,
  type ChatClient, type ChatLoadResult, type GenerationPlan,
} from './lib/chat-clients.js';
import { chatRowsDelta, openChatRowsReader, type ChatRows } from './lib/chat-rows.js';
import { gitInfo, machineInfo, packageVersion, type GitInfo, type MachineInfo } from './lib/environment.js';
import { startFakeUpstream, type FakeUpstream } from './lib/fake-upstream.js';
import { anonymousSessions, type AnonymousSession } from './lib/identity.js';
import type { BenchOptions } from './lib/options.js';
import { listenOverflows, overflowsBetween } from './lib/netstat.js';
import { mib, openFilesLimit, residentBytes, sampleResident, serverMetrics, type ServerMetrics } from './lib/process-memory.js';
import { CHUNK_DELAY_MS, MODEL, recordSection, STREAM_BEHAVIOUR, TEXT_PIECES, type SuiteContext } from './lib/suite.js';
import { inheritedEnv, serverEnv, startServer, type ServerProcess } from './lib/server-process.js';
import { ascending, percentile } from './lib/streams.js';

export type ChatSuiteContext = SuiteContext;

/** Role chunk at once, then the text chunks, the finish chunk and the usage chunk, each 10 ms after the previous. */
const NOMINAL_MS = (TEXT_PIECES.length + 2) * CHUNK_DELAY_MS;
const GENERATION: GenerationPlan = {
  content: 'Count to twenty in words, one word per token.',
  expectedText: TEXT_PIECES.join(''),
  timeoutMs: 30_000,
};
/** A worker starts a fresh conversation before its first generation and after every this many: the context sent upstream stays small and comparable. */
const TURNS_PER_CONVERSATION = 20;
/** The per-user chat limit (30 a minute by default) set out of reach; RATE_LIMIT_ENABLED=false turns it off as well. */
const CHAT_MESSAGES_PER_MINUTE = '1000000';
/** WebSocket upgrades (and their auth frames) in flight at once while sockets are opened. */
const OPEN_CONCURRENCY = 200;
const OPEN_TIMEOUT_MS = 15_000;
const PING_TIMEOUT_MS = 10_000;
/** Files the benchmark process needs besides one per socket (the server needs as many: it inherits the limit). */
const FD_MARGIN = 1_000;
const RSS_SAMPLE_MS = 250;
/** While streaming, `GET /health` is sent this often over a new connection and over one kept alive since before the load. */
const PROBE_EVERY_MS = 1_000;
const PROBE_TIMEOUT_MS = 60_000;

/** A keep-alive agent that counts the connections it opens. */
class CountingAgent extends http.Agent {
  opened = 0;

  override createConnection(...args: Parameters<http.Agent['createConnection']>): ReturnType<http.Agent['createConnection']> {
    this.opened++;
    return super.createConnection(...args);
  }
}

/** One `GET /health`, over `agent` (false: a new connection of its own); ms until the end of the answer, NaN on failure or timeout. */
function probeHealth(origin: URL, agent: http.Agent | false): Promise<number> {
  return new Promise<number>((resolve) => {
    const start = performance.now();
    const req = http.request({ agent, hostname: origin.hostname, port: origin.port, path: '/health', method: 'GET', timeout: PROBE_TIMEOUT_MS }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200 ? performance.now() - start : Number.NaN));
      res.on('error', () => resolve(Number.NaN));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(Number.NaN));
    req.end();
  });
}

/** Keel's answers to `GET /health` while streaming: over new connections and over a kept-alive one. */
interface Responsiveness {
  readonly fresh: readonly number[];
  readonly kept: readonly number[];
}

type Transport = 'websocket' | 'sse';
const TRANSPORT_NAMES: Record<Transport, string> = { websocket: 'WebSocket', sse: 'SSE' };

interface IdleLevel {
  readonly target: number;
  /** Sockets open (ready, not closed) at the end of the hold. */
  readonly held: number;
  readonly openFailures: Readonly<Record<string, number>>;
  /** Seconds to open this level's new sockets. */
  readonly rampS: number;
  readonly rss: number;
  readonly metrics: ServerMetrics;
  /** Sockets the server (or the network) closed during the hold, by close code. */
  readonly closedDuringHold: Readonly<Record<string, number>>;
  readonly pinged: number;
  readonly pongs: number;
  readonly pongP50: number;
  readonly pongP99: number;
}

interface IdleResult {
  readonly accounts: number;
  readonly accountsS: number;
  readonly baselineRss: number;
  readonly baselineMetrics: ServerMetrics;
  readonly levels: readonly IdleLevel[];
  readonly afterClose: { readonly rss: number; readonly chatSockets: number; readonly waitedS: number };
  /** Connections the kernel dropped for a full listen queue while the sockets were opened and held. */
  readonly listenOverflows: number | undefined;
  readonly problems: readonly string[];
}

interface StreamPhase {
  readonly transport: Transport;
  readonly streams: number;
  readonly load: ChatLoadResult;
  readonly rssBefore: number;
  readonly rssSamples: readonly number[];
  readonly rows: ChatRows;
  /** WebSocket: frames other than this socket's generation replies and pongs, by type. */
  readonly otherFrames: Readonly<Record<string, number>>;
  /** Connections the kernel dropped for a full listen queue during the load (undefined: unknown). */
  readonly listenOverflows: number | undefined;
  /** HTTP connections the clients' agent opened during the load (after the first conversations). */
  readonly connectionsOpened: number;
  readonly responsiveness: Responsiveness;
  readonly problems: readonly string[];
}

interface ChatSection {
  readonly date: Date;
  readonly command: string;
  readonly machine: MachineInfo;
  readonly git: GitInfo;
  readonly wsVersion: string;
  readonly options: BenchOptions;
  readonly fileLimit: number | undefined;
  readonly idleLevels: readonly number[];
  readonly idle: IdleResult;
  readonly phases: readonly StreamPhase[];
  readonly loadAverage: { readonly start: number; readonly end: number };
  readonly notes: readonly string[];
}

export async function runChatSuite(ctx: ChatSuiteContext): Promise<number> {
  const { options, cleanup, say } = ctx;
  const date = new Date();
  const loadAtStart = os.loadavg()[0] ?? 0;
  const notes: string[] = [];
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'keel-bench-chat-'));
  cleanup.defer('remove the chat temp dir', () => rm(tmp, { recursive: true, force: true }));

  // One socket is a file in this process and one in the server (which inherits this limit).
  const fileLimit = await openFilesLimit();
  let idleLevels = [...options.wsIdle];
  if (fileLimit !== undefined && Number.isFinite(fileLimit)) {
    const cap = fileLimit - FD_MARGIN;
    if (idleLevels.some((n) => n > cap)) {
      notes.push(`The open-files limit is ${fileLimit} (ulimit -n), so the idle levels above ${cap} were left out (${idleLevels.filter((n) => n > cap).join(', ')}); raise the limit to hold more.`);
      idleLevels = idleLevels.filter((n) => n <= cap);
      if (idleLevels.length === 0) idleLevels = [cap];
    }
  }

  say(`bench: chat suite; idle WebSockets ${idleLevels.join(' then ')} held ${options.wsHoldS} s each; generations at ${options.chatStreams.join(', ')} concurrent per transport: ${options.warmupS} s warmup + ${options.durationS} s measured, a fresh server per part`);
  const upstreamKey = `sk-bench-${randomBytes(16).toString('hex')}`;
  const fake = await startFakeUpstream({ apiKey: upstreamKey, env: inheritedEnv() });
  const stopFake = cleanup.defer('stop the fake upstream', () => fake.stop());
  await fake.behave(STREAM_BEHAVIOUR);
  say(`chat: fake upstream at ${fake.url} (pid ${fake.pid ?? '?'})`);

  let serial = 0;
  const startKeel = async (label: string): Promise<Keel> => {
    const dir = path.join(tmp, `${++serial}-${label}`);
    await mkdir(dir);
    const databaseFile = path.join(dir, 'keel.db');
    const env = serverEnv(dir, {
      DATABASE_URL: databaseFile,
      LLM_BASE_URL: fake.url,
      LLM_API_KEY: upstreamKey,
      LLM_MODEL: MODEL,
      CHAT_MESSAGES_PER_MINUTE,
    });
    const server = await startServer({ entry: ctx.serverEntry, cwd: dir, env });
    const stop = cleanup.defer(`stop the ${label} server`, async () => {
      const exit = await server.stop();
      if (exit.killed) notes.push(`The ${label} server did not exit within 20 s of SIGTERM and was killed.`);
      else if (exit.code !== 0) notes.push(`The ${label} server exited with ${exit.signal ?? `code ${exit.code}`} after SIGTERM.`);
    });
    if (server.pid === undefined) throw new Error('the server has no pid: its memory cannot be read');
    say(`chat: ${label}: Keel ready at ${server.baseUrl} (pid ${server.pid})`);
    return { server, pid: server.pid, databaseFile, stop };
  };

  const idle = await idlePart(startKeel, idleLevels, options.wsHoldS, say);
  const phases: StreamPhase[] = [];
  for (const streams of options.chatStreams) {
    for (const transport of ['websocket', 'sse'] as const) {
      phases.push(await streamPhase(startKeel, ctx.repoRoot, transport, streams, fake, options, say));
    }
  }
  await stopFake();

  const section: ChatSection = {
    date,
    command: ctx.command,
    machine: machineInfo(),
    git: await gitInfo(ctx.repoRoot),
    wsVersion: packageVersion('ws'),
    options,
    fileLimit,
    idleLevels,
    idle,
    phases,
    loadAverage: { start: loadAtStart, end: os.loadavg()[0] ?? 0 },
    notes,
  };
  return recordSection(ctx, 'chat', formatChatSection(section), [...idle.problems, ...phases.flatMap((p) => p.problems), ...notes.filter((n) => !n.startsWith('The open-files limit'))]);
}

interface Keel {
  readonly server: ServerProcess;
  readonly pid: number;
  readonly databaseFile: string;
  stop(): Promise<void>;
}

function wsUrl(server: ServerProcess): string {
  return `${server.baseUrl.replace(/^http/, 'ws')}/ws/chat`;
}

function bump(into: Record<string, number>, key: string, n = 1): void {
  into[key] = (into[key] ?? 0) + n;
}

/**
 * Opens a socket for each of `sessions` (at most OPEN_CONCURRENCY handshakes at once): the sockets in
 * the order of `sessions` (undefined where one could not be opened), and the failures by reason.
 */
async function openSockets(url: string, sessions: readonly AnonymousSession[]): Promise<{ sockets: Array<ChatSocket | undefined>; failures: Record<string, number> }> {
  const sockets = new Array<ChatSocket | undefined>(sessions.length).fill(undefined);
  const failures: Record<string, number> = {};
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < sessions.length) {
      const i = next++;
      try {
        sockets[i] = await ChatSocket.open(url, sessions[i]!.accessToken, OPEN_TIMEOUT_MS);
      } catch (err) {
        bump(failures, (err as Error).message);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(OPEN_CONCURRENCY, sessions.length) }, worker));
  return { sockets, failures };
}

function opened(sockets: ReadonlyArray<ChatSocket | undefined>): ChatSocket[] {
  return sockets.filter((s): s is ChatSocket => s !== undefined);
}

async function closeSockets(sockets: readonly ChatSocket[]): Promise<void> {
  for (const s of sockets) s.close();
  await Promise.all(sockets.map((s) => s.whenClosed(5_000)));
}

/**
 * Idle sockets: one anonymous account per socket, each socket authenticated and then left alone;
 * levels are cumulative (1,000, then 4,000 more for 5,000). At the end of each hold the server's RSS
 * and metrics are read and every open socket is pinged.
 */
async function idlePart(startKeel: (label: string) => Promise<Keel>, levels: readonly number[], holdS: number, say: (line: string) => void): Promise<IdleResult> {
  const keel = await startKeel('idle-websockets');
  const url = wsUrl(keel.server);
  const problems: string[] = [];
  const max = Math.max(...levels);
  const accountsStart = performance.now();
  const sessions = await anonymousSessions(keel.server.baseUrl, max, 16);
  const accountsS = (performance.now() - accountsStart) / 1000;
  say(`  idle: ${max} anonymous accounts in ${accountsS.toFixed(1)} s`);

  // A few sockets opened, pinged and closed first, so the code paths are loaded before the baseline.
  const warm = await openSockets(url, sessions.slice(0, 20));
  await Promise.all(opened(warm.sockets).map((s) => s.ping(PING_TIMEOUT_MS)));
  await closeSockets(opened(warm.sockets));
  for (const [why, n] of Object.entries(warm.failures)) problems.push(`idle warm-up: ${n} × ${why}`);
  await delay(2_000);
  const baselineRss = await residentBytes(keel.pid);
  const baselineMetrics = await serverMetrics(keel.server.baseUrl);
  say(`  idle: baseline RSS ${mib(baselineRss)} MiB, heap used ${mib(baselineMetrics.heapUsedBytes)} MiB, chat sockets ${baselineMetrics.chatSockets}`);

  const sockets: ChatSocket[] = [];
  const result: IdleLevel[] = [];
  let attempted = 0;
  const overflowsBefore = await listenOverflows();
  try {
    for (const target of levels) {
      const start = performance.now();
      const ramp = await openSockets(url, sessions.slice(attempted, target));
      attempted = target;
      sockets.push(...opened(ramp.sockets));
      const rampS = (performance.now() - start) / 1000;
      await delay(holdS * 1000);
      const closedDuringHold: Record<string, number> = {};
      for (const s of sockets) if (s.closed !== undefined) bump(closedDuringHold, s.closed);
      const rss = await residentBytes(keel.pid);
      const metrics = await serverMetrics(keel.server.baseUrl);
      const open = sockets.filter((s) => s.open);
      const rtts = await Promise.all(open.map((s) => s.ping(PING_TIMEOUT_MS)));
      const answered = ascending(rtts.filter((r) => Number.isFinite(r)));
      const level: IdleLevel = {
        target, held: open.length, openFailures: ramp.failures, rampS, rss, metrics, closedDuringHold,
        pinged: open.length, pongs: answered.length, pongP50: percentile(answered, 50), pongP99: percentile(answered, 99),
      };
      result.push(level);
      const failed = Object.values(ramp.failures).reduce((a, b) => a + b, 0);
      if (failed > 0) problems.push(`idle ${target}: ${failed} socket(s) not opened: ${describeCounts(ramp.failures)}`);
      const closed = Object.values(closedDuringHold).reduce((a, b) => a + b, 0);
      if (closed > 0) problems.push(`idle ${target}: ${closed} socket(s) closed during the hold: ${describeCounts(closedDuringHold)}`);
      if (level.pongs < level.pinged) problems.push(`idle ${target}: ${level.pinged - level.pongs} of ${level.pinged} pings unanswered within ${PING_TIMEOUT_MS / 1000} s`);
      if (metrics.chatSockets !== open.length) problems.push(`idle ${target}: the server counts ${metrics.chatSockets} chat sockets, the client holds ${open.length}`);
      say(`  idle ${String(target).padStart(5)}: ${open.length} held (opened in ${rampS.toFixed(1)} s, ${failed} failed), RSS ${mib(rss)} MiB (+${mib(rss - baselineRss)}), ${bytesPer(rss - baselineRss, open.length)} per socket; heap ${mib(metrics.heapUsedBytes)} MiB; server gauge ${metrics.chatSockets}; pongs ${level.pongs}/${level.pinged}, p50 ${ms(level.pongP50)} ms, p99 ${ms(level.pongP99)} ms`);
    }
  } finally {
    await closeSockets(sockets);
  }
  const dropped = overflowsBetween(overflowsBefore, await listenOverflows());
  if (dropped !== undefined && dropped > 0) problems.push(`idle: the kernel dropped ${dropped} connection attempt(s) on a full listen queue (TcpExt ListenOverflows) while the sockets were opened`);
  const waitStart = performance.now();
  let after = await serverMetrics(keel.server.baseUrl);
  while (after.chatSockets > 0 && performance.now() - waitStart < 10_000) {
    await delay(250);
    after = await serverMetrics(keel.server.baseUrl);
  }
  const waitedS = (performance.now() - waitStart) / 1000;
  const rssAfter = await residentBytes(keel.pid);
  if (after.chatSockets > 0) problems.push(`idle: the server still counted ${after.chatSockets} chat sockets ${waitedS.toFixed(1)} s after the client closed them all`);
  say(`  idle: all closed; server gauge ${after.chatSockets} after ${waitedS.toFixed(1)} s; RSS ${mib(rssAfter)} MiB`);
  await keel.stop();
  return { accounts: max, accountsS, baselineRss, baselineMetrics, levels: result, afterClose: { rss: rssAfter, chatSockets: after.chatSockets, waitedS }, listenOverflows: dropped, problems };
}

/**
 * One transport at one concurrency on a fresh server: N anonymous accounts, a client each (a socket,
 * or a keep-alive connection), one checked generation, then N generation loops with a measured window.
 */
async function streamPhase(
  startKeel: (label: string) => Promise<Keel>,
  repoRoot: string,
  transport: Transport,
  streams: number,
  fake: FakeUpstream,
  options: BenchOptions,
  say: (line: string) => void,
): Promise<StreamPhase> {
  const keel = await startKeel(`${transport}-${streams}`);
  const base = keel.server.baseUrl;
  const problems: string[] = [];
  const sessions = await anonymousSessions(base, streams, 16);
  const origin = new URL(base);
  // A keep-alive agent with a socket per client: SSE's requests, and the conversations of both transports.
  const agent = new CountingAgent({ keepAlive: true, maxSockets: streams, maxFreeSockets: streams });
  const probeAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  let clients: ChatClient[];
  let sockets: ChatSocket[] = [];
  if (transport === 'websocket') {
    const result = await openSockets(wsUrl(keel.server), sessions);
    const failed = Object.values(result.failures).reduce((a, b) => a + b, 0);
    sockets = opened(result.sockets);
    if (failed > 0) {
      await closeSockets(sockets);
      agent.destroy();
      throw new Error(`${streams} WebSocket streams: ${failed} socket(s) could not be opened: ${describeCounts(result.failures)}`);
    }
    // In the order of `sessions`: client i makes its conversations with account i's token.
    clients = sockets.map((socket, i) => new WsChatClient(socket, origin, agent, sessions[i]!.accessToken));
  } else {
    clients = sessions.map((s) => new SseChatClient(origin, agent, s.accessToken));
  }
  const rows = openChatRowsReader(repoRoot, keel.databaseFile);
  try {
    // One generation first: a misconfiguration fails here, with its reason, before any load.
    const first = await clients[0]!.generate(await clients[0]!.newConversation(), GENERATION);
    if (!first.ok) throw new Error(`a first ${TRANSPORT_NAMES[transport]} generation failed: ${first.failure}`);
    await fake.take();
    const rowsBefore = rows.count();
    const overflowsBefore = await listenOverflows();
    await delay(500);
    const rssBefore = await residentBytes(keel.pid);
    await probeHealth(origin, probeAgent);
    let sampler: ReturnType<typeof sampleResident> | undefined;
    let samples: Promise<number[]> = Promise.resolve([]);
    let probing: NodeJS.Timeout | undefined;
    const freshProbes: Array<Promise<number>> = [];
    const keptProbes: Array<Promise<number>> = [];
    // The kept-alive probe waits for the previous one (its one connection), so it never queues behind it.
    let keptBusy = false;
    const probe = (): void => {
      freshProbes.push(probeHealth(origin, false));
      if (keptBusy) return;
      keptBusy = true;
      keptProbes.push(probeHealth(origin, probeAgent).finally(() => {
        keptBusy = false;
      }));
    };
    let openedBefore = 0;
    const load = await runChatLoad(clients, {
      generation: GENERATION,
      turnsPerConversation: TURNS_PER_CONVERSATION,
      nominalMs: NOMINAL_MS,
      warmupMs: options.warmupS * 1000,
      measuredMs: options.durationS * 1000,
    }, (phase) => {
      if (phase === 'start') {
        openedBefore = agent.opened;
      } else if (phase === 'open') {
        sampler = sampleResident(keel.pid, RSS_SAMPLE_MS);
        probing = setInterval(probe, PROBE_EVERY_MS);
      } else {
        clearInterval(probing);
        if (sampler !== undefined) samples = sampler.stop();
      }
    });
    // Connections opened after the first conversations had opened the clients' (the load should need none).
    const connectionsOpened = agent.opened - openedBefore;
    const responsiveness: Responsiveness = { fresh: await Promise.all(freshProbes), kept: await Promise.all(keptProbes) };
    const rssSamples = await samples;
    const overflows = await listenOverflows();
    const upstream = await fake.take();
    const rowsAfter = rows.count();
    const delta = chatRowsDelta(rowsBefore, rowsAfter);
    const otherFrames: Record<string, number> = {};
    for (const s of sockets) for (const [type, n] of Object.entries(s.otherFrames)) bump(otherFrames, type, n);

    const label = `${streams} ${TRANSPORT_NAMES[transport]} streams`;
    const failures = Object.values(load.failures).reduce((a, b) => a + b, 0);
    if (failures > 0) problems.push(`${label}: ${failures} failed: ${describeCounts(load.failures)}`);
    if (load.ttfbMs.length === 0) problems.push(`${label}: no generation measured`);
    if (delta.assistantTotal !== load.started) problems.push(`${label}: ${delta.assistantTotal} assistant messages stored for ${load.started} generations sent`);
    if ((delta.assistant.complete ?? 0) !== load.completed) problems.push(`${label}: ${delta.assistant.complete ?? 0} assistant messages complete for ${load.completed} generations completed`);
    if (delta.usage.total !== load.started || (delta.usage.byStatus.ok ?? 0) !== load.completed || delta.usage.estimated > 0) {
      problems.push(`${label}: usage rows ${delta.usage.total} (ok ${delta.usage.byStatus.ok ?? 0}, estimated ${delta.usage.estimated}) for ${load.started} generations sent, ${load.completed} completed`);
    }
    const upstreamCalls = upstream.byPath['/v1/chat/completions'] ?? 0;
    if (upstreamCalls !== load.started) problems.push(`${label}: the fake upstream saw ${upstreamCalls} chat completions for ${load.started} generations sent`);
    if (rssSamples.length === 0) problems.push(`${label}: no RSS sample was taken while streaming`);
    if (connectionsOpened > 0) problems.push(`${label}: the clients opened ${connectionsOpened} HTTP connection(s) during the load (one per client was opened before it); requests on them waited for a busy Keel to accept them`);
    const dropped = overflowsBetween(overflowsBefore, overflows);
    if (dropped !== undefined && dropped > 0) problems.push(`${label}: the kernel dropped ${dropped} connection attempt(s) on a full listen queue (TcpExt ListenOverflows); the latencies include TCP retransmission waits`);

    const d = distribution({ transport, streams, load });
    const med = percentile(ascending(rssSamples), 50);
    const conv = ascending(load.conversationMs);
    say(`  ${label.padEnd(24)} ${d.generationsPerSecond.toFixed(1)} generations/s, ${d.deltasPerSecond.toFixed(0)} deltas/s, TTFB p50 ${ms(d.ttfbP50)} p99 ${ms(d.ttfbP99)} ms, completion p50 ${ms(d.completionP50)} p99 ${ms(d.completionP99)} ms, ${load.ttfbMs.length} measured, ${failures} failed; ${conv.length} conversations, p50 ${ms(percentile(conv, 50))} p99 ${ms(percentile(conv, 99))} max ${ms(conv[conv.length - 1] ?? Number.NaN)} ms; RSS ${mib(rssBefore)} → ${mib(med)} MiB (${bytesPer(med - rssBefore, streams)} per stream)${problems.length > 0 ? `  ⚠ ${problems.join('; ')}` : ''}`);
    return { transport, streams, load, rssBefore, rssSamples, rows: delta, otherFrames, listenOverflows: dropped, connectionsOpened, responsiveness, problems };
  } finally {
    rows.close();
    await closeSockets(sockets);
    agent.destroy();
    probeAgent.destroy();
    await keel.stop();
  }
}

interface Distribution {
  readonly measured: number;
  readonly generationsPerSecond: number;
  readonly deltasPerSecond: number;
  readonly ttfbP50: number;
  readonly ttfbP99: number;
  readonly completionP50: number;
  readonly completionP99: number;
}

function distribution(p: Pick<StreamPhase, 'transport' | 'streams' | 'load'>): Distribution {
  const s = p.load.windowMs / 1000;
  const ttfb = ascending(p.load.ttfbMs);
  const completion = ascending(p.load.completionMs);
  return {
    measured: ttfb.length,
    generationsPerSecond: ttfb.length / s,
    deltasPerSecond: p.load.measuredDeltas / s,
    ttfbP50: percentile(ttfb, 50),
    ttfbP99: percentile(ttfb, 99),
    completionP50: percentile(completion, 50),
    completionP99: percentile(completion, 99),
  };
}

function describeCounts(counts: Readonly<Record<string, number>>): string {
  return Object.entries(counts).map(([why, n]) => `${n} × ${why}`).join(', ');
}

function ms(value: number): string {
  return Number.isFinite(value) ? value.toFixed(1) : '–';
}

/** Bytes per item, in KiB with one decimal ("–" without items). */
function bytesPer(bytes: number, items: number): string {
  return items > 0 ? `${(bytes / items / 1024).toFixed(1)} KiB` : '–';
}

function formatChatSection(s: ChatSection): string {
  const { options: o, machine: m, idle } = s;
  const dirty = s.git.changedPaths > 0
    ? ` — working tree dirty (${s.git.changedPaths} changed path${s.git.changedPaths === 1 ? '' : 's'}), so the measured build includes uncommitted changes`
    : ' (clean working tree)';
  const lines: string[] = [
    `## ${s.date.toISOString()} — Chat: WebSockets held, SSE and WebSocket streams`,
    '',
    `- **Command:** \`${s.command}\``,
    `- **Commit:** \`${s.git.commit}\`${dirty}`,
    `- **Machine:** ${m.os}; ${m.cpuCount} × ${m.cpuModel}; ${m.totalMemoryGiB} GiB RAM; Node ${m.node}; open-files limit ${s.fileLimit ?? 'unknown'} (inherited by the server); load average (1 min) ${s.loadAverage.start.toFixed(2)} at the start, ${s.loadAverage.end.toFixed(2)} at the end (the suite's own processes included at the end)`,
    `- **Processes:** three on the same ${m.cpuCount} cores — the load generator (the benchmark process: \`ws\` ${s.wsVersion} clients, node:http keep-alive agents for SSE), the fake upstream (\`server/test/helpers/fake-openai.ts\`, unchanged, in a child process of its own) and Keel (\`node server/dist/main.js serve\`). While streaming all three work and share the cores, so throughput is a lower bound and latency an upper bound of what Keel does on a machine of its own.`,
    `- **Keel:** a **fresh server and SQLite file for each part** (the idle sockets, and each transport at each level), so no part inherits another's heap or rows; LLM_BASE_URL = the fake, LLM_MODEL=${MODEL} (every preset, \`general\` included, uses it), NODE_ENV=production, **RATE_LIMIT_ENABLED=false**, **CHAT_MESSAGES_PER_MINUTE=${CHAT_MESSAGES_PER_MINUTE}** (the per-user chat limit out of reach), CHAT_WS_HEARTBEAT_MS at its default (30 s: the server pings each socket and re-checks its session every 30 s), LOG_LEVEL=info with stdout to /dev/null.`,
    `- **Clients:** **one anonymous account per client** (\`POST /auth/anonymous\`: a user, a device and a session each), authenticated with that session's access token — in the WebSocket's first frame, or as \`Authorization: Bearer\`. One user per client because every send is announced as \`conversation.updated\` to all of its user's sockets: N clients of one user would each receive every client's announcements, N² frames no real traffic makes.`,
    `- **Parameters:** idle WebSockets ${s.idleLevels.join(', ')} (cumulative), held ${o.wsHoldS} s each; concurrent generations ${o.chatStreams.join(', ')} per transport, ${o.warmupS} s warmup + ${o.durationS} s measured each; a fresh conversation every ${TURNS_PER_CONVERSATION} generations per worker; generation timeout ${GENERATION.timeoutMs / 1000} s; message \`${GENERATION.content}\`.`,
    `- **Upstream schedule:** every generation streams the role chunk at once, then ${TEXT_PIECES.length} one-word text chunks, the finish chunk and the usage chunk, each ${CHUNK_DELAY_MS} ms after the previous (≈${NOMINAL_MS} ms a reply) — the gateway suite's schedule, the same for both transports. Keel relays each text chunk as one \`delta\`, so a complete reply is ${TEXT_PIECES.length} delta messages.`,
    '',
    '### WebSocket connections held idle',
    '',
    `Levels ${s.idleLevels.join(' then ')}, cumulative (the sockets of a level stay open into the next), each socket authenticated (\`auth\` → \`ready\`) with its own account's token and then left alone; at most ${OPEN_CONCURRENCY} handshakes at a time. Each level is held ${o.wsHoldS} s; then the server's RSS (\`VmRSS\` of /proc/<pid>/status) and its GET /metrics (V8 heap in use, the \`keel_chat_ws_connections\` gauge) are read, and **every** open socket is sent \`{type: "ping"}\` at once and must answer \`pong\` within ${PING_TIMEOUT_MS / 1000} s (the round trips include queueing behind all the others). RSS and heap are compared with a baseline read on the same server after its ${idle.accounts} accounts were made (${idle.accountsS.toFixed(1)} s) and 20 sockets were opened, pinged and closed: **per socket** = (RSS at the level − baseline) ÷ sockets held. It includes whatever the heap grew by between collections, so it is an upper bound of what a socket keeps.`,
    '',
    `Baseline: RSS ${mib(idle.baselineRss)} MiB, V8 heap in use ${mib(idle.baselineMetrics.heapUsedBytes)} MiB, external ${mib(idle.baselineMetrics.externalBytes)} MiB.`,
    '',
    '| sockets (target) | held | not opened | opened in s | closed during hold | RSS MiB | RSS Δ MiB | RSS per socket | heap in use MiB | heap Δ per socket | server gauge | pongs | pong p50 ms | pong p99 ms |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...idle.levels.map((l) => {
      const notOpened = Object.values(l.openFailures).reduce((a, b) => a + b, 0);
      const closed = Object.values(l.closedDuringHold).reduce((a, b) => a + b, 0);
      const flag = (bad: boolean): string => (bad ? ' ⚠' : '');
      return `| ${l.target} | ${l.held}${flag(l.held < l.target)} | ${notOpened}${flag(notOpened > 0)} | ${l.rampS.toFixed(1)} | ${closed}${flag(closed > 0)} | ${mib(l.rss)} | ${mib(l.rss - idle.baselineRss)} | ${bytesPer(l.rss - idle.baselineRss, l.held)} | ${mib(l.metrics.heapUsedBytes)} | ${bytesPer(l.metrics.heapUsedBytes - idle.baselineMetrics.heapUsedBytes, l.held)} | ${l.metrics.chatSockets}${flag(l.metrics.chatSockets !== l.held)} | ${l.pongs}/${l.pinged}${flag(l.pongs < l.pinged)} | ${ms(l.pongP50)} | ${ms(l.pongP99)} |`;
    }),
    '',
    `After the client closed every socket the server's gauge read ${idle.afterClose.chatSockets} (${idle.afterClose.waitedS.toFixed(1)} s later) and its RSS was ${mib(idle.afterClose.rss)} MiB (a Node process keeps much of a grown heap; RSS is not expected to fall back to the baseline). Connections dropped by the kernel on a full listen queue while the sockets were opened: ${idle.listenOverflows ?? 'unknown'}.`,
    '',
    '### Streams: messages per second over SSE and WebSocket',
    '',
    `Per transport and level, on a fresh server: N clients (N accounts; N sockets for the WebSocket, a keep-alive agent with N sockets for SSE), one checked generation first, then N workers each running one generation after another — over the WebSocket \`{type: "send", request_id, conversation_id, content}\` and reading \`message\`, the \`delta\` frames and \`done\`; over SSE \`POST /conversations/:id/messages\` with \`stream: true\` and reading the \`message\`, \`delta\` and \`done\` events. Each worker makes **a fresh conversation (\`POST /conversations\`, untimed but inside the loop, for both transports alike) before its first generation and after every ${TURNS_PER_CONVERSATION}**, so the history Keel reads and sends upstream stays at most ${TURNS_PER_CONVERSATION - 1} exchanges long and comparable across transports and levels. The first conversations are made all at once before the load, which also opens every client's HTTP connection while Keel is idle (the load then reuses them: a busy Keel is slow to accept new connections, below); workers then start spread over one reply (≈${NOMINAL_MS} ms); ${o.warmupS} s of warmup, then a **${o.durationS} s measured window**: a generation is measured when it starts inside it, and the workers go on until every measured one has ended, so each runs alongside N − 1 others. **TTFB** = send frame written / request written → first \`delta\` read; **completion** → \`done\` read. A generation counts only when it ended \`done\` with status \`complete\` and both the streamed deltas and the stored message equal the upstream's text; anything else (error frame or event, HTTP status, closed socket, ${GENERATION.timeoutMs / 1000} s timeout) is a failure, warmup included. **generations/s** = measured generations ÷ window (each is one assistant message, and one user message stored); **delta messages/s** = their delta frames or events ÷ window. Percentiles are nearest-rank.`,
    '',
    '| concurrent streams | transport | measured generations | generations/s | delta messages/s | TTFB p50 ms | TTFB p99 ms | completion p50 ms | completion p99 ms | failures |',
    '|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...s.phases.map((p) => {
      const d = distribution(p);
      const failures = Object.values(p.load.failures).reduce((a, b) => a + b, 0);
      return `| ${p.streams}${p.problems.length > 0 ? ' ⚠' : ''} | ${TRANSPORT_NAMES[p.transport]} | ${d.measured} | ${d.generationsPerSecond.toFixed(1)} | ${d.deltasPerSecond.toFixed(0)} | ${ms(d.ttfbP50)} | ${ms(d.ttfbP99)} | ${ms(d.completionP50)} | ${ms(d.completionP99)} | ${failures}${failures > 0 ? ' ⚠' : ''} |`;
    }),
    '',
    ...comparisons(s.phases),
    '### Keel\'s answers to new connections while streaming',
    '',
    `During each measured window, every ${PROBE_EVERY_MS / 1000} s, \`GET /health\` (no database, no auth) is sent over **a new connection**, and over **a connection kept alive since before the load** unless the previous probe on it is still waiting; the time to its answer (a ${PROBE_TIMEOUT_MS / 1000} s limit; a probe still unanswered when the window ends is waited for). The generations themselves use only connections opened before the load, so this is what a client arriving during the load meets, not part of the figures above.`,
    '',
    '| concurrent streams | transport | probes (new / kept-alive) | new connection p50 ms | new connection max ms | kept-alive p50 ms | kept-alive max ms | unanswered |',
    '|---:|---|---:|---:|---:|---:|---:|---:|',
    ...s.phases.map((p) => {
      const fresh = ascending(p.responsiveness.fresh.filter((x) => Number.isFinite(x)));
      const kept = ascending(p.responsiveness.kept.filter((x) => Number.isFinite(x)));
      const lost = p.responsiveness.fresh.length - fresh.length + p.responsiveness.kept.length - kept.length;
      return `| ${p.streams} | ${TRANSPORT_NAMES[p.transport]} | ${p.responsiveness.fresh.length} / ${p.responsiveness.kept.length} | ${ms(percentile(fresh, 50))} | ${ms(fresh[fresh.length - 1] ?? Number.NaN)} | ${ms(percentile(kept, 50))} | ${ms(kept[kept.length - 1] ?? Number.NaN)} | ${lost}${lost > 0 ? ' ⚠' : ''} |`;
    }),
    '',
    ...acceptRemarks(s.phases),
    '### Memory while streaming',
    '',
    `RSS of the server read before the load (after the accounts, the clients' connections and the one checked generation) and every ${RSS_SAMPLE_MS} ms during the measured window. **Per stream** = (median during the window − before) ÷ N: it holds everything that grows with N concurrent generations — the connection, the generation's state, its upstream request, the buffers, and garbage not yet collected — so it is an upper bound of a connection's own cost, and noisy (the heap grows and shrinks with collections).`,
    '',
    '| concurrent streams | transport | RSS before MiB | RSS median while streaming MiB | RSS max MiB | Δ per stream | samples |',
    '|---:|---|---:|---:|---:|---:|---:|',
    ...s.phases.map((p) => {
      const sorted = ascending(p.rssSamples);
      const med = percentile(sorted, 50);
      return `| ${p.streams} | ${TRANSPORT_NAMES[p.transport]} | ${mib(p.rssBefore)} | ${mib(med)} | ${mib(sorted[sorted.length - 1] ?? Number.NaN)} | ${bytesPer(med - p.rssBefore, p.streams)} | ${sorted.length} |`;
    }),
    '',
    '### Stored messages and metering',
    '',
    'Counted in each server\'s SQLite file before and after the load (the checked generation excluded): every generation sent must have stored one assistant message, `complete` for each that completed; the gateway must have written one usage row (endpoint `chat`) per generation, `ok` with exact tokens for each complete one; and the fake must have received one chat completion per generation (no retries). Conversations: how many the workers made during the load (besides the N first ones, made before it) and how long each `POST /conversations` took (untimed in the generations, but inside the loop). Connections opened during the load: by the clients\' HTTP agent after the first conversations (0 expected: one per client was opened before). Listen-queue drops: the kernel\'s TcpExt ListenOverflows during the load (any listener on the machine). "Other frames" are the WebSocket frames that were not replies to the socket\'s own generation — `conversation.updated`, announced to the user\'s sockets when a message is sent and when the reply is stored.',
    '',
    '| concurrent streams | transport | generations sent | completed | conversations during the load (POST p50 / p99 ms) | assistant messages | complete | usage rows | ok | deltas per generation | other frames per generation | connections opened during the load | listen-queue drops | consistent |',
    '|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
    ...s.phases.map((p) => {
      const l = p.load;
      const good = p.rows.assistantTotal === l.started && (p.rows.assistant.complete ?? 0) === l.completed && p.rows.usage.total === l.started && (p.rows.usage.byStatus.ok ?? 0) === l.completed && p.rows.usage.estimated === 0;
      const other = Object.entries(p.otherFrames);
      const otherText = p.transport === 'sse' ? '–' : other.length === 0 ? '0' : other.map(([type, n]) => `${(n / Math.max(1, l.started)).toFixed(2)} ${type}`).join(', ');
      const measured = l.ttfbMs.length;
      const conv = ascending(l.conversationMs);
      const drops = p.listenOverflows === undefined ? '?' : `${p.listenOverflows}${p.listenOverflows > 0 ? ' ⚠' : ''}`;
      return `| ${p.streams} | ${TRANSPORT_NAMES[p.transport]} | ${l.started} | ${l.completed} | ${conv.length} (${ms(percentile(conv, 50))} / ${ms(percentile(conv, 99))}) | ${p.rows.assistantTotal} | ${p.rows.assistant.complete ?? 0} | ${p.rows.usage.total} | ${p.rows.usage.byStatus.ok ?? 0} | ${measured > 0 ? (l.measuredDeltas / measured).toFixed(1) : '–'} | ${otherText} | ${p.connectionsOpened} | ${drops} | ${good ? 'yes' : '**no** ⚠'} |`;
    }),
    '',
  ];
  const problems = [...idle.problems, ...s.phases.flatMap((p) => p.problems)];
  if (problems.length === 0) {
    lines.push('Every socket opened, stayed open through its hold and answered its ping; every generation, warmups included, completed with the upstream\'s text and was stored and metered as checked above.');
  } else {
    lines.push(`**⚠ ${problems.length} problem${problems.length === 1 ? '' : 's'} in this run; the figures they touch are not clean measurements:**`, '', ...problems.map((p) => `- ${p}`));
  }
  if (s.notes.length > 0) lines.push('', 'Notes:', '', ...s.notes.map((n) => `- ${n}`));
  lines.push('');
  return lines.join('\n');
}

/** A computed remark for each level where new connections waited far longer than requests on a kept-alive one. */
function acceptRemarks(phases: readonly StreamPhase[]): string[] {
  const lines: string[] = [];
  for (const p of phases) {
    const fresh = ascending(p.responsiveness.fresh.filter((x) => Number.isFinite(x)));
    const kept = ascending(p.responsiveness.kept.filter((x) => Number.isFinite(x)));
    const f = percentile(fresh, 50);
    const k = percentile(kept, 50);
    if (Number.isFinite(f) && Number.isFinite(k) && f > 1_000 && f > 5 * k) {
      lines.push(`- ${TRANSPORT_NAMES[p.transport]} at ${p.streams}: a request on a new connection waited ${ms(f)} ms (p50; max ${ms(fresh[fresh.length - 1] ?? Number.NaN)}) where one on a kept-alive connection took ${ms(k)} ms: while it streamed, Keel was slow to accept new connections (they wait in the kernel's accept queue), so a client arriving during such a load — a new socket, a page load — waits that long before Keel reads its first byte.`);
    }
  }
  return lines.length > 0 ? [...lines, ''] : [];
}

/** Computed remarks: WebSocket against SSE at each level, and levels where the generations could not keep the upstream's pace. */
function comparisons(phases: readonly StreamPhase[]): string[] {
  const lines: string[] = [];
  for (const streams of [...new Set(phases.map((p) => p.streams))]) {
    const ws = phases.find((p) => p.streams === streams && p.transport === 'websocket');
    const sse = phases.find((p) => p.streams === streams && p.transport === 'sse');
    if (ws === undefined || sse === undefined) continue;
    const a = distribution(ws);
    const b = distribution(sse);
    if (a.generationsPerSecond > 0 && b.generationsPerSecond > 0) {
      lines.push(`- At ${streams} concurrent streams the WebSocket carried ${a.generationsPerSecond.toFixed(1)} generations/s and SSE ${b.generationsPerSecond.toFixed(1)} (WebSocket ÷ SSE = ${(a.generationsPerSecond / b.generationsPerSecond).toFixed(2)}); completion p50 ${ms(a.completionP50)} against ${ms(b.completionP50)} ms.`);
    }
    // N workers back to back at the upstream's pace would complete N ÷ (≈ one reply) generations a second.
    const pace = streams / (NOMINAL_MS / 1000);
    for (const [p, d] of [[ws, a], [sse, b]] as const) {
      if (d.generationsPerSecond < 0.8 * pace) lines.push(`- ${TRANSPORT_NAMES[p.transport]} at ${streams}: ${d.generationsPerSecond.toFixed(1)} generations/s where ${streams} workers at the upstream's pace would make about ${pace.toFixed(0)}: Keel (or the shared cores) was saturated, and the latencies include time queued behind other generations' work.`);
    }
  }
  return lines.length > 0 ? [...lines, ''] : [];
}

// The server's memory as the kernel and as V8 see it: VmRSS from /proc/<pid>/status (Linux), and
// the figures Keel's own GET /metrics exposes (prom-client's process metrics and the chat socket gauge);
// a process's CPU time (/proc/<pid>/stat), for CPU per call; and Keel's event-loop delay.
import { readFile } from 'node:fs/promises';

/** Resident set size of `pid` in bytes (VmRSS of /proc/<pid>/status). */
export async function residentBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  if (m === null) throw new Error(`/proc/${pid}/status has no VmRSS line`);
  return Number(m[1]) * 1024;
}

/** What GET /metrics says about the process: V8 heap in use and open chat sockets. */
export interface ServerMetrics {
  /** (keel_)nodejs_heap_size_used_bytes */
  readonly heapUsedBytes: number;
  /** (keel_)nodejs_external_memory_bytes: memory outside the V8 heap held by JS objects (Buffers among them). */
  readonly externalBytes: number;
  /** keel_chat_ws_connections: the chat sockets the server counts as open. */
  readonly chatSockets: number;
}

export async function serverMetrics(baseUrl: string): Promise<ServerMetrics> {
  const res = await fetch(`${baseUrl}/metrics`, { signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`GET /metrics answered ${res.status}`);
  // Keel registers prom-client's default metrics with the prefix `keel_`; accepted with or without it.
  const value = (name: string): number => {
    const m = new RegExp(`^(?:keel_)?${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, 'm').exec(text);
    return m === null ? Number.NaN : Number(m[1]);
  };
  return {
    heapUsedBytes: value('nodejs_heap_size_used_bytes'),
    externalBytes: value('nodejs_external_memory_bytes'),
    chatSockets: value('keel_chat_ws_connections'),
  };
}

/** The soft limit on open files of this process (the servers it starts inherit it), from /proc/self/limits. */
export async function openFilesLimit(): Promise<number | undefined> {
  try {
    const limits = await readFile('/proc/self/limits', 'utf8');
    const m = /^Max open files\s+(\d+|unlimited)\s+/m.exec(limits);
    if (m === null) return undefined;
    return m[1] === 'unlimited' ? Number.POSITIVE_INFINITY : Number(m[1]);
  } catch {
    return undefined;
  }
}

/** Samples `pid`'s RSS every `everyMs` until stopped; the samples, in bytes. */
export function sampleResident(pid: number, everyMs: number): { stop(): Promise<number[]> } {
  const samples: number[] = [];
  let pending: Promise<void> = Promise.resolve();
  const timer = setInterval(() => {
    pending = residentBytes(pid).then((b) => {
      samples.push(b);
    }, () => undefined);
  }, everyMs);
  return {
    async stop() {
      clearInterval(timer);
      await pending;
      return samples;
    },
  };
}

export function mib(bytes: number): string {
  return Number.isFinite(bytes) ? (bytes / 1024 ** 2).toFixed(1) : '–';
}

/**
 * CPU time `pid` has used so far, user and system, in milliseconds (utime + stime of /proc/<pid>/stat,
 * in clock ticks of 10 ms). Differences over a few seconds of load give a process's CPU per call: a
 * figure other work on the machine hardly moves, unlike latency.
 */
export async function cpuTimeMs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) is in parentheses and may hold spaces: count fields after its end.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticksPerMs = 100 / 1000;
  return (Number(fields[11]) + Number(fields[12])) / ticksPerMs;
}

/** How late Keel's event loop ran timers since the previous scrape, in ms (prom-client resets its histogram on each scrape). */
export interface EventLoopDelay {
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
}

/** prom-client's default sampling interval of monitorEventLoopDelay, which its figures include. */
const LOOP_SAMPLING_MS = 10;

/**
 * Scrapes GET /metrics for the event-loop delay since the previous scrape (monitorEventLoopDelay,
 * sampled every 10 ms; the sampling interval itself is taken off, so an idle loop reads ≈0): scrape
 * once to start a window, once more to read it.
 */
export async function eventLoopDelay(baseUrl: string): Promise<EventLoopDelay> {
  const res = await fetch(`${baseUrl}/metrics`, { signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`GET /metrics answered ${res.status}`);
  const seconds = (name: string): number => {
    const m = new RegExp(`^(?:keel_)?nodejs_eventloop_lag_${name}_seconds(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, 'm').exec(text);
    return m === null ? Number.NaN : Math.max(0, Number(m[1]) * 1000 - LOOP_SAMPLING_MS);
  };
  return { p50: seconds('p50'), p99: seconds('p99'), max: seconds('max') };
}

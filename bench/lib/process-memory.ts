// The server's memory as the kernel and as V8 see it: VmRSS from /proc/<pid>/status (Linux), and
// the figures Keel's own GET /metrics exposes (prom-client's process metrics and the chat socket gauge).
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

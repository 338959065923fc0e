// The gateway suite's streaming load generator: N workers, each issuing one SSE chat completion after
// another over a keep-alive node:http Agent, timing the first content chunk and the `[DONE]` of each.
// The same code loads the fake upstream directly and Keel, so the two distributions differ only by
// what is in between.
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';

/** Where the streams go: the fake upstream itself, or Keel in front of it. */
export interface StreamTarget {
  readonly label: 'direct' | 'keel';
  /** e.g. http://127.0.0.1:40123 */
  readonly origin: string;
  /** e.g. /v1/chat/completions */
  readonly path: string;
  /** Credentials (the upstream's key, or a Keel API key); content-type and length are added. */
  readonly headers: Readonly<Record<string, string>>;
}

/** What every stream sends and what a complete answer looks like. */
export interface StreamPlan {
  /** The JSON request body, identical for both targets. */
  readonly body: string;
  /** `data:` events of a complete stream before `data: [DONE]` (role, text pieces, finish, usage). */
  readonly expectedEvents: number;
  /** How long the upstream's chunk schedule makes one stream last: the start stagger and ramp-up. */
  readonly nominalStreamMs: number;
  /** A stream unfinished after this long is destroyed and counted as a timeout. */
  readonly timeoutMs: number;
}

export type StreamOutcome =
  | { readonly ok: true; readonly ttfbMs: number; readonly completionMs: number }
  | { readonly ok: false; readonly failure: string };

/** One segment's streams. Only streams started inside the measured window have samples. */
export interface SegmentResult {
  readonly target: StreamTarget['label'];
  /** Time to the first content chunk, ms, of each measured stream that completed correctly. */
  readonly ttfbMs: number[];
  /** Time to `[DONE]`, ms, of the same streams (same order). */
  readonly completionMs: number[];
  /** Streams started (measured or not: the ramp-up and ramp-down keep the concurrency at N). */
  readonly started: number;
  /** Streams that completed correctly (measured or not). */
  readonly completed: number;
  /** Streams that failed, measured or not, by reason (e.g. "HTTP 502", "timeout", "21 events, expected 23"). */
  readonly failures: Readonly<Record<string, number>>;
  /** Wall time of the whole segment, ramps included. */
  readonly wallMs: number;
}

export function failureCount(r: Pick<SegmentResult, 'failures'>): number {
  return Object.values(r.failures).reduce((n, k) => n + k, 0);
}

/** A keep-alive agent with a socket for each of `concurrency` workers. */
export function streamAgent(concurrency: number): http.Agent {
  return new http.Agent({ keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency });
}

/**
 * Runs `concurrency` workers against `target` and measures the streams that start inside a window of
 * `measuredMs`:
 *
 * 1. worker i starts after i/N of one nominal stream length, so the N streams are spread over the
 *    upstream's chunk schedule instead of all ticking on the same timer (a thundering herd that
 *    would put every chunk of every stream into the same few milliseconds);
 * 2. the window opens one more stream length later, when every worker is issuing streams back to
 *    back;
 * 3. a stream is measured when it starts inside the window; workers go on issuing (unmeasured)
 *    streams until every measured one has ended, so each measured stream runs alongside N − 1
 *    others from its first byte to its last.
 */
export async function runSegment(target: StreamTarget, agent: http.Agent, concurrency: number, measuredMs: number, plan: StreamPlan): Promise<SegmentResult> {
  const url = new URL(target.origin);
  const headers = { ...target.headers, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(plan.body)) };
  const options: http.RequestOptions = { agent, hostname: url.hostname, port: url.port, path: target.path, method: 'POST', headers };
  const started0 = performance.now();
  const stagger = concurrency > 1 ? plan.nominalStreamMs : 0;
  const windowStart = started0 + stagger + plan.nominalStreamMs;
  const windowEnd = windowStart + measuredMs;
  const ttfbMs: number[] = [];
  const completionMs: number[] = [];
  const failures: Record<string, number> = {};
  let started = 0;
  let completed = 0;
  let measuredInFlight = 0;

  const worker = async (i: number): Promise<void> => {
    if (stagger > 0) await delay((i * stagger) / concurrency);
    for (;;) {
      const now = performance.now();
      if (now >= windowEnd && measuredInFlight === 0) return;
      const measured = now >= windowStart && now < windowEnd;
      if (measured) measuredInFlight++;
      started++;
      const outcome = await oneStream(options, plan);
      if (measured) measuredInFlight--;
      if (outcome.ok) {
        completed++;
        if (measured) {
          ttfbMs.push(outcome.ttfbMs);
          completionMs.push(outcome.completionMs);
        }
      } else {
        failures[outcome.failure] = (failures[outcome.failure] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, i) => worker(i)));
  return { target: target.label, ttfbMs, completionMs, started, completed, failures, wallMs: performance.now() - started0 };
}

/**
 * One streamed chat completion. The clock starts just before the request is written; the first
 * content time is when the chunk whose `delta.content` is non-empty was read off the socket (the
 * role chunk before it has `content: ""`), the completion time when `data: [DONE]` was. A stream is
 * correct when it answered 200, had exactly `plan.expectedEvents` data events, no error event, and
 * ended with `[DONE]`.
 */
export function oneStream(options: http.RequestOptions, plan: StreamPlan): Promise<StreamOutcome> {
  return new Promise<StreamOutcome>((resolve) => {
    let settled = false;
    const finish = (outcome: StreamOutcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(outcome);
    };
    const start = performance.now();
    const req = http.request(options);
    const timer = setTimeout(() => {
      finish({ ok: false, failure: 'timeout' });
      req.destroy();
    }, plan.timeoutMs);
    req.on('error', (err: NodeJS.ErrnoException) => finish({ ok: false, failure: `socket error ${err.code ?? err.message}` }));
    req.on('response', (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        res.on('end', () => finish({ ok: false, failure: `HTTP ${res.statusCode ?? '?'}` }));
        return;
      }
      res.setEncoding('utf8');
      let buffer = '';
      let events = 0;
      let ttfb: number | undefined;
      let done: number | undefined;
      let errorEvent = false;
      res.on('data', (text: string) => {
        const now = performance.now();
        buffer += text;
        let end: number;
        while ((end = buffer.indexOf('\n\n')) !== -1) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          // Comment lines (Keel's `: keep-alive` heartbeats) are not events.
          if (!event.startsWith('data: ')) continue;
          const data = event.slice(6);
          if (data === '[DONE]') {
            done ??= now;
            continue;
          }
          events++;
          if (data.startsWith('{"error"')) errorEvent = true;
          // Only the first events are parsed: once the first content arrived, counting is enough.
          else if (ttfb === undefined && hasContent(data)) ttfb = now;
        }
      });
      res.on('close', () => {
        if (!res.complete) finish({ ok: false, failure: 'response broken off' });
      });
      res.on('error', (err: NodeJS.ErrnoException) => finish({ ok: false, failure: `response error ${err.code ?? err.message}` }));
      res.on('end', () => {
        if (errorEvent) finish({ ok: false, failure: 'error event in the stream' });
        else if (done === undefined) finish({ ok: false, failure: 'ended without [DONE]' });
        else if (events !== plan.expectedEvents) finish({ ok: false, failure: `${events} data events, expected ${plan.expectedEvents}` });
        else if (ttfb === undefined) finish({ ok: false, failure: 'no content chunk' });
        else finish({ ok: true, ttfbMs: ttfb - start, completionMs: done - start });
      });
    });
    req.end(plan.body);
  });
}

function hasContent(data: string): boolean {
  try {
    const chunk = JSON.parse(data) as { choices?: Array<{ delta?: { content?: unknown } }> };
    const content = chunk.choices?.[0]?.delta?.content;
    return typeof content === 'string' && content.length > 0;
  } catch {
    return false;
  }
}

/** Nearest-rank percentile of ascending `sorted` (p in 0..100); NaN when empty. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1]!;
}

export function ascending(values: readonly number[]): number[] {
  return [...values].sort((a, b) => a - b);
}

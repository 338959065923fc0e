// Starts the fake OpenAI-compatible upstream (server/test/helpers/fake-openai.ts) as a child process
// of its own and drives it over IPC: see lib/fake-upstream-child.ts.
import { fork } from 'node:child_process';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import type { Behaviour } from '../../server/test/helpers/fake-openai.js';

export type { Behaviour };

/** What the fake saw between two `take()`s: the requests that ended in between. */
export interface FakeStats {
  /** Requests that arrived and ended (any path). */
  received: number;
  /** Responses sent to the end. */
  finished: number;
  /** Responses the client (Keel, or the load generator) closed before their end. */
  aborted: number;
  /** Responses the fake broke off itself (never, with the behaviours the suite sets). */
  broken: number;
  /** Requests per URL path, e.g. { "/v1/chat/completions": 1234 }. */
  byPath: Record<string, number>;
  /** Only in a take's answer: requests still in flight, counted by a later take once they end. */
  inFlight?: number;
}

/** What the parent asks; every command carries an `id` its reply repeats. */
export type FakeRequest = { op: 'behave'; behaviour: Behaviour } | { op: 'take' };
export type FakeCommand = FakeRequest & { id: number };

export type FakeReply =
  | { id: number; ok: true; url?: string; stats?: FakeStats }
  | { id: number; ok: false; error: string };

export interface FakeUpstream {
  /** e.g. http://127.0.0.1:40123/v1 (what LLM_BASE_URL takes). */
  readonly url: string;
  /** e.g. http://127.0.0.1:40123 */
  readonly origin: string;
  readonly pid: number | undefined;
  /** The behaviour of every request from now on (see Behaviour in fake-openai.ts). */
  behave(behaviour: Behaviour): Promise<void>;
  /** The requests that ended since the previous take (the fake then forgets them). */
  take(): Promise<FakeStats>;
  /** SIGTERM and wait for the exit (SIGKILL after 5 s). Safe to call more than once. */
  stop(): Promise<void>;
}

const CHILD = path.join(import.meta.dirname, 'fake-upstream-child.ts');
const REPO_ROOT = path.resolve(import.meta.dirname, '../..');

export async function startFakeUpstream(options: { apiKey: string; env: Readonly<Record<string, string>> }): Promise<FakeUpstream> {
  const child = fork(CHILD, [], {
    // tsx loads the TypeScript fake as the benchmark process itself is loaded; resolved from the repo root.
    cwd: REPO_ROOT,
    execArgv: ['--import', 'tsx'],
    env: { ...options.env, NODE_ENV: 'production', FAKE_UPSTREAM_API_KEY: options.apiKey },
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    serialization: 'json',
  });
  let stderrTail = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderrTail = (stderrTail + chunk).slice(-8192);
  });

  const pending = new Map<number, { resolve: (r: FakeReply) => void; reject: (e: Error) => void }>();
  let exited = false;
  const exit = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exited = true;
      const why = new Error(`the fake upstream exited (${signal ?? `code ${code}`})${stderrTail.trim() ? `\n--- fake upstream stderr ---\n${stderrTail.trim()}` : ''}`);
      for (const p of pending.values()) p.reject(why);
      pending.clear();
      resolve();
    });
  });
  child.on('message', (raw) => {
    const reply = raw as FakeReply;
    const waiter = pending.get(reply.id);
    if (waiter === undefined) return;
    pending.delete(reply.id);
    waiter.resolve(reply);
  });

  const call = (id: number): Promise<FakeReply> => new Promise<FakeReply>((resolve, reject) => {
    if (exited) {
      reject(new Error('the fake upstream is not running'));
      return;
    }
    pending.set(id, { resolve, reject });
  });
  let nextId = 1;
  const command = async (request: FakeRequest): Promise<FakeReply & { ok: true }> => {
    const id = nextId++;
    const answer = call(id);
    const message: FakeCommand = { ...request, id };
    child.send(message);
    const reply = await answer;
    if (!reply.ok) throw new Error(`fake upstream: ${reply.error}`);
    return reply;
  };

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (exited) return;
      child.kill('SIGTERM');
      const timedOut = await Promise.race([exit.then(() => false), delay(5_000, true)]);
      if (timedOut && !exited) {
        child.kill('SIGKILL');
        await exit;
      }
    })();
    return stopping;
  };

  let url: string;
  try {
    const first = await Promise.race([call(0), delay(30_000, undefined)]);
    if (first === undefined) throw new Error(`the fake upstream did not start within 30 s${stderrTail.trim() ? `\n${stderrTail.trim()}` : ''}`);
    if (!first.ok || first.url === undefined) throw new Error(`the fake upstream did not start: ${first.ok ? 'no url' : first.error}`);
    url = first.url;
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    url,
    origin: new URL(url).origin,
    pid: child.pid,
    behave: async (behaviour) => {
      await command({ op: 'behave', behaviour });
    },
    take: async () => {
      const reply = await command({ op: 'take' });
      if (reply.stats === undefined) throw new Error('fake upstream: take answered without stats');
      return reply.stats;
    },
    stop,
  };
}

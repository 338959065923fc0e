import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/platform/logger.js';
import { createMemoryPubSub, createPubSub, createRedisPubSub, type PubSub } from '../../src/platform/pubsub.js';
import { REPO_ROOT } from '../helpers/process.js';
import { startTcpProxy } from '../helpers/tcp-proxy.js';

const REDIS_URL = process.env.REDIS_URL;
if (process.env.CI && !REDIS_URL) throw new Error('CI is set but REDIS_URL is not: the Redis-backed tests would be skipped.');

/** A port nothing listens on: connections are refused at once. */
const CLOSED_PORT_URL = 'redis://127.0.0.1:1';
/** How long to keep listening after the expected deliveries, to catch a duplicate. */
const SETTLE_MS = 300;

interface Captured {
  logger: Logger;
  lines: Array<Record<string, unknown>>;
  messages(msg: string): Array<Record<string, unknown>>;
}

function captureLogs(): Captured {
  const lines: Array<Record<string, unknown>> = [];
  const logger = createLogger({ logLevel: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  return { logger, lines, messages: (msg) => lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith(msg)) };
}

/** Records what a handler received. */
function recorder(): { handler: (m: unknown) => void; got: unknown[] } {
  const got: unknown[] = [];
  return { handler: (m) => void got.push(m), got };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

describe('in-process pub/sub', () => {
  let ps: PubSub;
  let logs: Captured;
  beforeEach(() => {
    logs = captureLogs();
    ps = createMemoryPubSub(logs.logger);
  });
  afterEach(() => ps.close());

  it('is chosen when no Redis URL is configured', async () => {
    const chosen = createPubSub({ redisUrl: undefined, redisKeyPrefix: 'keel:' }, logs.logger);
    expect(chosen.kind).toBe('memory');
    expect(ps.kind).toBe('memory');
    await chosen.close();
  });

  it('publish reaches every subscriber of the channel, once each, and no other channel', async () => {
    const one = recorder();
    const two = recorder();
    const other = recorder();
    ps.subscribe('room', one.handler);
    ps.subscribe('room', two.handler);
    ps.subscribe('room2', other.handler);
    ps.subscribe('roo', other.handler);
    await ps.publish('room', { n: 1 });
    await ps.publish('nobody-listens', { n: 2 });
    expect(one.got).toEqual([{ n: 1 }]);
    expect(two.got).toEqual([{ n: 1 }]);
    expect(other.got).toEqual([]);
  });

  it('handlers receive a JSON copy, as they would from another instance', async () => {
    const r = recorder();
    ps.subscribe('c', r.handler);
    const message = { at: new Date('2025-01-02T03:04:05.000Z'), gone: undefined, list: [1, 'two'] };
    await ps.publish('c', message);
    expect(r.got).toEqual([{ at: '2025-01-02T03:04:05.000Z', list: [1, 'two'] }]);
    expect(r.got[0]).not.toBe(message);
    await ps.publish('c', undefined);
    await ps.publish('c', 'text');
    expect(r.got.slice(1)).toEqual([undefined, 'text']);
  });

  it('unsubscribe stops that handler only, and calling it twice is harmless', async () => {
    const kept = recorder();
    const dropped = recorder();
    ps.subscribe('c', kept.handler);
    const off = ps.subscribe('c', dropped.handler);
    await ps.publish('c', 1);
    off();
    off();
    await ps.publish('c', 2);
    expect(kept.got).toEqual([1, 2]);
    expect(dropped.got).toEqual([1]);
  });

  it('one function subscribed twice is two subscriptions, unsubscribed independently', async () => {
    const r = recorder();
    const first = ps.subscribe('c', r.handler);
    ps.subscribe('c', r.handler);
    await ps.publish('c', 'a');
    first();
    await ps.publish('c', 'b');
    expect(r.got).toEqual(['a', 'a', 'b']);
  });

  it('a handler that throws or rejects is logged and does not stop the others', async () => {
    const before = recorder();
    const after = recorder();
    ps.subscribe('c', before.handler);
    ps.subscribe('c', () => {
      throw new Error('handler bug');
    });
    // eslint-disable-next-line @typescript-eslint/no-misused-promises -- the case under test: a handler whose promise rejects
    ps.subscribe('c', async () => {
      await Promise.resolve();
      throw new Error('async handler bug');
    });
    ps.subscribe('c', after.handler);
    await expect(ps.publish('c', 'x')).resolves.toBeUndefined();
    await sleep(10);
    expect(before.got).toEqual(['x']);
    expect(after.got).toEqual(['x']);
    const failures = logs.messages('pubsub handler failed');
    expect(failures.map((l) => (l.err as { message: string }).message).sort()).toEqual(['async handler bug', 'handler bug']);
    expect(failures.every((l) => l.level === 'error' && l.channel === 'c')).toBe(true);
  });

  it('a message that cannot be serialised is logged and dropped; publish does not throw', async () => {
    const r = recorder();
    ps.subscribe('c', r.handler);
    await expect(ps.publish('c', { big: 1n })).resolves.toBeUndefined();
    expect(r.got).toEqual([]);
    expect(logs.messages('pubsub message is not JSON-serialisable')).toHaveLength(1);
  });

  it('after close, publish and subscribe do nothing', async () => {
    const r = recorder();
    ps.subscribe('c', r.handler);
    await ps.close();
    await ps.publish('c', 1);
    const off = ps.subscribe('c', r.handler);
    await ps.publish('c', 2);
    off();
    expect(r.got).toEqual([]);
  });
});

/** Runs a PubSub in a child process and checks that the process exits by itself once it is closed. */
async function exitsAfterClose(url: string, prefix: string): Promise<{ got: number; exitMs: number }> {
  const moduleUrl = (p: string): string => JSON.stringify(new URL(p, import.meta.url).href);
  const script = `
    const { createRedisPubSub } = await import(${moduleUrl('../../src/platform/pubsub.ts')});
    const { createLogger } = await import(${moduleUrl('../../src/platform/logger.ts')});
    const ps = createRedisPubSub(process.env.PS_URL, process.env.PS_PREFIX, createLogger({ logLevel: 'silent' }));
    let got = 0;
    const off = ps.subscribe('c', () => { got++; });
    await new Promise((resolve) => setTimeout(resolve, 300));
    await ps.publish('c', { hello: 1 });
    await new Promise((resolve) => setTimeout(resolve, 200));
    off();
    await ps.close();
    process.stdout.write(JSON.stringify({ got }) + '\\n');
  `;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', PS_URL: url, PS_PREFIX: prefix },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  let closedAt = 0;
  child.stdout.on('data', (c: Buffer) => {
    out += c.toString();
    if (closedAt === 0 && out.includes('\n')) closedAt = Date.now();
  });
  child.stderr.on('data', (c: Buffer) => void (err += c.toString()));
  const killer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  const code = await new Promise<number | string>((resolve) => child.on('exit', (c, signal) => resolve(c ?? signal ?? -1)));
  clearTimeout(killer);
  if (code !== 0 || closedAt === 0) throw new Error(`child did not exit cleanly (${code}):\n${out}\n${err}`);
  return { got: (JSON.parse(out) as { got: number }).got, exitMs: Date.now() - closedAt };
}

describe('pub/sub with Redis unreachable', () => {
  let ps: PubSub | undefined;
  afterEach(() => ps?.close());

  it('publish still delivers locally, neither throws nor hangs, and the outage is logged rate-limited', async () => {
    const logs = captureLogs();
    ps = createRedisPubSub(CLOSED_PORT_URL, `keel-test-${randomBytes(4).toString('hex')}:`, logs.logger);
    expect(ps.kind).toBe('redis');
    const r = recorder();
    ps.subscribe('c', r.handler);
    for (let i = 0; i < 5; i++) {
      const started = Date.now();
      await expect(ps.publish('c', i)).resolves.toBeUndefined();
      expect(Date.now() - started).toBeLessThan(1200);
    }
    expect(r.got).toEqual([0, 1, 2, 3, 4]);
    expect(logs.messages('pubsub publish failed')).toHaveLength(1);
  });

  it('a Redis that accepts connections but never answers delays publish by at most about a second, once', async () => {
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((s) => {
      sockets.add(s);
      s.on('error', () => undefined).on('close', () => sockets.delete(s));
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const logs = captureLogs();
      ps = createRedisPubSub(`redis://127.0.0.1:${(silent.address() as net.AddressInfo).port}`, 'keel-test-silent:', logs.logger);
      const r = recorder();
      ps.subscribe('c', r.handler);
      // The first publish waits for the connection attempt (at most a second); the next fail fast.
      for (let i = 0; i < 3; i++) {
        const started = Date.now();
        await ps.publish('c', i);
        expect(Date.now() - started).toBeLessThan(i === 0 ? 1300 : 200);
      }
      expect(r.got).toEqual([0, 1, 2]);
      expect(logs.messages('pubsub publish failed')).toHaveLength(1);
      await ps.close();
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });

  it('close() stops reconnecting: a process that used it exits by itself', async () => {
    const { got, exitMs } = await exitsAfterClose(CLOSED_PORT_URL, 'keel-test-exit:');
    expect(got).toBe(1);
    // ioredis (5.11) arms its disconnectTimeout (2 s) when disconnecting a connection that already
    // failed; that timer, not a leak, is what the process may wait for.
    expect(exitMs).toBeLessThan(3500);
  });
});

describe.runIf(REDIS_URL)('pub/sub across instances through Redis', () => {
  const url = REDIS_URL!;
  let prefix: string;
  let admin: Redis;
  let logs: Captured;
  let a: PubSub;
  let b: PubSub;
  const extra: PubSub[] = [];

  /** How many connections are subscribed to `channel` under `prefix`, as Redis sees it. */
  const subscribers = async (channel: string, p = prefix): Promise<number> => {
    const reply = (await admin.call('PUBSUB', 'NUMSUB', `${p}ps:${channel}`)) as [string, number];
    return Number(reply[1]);
  };
  const waitSubscribers = (channel: string, n: number, p = prefix): Promise<void> =>
    waitFor(async () => (await subscribers(channel, p)) === n, `${n} subscriber(s) on ${channel}`);

  beforeEach(async () => {
    // A prefix of its own keeps this test's channels apart from any other run sharing the Redis.
    prefix = `keel-test-${randomBytes(4).toString('hex')}:`;
    admin = new Redis(url, { lazyConnect: true });
    await admin.connect();
    logs = captureLogs();
    a = createRedisPubSub(url, prefix, logs.logger);
    b = createRedisPubSub(url, prefix, logs.logger);
  });
  afterEach(async () => {
    await Promise.all([a.close(), b.close(), ...extra.splice(0).map((p) => p.close())]);
    await admin.quit();
  });

  it('is chosen when a Redis URL is configured', async () => {
    const chosen = createPubSub({ redisUrl: url, redisKeyPrefix: prefix }, logs.logger);
    extra.push(chosen);
    expect(chosen.kind).toBe('redis');
  });

  it('a message published on A reaches the subscribers on A and on B exactly once each', async () => {
    const onA = recorder();
    const onB = recorder();
    const onB2 = recorder();
    a.subscribe('room', onA.handler);
    b.subscribe('room', onB.handler);
    b.subscribe('room', onB2.handler);
    await waitSubscribers('room', 2);

    await a.publish('room', { from: 'a', at: new Date(0) });
    expect(onA.got).toEqual([{ from: 'a', at: '1970-01-01T00:00:00.000Z' }]);
    await waitFor(() => onB.got.length > 0 && onB2.got.length > 0, 'delivery on B');
    await b.publish('room', { from: 'b' });
    await waitFor(() => onA.got.length > 1, 'delivery on A');
    await sleep(SETTLE_MS);

    for (const r of [onA, onB, onB2]) expect(r.got).toEqual([{ from: 'a', at: '1970-01-01T00:00:00.000Z' }, { from: 'b' }]);
  });

  it('channels are isolated', async () => {
    const x = recorder();
    const y = recorder();
    b.subscribe('x', x.handler);
    b.subscribe('y', y.handler);
    b.subscribe('x:sub', x.handler);
    await waitSubscribers('y', 1);
    await a.publish('y', 'for y');
    await waitFor(() => y.got.length > 0, 'delivery of y');
    await sleep(SETTLE_MS);
    expect(y.got).toEqual(['for y']);
    expect(x.got).toEqual([]);
  });

  it('subscribes to Redis with the first local handler and unsubscribes with the last; unsubscribing on B stops B', async () => {
    const onA = recorder();
    const onB = recorder();
    a.subscribe('c', onA.handler);
    const offB1 = b.subscribe('c', onB.handler);
    const offB2 = b.subscribe('c', onB.handler);
    await waitSubscribers('c', 2);

    offB1();
    await sleep(100);
    expect(await subscribers('c')).toBe(2);
    await a.publish('c', 1);
    await waitFor(() => onB.got.length > 0, 'delivery to the remaining handler on B');

    offB2();
    await waitSubscribers('c', 1);
    await a.publish('c', 2);
    await sleep(SETTLE_MS);
    expect(onA.got).toEqual([1, 2]);
    expect(onB.got).toEqual([1]);

    b.subscribe('c', onB.handler);
    await waitSubscribers('c', 2);
    await a.publish('c', 3);
    await waitFor(() => onB.got.length > 1, 'delivery after subscribing again');
    await sleep(SETTLE_MS);
    expect(onB.got).toEqual([1, 3]);
  });

  it('an instance with a different prefix neither receives nor is received', async () => {
    const otherPrefix = `${prefix}other-`;
    const c = createRedisPubSub(url, otherPrefix, logs.logger);
    extra.push(c);
    const onB = recorder();
    const onC = recorder();
    b.subscribe('room', onB.handler);
    c.subscribe('room', onC.handler);
    await waitSubscribers('room', 1);
    await waitSubscribers('room', 1, otherPrefix);

    await a.publish('room', 'same prefix');
    await c.publish('room', 'other prefix');
    await waitFor(() => onB.got.length > 0, 'delivery on B');
    await sleep(SETTLE_MS);
    expect(onB.got).toEqual(['same prefix']);
    expect(onC.got).toEqual(['other prefix']);
  });

  it('malformed messages from Redis are logged and dropped', async () => {
    const onB = recorder();
    b.subscribe('room', onB.handler);
    await waitSubscribers('room', 1);
    await admin.publish(`${prefix}ps:room`, 'not json');
    await admin.publish(`${prefix}ps:room`, JSON.stringify({ m: 'no origin' }));
    await admin.publish(`${prefix}ps:room`, JSON.stringify({ o: 'someone-else', m: 'valid' }));
    await waitFor(() => onB.got.length > 0, 'the valid message');
    await sleep(SETTLE_MS);
    expect(onB.got).toEqual(['valid']);
    expect(logs.messages('pubsub dropped a message that is not JSON')).toHaveLength(1);
    expect(logs.messages('pubsub dropped a message without an origin')).toHaveLength(1);
  });

  it('re-subscribes after the connection to Redis is lost and comes back', async () => {
    const target = new URL(url);
    const proxy = await startTcpProxy(target.hostname, Number(target.port || 6379));
    try {
      const proxied = new URL(url);
      proxied.hostname = '127.0.0.1';
      proxied.port = String(proxy.port);
      const c = createRedisPubSub(proxied.href, prefix, logs.logger);
      extra.push(c);
      const onA = recorder();
      const onC = recorder();
      a.subscribe('r', onA.handler);
      c.subscribe('r', onC.handler);
      c.subscribe('r2', onC.handler);
      await waitSubscribers('r', 2);
      await waitSubscribers('r2', 1);

      await proxy.cut();
      await waitSubscribers('r', 1);
      await c.publish('r', 'while cut');
      expect(onC.got).toEqual(['while cut']);

      await proxy.restore();
      await waitSubscribers('r', 2, prefix);
      await waitSubscribers('r2', 1);
      await a.publish('r', 'after');
      await waitFor(() => onC.got.length > 1, 'delivery after reconnecting');
      await c.publish('r', 'from c');
      await waitFor(() => onA.got.length > 1, 'delivery from the reconnected instance');
      await sleep(SETTLE_MS);
      expect(onC.got).toEqual(['while cut', 'after', 'from c']);
      expect(onA.got).toEqual(['after', 'from c']);
    } finally {
      await proxy.close();
    }
  });

  it('close() leaves no open handles: a process that used it exits by itself', async () => {
    const { got, exitMs } = await exitsAfterClose(url, prefix);
    expect(got).toBe(1);
    expect(exitMs).toBeLessThan(2000);
  });
});

import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { closeRedis, createRedis } from './redis.js';

export type Unsubscribe = () => void;

/**
 * Fire-and-forget messages between the parts of Keel, on this instance and every other one. Delivery
 * is at most once per subscriber: an instance that is disconnected from Redis when a message is sent
 * misses it, so consumers that need every event (sync) re-read their state after a gap.
 *
 * Messages travel as JSON in both implementations, so handlers receive the same plain copy whether the
 * publisher is in this process or another one (a `Date` arrives as a string, `undefined` fields vanish).
 */
export interface PubSub {
  /** Delivers `message` (JSON-serialisable) to every subscriber of `channel` on every instance, this one included. Never throws: a Redis outage is logged (rate-limited) and the message is still delivered locally. */
  publish(channel: string, message: unknown): Promise<void>;
  /** Calls `handler` for each message on `channel` (exact name). Returns an unsubscribe function. Handlers that throw are logged, not propagated. */
  subscribe(channel: string, handler: (message: unknown) => void): Unsubscribe;
  /** Stops delivery and closes any connections; afterwards `publish` and `subscribe` do nothing. */
  close(): Promise<void>;
  readonly kind: 'memory' | 'redis';
}

type Handler = (message: unknown) => void;

/** Longest a publish waits for Redis before giving up on other instances (local delivery is already done). */
const PUBLISH_TIMEOUT_MS = 1000;
/** Repeated warnings of one kind (an outage, a stream of bad messages) are logged at most this often. */
const WARN_INTERVAL_MS = 10_000;

/** Pub/sub inside this process only: the default when no REDIS_URL is configured. */
export function createMemoryPubSub(logger: Logger): PubSub {
  const bus = new LocalBus(logger);
  let closed = false;
  return {
    kind: 'memory',
    async publish(channel, message) {
      if (closed) return;
      const payload = encode(logger, channel, '', message);
      if (payload !== undefined) bus.deliver(channel, decodeOwn(payload));
    },
    subscribe(channel, handler) {
      return closed ? () => undefined : bus.add(channel, handler);
    },
    async close() {
      closed = true;
      bus.clear();
    },
  };
}

/**
 * Pub/sub across every instance that shares `url` and `prefix`, on two connections: Redis puts a
 * connection that subscribes into a mode where it can do nothing else, so publishing needs its own.
 * Redis channels are named `${prefix}ps:<channel>`; this instance holds a Redis subscription to a
 * channel exactly while it has at least one local handler for it, and re-subscribes after a reconnect.
 *
 * Each message carries this instance's origin id. The publishing instance delivers to its own
 * handlers immediately, without a round trip, and ignores its echo from Redis: local handlers get
 * each message exactly once, and still get it while Redis is down.
 */
export function createRedisPubSub(url: string, prefix: string, logger: Logger): PubSub {
  const origin = randomUUID();
  const base = `${prefix}ps:`;
  const warn = throttledWarn(logger);
  const publisher = createRedis(url, logger, 'keel-pubsub-pub');
  const subscriber = createSubscriber(url, warn);
  let closed = false;
  let closing: Promise<void> | undefined;

  const resubscribeFailed = (err: unknown): void => {
    // A dropped connection is handled by the next 'ready', which subscribes everything again.
    if (!closed && subscriber.status === 'ready') warn({ err: errorSummary(err) }, 'pubsub subscribe failed');
  };
  const bus = new LocalBus(logger, {
    first(channel) {
      if (subscriber.status === 'ready') subscriber.subscribe(base + channel).catch(resubscribeFailed);
    },
    last(channel) {
      // If the connection is down, the subscription dies with it and 'ready' will not renew it.
      if (subscriber.status === 'ready') subscriber.unsubscribe(base + channel).catch(() => undefined);
    },
  });

  subscriber.on('ready', () => {
    const channels = bus.channels().map((c) => base + c);
    if (!closed && channels.length > 0) subscriber.subscribe(...channels).catch(resubscribeFailed);
  });
  subscriber.on('message', (redisChannel: string, text: string) => {
    if (closed || !redisChannel.startsWith(base)) return;
    const channel = redisChannel.slice(base.length);
    let envelope: unknown;
    try {
      envelope = JSON.parse(text);
    } catch {
      warn({ channel }, 'pubsub dropped a message that is not JSON');
      return;
    }
    if (!isEnvelope(envelope)) {
      warn({ channel }, 'pubsub dropped a message without an origin');
      return;
    }
    if (envelope.o === origin) return;
    bus.deliver(channel, envelope.m);
  });

  // Commands fail at once while the publisher is not connected (no offline queue). So that the first
  // messages after start-up are not lost to a connection still being set up, publishing waits for the
  // first connection attempt to end, at most a second after creation.
  const firstAttempt = new Promise<void>((resolve) => {
    const events = ['ready', 'error', 'close', 'end'] as const;
    const done = (): void => {
      clearTimeout(timer);
      for (const e of events) publisher.off(e, done);
      resolve();
    };
    const timer = setTimeout(done, PUBLISH_TIMEOUT_MS).unref();
    for (const e of events) publisher.on(e, done);
  });

  const sendToRedis = async (channel: string, payload: string): Promise<void> => {
    if (publisher.status !== 'ready') await firstAttempt;
    // ioredis would write PUBLISH into a connection still in its handshake; fail fast instead.
    if (publisher.status !== 'ready') throw new Error(`redis connection is ${publisher.status}`);
    await publisher.publish(base + channel, payload);
  };

  return {
    kind: 'redis',
    async publish(channel, message) {
      if (closed) return;
      const payload = encode(logger, channel, origin, message);
      if (payload === undefined) return;
      bus.deliver(channel, decodeOwn(payload));
      try {
        await withTimeout(sendToRedis(channel, payload), PUBLISH_TIMEOUT_MS);
      } catch (err) {
        warn({ err: errorSummary(err) }, 'pubsub publish failed: delivered on this instance only');
      }
    },
    subscribe(channel, handler) {
      return closed ? () => undefined : bus.add(channel, handler);
    },
    close() {
      if (!closing) {
        closed = true;
        bus.clear();
        closing = Promise.allSettled([closeRedis(subscriber), closeRedis(publisher)]).then(() => undefined);
      }
      return closing;
    },
  };
}

/** Redis pub/sub when `redisUrl` is set, otherwise in-process. */
export function createPubSub(config: Pick<Config, 'redisUrl' | 'redisKeyPrefix'>, logger: Logger): PubSub {
  return config.redisUrl ? createRedisPubSub(config.redisUrl, config.redisKeyPrefix, logger) : createMemoryPubSub(logger);
}

/** The local handlers of one PubSub, with hooks for when a channel gains its first or loses its last. */
class LocalBus {
  private readonly handlers = new Map<string, Set<Handler>>();

  constructor(
    private readonly logger: Logger,
    private readonly hooks: { first(channel: string): void; last(channel: string): void } | undefined = undefined,
  ) {}

  add(channel: string, handler: Handler): Unsubscribe {
    // A wrapper per subscription, so one function subscribed twice is two independent subscriptions.
    const entry: Handler = (message) => handler(message);
    let set = this.handlers.get(channel);
    if (!set) {
      set = new Set();
      this.handlers.set(channel, set);
      this.hooks?.first(channel);
    }
    set.add(entry);
    return () => {
      const current = this.handlers.get(channel);
      if (!current?.delete(entry) || current.size > 0) return;
      this.handlers.delete(channel);
      this.hooks?.last(channel);
    };
  }

  deliver(channel: string, message: unknown): void {
    const set = this.handlers.get(channel);
    if (!set) return;
    for (const handler of [...set]) {
      try {
        const result: unknown = handler(message);
        if (result instanceof Promise) result.catch((err: unknown) => this.failed(channel, err));
      } catch (err) {
        this.failed(channel, err);
      }
    }
  }

  channels(): string[] {
    return [...this.handlers.keys()];
  }

  clear(): void {
    this.handlers.clear();
  }

  private failed(channel: string, err: unknown): void {
    this.logger.error({ err, channel }, 'pubsub handler failed');
  }
}

interface Envelope {
  /** The origin id of the publishing instance. */
  o: string;
  m: unknown;
}

function isEnvelope(value: unknown): value is Envelope {
  return typeof value === 'object' && value !== null && typeof (value as { o?: unknown }).o === 'string';
}

/** The wire form of a message, or undefined (logged) when it cannot be serialised. */
function encode(logger: Logger, channel: string, origin: string, message: unknown): string | undefined {
  try {
    return JSON.stringify({ o: origin, m: message } satisfies Envelope);
  } catch (err) {
    logger.error({ err: errorSummary(err), channel }, 'pubsub message is not JSON-serialisable: dropped');
    return undefined;
  }
}

function decodeOwn(payload: string): unknown {
  return (JSON.parse(payload) as Envelope).m;
}

/** The subscriber connection: like createRedis, but resubscribing is left to this module. */
function createSubscriber(url: string, warn: ThrottledWarn): Redis {
  const client = new Redis(url, {
    connectionName: 'keel-pubsub-sub',
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    connectTimeout: 2000,
    retryStrategy: (times) => Math.min(times * 200, 2000),
    // ioredis would replay the subscriptions of the lost connection, and resend an UNSUBSCRIBE that was
    // in flight after the SUBSCRIBE of a handler added meanwhile; the 'ready' handler subscribes
    // exactly the channels that have handlers instead.
    autoResubscribe: false,
    autoResendUnfulfilledCommands: false,
  });
  client.on('error', (err: Error) => warn({ err: { message: err.message } }, 'redis unavailable (pubsub subscriber)'));
  return client;
}

type ThrottledWarn = (fields: Record<string, unknown>, msg: string) => void;

/** Logs each distinct warning at most every WARN_INTERVAL_MS, with how many were suppressed meanwhile. */
function throttledWarn(logger: Logger): ThrottledWarn {
  const seen = new Map<string, { at: number; suppressed: number }>();
  return (fields, msg) => {
    const now = Date.now();
    const entry = seen.get(msg);
    if (entry && now - entry.at < WARN_INTERVAL_MS) {
      entry.suppressed++;
      return;
    }
    logger.warn(entry?.suppressed ? { ...fields, suppressed: entry.suppressed } : fields, msg);
    seen.set(msg, { at: now, suppressed: 0 });
  };
}

function errorSummary(err: unknown): { message: string } {
  return { message: err instanceof Error ? err.message : String(err) };
}

async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer from redis within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

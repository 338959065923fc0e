import { sql, type ExpressionBuilder, type Insertable, type Kysely, type Selectable, type SqlBool, type Transaction } from 'kysely';
import type { DialectCapabilities } from '../../db/dialect.js';
import type { DB, UsageCountersTable, UsageEventsTable } from '../../db/schema.js';

type Db = Kysely<DB> | Transaction<DB>;

export type UsageEventRow = Selectable<UsageEventsTable>;
export type UsageCounterRow = Selectable<UsageCountersTable>;

/** The most a counter may reach for each measure this reservation is checked against; absent means unchecked. */
export interface CounterCaps {
  requests?: number;
  tokens?: number;
  cost?: number;
}

/** Which usage events an aggregate covers: `[from, to)`, optionally one user's. */
export interface EventFilter {
  from: string;
  to: string;
  userId?: string;
}

export type GroupBy = 'day' | 'model' | 'endpoint' | 'user';

export interface Aggregate {
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
  cost_usd: number;
}

const INT32_MAX = 2_147_483_647;

/** The columns of a usage row its owner may read (all of them: the table never holds prompt or output text). */
const LOG_COLUMNS = [
  'id', 'endpoint', 'provider', 'model', 'prompt_tokens', 'completion_tokens', 'total_tokens', 'estimated', 'cost_usd',
  'latency_ms', 'ttft_ms', 'status', 'error_code', 'api_key_id', 'device_id', 'request_id', 'message_id', 'created_at',
] as const;

/** SQL for metering: usage events, budget counters, and the aggregates `GET /usage` reports. */
export const usageRepository = {
  /** A user's `users.limits` (admin overrides, JSON text); undefined for an unknown user. */
  userLimits: (db: Db, userId: string) => db.selectFrom('users').select('limits').where('id', '=', userId).executeTakeFirst(),

  /**
   * Creates the counters that do not exist yet, leaving existing ones alone. Pass `rows` sorted by
   * key: concurrent transactions then take their row locks in the same order and cannot deadlock.
   */
  ensureCounters: async (db: Db, rows: ReadonlyArray<{ key: string; user_id: string }>, now: string): Promise<void> => {
    if (rows.length === 0) return;
    await db
      .insertInto('usage_counters')
      .values(rows.map((r) => ({ key: r.key, user_id: r.user_id, requests: 0, tokens_used: 0, tokens_reserved: 0, cost_used: 0, cost_reserved: 0, updated_at: now })))
      .onConflict((oc) => oc.column('key').doNothing())
      .execute();
  },

  /**
   * Counts one request on the counter and reserves `tokens` and `cost` on it, only if every cap still
   * holds afterwards (and a token or cost budget is not already used up). The condition and the increment
   * are one statement, so concurrent reservations cannot both pass on the same remainder: Postgres
   * re-checks the condition on the row it locked, SQLite runs one writer at a time. True when reserved.
   */
  reserve: async (db: Db, key: string, charge: { tokens: number; cost: number }, caps: CounterCaps, now: string): Promise<boolean> => {
    const conditions = [sql<SqlBool>`${sql.ref('key')} = ${key}`];
    // Postgres types each parameter after its column (integer, bigint): a configured "practically
    // unlimited" cap beyond that range would be an error, so it is held at the column's largest value.
    if (caps.requests !== undefined) conditions.push(sql<SqlBool>`${sql.ref('requests')} + 1 <= ${Math.min(caps.requests, INT32_MAX)}`);
    if (caps.tokens !== undefined) {
      const max = Math.min(caps.tokens, Number.MAX_SAFE_INTEGER);
      conditions.push(sql<SqlBool>`${sql.ref('tokens_used')} + ${sql.ref('tokens_reserved')} + ${charge.tokens} <= ${max}`);
      conditions.push(sql<SqlBool>`${sql.ref('tokens_used')} + ${sql.ref('tokens_reserved')} < ${max}`);
    }
    if (caps.cost !== undefined) {
      conditions.push(sql<SqlBool>`${sql.ref('cost_used')} + ${sql.ref('cost_reserved')} + ${charge.cost} <= ${caps.cost}`);
      conditions.push(sql<SqlBool>`${sql.ref('cost_used')} + ${sql.ref('cost_reserved')} < ${caps.cost}`);
    }
    const result = await db
      .updateTable('usage_counters')
      .set((eb) => ({
        requests: eb('requests', '+', 1),
        tokens_reserved: eb('tokens_reserved', '+', charge.tokens),
        cost_reserved: eb('cost_reserved', '+', charge.cost),
        updated_at: now,
      }))
      .where((eb) => eb.and(conditions))
      .executeTakeFirst();
    return result.numUpdatedRows > 0n;
  },

  /** Turns a reservation into use on one counter: `reserved` comes off, `actual` goes on. */
  settle: async (db: Db, key: string, reserved: { tokens: number; cost: number }, actual: { tokens: number; cost: number }, now: string): Promise<void> => {
    await db
      .updateTable('usage_counters')
      .set((eb) => ({
        tokens_reserved: eb('tokens_reserved', '-', reserved.tokens),
        tokens_used: eb('tokens_used', '+', actual.tokens),
        cost_reserved: eb('cost_reserved', '-', reserved.cost),
        cost_used: eb('cost_used', '+', actual.cost),
        updated_at: now,
      }))
      .where('key', '=', key)
      .execute();
  },

  /** The counters with these keys that exist. */
  counters: async (db: Db, keys: readonly string[]): Promise<UsageCounterRow[]> =>
    keys.length === 0 ? [] : db.selectFrom('usage_counters').selectAll().where('key', 'in', keys).execute(),

  /** Deletes per-minute counters untouched since `before`; they only ever guard the minute they name. */
  pruneMinuteCounters: async (db: Db, before: string): Promise<void> => {
    await db.deleteFrom('usage_counters').where('key', 'like', '%:minute:%').where('updated_at', '<', before).execute();
  },

  insertEvent: async (db: Db, row: Insertable<UsageEventsTable>): Promise<void> => {
    await db.insertInto('usage_events').values(row).execute();
  },

  /** A user's usage rows, newest first, keyset-paginated by id (UUIDv7 ids sort by time); up to `limit + 1` rows. */
  eventsPage: (db: Db, userId: string, limit: number, before?: string) => {
    let q = db.selectFrom('usage_events').select(LOG_COLUMNS).where('user_id', '=', userId).orderBy('id', 'desc').limit(limit + 1);
    if (before) q = q.where('id', '<', before);
    return q.execute();
  },

  /** Request count, token and cost sums of the events matching `filter`. */
  totals: async (db: Db, filter: EventFilter): Promise<Aggregate> => {
    const row = await filtered(db, filter).select(aggregates).executeTakeFirst();
    return toAggregate(row);
  },

  /** The same sums per group (`day` is the UTC day, `YYYY-MM-DD`; `user` the user id), in no particular order. */
  series: async (db: Db, dialect: DialectCapabilities, filter: EventFilter, groupBy: GroupBy): Promise<Array<Aggregate & { group: string }>> => {
    const group = groupBy === 'day' ? dialect.utcDay('created_at') : sql.ref<string>(groupBy === 'user' ? 'user_id' : groupBy);
    const rows = await filtered(db, filter)
      .select((eb) => [group.as('bucket'), ...aggregates(eb)])
      .groupBy(group)
      .execute();
    return rows.map((r) => ({ group: String(r.bucket), ...toAggregate(r) }));
  },

  /** E-mail addresses of these users (null for anonymous accounts). */
  emailsOf: async (db: Db, userIds: readonly string[]): Promise<Map<string, string | null>> => {
    if (userIds.length === 0) return new Map();
    const rows = await db.selectFrom('users').select(['id', 'email']).where('id', 'in', userIds).execute();
    return new Map(rows.map((r) => [r.id, r.email]));
  },
};

function filtered(db: Db, filter: EventFilter) {
  let q = db.selectFrom('usage_events').where('created_at', '>=', filter.from).where('created_at', '<', filter.to);
  if (filter.userId !== undefined) q = q.where('user_id', '=', filter.userId);
  return q;
}

function aggregates(eb: ExpressionBuilder<DB, 'usage_events'>) {
  return [
    eb.fn.countAll<number>().as('requests'),
    eb.fn.coalesce(eb.fn.sum<number>('prompt_tokens'), sql<number>`0`).as('prompt_tokens'),
    eb.fn.coalesce(eb.fn.sum<number>('completion_tokens'), sql<number>`0`).as('completion_tokens'),
    eb.fn.coalesce(eb.fn.sum<number>('cost_usd'), sql<number>`0`).as('cost_usd'),
  ] as const;
}

function toAggregate(row: Partial<Record<keyof Aggregate, number | string | bigint>> | undefined): Aggregate {
  return {
    requests: Number(row?.requests ?? 0),
    prompt_tokens: Number(row?.prompt_tokens ?? 0),
    completion_tokens: Number(row?.completion_tokens ?? 0),
    cost_usd: Number(row?.cost_usd ?? 0),
  };
}

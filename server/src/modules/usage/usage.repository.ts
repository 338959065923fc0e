import { sql, type ExpressionBuilder, type Kysely, type Selectable, type Transaction } from 'kysely';
import type { DialectCapabilities } from '../../db/dialect.js';
import type { DB, UsageCountersTable, UsageEventsTable } from '../../db/schema.js';
import type { CounterOwner } from './usage.statements.js';

type Db = Kysely<DB> | Transaction<DB>;

export type UsageEventRow = Selectable<UsageEventsTable>;
export type UsageCounterRow = Selectable<UsageCountersTable>;

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

/** The columns of a usage row its owner may read (all of them: the table never holds prompt or output text). */
const LOG_COLUMNS = [
  'id', 'endpoint', 'provider', 'model', 'prompt_tokens', 'completion_tokens', 'total_tokens', 'estimated', 'cost_usd',
  'latency_ms', 'ttft_ms', 'status', 'error_code', 'api_key_id', 'device_id', 'request_id', 'message_id', 'created_at',
] as const;

/** SQL for the read side of metering (`GET /usage`, limit status, housekeeping); the per-call statements are `MeteringStatements`. */
export const usageRepository = {
  /** The counters with these keys that exist. */
  counters: async (db: Db, keys: readonly string[]): Promise<UsageCounterRow[]> =>
    keys.length === 0 ? [] : db.selectFrom('usage_counters').selectAll().where('key', 'in', keys).execute(),

  /** Deletes per-minute counters untouched since `before`; they only ever guard the minute they name. */
  pruneMinuteCounters: async (db: Db, before: string): Promise<void> => {
    await db.deleteFrom('usage_counters').where('key', 'like', '%:minute:%').where('updated_at', '<', before).execute();
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

  /**
   * What the events of one user (or one API key) in `[from, to)` add up to, as a counter would hold it:
   * the limit status of a window whose counter does not exist yet (no call was checked against it).
   */
  periodTotals: async (db: Db, owner: CounterOwner, from: string, to: string): Promise<{ requests: number; tokens: number; cost: number }> => {
    const row = await db
      .selectFrom('usage_events')
      .select((eb) => [
        eb.fn.countAll<number>().as('requests'),
        eb.fn.coalesce(eb.fn.sum<number>('total_tokens'), sql<number>`0`).as('tokens'),
        eb.fn.coalesce(eb.fn.sum<number>('cost_usd'), sql<number>`0`).as('cost'),
      ])
      .where(owner.scope === 'user' ? 'user_id' : 'api_key_id', '=', owner.id)
      .where('created_at', '>=', from)
      .where('created_at', '<', to)
      .executeTakeFirst();
    return { requests: Number(row?.requests ?? 0), tokens: Number(row?.tokens ?? 0), cost: Number(row?.cost ?? 0) };
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

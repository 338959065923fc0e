import { CompiledQuery, type Insertable, type Kysely, type Transaction } from 'kysely';
import type { DialectCapabilities } from '../../db/dialect.js';
import type { DB, UsageEventsTable } from '../../db/schema.js';
import type { UsageCounterRow } from './usage.repository.js';

type Db = Kysely<DB> | Transaction<DB>;

/** The most a counter may reach for each measure a reservation is checked against; absent means unchecked. */
export interface CounterCaps {
  requests?: number;
  tokens?: number;
  cost?: number;
}

/** Whose events a counter sums: a user's, or one API key's. */
export interface CounterOwner {
  scope: 'user' | 'api_key';
  id: string;
}

export type UsageEventInsert = Insertable<UsageEventsTable>;

const INT32_MAX = 2_147_483_647;

const EVENT_COLUMNS = [
  'id', 'user_id', 'api_key_id', 'device_id', 'request_id', 'endpoint', 'provider', 'model', 'prompt_tokens', 'completion_tokens',
  'total_tokens', 'estimated', 'cost_usd', 'latency_ms', 'ttft_ms', 'status', 'error_code', 'message_id', 'created_at',
] as const satisfies ReadonlyArray<keyof UsageEventsTable>;

/**
 * The statements every gateway call runs (read the caller's limits, reserve, write the usage row,
 * settle), as SQL text written once per dialect and shape. At gateway rates Kysely's builder —
 * building, transforming and compiling a query tree per statement — cost more CPU than SQLite took to
 * run the statement, so these skip it: only the parameters change from call to call. The SQL is
 * plain and portable; `?` placeholders become `$1, $2…` on Postgres.
 */
export class MeteringStatements {
  private readonly reserveSql = new Map<string, string>();
  private readonly settleSql = new Map<number, string>();
  private readonly userLimitsSql: string;
  private readonly counterSql: string;
  private readonly insertEventSql: string;
  private readonly seedSql: Record<CounterOwner['scope'], string>;

  constructor(private readonly dialect: DialectCapabilities) {
    this.userLimitsSql = this.text('select limits from users where id = ?');
    this.counterSql = this.text('select * from usage_counters where key = ?');
    this.insertEventSql = this.text(`insert into usage_events (${EVENT_COLUMNS.join(', ')}) values (${EVENT_COLUMNS.map(() => '?').join(', ')})`);
    // Postgres types the parameters of a SELECT list as text; the casts make them fit the columns.
    const seed = (column: 'user_id' | 'api_key_id'): string => this.text(
      'insert into usage_counters (key, user_id, requests, tokens_used, tokens_reserved, cost_used, cost_reserved, updated_at) ' +
      `select cast(? as text), cast(? as text), count(*), coalesce(sum(total_tokens), 0), 0, coalesce(sum(cost_usd), 0), 0, cast(? as ${dialect.timestampType}) ` +
      `from usage_events where ${column} = ? and created_at >= ? and created_at < ? ` +
      'on conflict (key) do nothing',
    );
    this.seedSql = { user: seed('user_id'), api_key: seed('api_key_id') };
  }

  /** A user's `users.limits` (admin overrides, JSON text); undefined for an unknown user. */
  async userLimits(db: Db, userId: string): Promise<{ limits: string | null } | undefined> {
    const { rows } = await db.executeQuery<{ limits: string | null }>(CompiledQuery.raw(this.userLimitsSql, [userId]));
    return rows[0];
  }

  async counter(db: Db, key: string): Promise<UsageCounterRow | undefined> {
    const { rows } = await db.executeQuery<UsageCounterRow>(CompiledQuery.raw(this.counterSql, [key]));
    return rows[0];
  }

  /**
   * Counts one request on the counter and reserves `tokens` and `cost` on it, only if every cap still
   * holds afterwards (and a token or cost budget is not already used up). The condition and the
   * increment are one statement, so concurrent reservations cannot both pass on the same remainder:
   * Postgres re-checks the condition on the row it locked, SQLite runs one writer at a time. False when
   * refused — or when the counter does not exist yet (`seed` creates it).
   */
  async reserve(db: Db, key: string, charge: { tokens: number; cost: number }, caps: CounterCaps, now: string): Promise<boolean> {
    const params: unknown[] = [charge.tokens, charge.cost, now, key];
    // Postgres types each parameter after its column (integer, bigint): a configured "practically
    // unlimited" cap beyond that range would be an error, so it is held at the column's largest value.
    if (caps.requests !== undefined) params.push(Math.min(caps.requests, INT32_MAX));
    if (caps.tokens !== undefined) {
      const max = Math.min(caps.tokens, Number.MAX_SAFE_INTEGER);
      params.push(charge.tokens, max, max);
    }
    if (caps.cost !== undefined) params.push(charge.cost, caps.cost, caps.cost);
    const result = await db.executeQuery(CompiledQuery.raw(this.reserveText(caps), params));
    return (result.numAffectedRows ?? 0n) > 0n;
  }

  /**
   * Creates a counter that does not exist yet from the events of its window so far, so a limit set in
   * the middle of a day (or month) counts what that day already used. Calls reserved before the counter
   * existed and settled after it was created are not on it: a limit applies from the first call checked
   * against it. An existing counter is left alone.
   */
  async seed(db: Db, key: string, userId: string, owner: CounterOwner, window: { from: string; to: string }, now: string): Promise<void> {
    await db.executeQuery(CompiledQuery.raw(this.seedSql[owner.scope], [key, userId, now, owner.id, window.from, window.to]));
  }

  /** Writes one usage row. */
  async insertEvent(db: Db, row: UsageEventInsert): Promise<void> {
    await db.executeQuery(CompiledQuery.raw(this.insertEventSql, EVENT_COLUMNS.map((c) => row[c] ?? null)));
  }

  /** Turns a reservation into use on these counters: `reserved` comes off, `actual` goes on. */
  async settle(db: Db, keys: readonly string[], reserved: { tokens: number; cost: number }, actual: { tokens: number; cost: number }, now: string): Promise<void> {
    if (keys.length === 0) return;
    let text = this.settleSql.get(keys.length);
    if (text === undefined) {
      text = this.text(
        'update usage_counters set tokens_reserved = tokens_reserved - ?, tokens_used = tokens_used + ?, cost_reserved = cost_reserved - ?, cost_used = cost_used + ?, updated_at = ? ' +
        `where key in (${keys.map(() => '?').join(', ')})`,
      );
      this.settleSql.set(keys.length, text);
    }
    await db.executeQuery(CompiledQuery.raw(text, [reserved.tokens, actual.tokens, reserved.cost, actual.cost, now, ...keys]));
  }

  /** The reserve UPDATE for one combination of caps (at most eight texts). */
  private reserveText(caps: CounterCaps): string {
    const shape = `${caps.requests !== undefined ? 'r' : ''}${caps.tokens !== undefined ? 't' : ''}${caps.cost !== undefined ? 'c' : ''}`;
    let text = this.reserveSql.get(shape);
    if (text === undefined) {
      const conditions = ['key = ?'];
      if (caps.requests !== undefined) conditions.push('requests + 1 <= ?');
      if (caps.tokens !== undefined) conditions.push('tokens_used + tokens_reserved + ? <= ?', 'tokens_used + tokens_reserved < ?');
      if (caps.cost !== undefined) conditions.push('cost_used + cost_reserved + ? <= ?', 'cost_used + cost_reserved < ?');
      text = this.text(`update usage_counters set requests = requests + 1, tokens_reserved = tokens_reserved + ?, cost_reserved = cost_reserved + ?, updated_at = ? where ${conditions.join(' and ')}`);
      this.reserveSql.set(shape, text);
    }
    return text;
  }

  /** `?` placeholders as the dialect numbers them. */
  private text(withQuestionMarks: string): string {
    if (this.dialect.name !== 'postgres') return withQuestionMarks;
    let n = 0;
    return withQuestionMarks.replace(/\?/g, () => `$${++n}`);
  }
}

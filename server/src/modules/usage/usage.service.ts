import type { Kysely } from 'kysely';
import type { DialectCapabilities } from '../../db/dialect.js';
import type { DB } from '../../db/schema.js';
import type { Principal } from '../../platform/auth.js';
import { AppError, type ErrorDetail } from '../../platform/errors.js';
import { uuidv7 } from '../../platform/ids.js';
import { usageRepository as repo, type Aggregate, type GroupBy, type UsageCounterRow } from './usage.repository.js';
import { MeteringStatements, type CounterCaps, type CounterOwner } from './usage.statements.js';

/** The limit names of keel.config's `limits.user` / `limits.api_key` (and `LIMIT_*` variables). */
export const LIMIT_NAMES = ['requests_per_minute', 'requests_per_day', 'tokens_per_day', 'tokens_per_month', 'cost_usd_per_day', 'cost_usd_per_month'] as const;
export type LimitName = (typeof LIMIT_NAMES)[number];
/** Usage limits; absent means unlimited. Windows are the UTC minute, day and calendar month. */
export type Limits = { [K in LimitName]?: number };

export interface Estimate { tokens: number; costUsd: number }
export interface Outcome {
  endpoint: string; provider: string; model: string;
  promptTokens: number; completionTokens: number; estimated: boolean; costUsd: number;
  latencyMs: number; ttftMs: number | null; status: 'ok' | 'error' | 'aborted'; errorCode: string | null;
  messageId?: string | null;
}
export interface Reservation {
  /** Writes the one usage_events row and moves the reserved amounts to used; idempotent: a second call does nothing (an aborted stream and its finally-block must not meter twice). */
  settle(outcome: Outcome): Promise<void>;
}

type Period = 'minute' | 'day' | 'month';
type Measure = 'requests' | 'tokens' | 'cost';
type LimitScope = 'user' | 'api_key';

const LIMITS: Record<LimitName, { period: Period; measure: Measure; label: string }> = {
  requests_per_minute: { period: 'minute', measure: 'requests', label: 'Request rate limit' },
  requests_per_day: { period: 'day', measure: 'requests', label: 'Daily request limit' },
  tokens_per_day: { period: 'day', measure: 'tokens', label: 'Daily token budget' },
  tokens_per_month: { period: 'month', measure: 'tokens', label: 'Monthly token budget' },
  cost_usd_per_day: { period: 'day', measure: 'cost', label: 'Daily spending budget' },
  cost_usd_per_month: { period: 'month', measure: 'cost', label: 'Monthly spending budget' },
};

/** One limit as `GET /usage` reports it. `used` is settled use; `remaining` also subtracts what in-flight requests reserved. */
export interface LimitStatus {
  limit: number;
  used: number;
  reserved: number;
  remaining: number;
  resets_at: string;
  /** Whose limit it is: the user's, or the calling API key's (when both set one, the tighter is reported). */
  scope: LimitScope;
}

export interface SeriesItem extends Aggregate {
  /** The UTC day (`YYYY-MM-DD`), model, endpoint or user id. */
  group: string;
  /** With `group_by=user`: the user's e-mail (null for anonymous accounts). */
  email?: string | null;
}

export interface UsageSummary {
  from: string;
  to: string;
  group_by: GroupBy;
  totals: Aggregate;
  series: SeriesItem[];
  limits: Partial<Record<LimitName, LimitStatus>>;
}

export interface UsageQuery {
  from?: string;
  to?: string;
  group_by?: 'day' | 'model' | 'endpoint';
}

export interface AdminUsageQuery {
  from?: string;
  to?: string;
  group_by?: GroupBy;
  user_id?: string;
}

/** A usage row as its owner reads it (there is no prompt or output text to leave out: the table has none). */
export interface UsageLogView {
  id: string;
  endpoint: string;
  provider: string;
  model: string;
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  estimated: boolean;
  cost_usd: number;
  latency_ms: number;
  ttft_ms: number | null;
  status: string;
  error_code: string | null;
  api_key_id: string | null;
  device_id: string | null;
  request_id: string | null;
  message_id: string | null;
  created_at: string;
}

export interface UsageServiceOptions {
  /** The clock, in epoch milliseconds (tests move it). */
  now?: () => number;
  /** Old per-minute counters are deleted after every this many reservations. */
  pruneEvery?: number;
}

/** One counter a reservation touches, and the limits checked on it. */
interface CounterPlan {
  key: string;
  scope: LimitScope;
  owner: CounterOwner;
  period: Period;
  window: Window;
  limits: Array<{ name: LimitName; max: number }>;
}

interface Window {
  bucket: string;
  startsAt: number;
  resetsAt: number;
}

const NOTHING = { tokens: 0, cost: 0 } as const;

const DAY_MS = 86_400_000;
/** The longest `from`–`to` span a summary covers. */
export const MAX_RANGE_DAYS = 366;
const MINUTE_COUNTER_TTL_MS = 5 * 60_000;

/**
 * Metering and budgets. `reserve` checks and reserves, in one transaction, against every limit that
 * applies (the database arbitrates between concurrent requests and processes); `settle` records the
 * call and turns the reservation into use. Also the read side: summaries, logs and limit status.
 *
 * Counters exist only for the windows a limit watches: a caller without limits costs one read (their
 * limit overrides) before the call and one insert (the usage row) after it. A counter is created when
 * a call is first checked against it, from the events of its window so far (`MeteringStatements.seed`).
 */
export class UsageService {
  private readonly now: () => number;
  private readonly pruneEvery: number;
  private readonly sql: MeteringStatements;
  private minuteReservations = 0;

  constructor(
    private readonly db: Kysely<DB>,
    private readonly limits: { readonly user: Limits; readonly apiKey: Limits },
    private readonly dialect: DialectCapabilities,
    options: UsageServiceOptions = {},
  ) {
    this.now = options.now ?? Date.now;
    this.pruneEvery = options.pruneEvery ?? 200;
    this.sql = new MeteringStatements(dialect);
  }

  /**
   * Checks and reserves, atomically and across processes (the database is the arbiter), against every
   * limit that applies: the user's (config defaults overlaid by the user's `users.limits` JSON) and,
   * for an API-key principal, the key's (config `apiKey` limits). requests_per_minute and
   * requests_per_day count this request; tokens_* and cost_usd_* reserve `estimate`. Over any limit → throw
   * AppError code 'limit_exceeded', status 429, header Retry-After (seconds until that window resets),
   * message naming the limit, e.g. "Daily token budget reached (tokens_per_day: 100000); resets in 3 h 12 min."
   * Nothing is reserved when it throws.
   */
  async reserve(principal: Principal, estimate: Estimate | (() => Estimate), meta: { requestId: string }): Promise<Reservation> {
    const now = this.now();
    const plans = this.plan(principal, await this.userLimits(principal.userId), now);
    // The estimate (a tokenizer pass over the prompt) is only worked out when a day or month counter
    // will hold it; minute counters only count requests.
    const charged = plans.some((p) => p.period !== 'minute');
    const charge = charged ? chargeOf(typeof estimate === 'function' ? estimate() : estimate) : NOTHING;
    if (plans.length > 0) {
      const at = new Date(now).toISOString();
      // One counter needs no transaction (its UPDATE is atomic); several are reserved all or nothing.
      if (plans.length === 1) await this.reserveOn(this.db, principal, plans[0]!, charge, at, now);
      else await this.db.transaction().execute(async (trx) => {
        for (const plan of plans) await this.reserveOn(trx, principal, plan, charge, at, now);
      });
      if (plans.some((p) => p.period === 'minute')) await this.pruneNow(now);
    }
    return new CounterReservation(this.db, this.sql, principal, meta.requestId, plans.filter((p) => p.period !== 'minute'), charge, this.now);
  }

  /** Reserves on one counter (creating it on its window's first call) or throws `limit_exceeded`. */
  private async reserveOn(db: Kysely<DB>, principal: Principal, plan: CounterPlan, charge: { tokens: number; cost: number }, at: string, now: number): Promise<void> {
    // Minute counters only guard the request rate; tokens and cost are budgeted per day and month.
    const planCharge = plan.period === 'minute' ? NOTHING : charge;
    const caps: CounterCaps = Object.fromEntries(plan.limits.map((l) => [LIMITS[l.name].measure, l.max]));
    if (await this.sql.reserve(db, plan.key, planCharge, caps, at)) return;
    let row = await this.sql.counter(db, plan.key);
    if (!row) {
      const window = { from: new Date(plan.window.startsAt).toISOString(), to: new Date(plan.window.resetsAt).toISOString() };
      await this.sql.seed(db, plan.key, principal.userId, plan.owner, window, at);
      if (await this.sql.reserve(db, plan.key, planCharge, caps, at)) return;
      row = await this.sql.counter(db, plan.key);
    }
    throw limitExceeded(plan, exceededLimit(plan, row, planCharge), now);
  }

  /** The caller's usage between `from` and `to`, grouped, and the status of every limit that applies to them. */
  async summary(principal: Principal, query: UsageQuery): Promise<UsageSummary> {
    const now = this.now();
    const range = parseRange(query.from, query.to, now);
    const groupBy = query.group_by ?? 'day';
    const filter = { ...range, userId: principal.userId };
    const [totals, series] = await Promise.all([repo.totals(this.db, filter), this.series(filter, groupBy, range)]);
    return { ...range, group_by: groupBy, totals: roundCost(totals), series, limits: await this.limitStatus(principal, now) };
  }

  /** Usage across users (or one user's, with that user's limits), grouped by day, model, endpoint or user. */
  async adminSummary(query: AdminUsageQuery): Promise<UsageSummary> {
    const now = this.now();
    const range = parseRange(query.from, query.to, now);
    const groupBy = query.group_by ?? 'day';
    const filter = { ...range, ...(query.user_id !== undefined ? { userId: query.user_id } : {}) };
    const [totals, series] = await Promise.all([repo.totals(this.db, filter), this.series(filter, groupBy, range)]);
    const limits = query.user_id === undefined ? {} : await this.limitStatus({ userId: query.user_id, kind: 'session' }, now);
    return { ...range, group_by: groupBy, totals: roundCost(totals), series, limits };
  }

  /** The caller's usage rows, newest first. */
  async logs(principal: Principal, limit: number, cursor: string | undefined): Promise<{ items: UsageLogView[]; next_cursor: string | null }> {
    const rows = await repo.eventsPage(this.db, principal.userId, limit, cursor);
    const items = rows.slice(0, limit).map((r) => ({ ...r, estimated: r.estimated !== 0 }));
    return { items, next_cursor: rows.length > limit ? items[items.length - 1]!.id : null };
  }

  /** The user's limits: the configured defaults, overlaid by the admin's overrides in `users.limits`. */
  private async userLimits(userId: string): Promise<Limits> {
    const row = await this.sql.userLimits(this.db, userId);
    return overlay(this.limits.user, row?.limits ?? null);
  }

  /**
   * The counters a reservation touches — one per scope and window that a limit watches, none for a
   * caller without limits — sorted by key so that concurrent transactions lock rows in one order.
   */
  private plan(principal: Pick<Principal, 'userId' | 'kind' | 'apiKeyId'>, userLimits: Limits, now: number): CounterPlan[] {
    const plans = new Map<string, CounterPlan>();
    const add = (scope: LimitScope, id: string, period: Period): CounterPlan => {
      const window = windowOf(period, now);
      const key = `${scope === 'user' ? 'user' : 'key'}:${id}:${period}:${window.bucket}`;
      let plan = plans.get(key);
      if (!plan) plans.set(key, (plan = { key, scope, owner: { scope, id }, period, window, limits: [] }));
      return plan;
    };
    const scopes: Array<[LimitScope, string, Limits]> = [['user', principal.userId, userLimits]];
    if (principal.kind === 'api_key' && principal.apiKeyId) scopes.push(['api_key', principal.apiKeyId, this.limits.apiKey]);
    for (const [scope, id, limits] of scopes) {
      for (const name of LIMIT_NAMES) {
        const max = limits[name];
        if (max === undefined) continue;
        add(scope, id, LIMITS[name].period).limits.push({ name, max: LIMITS[name].measure === 'cost' ? max : Math.floor(max) });
      }
    }
    return [...plans.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  private async limitStatus(principal: Pick<Principal, 'userId' | 'kind' | 'apiKeyId'>, now: number): Promise<Partial<Record<LimitName, LimitStatus>>> {
    const plans = this.plan(principal, await this.userLimits(principal.userId), now);
    const rows = new Map((await repo.counters(this.db, plans.map((p) => p.key))).map((r) => [r.key, r]));
    const out: Partial<Record<LimitName, LimitStatus>> = {};
    for (const plan of plans) {
      // No call was checked against this window yet: what its counter would start from.
      const row = rows.get(plan.key) ?? await this.unopenedCounter(plan);
      for (const { name, max } of plan.limits) {
        const status = statusOf(name, max, plan, row);
        const current = out[name];
        if (!current || status.remaining < current.remaining) out[name] = status;
      }
    }
    return out;
  }

  private async series(filter: { from: string; to: string; userId?: string }, groupBy: GroupBy, range: { from: string; to: string }): Promise<SeriesItem[]> {
    const rows = (await repo.series(this.db, this.dialect, filter, groupBy)).map(roundCost);
    if (groupBy === 'day') {
      const byDay = new Map(rows.map((r) => [r.group, r]));
      return daysOf(range).map((day) => byDay.get(day) ?? { group: day, requests: 0, prompt_tokens: 0, completion_tokens: 0, cost_usd: 0 });
    }
    rows.sort((a, b) => b.cost_usd - a.cost_usd || b.requests - a.requests || (a.group < b.group ? -1 : 1));
    if (groupBy !== 'user') return rows;
    const emails = await repo.emailsOf(this.db, rows.map((r) => r.group));
    return rows.map((r) => ({ ...r, email: emails.get(r.group) ?? null }));
  }

  private async unopenedCounter(plan: CounterPlan): Promise<UsageCounterRow> {
    const t = await repo.periodTotals(this.db, plan.owner, new Date(plan.window.startsAt).toISOString(), new Date(plan.window.resetsAt).toISOString());
    return { key: plan.key, user_id: '', requests: t.requests, tokens_used: t.tokens, tokens_reserved: 0, cost_used: t.cost, cost_reserved: 0, updated_at: '' };
  }

  private async pruneNow(now: number): Promise<void> {
    this.minuteReservations += 1;
    if (this.minuteReservations % this.pruneEvery !== 0) return;
    try {
      await repo.pruneMinuteCounters(this.db, new Date(now - MINUTE_COUNTER_TTL_MS).toISOString());
    } catch {
      // Housekeeping only: the reservation is committed, and the next round will try again.
    }
  }
}

/** The reservation `reserve` hands out; settles at most once. */
class CounterReservation implements Reservation {
  private settled = false;

  constructor(
    private readonly db: Kysely<DB>,
    private readonly sql: MeteringStatements,
    private readonly principal: Principal,
    private readonly requestId: string,
    /** The day and month counters reserved on (none for a caller without limits). */
    private readonly plans: readonly CounterPlan[],
    private readonly reserved: { tokens: number; cost: number },
    private readonly now: () => number,
  ) {}

  /** See `Reservation.settle`. When the write fails it throws, once; what was reserved then lapses with its window. */
  async settle(outcome: Outcome): Promise<void> {
    if (this.settled) return;
    // Set before the first await, so a second call made while this one runs does nothing either.
    this.settled = true;
    const promptTokens = wholeCount(outcome.promptTokens);
    const completionTokens = wholeCount(outcome.completionTokens);
    const actual = { tokens: promptTokens + completionTokens, cost: amount(outcome.costUsd) };
    const at = new Date(this.now()).toISOString();
    const row = {
      id: uuidv7(),
      user_id: this.principal.userId,
      api_key_id: this.principal.apiKeyId ?? null,
      device_id: this.principal.deviceId ?? null,
      request_id: this.requestId,
      endpoint: outcome.endpoint,
      provider: outcome.provider,
      model: outcome.model,
      prompt_tokens: promptTokens,
      completion_tokens: completionTokens,
      total_tokens: actual.tokens,
      estimated: outcome.estimated ? 1 : 0,
      cost_usd: actual.cost,
      latency_ms: wholeCount(outcome.latencyMs),
      ttft_ms: outcome.ttftMs === null ? null : wholeCount(outcome.ttftMs),
      status: outcome.status,
      error_code: outcome.errorCode,
      message_id: outcome.messageId ?? null,
      created_at: at,
    };
    // Without counters the row is one statement, atomic by itself.
    if (this.plans.length === 0) return this.sql.insertEvent(this.db, row);
    await this.db.transaction().execute(async (trx) => {
      await this.sql.insertEvent(trx, row);
      // Use lands on the counters of the window the request was reserved in, where its reservation is.
      await this.sql.settle(trx, this.plans.map((p) => p.key), this.reserved, actual, at);
    });
  }
}

/** The UTC window of `period` that `now` falls in: its bucket name and when it ends. */
function windowOf(period: Period, now: number): Window {
  const d = new Date(now);
  const iso = d.toISOString();
  if (period === 'minute') {
    const startsAt = Math.floor(now / 60_000) * 60_000;
    return { bucket: iso.slice(0, 16), startsAt, resetsAt: startsAt + 60_000 };
  }
  if (period === 'day') return { bucket: iso.slice(0, 10), startsAt: Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()), resetsAt: Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1) };
  return { bucket: iso.slice(0, 7), startsAt: Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1), resetsAt: Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) };
}

/**
 * `defaults` with the overrides of `users.limits` applied: a non-negative number replaces the default,
 * null removes the limit for this user; anything else (unknown names, malformed values) is ignored.
 */
function overlay(defaults: Limits, stored: string | null): Limits {
  const limits: Limits = { ...defaults };
  if (stored === null) return limits;
  let overrides: unknown;
  try {
    overrides = JSON.parse(stored);
  } catch {
    return limits;
  }
  if (typeof overrides !== 'object' || overrides === null || Array.isArray(overrides)) return limits;
  for (const name of LIMIT_NAMES) {
    if (!Object.hasOwn(overrides, name)) continue;
    const value = (overrides as Record<string, unknown>)[name];
    if (value === null) delete limits[name];
    else if (typeof value === 'number' && Number.isFinite(value) && value >= 0) limits[name] = value;
  }
  return limits;
}

/** Which of the plan's limits refused the charge, judged from the counter as it is now. */
function exceededLimit(plan: CounterPlan, row: UsageCounterRow | undefined, charge: { tokens: number; cost: number }): { name: LimitName; max: number } {
  const over = plan.limits.find(({ name, max }) => {
    const measure = LIMITS[name].measure;
    if (!row) return true;
    if (measure === 'requests') return row.requests + 1 > max;
    const [inUse, add] = measure === 'tokens' ? [row.tokens_used + row.tokens_reserved, charge.tokens] : [row.cost_used + row.cost_reserved, charge.cost];
    return inUse >= max || inUse + add > max;
  });
  // A concurrent settle may have freed room since the refusal; the first limit is still the one that refused.
  return over ?? plan.limits[0]!;
}

function limitExceeded(plan: CounterPlan, limit: { name: LimitName; max: number }, now: number): AppError {
  const seconds = Math.max(1, Math.ceil((plan.window.resetsAt - now) / 1000));
  const spec = LIMITS[limit.name];
  const label = plan.scope === 'api_key' ? `${spec.label} of this API key` : spec.label;
  const message = `${label} reached (${limit.name}: ${limit.max}); resets in ${duration(seconds)}.`;
  const detail: ErrorDetail = { message, limit: limit.name, value: limit.max, scope: plan.scope, resets_at: new Date(plan.window.resetsAt).toISOString() };
  return new AppError('limit_exceeded', message, 429, [detail], { 'retry-after': String(seconds) });
}

/** `45 s`, `12 min 5 s`, `3 h 12 min`, `9 d 4 h`. */
export function duration(seconds: number): string {
  const parts = (pairs: Array<[number, string]>): string => pairs.filter(([n], i) => i === 0 || n > 0).map(([n, unit]) => `${n} ${unit}`).join(' ');
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return parts([[Math.floor(seconds / 60), 'min'], [seconds % 60, 's']]);
  if (seconds < 86_400) return parts([[Math.floor(seconds / 3600), 'h'], [Math.floor((seconds % 3600) / 60), 'min']]);
  return parts([[Math.floor(seconds / 86_400), 'd'], [Math.floor((seconds % 86_400) / 3600), 'h']]);
}

function statusOf(name: LimitName, max: number, plan: CounterPlan, row: UsageCounterRow | undefined): LimitStatus {
  const measure = LIMITS[name].measure;
  const [used, reserved] = !row ? [0, 0] : measure === 'requests' ? [row.requests, 0] : measure === 'tokens' ? [row.tokens_used, row.tokens_reserved] : [usd(row.cost_used), usd(row.cost_reserved)];
  const remaining = Math.max(0, measure === 'cost' ? usd(max - used - reserved) : max - used - reserved);
  return { limit: max, used, reserved: Math.max(0, reserved), remaining, resets_at: new Date(plan.window.resetsAt).toISOString(), scope: plan.scope };
}

/**
 * `from` (inclusive) and `to` (exclusive) as stored timestamps. Either may be a date (`2026-11-22`) or a
 * date-time; a date `to` includes that whole day. By default, the last 30 UTC days including today.
 */
function parseRange(fromText: string | undefined, toText: string | undefined, now: number): { from: string; to: string } {
  const today = Date.UTC(new Date(now).getUTCFullYear(), new Date(now).getUTCMonth(), new Date(now).getUTCDate());
  const to = toText === undefined ? today + DAY_MS : instant(toText, 'to') + (isDate(toText) ? DAY_MS : 0);
  const from = fromText === undefined ? to - 30 * DAY_MS : instant(fromText, 'from');
  if (from >= to) throw AppError.badRequest('from must be before to.', [{ field: 'from', message: 'must be before to' }]);
  if (to - from > MAX_RANGE_DAYS * DAY_MS) throw AppError.badRequest(`The range may span at most ${MAX_RANGE_DAYS} days.`, [{ field: 'from', message: `at most ${MAX_RANGE_DAYS} days before to` }]);
  return { from: new Date(from).toISOString(), to: new Date(to).toISOString() };
}

const isDate = (text: string): boolean => /^\d{4}-\d{2}-\d{2}$/.test(text);
// An offset is required: without one, Date.parse would read the time in the server's own zone.
const isDateTime = (text: string): boolean => /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/i.test(text);

function instant(text: string, field: 'from' | 'to'): number {
  const ms = isDate(text) ? Date.parse(`${text}T00:00:00Z`) : isDateTime(text) ? Date.parse(text) : Number.NaN;
  if (Number.isNaN(ms)) throw AppError.badRequest(`${field} must be an ISO 8601 date (2026-11-22) or a date-time with its offset (2026-11-22T08:00:00Z).`, [{ field, message: 'is not an ISO 8601 date or date-time' }]);
  return ms;
}

/** Every UTC day from `from`'s to the day of the last instant before `to`. */
function daysOf(range: { from: string; to: string }): string[] {
  const days: string[] = [];
  const last = Date.parse(range.to) - 1;
  for (let t = Date.parse(range.from.slice(0, 10)); t <= last; t += DAY_MS) days.push(new Date(t).toISOString().slice(0, 10));
  return days;
}

const chargeOf = (estimate: Estimate): { tokens: number; cost: number } => ({ tokens: wholeCount(estimate.tokens), cost: amount(estimate.costUsd) });
const wholeCount = (n: number): number => (Number.isFinite(n) && n > 0 ? Math.ceil(n) : 0);
const amount = (n: number): number => (Number.isFinite(n) && n > 0 ? n : 0);
/** Sums of floating-point costs carry noise in the last digits; nine decimals is far below any price. */
const usd = (n: number): number => Math.round(n * 1e9) / 1e9;
const roundCost = <T extends Aggregate>(a: T): T => ({ ...a, cost_usd: usd(a.cost_usd) });

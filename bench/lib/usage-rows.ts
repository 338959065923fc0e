// Reads the usage rows the gateway wrote, straight from the server's SQLite file (read-only, beside
// the running server: WAL lets a reader in), with the server's own better-sqlite3.
import { createRequire } from 'node:module';
import path from 'node:path';
import type BetterSqlite3 from 'better-sqlite3';

/** usage_events rows of one endpoint: how many, by status (ok, aborted, error), and how many estimated. */
export interface UsageCounts {
  readonly total: number;
  readonly byStatus: Readonly<Record<string, number>>;
  readonly estimated: number;
}

export interface UsageReader {
  count(endpoint: string): UsageCounts;
  close(): void;
}

/** `after` minus `before`. */
export function usageDelta(before: UsageCounts, after: UsageCounts): UsageCounts {
  const byStatus: Record<string, number> = {};
  for (const status of new Set([...Object.keys(before.byStatus), ...Object.keys(after.byStatus)])) {
    const n = (after.byStatus[status] ?? 0) - (before.byStatus[status] ?? 0);
    if (n !== 0) byStatus[status] = n;
  }
  return { total: after.total - before.total, byStatus, estimated: after.estimated - before.estimated };
}

export function sumUsage(counts: readonly UsageCounts[]): UsageCounts {
  const byStatus: Record<string, number> = {};
  for (const c of counts) for (const [status, n] of Object.entries(c.byStatus)) byStatus[status] = (byStatus[status] ?? 0) + n;
  return { total: counts.reduce((n, c) => n + c.total, 0), byStatus, estimated: counts.reduce((n, c) => n + c.estimated, 0) };
}

export function openUsageReader(repoRoot: string, databaseFile: string): UsageReader {
  // The server workspace's dependency, resolved from there: the bench workspace does not declare it.
  const require = createRequire(path.join(repoRoot, 'server/package.json'));
  const Database = require('better-sqlite3') as typeof BetterSqlite3;
  const db = new Database(databaseFile, { readonly: true, fileMustExist: true });
  const query = db.prepare<[string], { status: string; estimated: number; n: number }>(
    'select status, estimated, count(*) as n from usage_events where endpoint = ? group by status, estimated',
  );
  return {
    count(endpoint) {
      const byStatus: Record<string, number> = {};
      let total = 0;
      let estimated = 0;
      for (const row of query.all(endpoint)) {
        byStatus[row.status] = (byStatus[row.status] ?? 0) + row.n;
        total += row.n;
        if (row.estimated) estimated += row.n;
      }
      return { total, byStatus, estimated };
    },
    close() {
      db.close();
    },
  };
}

/**
 * The rows of `endpoint` once `expected` more than `before` exist, or after `timeoutMs`: the gateway
 * writes a call's row just after the call's response ended, so the last calls' rows may land a moment
 * after the load generator saw their ends.
 */
export async function settledUsage(reader: UsageReader, endpoint: string, before: UsageCounts, expected: number, timeoutMs = 5_000): Promise<UsageCounts> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const now = usageDelta(before, reader.count(endpoint));
    if (now.total >= expected || Date.now() >= deadline) return now;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

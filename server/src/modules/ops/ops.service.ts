import type { Database } from '../../db/database.js';
import { migrationStatus } from '../../db/migrate.js';

export interface ReadinessCheck {
  name: 'database' | 'migrations' | 'shutdown';
  ok: boolean;
  message: string;
  latency_ms?: number;
  /** The underlying error, for the log only: it can name internal hosts, so it is never sent. */
  cause?: unknown;
}

/**
 * Whether this instance should receive traffic: the database answers, every known migration is
 * applied, and the process is not draining for shutdown. Never throws: a failure is a failed check.
 */
export async function checkReadiness(database: Database, draining: boolean, timeoutMs = 2000): Promise<{ ready: boolean; checks: ReadinessCheck[] }> {
  const checks: ReadinessCheck[] = [];
  if (draining) checks.push({ name: 'shutdown', ok: false, message: 'the server is shutting down' });
  const started = performance.now();
  try {
    await database.ping(timeoutMs);
    checks.push({ name: 'database', ok: true, message: `${database.dialect.name} reachable`, latency_ms: round(performance.now() - started) });
    const { applied, pending } = await migrationStatus(database.db);
    checks.push(pending.length === 0
      ? { name: 'migrations', ok: true, message: `${applied.length} applied, none pending` }
      : { name: 'migrations', ok: false, message: `${pending.length} pending: ${pending.join(', ')} (run \`keel migrate\`)` });
  } catch (err) {
    checks.push({ name: 'database', ok: false, message: `${database.dialect.name} unreachable`, latency_ms: round(performance.now() - started), cause: err });
  }
  return { ready: checks.every((c) => c.ok), checks };
}

const round = (ms: number): number => Math.round(ms * 100) / 100;

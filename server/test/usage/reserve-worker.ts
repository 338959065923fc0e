/**
 * A separate process for the cross-process reservation test: opens the database described by
 * KEEL_TEST_DATABASE (a DatabaseConfig as JSON), makes RESERVE_COUNT concurrent reservations for
 * RESERVE_USER at the fixed instant RESERVE_NOW against RESERVE_LIMITS, starting at the wall-clock
 * time RESERVE_START_AT (epoch ms) so that all workers race, and prints how many were granted and
 * refused as one JSON line.
 */
import { openDatabase } from '../../src/db/database.js';
import type { DatabaseConfig } from '../../src/config.js';
import { UsageService, type Limits } from '../../src/modules/usage/usage.service.js';
import type { Principal } from '../../src/platform/auth.js';
import { createLogger } from '../../src/platform/logger.js';
import { AppError } from '../../src/platform/errors.js';

const env = (name: string): string => {
  const value = process.env[name];
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};

const database = openDatabase(JSON.parse(env('KEEL_TEST_DATABASE')) as DatabaseConfig, createLogger({ logLevel: 'silent' }));
const now = Date.parse(env('RESERVE_NOW'));
const usage = new UsageService(database.db, { user: JSON.parse(env('RESERVE_LIMITS')) as Limits, apiKey: {} }, database.dialect, { now: () => now });
const principal: Principal = { userId: env('RESERVE_USER'), role: 'user', kind: 'session', scopes: new Set() };

await new Promise((resolve) => setTimeout(resolve, Math.max(0, Number(env('RESERVE_START_AT')) - Date.now())));
const results = await Promise.allSettled(Array.from({ length: Number(env('RESERVE_COUNT')) }, () => usage.reserve(principal, { tokens: 10, costUsd: 0 }, { requestId: 'worker' })));
const refused = results.filter((r) => r.status === 'rejected' && r.reason instanceof AppError && r.reason.code === 'limit_exceeded').length;
const granted = results.filter((r) => r.status === 'fulfilled').length;
const failed = results.flatMap((r) => (r.status === 'rejected' && !(r.reason instanceof AppError) ? [String(r.reason)] : []));
process.stdout.write(`${JSON.stringify({ granted, refused, failed })}\n`);
await database.close();

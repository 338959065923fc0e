// What the chat suite's generations left in the server's SQLite file (read-only, beside the running
// server): assistant messages by status, and the gateway's usage rows of endpoint `chat`.
import { createRequire } from 'node:module';
import path from 'node:path';
import type BetterSqlite3 from 'better-sqlite3';
import { openUsageReader, usageDelta, type UsageCounts } from './usage-rows.js';

export interface ChatRows {
  /** Assistant messages by status (complete, aborted, failed, generating). */
  readonly assistant: Readonly<Record<string, number>>;
  readonly assistantTotal: number;
  /** usage_events rows with endpoint `chat`. */
  readonly usage: UsageCounts;
}

export interface ChatRowsReader {
  count(): ChatRows;
  close(): void;
}

export function openChatRowsReader(repoRoot: string, databaseFile: string): ChatRowsReader {
  const require = createRequire(path.join(repoRoot, 'server/package.json'));
  const Database = require('better-sqlite3') as typeof BetterSqlite3;
  const db = new Database(databaseFile, { readonly: true, fileMustExist: true });
  const query = db.prepare<[], { status: string; n: number }>("select status, count(*) as n from messages where role = 'assistant' group by status");
  const usage = openUsageReader(repoRoot, databaseFile);
  return {
    count() {
      const assistant: Record<string, number> = {};
      let assistantTotal = 0;
      for (const row of query.all()) {
        assistant[row.status] = row.n;
        assistantTotal += row.n;
      }
      return { assistant, assistantTotal, usage: usage.count('chat') };
    },
    close() {
      usage.close();
      db.close();
    },
  };
}

/** `after` minus `before`. */
export function chatRowsDelta(before: ChatRows, after: ChatRows): ChatRows {
  const assistant: Record<string, number> = {};
  for (const status of new Set([...Object.keys(before.assistant), ...Object.keys(after.assistant)])) {
    const n = (after.assistant[status] ?? 0) - (before.assistant[status] ?? 0);
    if (n !== 0) assistant[status] = n;
  }
  return { assistant, assistantTotal: after.assistantTotal - before.assistantTotal, usage: usageDelta(before.usage, after.usage) };
}

import type { Migration } from 'kysely';
import * as createUsers from './20261122000000_create_users.js';
import * as identity from './20261122010000_identity.js';
import * as usage from './20261122020000_usage.js';
import * as chat from './20261122030000_chat.js';
import * as jobs from './20261122040000_jobs.js';
import * as knowledge from './20261122050000_knowledge.js';

/**
 * Every migration, in order. Imported statically (not read from a folder) so the compiled server and
 * a bundled image carry them without a file-system lookup. Names are `<timestamp>_<what>`.
 */
export const migrations: Record<string, Migration> = {
  '20261122000000_create_users': createUsers,
  '20261122010000_identity': identity,
  '20261122020000_usage': usage,
  '20261122030000_chat': chat,
  '20261122040000_jobs': jobs,
  '20261122050000_knowledge': knowledge,
};

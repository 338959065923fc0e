import type { ColumnType, Generated } from 'kysely';

/** Timestamps travel as ISO 8601 UTC strings on both dialects (see database.ts for Postgres's parser). */
export type Timestamp = ColumnType<string, string, string>;

export interface UsersTable {
  id: string;
  email: string | null;
  name: string | null;
  password_hash: string | null;
  role: Generated<string>;
  email_verified_at: Timestamp | null;
  disabled_at: Timestamp | null;
  created_at: Timestamp;
  updated_at: Timestamp;
}

/** Every table Keel owns; each capability issue adds its own. */
export interface DB {
  users: UsersTable;
}

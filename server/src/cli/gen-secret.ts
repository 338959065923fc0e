import { randomBytes } from 'node:crypto';

/** 32 random bytes as 64 hex characters: the same strength as `openssl rand -hex 32`. */
export function generateSecret(): string {
  return randomBytes(32).toString('hex');
}

import { randomBytes } from 'node:crypto';
import { randomToken, sha256 } from '../../platform/crypto.js';

/**
 * API keys look like `keel_sk_<12 hex id>_<43-char secret>`: the typed prefix makes leaked keys easy
 * to spot (secret scanners, logs) and the id finds the row without scanning; only the secret's
 * SHA-256 is stored and it is compared in constant time.
 */
const KEY_PATTERN = /^(keel_sk_[0-9a-f]{12})_([A-Za-z0-9_-]{43})$/;

export function generateApiKey(): { key: string; prefix: string; secretHash: string } {
  const prefix = `keel_sk_${randomBytes(6).toString('hex')}`;
  const secret = randomToken(32);
  return { key: `${prefix}_${secret}`, prefix, secretHash: sha256(secret) };
}

export function parseApiKey(value: string): { prefix: string; secretHash: string } | undefined {
  const m = KEY_PATTERN.exec(value);
  return m ? { prefix: m[1]!, secretHash: sha256(m[2]!) } : undefined;
}

export function looksLikeApiKey(value: string): boolean {
  return value.startsWith('keel_sk_');
}

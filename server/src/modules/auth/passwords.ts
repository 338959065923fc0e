import { hash, verify, type Options } from '@node-rs/argon2';
import { dictionary } from '@zxcvbn-ts/language-common';
import { AppError } from '../../platform/errors.js';

/** OWASP's argon2id baseline: 19 MiB memory, 2 passes, 1 lane. */
// `algorithm: 2` is Argon2id (a const enum in @node-rs/argon2, not importable as a value here).
export const ARGON2_PARAMS: Options = { algorithm: 2, memoryCost: 19_456, timeCost: 2, parallelism: 1 };

export const PASSWORD_MIN = 8;
export const PASSWORD_MAX = 256;

// zxcvbn's list of the ~49,000 most common passwords, lower-cased for lookup.
const COMMON = new Set((dictionary as Record<string, string[]>)['passwords-common']?.map((p) => p.toLowerCase()) ?? []);
if (COMMON.size === 0) throw new Error('the common-password list did not load');

/** Why a new password is refused, or undefined. Passwords are taken exactly as sent: no trimming, no normalization. */
export function passwordProblem(password: string, email?: string | null): string | undefined {
  const length = [...password].length;
  if (length < PASSWORD_MIN) return `The password must be at least ${PASSWORD_MIN} characters.`;
  if (length > PASSWORD_MAX) return `The password must be at most ${PASSWORD_MAX} characters.`;
  if (COMMON.has(password.toLowerCase())) return 'This password is among the most common ones; choose another.';
  if (email && password.toLowerCase() === email.toLowerCase()) return 'The password must not be your e-mail address.';
  return undefined;
}

export function assertPasswordAllowed(password: string, email?: string | null): void {
  const problem = passwordProblem(password, email);
  if (problem) throw AppError.badRequest(problem, [{ field: 'password', message: problem }]);
}

export function hashPassword(password: string): Promise<string> {
  return hash(password, ARGON2_PARAMS);
}

// Verifying against this when no account matches costs the same as a real check, so response
// time does not reveal whether an e-mail is registered.
let dummyHash: Promise<string> | undefined;

/** True when `password` matches `stored`; with no stored hash, spends the same time and answers false. */
export async function verifyPassword(stored: string | null | undefined, password: string): Promise<boolean> {
  if (!stored) {
    dummyHash ??= hashPassword('keel-dummy-password-for-timing');
    await verify(await dummyHash, password).catch(() => false);
    return false;
  }
  try {
    return await verify(stored, password);
  } catch {
    return false;
  }
}

export const commonPasswordCount = (): number => COMMON.size;

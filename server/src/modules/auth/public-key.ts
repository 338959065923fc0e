import { createPublicKey, type KeyObject } from 'node:crypto';
import { AppError } from '../../platform/errors.js';

/**
 * Device public keys (for end-to-end-encrypted sync) are accepted as an SPKI PEM
 * (`-----BEGIN PUBLIC KEY-----`) or a public JWK (as a JSON string) of one of:
 * EC P-256 / P-384, Ed25519, X25519, or RSA with a modulus of at least 2048 bits.
 * Private keys, other curves and short RSA keys are refused. The key is stored as sent.
 */
export function validatePublicKey(value: string): string {
  const trimmed = value.trim();
  let key: KeyObject;
  try {
    if (trimmed.startsWith('{')) {
      const jwk = JSON.parse(trimmed) as Record<string, unknown>;
      if ('d' in jwk || 'p' in jwk) throw refuse('This is a private key; send only the public key.');
      key = createPublicKey({ key: jwk, format: 'jwk' });
    } else if (trimmed.startsWith('-----BEGIN PUBLIC KEY-----')) {
      key = createPublicKey({ key: trimmed, format: 'pem' });
    } else {
      throw refuse('public_key must be an SPKI PEM ("-----BEGIN PUBLIC KEY-----") or a public JWK.');
    }
  } catch (err) {
    if (err instanceof AppError) throw err;
    throw refuse('public_key could not be parsed as an SPKI PEM or JWK public key.');
  }
  const type = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails ?? {};
  const ok = (type === 'ec' && ['prime256v1', 'secp384r1'].includes(details.namedCurve ?? ''))
    || type === 'ed25519' || type === 'x25519'
    || (type === 'rsa' && (details.modulusLength ?? 0) >= 2048);
  if (!ok) throw refuse('public_key must be EC P-256/P-384, Ed25519, X25519 or RSA ≥ 2048 bits.');
  return trimmed;
}

function refuse(message: string): AppError {
  return AppError.badRequest(message, [{ field: 'public_key', message }]);
}

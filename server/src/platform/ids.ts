import { randomBytes } from 'node:crypto';

const RAND_BITS = 74n;
const RAND_MASK = (1n << RAND_BITS) - 1n;
let lastMs = 0;
let lastRand = 0n;

/**
 * A UUIDv7 (RFC 9562): 48-bit millisecond timestamp, then 74 random bits. Within one process ids are
 * strictly increasing: inside the same millisecond the random field is incremented (RFC 9562 §6.2,
 * method 2), so ids sort by creation order, which keeps B-tree inserts local and makes id cursors
 * follow creation order.
 */
export function uuidv7(now = Date.now()): string {
  if (now > lastMs) {
    lastMs = now;
    lastRand = BigInt(`0x${randomBytes(10).toString('hex')}`) & RAND_MASK;
  } else {
    // Same (or an earlier, if the clock stepped back) millisecond: stay on the last one and count up
    // by a random step, so ids stay unguessable from their neighbours.
    lastRand += 1n + BigInt(randomBytes(2).readUInt16BE(0));
    if (lastRand > RAND_MASK) {
      lastMs += 1;
      lastRand &= RAND_MASK;
    }
  }
  const randA = (lastRand >> 62n) & 0xfffn; // 12 bits
  const randB = lastRand & ((1n << 62n) - 1n); // 62 bits
  const hex = lastMs.toString(16).padStart(12, '0')
    + (0x7000n | randA).toString(16).padStart(4, '0')
    + ((0x2n << 62n) | randB).toString(16).padStart(16, '0');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The current time as the ISO 8601 UTC string Keel stores and returns. */
export function nowIso(): string {
  return new Date().toISOString();
}

/**
 * An in-process copy of vector parts' sign bits (SQLite backend), scanned in JS with popcount instead
 * of in SQL. A part is cached with the `version` its `chunk_vector_parts` row had when it was read;
 * triggers on `chunk_vectors` bump that version in the same transaction as any insert, update or delete
 * of the part's vectors (foreign-key cascades included), so a query that reads the versions first sees
 * any write committed by any connection or process, and reloads the parts that changed.
 */

/** Sign bits of one part's vectors, packed: `words` 32-bit words per vector, in `seqs` order. */
export interface PackedPart {
  readonly seqs: Float64Array;
  readonly bits: Uint32Array;
  readonly words: number;
}

interface Entry {
  readonly version: number;
  readonly part: PackedPart;
  readonly bytes: number;
}

/** Default memory budget of the cache: ~56 bytes per 384-d vector, so about 4.5M vectors. */
export const DEFAULT_SIGN_BIT_CACHE_BYTES = 256 * 1024 * 1024;

/** Parts by id, least recently used first (Map order), evicted beyond `budgetBytes`. */
export class SignBitCache {
  private readonly entries = new Map<number, Entry>();
  private used = 0;

  constructor(readonly budgetBytes: number = DEFAULT_SIGN_BIT_CACHE_BYTES) {}

  get bytes(): number {
    return this.used;
  }

  /** Ids of the cached parts, least recently used first. */
  get partIds(): number[] {
    return [...this.entries.keys()];
  }

  /** The part as cached at `version`, or undefined (and forgotten) when it is not cached at that version. */
  get(id: number, version: number): PackedPart | undefined {
    const entry = this.entries.get(id);
    if (entry === undefined) return undefined;
    this.entries.delete(id);
    if (entry.version !== version) {
      this.used -= entry.bytes;
      return undefined;
    }
    this.entries.set(id, entry);
    return entry.part;
  }

  /** Whether `part` fits the budget at all; when it does, caches it, evicting the least recently used. */
  set(id: number, version: number, part: PackedPart): boolean {
    this.delete(id);
    const bytes = packedBytes(part);
    if (bytes > this.budgetBytes) return false;
    for (const [oldId, old] of this.entries) {
      if (this.used + bytes <= this.budgetBytes) break;
      this.entries.delete(oldId);
      this.used -= old.bytes;
    }
    this.entries.set(id, { version, part, bytes });
    this.used += bytes;
    return true;
  }

  delete(id: number): void {
    const entry = this.entries.get(id);
    if (entry === undefined) return;
    this.entries.delete(id);
    this.used -= entry.bytes;
  }

  clear(): void {
    this.entries.clear();
    this.used = 0;
  }
}

export function packedBytes(part: PackedPart): number {
  return part.seqs.byteLength + part.bits.byteLength + 64;
}

/** 32-bit words per vector for sign bits of `bytes` bytes. */
export function wordsFor(bytes: number): number {
  return Math.ceil(bytes / 4);
}

/** Packs rows of (seq, sign bits) — all with bits of `bytes` bytes — for scanning. */
export function packPart(rows: ReadonlyArray<{ seq: number; bits: Uint8Array }>, bytes: number): PackedPart {
  const words = wordsFor(bytes);
  const seqs = new Float64Array(rows.length);
  const bits = new Uint32Array(rows.length * words);
  const view = new Uint8Array(bits.buffer);
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i]!;
    seqs[i] = row.seq;
    view.set(row.bits.length <= bytes ? row.bits : row.bits.subarray(0, bytes), i * words * 4);
  }
  return { seqs, bits, words };
}

/** The query's sign bits in the same layout as a packed part's. */
export function packQuery(bits: Uint8Array): Uint32Array {
  const words = wordsFor(bits.length);
  const out = new Uint32Array(words);
  new Uint8Array(out.buffer).set(bits);
  return out;
}

/** The bit count of each 4-bit group of `x`, in that group (0…4). */
function nibbles(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  return (x & 0x33333333) + ((x >>> 2) & 0x33333333);
}

function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  x = (x + (x >>> 4)) & 0x0f0f0f0f;
  return Math.imul(x, 0x01010101) >>> 24;
}

/** Hamming distance of each of the part's vectors to `query` (packed as by packQuery). */
export function hammingDistances(part: PackedPart, query: Uint32Array): Uint16Array {
  const { bits, words } = part;
  const n = part.seqs.length;
  const out = new Uint16Array(n);
  if (words === 12) {
    // The common case (384 dimensions): the bit counts of three words' nibbles are summed before the
    // nibbles are folded into bytes (≤ 12 per nibble), and four such groups before the final multiply
    // (≤ 96 per byte), about half the work of twelve separate popcounts.
    const q0 = query[0]!, q1 = query[1]!, q2 = query[2]!, q3 = query[3]!, q4 = query[4]!, q5 = query[5]!;
    const q6 = query[6]!, q7 = query[7]!, q8 = query[8]!, q9 = query[9]!, q10 = query[10]!, q11 = query[11]!;
    for (let i = 0, o = 0; i < n; i++, o += 12) {
      const g0 = nibbles(bits[o]! ^ q0) + nibbles(bits[o + 1]! ^ q1) + nibbles(bits[o + 2]! ^ q2);
      const g1 = nibbles(bits[o + 3]! ^ q3) + nibbles(bits[o + 4]! ^ q4) + nibbles(bits[o + 5]! ^ q5);
      const g2 = nibbles(bits[o + 6]! ^ q6) + nibbles(bits[o + 7]! ^ q7) + nibbles(bits[o + 8]! ^ q8);
      const g3 = nibbles(bits[o + 9]! ^ q9) + nibbles(bits[o + 10]! ^ q10) + nibbles(bits[o + 11]! ^ q11);
      const bytes = (g0 & 0x0f0f0f0f) + ((g0 >>> 4) & 0x0f0f0f0f) + (g1 & 0x0f0f0f0f) + ((g1 >>> 4) & 0x0f0f0f0f)
        + (g2 & 0x0f0f0f0f) + ((g2 >>> 4) & 0x0f0f0f0f) + (g3 & 0x0f0f0f0f) + ((g3 >>> 4) & 0x0f0f0f0f);
      out[i] = Math.imul(bytes, 0x01010101) >>> 24;
    }
    return out;
  }
  for (let i = 0, o = 0; i < n; i++, o += words) {
    let d = 0;
    for (let w = 0; w < words; w++) d += popcount(bits[o + w]! ^ query[w]!);
    out[i] = d;
  }
  return out;
}

/**
 * The seqs of the `count` vectors nearest to `query` by Hamming distance over all `parts` (all of
 * them when there are fewer); ties at the cut-off are taken in part order, then row order.
 */
export function nearestByHamming(parts: readonly PackedPart[], query: Uint32Array, count: number): number[] {
  const distances = parts.map((p) => hammingDistances(p, query));
  const histogram = new Uint32Array(query.length * 32 + 1);
  let total = 0;
  for (const ds of distances) {
    for (let i = 0; i < ds.length; i++) histogram[ds[i]!]!++;
    total += ds.length;
  }
  const out: number[] = [];
  if (count <= 0) return out;
  if (total <= count) {
    for (const p of parts) for (let i = 0; i < p.seqs.length; i++) out.push(p.seqs[i]!);
    return out;
  }
  // The cut-off distance: everything below it is taken, and as many as still fit at it.
  let cut = 0;
  let below = 0;
  while (below + histogram[cut]! < count) below += histogram[cut++]!;
  let atCut = count - below;
  parts.forEach((p, k) => {
    const ds = distances[k]!;
    for (let i = 0; i < ds.length; i++) {
      const d = ds[i]!;
      if (d < cut) out.push(p.seqs[i]!);
      else if (d === cut && atCut > 0) {
        out.push(p.seqs[i]!);
        atCut--;
      }
    }
  });
  return out;
}

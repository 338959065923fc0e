/**
 * Vectors as stored: normalized to unit length when written (so cosine similarity is a dot product),
 * as little-endian float32 bytes (the byte order of every platform Node ships for).
 */

/** A unit-length copy of `vector`; all zeros stays all zeros (it is similar to nothing). */
export function normalize(vector: Float32Array): Float32Array {
  let sum = 0;
  for (let i = 0; i < vector.length; i++) {
    const x = vector[i]!;
    if (!Number.isFinite(x)) throw new Error('vector has a component that is not a finite number');
    sum += x * x;
  }
  const unit = new Float32Array(vector.length);
  if (sum === 0) return unit;
  const scale = 1 / Math.sqrt(sum);
  for (let i = 0; i < vector.length; i++) unit[i] = vector[i]! * scale;
  return unit;
}

export function toBytes(vector: Float32Array): Buffer {
  return Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength);
}

/** The float32 vector in `bytes` (copied when the bytes are not 4-aligned, as pooled Buffers may be). */
export function fromBytes(bytes: Uint8Array): Float32Array {
  if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2);
  return new Float32Array(new Uint8Array(bytes).buffer, 0, bytes.byteLength >>> 2);
}

/**
 * One bit per dimension, set where the component is positive (binary quantization): the Hamming
 * distance between two of these tracks the angle between the vectors, and is cheap to scan.
 */
export function signBits(vector: Float32Array): Buffer {
  const bits = Buffer.alloc(Math.ceil(vector.length / 8));
  for (let i = 0; i < vector.length; i++) if (vector[i]! > 0) bits[i >>> 3]! |= 1 << (i & 7);
  return bits;
}

export function dot(a: Float32Array, b: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i]! * b[i]!;
  return sum;
}

/** Keeps the `k` highest-scored items pushed into it (a bounded min-heap). */
export class TopK<T> {
  private readonly scores: number[] = [];
  private readonly items: T[] = [];
  constructor(private readonly k: number) {}

  push(score: number, item: T): void {
    if (this.k <= 0) return;
    if (this.scores.length < this.k) {
      this.scores.push(score);
      this.items.push(item);
      this.up(this.scores.length - 1);
    } else if (score > this.scores[0]!) {
      this.scores[0] = score;
      this.items[0] = item;
      this.down(0);
    }
  }

  /** Best first. */
  sorted(): Array<{ score: number; item: T }> {
    return this.scores.map((score, i) => ({ score, item: this.items[i]! })).sort((a, b) => b.score - a.score);
  }

  private up(i: number): void {
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (this.scores[parent]! <= this.scores[i]!) return;
      this.swap(i, parent);
      i = parent;
    }
  }

  private down(i: number): void {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let least = i;
      if (l < this.scores.length && this.scores[l]! < this.scores[least]!) least = l;
      if (r < this.scores.length && this.scores[r]! < this.scores[least]!) least = r;
      if (least === i) return;
      this.swap(i, least);
      i = least;
    }
  }

  private swap(a: number, b: number): void {
    [this.scores[a], this.scores[b]] = [this.scores[b]!, this.scores[a]!];
    [this.items[a], this.items[b]] = [this.items[b]!, this.items[a]!];
  }
}

/** Scales `v` to unit length in place (an all-zero vector stays zero) and returns it. */
export function normalize(v: Float32Array): Float32Array {
  let sum = 0;
  for (const x of v) sum += x * x;
  const norm = Math.sqrt(sum);
  if (norm > 0) for (let i = 0; i < v.length; i++) v[i] = v[i]! / norm;
  return v;
}

/**
 * An embedding as an upstream sent it: a JSON number array, or (`encoding_format: 'base64'`)
 * little-endian float32 bytes. Undefined when it is neither, or holds a non-finite number.
 */
export function decodeEmbedding(value: unknown): Float32Array | undefined {
  let v: Float32Array;
  if (Array.isArray(value)) {
    v = new Float32Array(value.length);
    for (let i = 0; i < value.length; i++) {
      const x: unknown = value[i];
      if (typeof x !== 'number') return undefined;
      v[i] = x;
    }
  } else if (typeof value === 'string') {
    const bytes = Buffer.from(value, 'base64');
    if (bytes.length % 4 !== 0) return undefined;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    v = new Float32Array(bytes.length / 4);
    for (let i = 0; i < v.length; i++) v[i] = view.getFloat32(i * 4, true);
  } else {
    return undefined;
  }
  for (const x of v) if (!Number.isFinite(x)) return undefined;
  return v;
}

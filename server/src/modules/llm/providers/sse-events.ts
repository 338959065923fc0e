/**
 * Splits an SSE body into events as bytes arrive, keeping each event's place in the bytes so that a
 * relay can pass the upstream's own bytes on instead of re-serializing what it parsed. Events end at a
 * blank line (`\n\n` or `\r\n\r\n`, the line endings OpenAI-compatible servers use); only `data:`
 * fields are read (comments, `event:`, `id:` and `retry:` are not needed for chat streams).
 */

/** One complete event: its bytes are `buffer[start, end)` (the closing blank line included). */
export interface SseBlock {
  readonly start: number;
  readonly end: number;
  /** The `data:` lines joined by `\n`; undefined for a block without data (a comment, a keep-alive). */
  readonly data: string | undefined;
}

export interface SseBatch {
  /** The bytes the blocks point into: a leftover partial event from the previous push, then the new bytes. */
  readonly buffer: Buffer;
  readonly blocks: SseBlock[];
}

const LF = 0x0a;
const CR = 0x0d;
const DATA = Buffer.from('data:');

export class SseSplitter {
  private pending: Buffer | undefined;

  /** The events completed by `bytes`; a trailing partial event waits for the next push. */
  push(bytes: Buffer): SseBatch {
    const buffer = this.pending ? Buffer.concat([this.pending, bytes]) : bytes;
    const blocks: SseBlock[] = [];
    let start = 0;
    let from = 0;
    for (;;) {
      const lf = buffer.indexOf(LF, from);
      if (lf === -1) break;
      let end: number;
      if (buffer[lf + 1] === LF) end = lf + 2;
      else if (buffer[lf + 1] === CR && buffer[lf + 2] === LF) end = lf + 3;
      else if (lf + 1 >= buffer.length || (buffer[lf + 1] === CR && lf + 2 >= buffer.length)) break; // may be completed by the next bytes
      else {
        from = lf + 1;
        continue;
      }
      blocks.push({ start, end, data: dataOf(buffer, start, lf) });
      start = end;
      from = end;
    }
    this.pending = start < buffer.length ? buffer.subarray(start) : undefined;
    return { buffer, blocks };
  }
}

/** The data of the event in `buffer[start, lineEnd)` (its last line ends at `lineEnd`). */
function dataOf(buffer: Buffer, start: number, lineEnd: number): string | undefined {
  const stop = buffer[lineEnd - 1] === CR ? lineEnd - 1 : lineEnd;
  // The common case: one `data:` line.
  if (buffer.indexOf(LF, start) === lineEnd && startsWithData(buffer, start)) return buffer.toString('utf8', dataStart(buffer, start + DATA.length, stop), stop);
  const lines = buffer.toString('utf8', start, stop).split(/\r?\n/);
  const data = lines.filter((l) => l.startsWith('data:')).map((l) => l.slice(l.startsWith('data: ') ? 6 : 5));
  return data.length > 0 ? data.join('\n') : undefined;
}

function startsWithData(buffer: Buffer, at: number): boolean {
  return buffer.length >= at + DATA.length && buffer.compare(DATA, 0, DATA.length, at, at + DATA.length) === 0;
}

/** After `data:`, one optional space is not part of the value. */
function dataStart(buffer: Buffer, at: number, stop: number): number {
  return at < stop && buffer[at] === 0x20 ? at + 1 : at;
}

// The kernel's count of connections dropped because a listen queue was full (TcpExt ListenOverflows in
// /proc/net/netstat): a herd of connects to a busy server overflows its backlog, and each dropped
// connection then waits out TCP's retransmission backoff (1 s, 3 s, 7 s…) — a stall a benchmark must
// not mistake for the server's latency. The count covers every listener of the network namespace.
import { readFile } from 'node:fs/promises';

/** TcpExt ListenOverflows so far, or undefined where /proc/net/netstat cannot be read. */
export async function listenOverflows(): Promise<number | undefined> {
  try {
    const lines = (await readFile('/proc/net/netstat', 'utf8')).split('\n');
    for (let i = 0; i + 1 < lines.length; i++) {
      const names = lines[i]!.split(/\s+/);
      const values = lines[i + 1]!.split(/\s+/);
      if (names[0] !== 'TcpExt:' || values[0] !== 'TcpExt:') continue;
      const at = names.indexOf('ListenOverflows');
      return at < 0 ? undefined : Number(values[at]);
    }
    return undefined;
  } catch {
    return undefined;
  }
}

/** `after` − `before`, undefined when either is unknown. */
export function overflowsBetween(before: number | undefined, after: number | undefined): number | undefined {
  return before === undefined || after === undefined ? undefined : after - before;
}

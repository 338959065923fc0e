/**
 * The pieces every outbound client retries with (LLM providers, the embeddings client): exponential
 * backoff with jitter, an abortable wait, and the `Retry-After` header read as seconds.
 */

/** base·2^attempt, jittered to between half and one and a half of it; a Retry-After of up to 30 s is honoured as a floor. */
export function backoffMs(attempt: number, baseMs: number, retryAfterSeconds?: number): number {
  const computed = baseMs * 2 ** attempt * (0.5 + Math.random());
  return retryAfterSeconds !== undefined && retryAfterSeconds <= 30 ? Math.max(retryAfterSeconds * 1000, computed) : computed;
}

/** Resolves after `ms`; rejects with `aborted()` at once when `signal` is (or becomes) aborted. */
export function abortableSleep(ms: number, signal: AbortSignal | undefined, aborted: () => Error): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(aborted());
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(aborted());
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** `Retry-After` (delta-seconds or an HTTP date) as seconds from now; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null | undefined): number | undefined {
  if (value === undefined || value === null) return undefined;
  const trimmed = value.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Number(trimmed);
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? undefined : Math.max(0, (date - Date.now()) / 1000);
}

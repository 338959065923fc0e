import { AppError } from '../../../platform/errors.js';

/** Turns texts into vectors for semantic search. One instance per configured provider. */
export interface Embedder {
  /**
   * The name stored next to every vector, stable across restarts: the upstream model id for an
   * OpenAI-compatible server (`text-embedding-3-small`, or `text-embedding-3-small@256` when
   * EMBEDDINGS_DIMENSIONS shortens its vectors), `local:<EMBEDDINGS_MODEL or directory name>` for a
   * local ONNX model. Vectors stored under another name must not be compared with this embedder's.
   */
  readonly model: string;
  /** Vector length: from EMBEDDINGS_DIMENSIONS, else known after the first successful call. */
  readonly dimensions: number | undefined;
  /**
   * Embeds `texts` in batches of the configured size, one vector per text in the same order, each
   * L2-normalised (an all-zero vector, which a provider may return for an empty text, stays zero).
   * `purpose` is for models that embed queries and documents differently; the OpenAI-compatible and
   * local embedders send the text unchanged. Aborting `signal` stops between batches and cancels the
   * request in flight. Throws an {@link EmbeddingsError}: never the API key or the upstream's body.
   */
  embed(texts: readonly string[], options?: EmbedOptions): Promise<Float32Array[]>;
  /** Whether embedding works right now (one tiny request), for `keel doctor`; never throws. */
  check(): Promise<{ ok: boolean; detail: string }>;
}

export interface EmbedOptions {
  signal?: AbortSignal;
  purpose?: 'document' | 'query';
}

/** Why an embedding call failed; `retryable` failures were already retried (OpenAI-compatible) before being thrown. */
export type EmbeddingsFailure =
  | 'unreachable'
  | 'timeout'
  | 'rate_limited'
  | 'auth_failed'
  | 'rejected'
  | 'upstream_error'
  | 'bad_response'
  | 'not_installed'
  | 'aborted';

/**
 * A failed embedding call as Keel reports it: code `embeddings_unavailable` (502/503/504), or
 * `embeddings_aborted` (499) when the caller's signal fired. `reason` says what happened, for callers
 * that degrade to lexical search and for logs; the message names the host, never a key or a body.
 */
export class EmbeddingsError extends AppError {
  constructor(
    readonly reason: EmbeddingsFailure,
    message: string,
    status: number,
    readonly retryable: boolean,
    readonly upstreamStatus?: number,
    readonly retryAfterSeconds?: number,
  ) {
    super(
      reason === 'aborted' ? 'embeddings_aborted' : 'embeddings_unavailable',
      message,
      status,
      undefined,
      retryAfterSeconds !== undefined ? { 'retry-after': String(Math.max(1, Math.round(retryAfterSeconds))) } : undefined,
    );
    this.name = 'EmbeddingsError';
  }
}

export function abortedError(): EmbeddingsError {
  return new EmbeddingsError('aborted', 'The embedding request was cancelled.', 499, false);
}

import type { Cleanup } from './cleanup.js';
import type { Behaviour } from './fake-upstream.js';
import type { BenchOptions } from './options.js';

/** What bench/run.ts hands every suite that starts its own servers (gateway, chat). */
export interface SuiteContext {
  readonly options: BenchOptions;
  /** The command as typed, for RESULTS.md. */
  readonly command: string;
  readonly cleanup: Cleanup;
  readonly repoRoot: string;
  readonly serverEntry: string;
  readonly resultsFile: string;
  readonly say: (line: string) => void;
}

/** The model name Keel is configured with (LLM_MODEL) and the fake upstream answers as. */
export const MODEL = 'bench-model';
/** The streamed answer: 20 text chunks of one short word each. */
export const TEXT_PIECES: readonly string[] = Array.from({ length: 20 }, (_, i) => `word${String(i + 1).padStart(2, '0')} `);
/** Between two chunks of a stream (the fake's `chunkDelayMs`): a fast model's pace. */
export const CHUNK_DELAY_MS = 10;
export const STREAM_USAGE = { prompt_tokens: 12, completion_tokens: TEXT_PIECES.length };
/** The same stream schedule for every suite, so their figures compare. */
export const STREAM_BEHAVIOUR: Behaviour = { route: 'chat', chunks: [...TEXT_PIECES], chunkDelayMs: CHUNK_DELAY_MS, usage: STREAM_USAGE };

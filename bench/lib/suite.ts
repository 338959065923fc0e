import path from 'node:path';
import type { Cleanup } from './cleanup.js';
import type { Behaviour } from './fake-upstream.js';
import type { BenchOptions } from './options.js';
import { appendSection } from './results.js';

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

/**
 * Prints a suite's section, appends it to RESULTS.md unless `--no-write`, and turns its problems into
 * the exit code (1 when any): a run with problems is reported, never hidden.
 */
export async function recordSection(ctx: SuiteContext, suite: string, text: string, problems: readonly string[]): Promise<number> {
  ctx.say(`\n${text}`);
  if (ctx.options.write) {
    await appendSection(ctx.resultsFile, text);
    ctx.say(`bench: appended to ${path.relative(ctx.repoRoot, ctx.resultsFile)}`);
  } else {
    ctx.say('bench: --no-write: RESULTS.md left as it was');
  }
  if (problems.length === 0) return 0;
  process.stderr.write(`bench: the ${suite} suite had ${problems.length} problem(s): ${problems.join('; ')}\n`);
  return 1;
}

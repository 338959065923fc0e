import { decode, encode } from 'gpt-tokenizer';
import { countTextTokens, cutLongRuns, isLowSurrogate, MAX_TOKEN_RUN } from '../../../platform/tokens.js';
import type { Section } from './types.js';

/** A piece of a document to embed and retrieve: `ordinal` is its position in the document, from 0. */
export interface Chunk {
  ordinal: number;
  heading: string | null;
  text: string;
  token_count: number;
}

export interface ChunkingOptions {
  /** The most tokens a chunk's text may have (o200k tokenizer, as for LLM metering). */
  maxTokens: number;
  /** Tokens repeated from the end of the previous chunk of the same section; at most half of maxTokens. */
  overlapTokens: number;
}

export const DEFAULT_CHUNKING: Readonly<ChunkingOptions> = Object.freeze({ maxTokens: 400, overlapTokens: 50 });

// Document text is text: "<|endoftext|>" in a file is counted as characters, not refused as a special token.
const AS_TEXT = { disallowedSpecial: new Set<string>() };
const tokenize = (text: string): number[] => encode(text, AS_TEXT);

// Where text may be cut, best first; each piece keeps the whitespace that follows it, so pieces
// concatenate back to the original. Below the last level the cut falls between tokens.
const LEVELS: readonly RegExp[] = [
  /\n[ \t]*\n\s*/g, // paragraphs
  /(?<=[.!?…。！？]['"”’)\]]{0,3})\s+/g, // sentences
  /\n\s*/g, // lines
  /\s+/g, // words
];

// Runs of letters longer than this are cut in pieces this long (byte-pair encoding is quadratic in them).
const MAX_RUN = MAX_TOKEN_RUN;

interface Unit {
  text: string;
  tokens: number;
}

/**
 * Splits sections into chunks of at most `maxTokens` tokens. A chunk never spans two sections and
 * carries its section's heading; a section that fits (an OpenAPI operation, say) stays one chunk.
 * Longer sections are cut at paragraph, then sentence, line, word and finally token boundaries, and
 * each further chunk starts with about `overlapTokens` tokens from the end of the one before.
 * Empty sections are dropped; ordinals run 0..n-1; the same input always gives the same chunks.
 */
export function chunkSections(sections: readonly Section[], options: ChunkingOptions): Chunk[] {
  const { maxTokens, overlapTokens } = options;
  if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new RangeError('maxTokens must be a positive integer');
  if (!Number.isInteger(overlapTokens) || overlapTokens < 0 || overlapTokens >= maxTokens) {
    throw new RangeError('overlapTokens must be an integer from 0 to less than maxTokens');
  }
  const overlap = Math.min(overlapTokens, Math.floor(maxTokens / 2));
  const chunks: Chunk[] = [];
  for (const section of sections) {
    const text = section.text.replace(/\r\n?/g, '\n').replace(/^\s*\n/, '').trimEnd();
    if (!text.trim()) continue;
    for (const piece of chunkText(text, maxTokens, overlap)) {
      chunks.push({ ordinal: chunks.length, heading: section.heading, text: piece.text, token_count: piece.tokens });
    }
  }
  return chunks;
}

function chunkText(text: string, maxTokens: number, overlap: number): Unit[] {
  const total = count(text);
  if (total <= maxTokens) return [{ text, tokens: total }];

  // Room for the overlap and the whitespace joining it to the new text.
  const unitBudget = Math.max(1, maxTokens - overlap - (overlap > 0 ? 2 : 0));
  const units = split(text, 0, unitBudget);
  const out: Unit[] = [];
  let previous: string | null = null;
  let i = 0;
  while (i < units.length) {
    let lead: string = previous !== null && overlap > 0 ? tail(previous, overlap) : '';
    const body: string[] = [];
    let used = count(lead);
    while (i < units.length) {
      const unit = units[i] as Unit;
      if (body.length > 0 && used + unit.tokens > maxTokens) break;
      body.push(unit.text);
      used += unit.tokens;
      i++;
    }
    let chunk = tidy(lead + body.join(''));
    let tokens = count(chunk);
    // Token counts of pieces do not always add up exactly: give back pieces, then the overlap, until it fits.
    while (tokens > maxTokens && (body.length > 1 || lead !== '')) {
      if (body.length > 1) {
        body.pop();
        i--;
      } else {
        lead = '';
      }
      chunk = tidy(lead + body.join(''));
      tokens = count(chunk);
    }
    // Only a chunk that adds text counts: whitespace alone would just repeat the overlap.
    if (body.join('').trim() === '') continue;
    previous = lead + body.join('');
    out.push({ text: chunk, tokens });
  }
  return out;
}

/** Pieces of at most `budget` tokens, cut at the coarsest boundary that gets them there. */
function split(text: string, level: number, budget: number): Unit[] {
  const tokens = count(text);
  if (tokens <= budget) return [{ text, tokens }];
  const delimiter = LEVELS[level];
  if (!delimiter) return splitRuns(text).flatMap((run) => splitTokens(run, budget));
  const pieces = splitAfter(text, delimiter);
  if (pieces.length <= 1) return split(text, level + 1, budget);
  return pieces.flatMap((piece) => split(piece, level + 1, budget));
}

/** The text cut after each match of `delimiter` (kept with the piece before it). */
function splitAfter(text: string, delimiter: RegExp): string[] {
  const pieces: string[] = [];
  let last = 0;
  for (const match of text.matchAll(delimiter)) {
    const end = match.index + match[0].length;
    if (end > last && end < text.length) {
      pieces.push(text.slice(last, end));
      last = end;
    }
  }
  pieces.push(text.slice(last));
  return pieces.filter((p) => p !== '');
}

/** Token counts are linear even for hostile input (platform/tokens.ts). */
const count = countTextTokens;

/** The text in pieces of at most MAX_RUN characters, never cutting a surrogate pair. */
function splitRuns(text: string): string[] {
  if (text.length <= MAX_RUN) return [text];
  const pieces: string[] = [];
  for (let start = 0; start < text.length; ) {
    let end = Math.min(start + MAX_RUN, text.length);
    if (end < text.length && isLowSurrogate(text.charCodeAt(end))) end--;
    pieces.push(text.slice(start, end));
    start = end;
  }
  return pieces;
}



/** Hard cuts between tokens, never inside a character. */
function splitTokens(text: string, budget: number): Unit[] {
  const tokens = tokenize(text);
  const out: Unit[] = [];
  for (let start = 0; start < tokens.length; ) {
    let end = Math.min(start + budget, tokens.length);
    let piece = decode(tokens.slice(start, end));
    while (end - start > 1 && end < tokens.length && piece.endsWith('\uFFFD')) piece = decode(tokens.slice(start, --end));
    out.push({ text: piece, tokens: end - start });
    start = end;
  }
  return out;
}

/** About the last `n` tokens of `text`, starting at a word where possible, with the whitespace after it. */
function tail(text: string, n: number): string {
  const trimmed = text.trimEnd();
  const gap = text.slice(trimmed.length);
  // A token is rarely more than a few dozen characters: the last n*64 (and no long run) are plenty.
  let body = trimmed.slice(-n * 64);
  if (isLowSurrogate(body.charCodeAt(0))) body = body.slice(1);
  const pieces = cutLongRuns(body);
  if (pieces.length > 1) body = pieces.at(-1) ?? body;
  const tokens = tokenize(body);
  let piece = tokens.length <= n ? body : decode(tokens.slice(-n)).replace(/^\uFFFD+/, '');
  const before = trimmed[trimmed.length - piece.length - 1];
  if (piece !== trimmed && before !== undefined && !/\s/.test(before)) {
    const space = piece.search(/\s/);
    if (space > 0 && space < piece.length / 2) piece = piece.slice(space);
  }
  piece = piece.trimStart();
  return piece ? piece + gap : '';
}

function tidy(text: string): string {
  return text.replace(/^\s*\n/, '').trimEnd();
}

import { countTokens } from 'gpt-tokenizer';

// User text is text: "<|endoftext|>" in a message or a file is counted as characters, never refused
// as a special token (gpt-tokenizer's default throws on it).
const AS_TEXT = { disallowedSpecial: new Set<string>() };

// Byte-pair encoding is quadratic in the length of a run of letters (or of spaces): a 1 MB base64 blob
// would take minutes. Runs longer than this many characters are counted in pieces this long.
export const MAX_TOKEN_RUN = 1000;

/**
 * The o200k token count of a text, exact unless it has a run of letters or spaces longer than
 * MAX_TOKEN_RUN characters: such runs are counted in pieces, which can only overstate the count by
 * about a token a piece and keeps counting linear in the text's length. Shared by the gateway's
 * estimates and the knowledge base's chunker, so hostile input cannot stall either.
 */
export function countTextTokens(text: string): number {
  if (!text) return 0;
  let total = 0;
  for (const piece of cutLongRuns(text)) total += countTokens(piece, AS_TEXT);
  return total;
}

/** The text cut every MAX_TOKEN_RUN characters inside runs of non-space (or space) characters longer than that. */
export function cutLongRuns(text: string): string[] {
  if (text.length <= MAX_TOKEN_RUN) return [text];
  const pieces: string[] = [];
  let last = 0;
  let runStart = 0;
  let space: boolean | null = null;
  for (let i = 0; i < text.length; i++) {
    const isSpace = isWhitespace(text.charCodeAt(i));
    if (isSpace !== space) {
      space = isSpace;
      runStart = i;
    } else if ((i - runStart) % MAX_TOKEN_RUN === 0 && !isLowSurrogate(text.charCodeAt(i))) {
      pieces.push(text.slice(last, i));
      last = i;
    }
  }
  pieces.push(text.slice(last));
  return pieces;
}

export function isLowSurrogate(code: number): boolean {
  return code >= 0xdc00 && code <= 0xdfff;
}

export function isWhitespace(code: number): boolean {
  return code === 32 || (code >= 9 && code <= 13) || code === 0xa0 || code === 0x3000 || (code >= 0x2000 && code <= 0x200a);
}

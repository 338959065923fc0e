import { ParseError, type Section } from './types.js';

/** The text of UTF-8 bytes (a leading BOM is dropped), or null when the bytes are not valid UTF-8. */
export function decodeUtf8(bytes: Uint8Array): string | null {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return null;
  }
}

/** Like decodeUtf8, for parsers: invalid UTF-8 is a ParseError. */
export function decodeText(bytes: Uint8Array): string {
  const text = decodeUtf8(bytes);
  if (text === null) throw new ParseError('the file is not valid UTF-8 text');
  return text;
}

/** Unix newlines, no trailing spaces, at most one blank line in a row, no blank lines around. */
export function tidyText(text: string): string {
  // Line by line rather than with /[ \t]+$/gm, which is quadratic on long runs of spaces.
  const out: string[] = [];
  let blank = true;
  for (const raw of text.replace(/\r\n?/g, '\n').split('\n')) {
    const line = raw.trimEnd();
    if (line === '' && blank) continue;
    out.push(line);
    blank = line === '';
  }
  return out.join('\n').trimEnd();
}

/** Sections with tidied text, empty ones dropped. */
export function tidySections(sections: readonly Section[]): Section[] {
  const out: Section[] = [];
  for (const s of sections) {
    const text = tidyText(s.text);
    if (text.trim()) out.push({ heading: s.heading, text });
  }
  return out;
}

/** Plain text: one section without a heading; paragraphs stay separated by blank lines for the chunker. */
export function parseText(text: string): Section[] {
  return tidySections([{ heading: null, text }]);
}

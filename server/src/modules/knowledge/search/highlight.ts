/**
 * Highlights: short excerpts of a chunk with the query's words between `<mark>` and `</mark>`, and
 * everything else HTML-escaped. The databases mark matches with two control characters instead of
 * tags (FTS5 `snippet()`, Postgres `ts_headline`), so the stored text can be escaped afterwards; a
 * control character that was already in the text can at worst move a highlight, never open a tag.
 */

/** Put before a matched word by the databases' excerpt functions. */
export const MARK_START = '\u0001';
/** Put after a matched word. */
export const MARK_END = '\u0002';

/** Words in an excerpt made here (vector-only hits); the databases' excerpts are about as long. */
export const EXCERPT_WORDS = 32;

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]!);
}

const MARKS = new RegExp(`([${MARK_START}${MARK_END}])`);

/** Text with {@link MARK_START}/{@link MARK_END} around matches → escaped HTML with balanced `<mark>` tags. */
export function markedToHtml(marked: string): string {
  let html = '';
  let open = false;
  for (const part of marked.split(MARKS)) {
    if (part === MARK_START) {
      if (!open) html += '<mark>';
      open = true;
    } else if (part === MARK_END) {
      if (open) html += '</mark>';
      open = false;
    } else {
      html += escapeHtml(part);
    }
  }
  return open ? `${html}</mark>` : html;
}

/**
 * An excerpt of `text` made without the full-text engine (for chunks only the vector search found):
 * {@link EXCERPT_WORDS} words from a little before the first word that starts with a query term (or
 * with its stem, roughly: `configuring` finds `configure`), every such word marked; the chunk's
 * opening when none does.
 */
export function highlightText(text: string, terms: readonly string[]): string {
  const words = [...text.matchAll(/\S+/g)];
  if (words.length === 0) return '';
  const pattern = termPattern(terms);
  const isMatch = (w: string): boolean => pattern !== undefined && pattern.test(w);
  let first = words.findIndex((w) => isMatch(w[0]));
  if (first < 0) first = 0;
  const start = Math.max(0, Math.min(first - 6, words.length - EXCERPT_WORDS));
  const end = Math.min(words.length, start + EXCERPT_WORDS);
  let html = start > 0 ? '… ' : '';
  for (let i = start; i < end; i++) {
    const w = words[i]![0];
    html += (i > start ? ' ' : '') + (isMatch(w) ? markWord(w, pattern!) : escapeHtml(w));
  }
  return end < words.length ? `${html} …` : html;
}

/** Marks the letters of a word-with-punctuation (`"Configure,"` → `"<mark>Configure</mark>,"`). */
function markWord(word: string, pattern: RegExp): string {
  const m = /[\p{L}\p{M}\p{N}]+/u.exec(word);
  if (!m || !pattern.test(m[0])) return escapeHtml(word);
  return `${escapeHtml(word.slice(0, m.index))}<mark>${escapeHtml(m[0])}</mark>${escapeHtml(word.slice(m.index + m[0].length))}`;
}

/** Matches a word (with surrounding punctuation) beginning with a term or the term's rough stem. */
function termPattern(terms: readonly string[]): RegExp | undefined {
  const stems = [...new Set(terms.map(roughStem))].filter((s) => s.length > 0);
  if (stems.length === 0) return undefined;
  const alternatives = stems.map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|');
  return new RegExp(`^[^\\p{L}\\p{M}\\p{N}]*(?:${alternatives})`, 'iu');
}

/** Drops a common English inflection when enough of the word is left to stay specific. */
function roughStem(term: string): string {
  const m = /^(.{3,}?)(?:ations?|ings?|ed|es|s|ly|e)$/u.exec(term);
  return m ? m[1]! : term;
}

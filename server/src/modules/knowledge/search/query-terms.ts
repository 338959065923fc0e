/**
 * A user's query text → the terms the full-text engines are asked for. The text is never handed to
 * FTS5's or Postgres's query parsers as it is: it is cut into words (letters, marks and digits), and
 * each word becomes a quoted term, so quotes, parentheses, operators (`OR`, `NOT`, `-`, `:`, `*`)
 * and column filters typed by a user are just punctuation. The terms are OR-ed: BM25 (and
 * `ts_rank_cd`) then rank chunks that contain more of them, and rarer ones, first.
 */

/** At most this many distinct terms are searched (a pasted paragraph stays cheap). */
export const MAX_TERMS = 32;

/**
 * English function words (the Snowball list Postgres's `english` configuration drops). They occur in
 * most chunks, so BM25 gives them next to no weight, but each would make FTS5 score nearly every
 * chunk; Postgres drops them anyway, so both engines search the same words.
 */
const STOPWORDS = new Set(`i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she
her hers herself it its itself they them their theirs themselves what which who whom this that these those am is are was
were be been being have has had having do does did doing a an the and but if or because as until while of at by for
with about against between into through during before after above below to from up down in out on off over under again
further then once here there when where why how all any both each few more most other some such no nor not only own
same so than too very s t can will just don should now`.split(/\s+/));

const WORD = /[\p{L}\p{M}\p{N}]+/gu;

/**
 * The distinct searchable words of `query`, lower-cased, in order of first appearance: stopwords and
 * single Latin letters dropped, at most {@link MAX_TERMS}. Empty when nothing searchable is left.
 */
export function queryTerms(query: string): string[] {
  const terms: string[] = [];
  for (const match of query.normalize('NFC').matchAll(WORD)) {
    const word = match[0].toLowerCase();
    if (STOPWORDS.has(word) || /^[a-z]$/.test(word) || terms.includes(word)) continue;
    terms.push(word);
    if (terms.length === MAX_TERMS) break;
  }
  return terms;
}

/** An FTS5 MATCH expression: each term a quoted string (so it is tokenized, never parsed), OR-ed. */
export function fts5Query(terms: readonly string[]): string {
  return terms.map((t) => `"${t.replace(/"/g, '""')}"`).join(' OR ');
}

/** A `to_tsquery` input: each term a quoted lexeme, OR-ed; the configuration stems and drops stopwords. */
export function tsQuery(terms: readonly string[]): string {
  return terms.map((t) => `'${t.replace(/'/g, "''").replace(/\\/g, '\\\\')}'`).join(' | ');
}

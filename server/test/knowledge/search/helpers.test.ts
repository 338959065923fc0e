import { describe, expect, it } from 'vitest';
import { highlightText, MARK_END, MARK_START, markedToHtml } from '../../../src/modules/knowledge/search/highlight.js';
import { fuse } from '../../../src/modules/knowledge/search/index.js';
import { fts5Query, MAX_TERMS, queryTerms, tsQuery } from '../../../src/modules/knowledge/search/query-terms.js';
import { fromBytes, normalize, signBits, TopK, toBytes } from '../../../src/modules/knowledge/search/vector-math.js';

describe('query terms', () => {
  it('keeps words, drops stopwords, punctuation, operators and duplicates', () => {
    expect(queryTerms(`What's "foo" OR (bar`)).toEqual(['foo', 'bar']);
    expect(queryTerms('How do I rotate my API key? Rotate, API!')).toEqual(['rotate', 'api', 'key']);
    expect(queryTerms('heading:intro NEAR(a b) foo* -bar ^baz')).toEqual(['heading', 'intro', 'near', 'foo', 'bar', 'baz']);
    expect(queryTerms('Café naïve 東京 2024 x')).toEqual(['café', 'naïve', '東京', '2024']);
    expect(queryTerms('the of and')).toEqual([]);
    expect(queryTerms('')).toEqual([]);
    expect(queryTerms(Array.from({ length: 100 }, (_, i) => `w${i}`).join(' '))).toHaveLength(MAX_TERMS);
  });

  it('quotes each term for FTS5 and to_tsquery', () => {
    expect(fts5Query(['foo', 'bar'])).toBe('"foo" OR "bar"');
    expect(fts5Query(['a"b'])).toBe('"a""b"');
    expect(tsQuery(['foo', 'bar'])).toBe(`'foo' | 'bar'`);
    expect(tsQuery([`it's`])).toBe(`'it''s'`);
  });
});

describe('highlights', () => {
  it('turns the databases\' markers into balanced <mark> tags around escaped text', () => {
    expect(markedToHtml(`a ${MARK_START}<b>${MARK_END} & "c"`)).toBe('a <mark>&lt;b&gt;</mark> &amp; &quot;c&quot;');
    // Markers that were already in the stored text cannot unbalance the tags.
    expect(markedToHtml(`${MARK_END}x${MARK_START}y${MARK_START}z`)).toBe('x<mark>yz</mark>');
  });

  it('marks query words (and rough inflections) in an excerpt around the first match, else the opening', () => {
    const text = `${'lead '.repeat(20)}We configure <webhooks> & retries here. ${'tail '.repeat(40)}`;
    const html = highlightText(text, ['configuring', 'webhook']);
    expect(html).toMatch(/^… (lead ){5}We <mark>configure<\/mark> &lt;<mark>webhooks<\/mark>&gt; &amp; retries here\./);
    expect(html.endsWith(' …')).toBe(true);
    expect(html.split(' ').filter((w) => w !== '…')).toHaveLength(32);
    expect(highlightText('Short & sweet.', ['nothing'])).toBe('Short &amp; sweet.');
    expect(highlightText('Short & sweet.', [])).toBe('Short &amp; sweet.');
    expect(highlightText('', ['x'])).toBe('');
  });
});

describe('vector math', () => {
  it('normalizes, round-trips bytes at any alignment, and takes sign bits', () => {
    const unit = normalize(Float32Array.from([3, 4]));
    expect(Array.from(unit)).toEqual([Math.fround(0.6), Math.fround(0.8)]);
    expect(Array.from(normalize(new Float32Array(3)))).toEqual([0, 0, 0]);
    expect(() => normalize(Float32Array.from([1, Number.NaN]))).toThrow(/finite/);
    const bytes = toBytes(unit);
    const shifted = Buffer.concat([Buffer.from([9]), bytes]).subarray(1);
    expect(Array.from(fromBytes(shifted))).toEqual(Array.from(unit));
    expect([...signBits(Float32Array.from([1, -1, 0, 2, 0, 0, 0, 0, 5]))]).toEqual([0b1001, 0b1]);
  });

  it('TopK keeps the best k, best first', () => {
    const top = new TopK<string>(3);
    [5, 1, 9, 3, 7, 2].forEach((s) => top.push(s, `i${s}`));
    expect(top.sorted().map((x) => x.item)).toEqual(['i9', 'i7', 'i5']);
    const none = new TopK<string>(0);
    none.push(1, 'x');
    expect(none.sorted()).toEqual([]);
  });
});

describe('reciprocal rank fusion', () => {
  it('sums 1/(60 + rank) over the lists and keeps each signal\'s score', () => {
    const fused = fuse([{ seq: 1, score: 9 }, { seq: 2, score: 5 }], [{ seq: 2, score: 0.9 }, { seq: 3, score: 0.8 }]);
    expect(fused.map((f) => f.seq)).toEqual([2, 1, 3]);
    expect(fused[0]).toEqual({ seq: 2, score: 1 / 62 + 1 / 61, scores: { lexical: 5, vector: 0.9 } });
    expect(fused[1]).toEqual({ seq: 1, score: 1 / 61, scores: { lexical: 9 } });
    expect(fused[2]).toEqual({ seq: 3, score: 1 / 62, scores: { vector: 0.8 } });
  });
});

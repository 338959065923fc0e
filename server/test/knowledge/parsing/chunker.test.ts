import { countTokens } from 'gpt-tokenizer';
import { describe, expect, it } from 'vitest';
import { chunkSections, DEFAULT_CHUNKING, type Chunk, type Section } from '../../../src/modules/knowledge/parsing/index.js';

const WORDS = ['keel', 'retrieval', 'vector', 'otter', 'database', 'chunk', 'token', 'river', 'lantern', 'quartz', 'meadow', 'signal', 'harbor', 'pixel', 'ember'];

/** Deterministic prose: `paragraphs` paragraphs of `sentences` sentences of 8–15 words. */
function prose(paragraphs: number, sentences: number, seed = 1): string {
  let state = seed;
  const next = (n: number): number => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return state % n;
  };
  const out: string[] = [];
  for (let p = 0; p < paragraphs; p++) {
    const sentenceList: string[] = [];
    for (let s = 0; s < sentences; s++) {
      const words = Array.from({ length: 8 + next(8) }, () => WORDS[next(WORDS.length)] ?? 'x');
      const first = words[0] ?? 'x';
      words[0] = first.charAt(0).toUpperCase() + first.slice(1);
      sentenceList.push(`${words.join(' ')} p${p}s${s}.`);
    }
    out.push(sentenceList.join(' '));
  }
  return out.join('\n\n');
}

const words = (text: string): string[] => text.split(/\s+/).filter(Boolean);

function expectWellFormed(chunks: readonly Chunk[], maxTokens: number): void {
  chunks.forEach((chunk, i) => {
    expect(chunk.ordinal).toBe(i);
    expect(chunk.token_count).toBe(countTokens(chunk.text));
    expect(chunk.token_count).toBeLessThanOrEqual(maxTokens);
    expect(chunk.text.trim()).not.toBe('');
    expect(chunk.text).not.toContain('\uFFFD');
  });
}

describe('chunkSections', () => {
  it('keeps a section that fits as one chunk, with its heading and exact text', () => {
    const chunks = chunkSections([{ heading: 'Guide > Install', text: '  Run the installer.\n' }], DEFAULT_CHUNKING);
    expect(chunks).toEqual([{ ordinal: 0, heading: 'Guide > Install', text: '  Run the installer.', token_count: countTokens('  Run the installer.') }]);
  });

  it('drops empty and whitespace-only sections and numbers the rest 0..n-1', () => {
    const sections: Section[] = [
      { heading: 'A', text: 'alpha' },
      { heading: 'B', text: '   \n\t ' },
      { heading: 'C', text: '' },
      { heading: null, text: 'gamma' },
    ];
    const chunks = chunkSections(sections, DEFAULT_CHUNKING);
    expect(chunks.map((c) => [c.ordinal, c.heading, c.text])).toEqual([
      [0, 'A', 'alpha'],
      [1, null, 'gamma'],
    ]);
  });

  it('respects maxTokens and keeps headings across many chunks', () => {
    const sections: Section[] = [
      { heading: 'Long', text: prose(12, 6) },
      { heading: 'Short', text: 'A short section.' },
      { heading: 'Longer', text: prose(20, 5, 7) },
    ];
    for (const options of [DEFAULT_CHUNKING, { maxTokens: 120, overlapTokens: 20 }, { maxTokens: 40, overlapTokens: 0 }, { maxTokens: 25, overlapTokens: 10 }]) {
      const chunks = chunkSections(sections, options);
      expectWellFormed(chunks, options.maxTokens);
      expect(chunks.filter((c) => c.heading === 'Short')).toHaveLength(1);
      expect(chunks.filter((c) => c.heading === 'Long').length).toBeGreaterThan(1);
      // sections are consecutive runs: a chunk never mixes two
      const runs = chunks.map((c) => c.heading).filter((h, i, all) => i === 0 || all[i - 1] !== h);
      expect(runs).toEqual(['Long', 'Short', 'Longer']);
    }
  });

  it('without overlap, cuts only between paragraphs when paragraphs fit, and loses nothing', () => {
    const text = prose(10, 3);
    const paragraphs = new Set(text.split('\n\n'));
    const chunks = chunkSections([{ heading: null, text }], { maxTokens: 200, overlapTokens: 0 });
    expect(chunks.length).toBeGreaterThan(2);
    for (const chunk of chunks) for (const para of chunk.text.split('\n\n')) expect(paragraphs.has(para)).toBe(true);
    expect(chunks.map((c) => c.text).join('\n\n')).toBe(text);
  });

  it('cuts a long paragraph between sentences before cutting inside one', () => {
    const text = prose(1, 30);
    const chunks = chunkSections([{ heading: null, text }], { maxTokens: 60, overlapTokens: 0 });
    expect(chunks.length).toBeGreaterThan(3);
    for (const chunk of chunks) expect(chunk.text).toMatch(/\.$/);
    expect(chunks.flatMap((c) => words(c.text))).toEqual(words(text));
  });

  it('starts each further chunk of a section with the tail of the one before', () => {
    const text = prose(8, 6);
    const chunks = chunkSections([{ heading: 'H', text }, { heading: 'I', text: prose(3, 6, 3) }], { maxTokens: 100, overlapTokens: 20 });
    expectWellFormed(chunks, 100);
    for (let i = 1; i < chunks.length; i++) {
      const previous = chunks[i - 1] as Chunk;
      const current = chunks[i] as Chunk;
      const lead = words(current.text).slice(0, 6).join(' ');
      if (current.heading === previous.heading) {
        // the first words of this chunk are the last words of the previous one
        expect(words(previous.text).join(' ')).toContain(lead);
        const overlap = words(previous.text).join(' ').slice(words(previous.text).join(' ').lastIndexOf(lead));
        expect(countTokens(overlap)).toBeGreaterThan(5);
        expect(countTokens(overlap)).toBeLessThanOrEqual(25);
      } else {
        // a new section starts fresh, with no overlap from the previous section
        expect(words(prose(3, 6, 3)).slice(0, 6).join(' ')).toBe(lead);
      }
    }
  });

  it('falls back to lines, words and finally tokens, never breaking a character', () => {
    const lines = Array.from({ length: 80 }, (_, i) => `settings.item${i}.value: ${i * 7}`).join('\n');
    const noSpaces = 'abcdefghij'.repeat(300);
    const cjk = '知識ベースの文書を分割します'.repeat(40);
    const emoji = '👩‍💻🚀🧪'.repeat(120);
    for (const text of [lines, noSpaces, cjk, emoji]) {
      const chunks = chunkSections([{ heading: 'X', text }], { maxTokens: 50, overlapTokens: 0 });
      expectWellFormed(chunks, 50);
      expect(chunks.map((c) => c.text).join(text === lines ? '\n' : '')).toBe(text);
    }
  });

  it('treats special-token text in documents as plain text', () => {
    const text = `Some logs: <|endoftext|> and <|im_start|> appear here. ${prose(2, 4)}`;
    const chunks = chunkSections([{ heading: null, text }], { maxTokens: 40, overlapTokens: 5 });
    expect(chunks[0]?.text).toContain('<|endoftext|>');
    for (const chunk of chunks) expect(chunk.token_count).toBe(countTokens(chunk.text, { disallowedSpecial: new Set() }));
  });

  it('never splits an OpenAPI operation that fits, and splits one that does not under the same heading', () => {
    const operation = ['POST /pets — Create a pet', 'Operation ID: createPet', 'Request body (required)', ...Array.from({ length: 12 }, (_, i) => `    field${i}: string — the ${i}th field`)].join('\n');
    const heading = 'POST /pets · createPet';
    const fits = chunkSections([{ heading, text: operation }], { maxTokens: countTokens(operation), overlapTokens: 50 });
    expect(fits).toHaveLength(1);
    expect(fits[0]?.text).toBe(operation);
    const split = chunkSections([{ heading, text: operation }], { maxTokens: 60, overlapTokens: 10 });
    expect(split.length).toBeGreaterThan(1);
    expect(new Set(split.map((c) => c.heading))).toEqual(new Set([heading]));
    expectWellFormed(split, 60);
  });

  it('is deterministic', () => {
    const sections: Section[] = [{ heading: 'A', text: prose(6, 5) }, { heading: 'B', text: prose(4, 4, 9) }];
    expect(chunkSections(sections, { maxTokens: 80, overlapTokens: 15 })).toEqual(chunkSections(sections, { maxTokens: 80, overlapTokens: 15 }));
  });

  it('refuses nonsensical options', () => {
    const sections: Section[] = [{ heading: null, text: 'x' }];
    expect(() => chunkSections(sections, { maxTokens: 0, overlapTokens: 0 })).toThrow(RangeError);
    expect(() => chunkSections(sections, { maxTokens: 10.5, overlapTokens: 0 })).toThrow(RangeError);
    expect(() => chunkSections(sections, { maxTokens: 10, overlapTokens: 10 })).toThrow(RangeError);
    expect(() => chunkSections(sections, { maxTokens: 10, overlapTokens: -1 })).toThrow(RangeError);
    expect(chunkSections(sections, { maxTokens: 1, overlapTokens: 0 })).toHaveLength(1);
  });

  it('still makes progress with tiny budgets and a large overlap', () => {
    const chunks = chunkSections([{ heading: null, text: prose(2, 3) }], { maxTokens: 8, overlapTokens: 7 });
    expectWellFormed(chunks, 8);
    expect(chunks.length).toBeGreaterThan(5);
  });
});

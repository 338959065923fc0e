import { describe, expect, it } from 'vitest';
import { chunkSections, DEFAULT_CHUNKING, ParseError, parseDocument, sanitizeFilename, type Chunk } from '../../../src/modules/knowledge/parsing/index.js';
import { utf8 } from './fixtures.js';

// Inputs that make naive implementations quadratic (byte-pair encoding of long runs, /\s+$/-style
// regexes, re-reading a growing string). Each finishes in well under a second when linear; the
// quadratic versions took from tens of seconds to minutes, so the time limits here are generous.
const within = async <T>(ms: number, work: () => Promise<T> | T): Promise<T> => {
  const start = performance.now();
  const result = await work();
  expect(performance.now() - start).toBeLessThan(ms);
  return result;
};

const fits = (chunks: readonly Chunk[], max: number): void => {
  for (const chunk of chunks) expect(chunk.token_count).toBeLessThanOrEqual(max);
};

describe('large and hostile input stays fast', () => {
  it('chunks a long run without whitespace (a base64 blob) in linear time, losing nothing', async () => {
    const blob = 'iVBORw0KGgoAAAANSUhEUgAA'.repeat(20_000); // 480 KB, one "word"
    const chunks = await within(10_000, () => chunkSections([{ heading: null, text: blob }], { maxTokens: 400, overlapTokens: 0 }));
    fits(chunks, 400);
    expect(chunks.map((c) => c.text).join('')).toBe(blob);
  });

  it('handles a markdown image with a data URI', async () => {
    const md = `# Logo\n\n![logo](data:image/png;base64,${'QUJD'.repeat(100_000)})\n\nThe logo is blue.`;
    const chunks = await within(10_000, async () => chunkSections(await parseDocument('markdown', utf8(md)), DEFAULT_CHUNKING));
    fits(chunks, DEFAULT_CHUNKING.maxTokens);
    expect(chunks.at(-1)?.text).toContain('The logo is blue.');
    expect(new Set(chunks.map((c) => c.heading))).toEqual(new Set(['Logo']));
  });

  it('handles huge runs of spaces', async () => {
    const text = `start${' '.repeat(200_000)}end\n${'x    '.repeat(20_000)}    \n`;
    const chunks = await within(10_000, async () => chunkSections(await parseDocument('text', utf8(text)), DEFAULT_CHUNKING));
    fits(chunks, DEFAULT_CHUNKING.maxTokens);
    expect(chunks[0]?.text.startsWith('start')).toBe(true);
    // whitespace-only stretches do not produce chunks that only repeat the overlap
    expect(chunks.filter((c) => c.text.trim() === 'start')).toHaveLength(1);
  });

  it('handles pathological markdown headings', async () => {
    const lines = [`# ${' \t'.repeat(5_000)}#`, `## ${'*a'.repeat(5_000)}`, `${'='.repeat(50_000)}x`, `### ${'['.repeat(900)}`];
    const sections = await within(5_000, () => parseDocument('markdown', utf8(lines.join('\nparagraph\n'))));
    for (const s of sections) expect((s.heading ?? '').length).toBeLessThanOrEqual(1000);
  });

  it('handles HTML with many blocks and long whitespace', async () => {
    const html = `<h1>${' '.repeat(100_000)}Title</h1>${'<p>x</p>\n'.repeat(50_000)}<div>${' '.repeat(100_000)}</div>`;
    const sections = await within(5_000, () => parseDocument('html', utf8(html)));
    expect(sections).toHaveLength(1);
    expect(sections[0]?.heading).toBe('Title');
  });

  it('handles absurdly nested JSON and YAML', async () => {
    const deep = `${'['.repeat(50_000)}1${']'.repeat(50_000)}`;
    const [section] = await within(5_000, () => parseDocument('json', utf8(deep)));
    expect(section?.text).toContain('…');
    await expect(parseDocument('yaml', utf8(`a: ${'['.repeat(20_000)}${']'.repeat(20_000)}`))).rejects.toBeInstanceOf(ParseError);
  });

  it('renders a large OpenAPI document quickly, one bounded section per operation', async () => {
    const schemas: Record<string, unknown> = {};
    for (let i = 0; i < 50; i++) {
      const properties: Record<string, unknown> = {};
      for (let j = 0; j < 40; j++) properties[`f${j}`] = j % 5 === 0 ? { $ref: `#/components/schemas/S${(i + j) % 50}` } : { type: 'string', description: `field ${j}` };
      schemas[`S${i}`] = { type: 'object', properties, oneOf: [{ $ref: `#/components/schemas/S${(i + 1) % 50}` }, { $ref: `#/components/schemas/S${(i + 2) % 50}` }] };
    }
    const paths: Record<string, unknown> = {};
    for (let i = 0; i < 300; i++) {
      const content = { 'application/json': { schema: { $ref: `#/components/schemas/S${i % 50}` } } };
      paths[`/r${i}`] = { post: { operationId: `op${i}`, requestBody: { content }, responses: { '200': { description: 'ok', content }, '400': { description: 'bad', content } } } };
    }
    const doc = { openapi: '3.0.0', info: { title: 'Big' }, paths, components: { schemas } };
    const sections = await within(10_000, () => parseDocument('openapi', utf8(JSON.stringify(doc))));
    expect(sections).toHaveLength(301);
    for (const s of sections) expect(s.text.split('\n').length).toBeLessThan(500);
  });

  it('sanitizes a megabyte of dots and slashes', async () => {
    const name = await within(1_000, () => sanitizeFilename(`${'./'.repeat(300_000)}${'.'.repeat(300_000)}x${' '.repeat(100_000)}`));
    expect(name).toBe('x');
  });
});

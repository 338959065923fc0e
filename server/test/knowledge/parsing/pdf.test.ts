import { describe, expect, it } from 'vitest';
import { ParseError, parseDocument } from '../../../src/modules/knowledge/parsing/index.js';
import { fixture } from './fixtures.js';
import { buildPdf } from './pdf-builder.js';
import { SAMPLE_PDF_PAGES } from './pdf-fixture.js';

describe('PDF', () => {
  it('reads the text layer of the fixture, one section per page', async () => {
    const sections = await parseDocument('pdf', fixture('sample.pdf'));
    expect(sections).toEqual([
      {
        heading: 'Page 1',
        text:
          'Keel PDF Handbook\n\nThe first page talks about the tangerine dashboard\nand how operators (and admins) configure it.\n\n' +
          'A second paragraph mentions the heliotrope switch.',
      },
      { heading: 'Page 2', text: 'Page two is about the obsidian archive.\nIt keeps backups for ninety days.' },
    ]);
  });

  it.each([false, true])('reads uncompressed and FlateDecode streams alike (compress: %s)', async (compress) => {
    const bytes = buildPdf(SAMPLE_PDF_PAGES, { compress });
    const sections = await parseDocument('pdf', bytes);
    expect(sections.map((s) => s.heading)).toEqual(['Page 1', 'Page 2']);
    expect(sections[1]?.text).toContain('obsidian archive');
  });

  it('does not detach or change the caller’s bytes', async () => {
    const bytes = fixture('sample.pdf');
    const copy = bytes.slice();
    await parseDocument('pdf', bytes);
    expect(bytes.byteLength).toBe(copy.byteLength);
    expect(Buffer.from(bytes).equals(Buffer.from(copy))).toBe(true);
  });

  it('skips pages without text', async () => {
    const bytes = buildPdf([{ lines: ['first'] }, { operators: '0 0 1 rg 100 100 200 200 re f' }, { lines: ['third'] }]);
    const sections = await parseDocument('pdf', bytes);
    expect(sections).toEqual([
      { heading: 'Page 1', text: 'first' },
      { heading: 'Page 3', text: 'third' },
    ]);
  });

  it('says when a PDF has no text layer', async () => {
    const scan = buildPdf([{ operators: '0.5 g 72 72 468 648 re f' }, { operators: '' }], { compress: true });
    await expect(parseDocument('pdf', scan)).rejects.toThrow(new ParseError('this PDF has no text layer (scanned?)'));
  });

  it('says when a PDF is corrupt', async () => {
    const garbage = new TextEncoder().encode('%PDF-1.7\nthis is not really a pdf at all\n%%EOF\n');
    const error = await parseDocument('pdf', garbage).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(ParseError);
    expect((error as Error).message).toMatch(/corrupt|no text layer/);
    const truncated = fixture('sample.pdf').slice(0, 200);
    await expect(parseDocument('pdf', truncated)).rejects.toBeInstanceOf(ParseError);
  });
});

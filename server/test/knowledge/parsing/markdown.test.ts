import { describe, expect, it } from 'vitest';
import { parseDocument, type Section } from '../../../src/modules/knowledge/parsing/index.js';
import { fixture, utf8 } from './fixtures.js';

const markdown = (text: string): Promise<Section[]> => parseDocument('markdown', utf8(text));
const headings = (sections: readonly Section[]): (string | null)[] => sections.map((s) => s.heading);

describe('markdown', () => {
  it('gives each heading a section headed by its path', async () => {
    const sections = await parseDocument('markdown', fixture('guide.md'));
    expect(headings(sections)).toEqual([
      null,
      'Guide',
      'Guide > Install',
      'Guide > Install > Linux',
      'Guide > Install > macOS',
      'Guide > Configure your instance',
      'Guide > Troubleshooting',
      'Reference',
    ]);
    const linux = sections.find((s) => s.heading === 'Guide > Install > Linux');
    expect(linux?.text).toContain('sudo apt install keel');
    expect(linux?.text).toContain('port 3000');
    expect(sections.find((s) => s.heading === 'Guide > Troubleshooting')?.text).toContain('marmalade');
  });

  it('does not mistake lines in code fences or indented code for headings', async () => {
    const sections = await parseDocument('markdown', fixture('guide.md'));
    expect(headings(sections).join('|')).not.toMatch(/not a heading/);
    const linux = sections.find((s) => s.heading === 'Guide > Install > Linux');
    expect(linux?.text).toContain('```sh\n# not a heading\nsudo apt install keel');
    expect(sections.find((s) => s.heading === 'Guide > Install > macOS')?.text).toContain('## also not a heading');
    expect(sections.find((s) => s.heading === 'Reference')?.text).toContain('# indented code is not a heading either');
  });

  it('keeps front matter as key: value text before the first heading', async () => {
    const [first] = await parseDocument('markdown', fixture('guide.md'));
    expect(first).toEqual({ heading: null, text: expect.stringContaining('title: Keel Field Guide') as unknown });
    expect(first?.text).toContain('tags: guide, install');
    expect(first?.text).toContain('This preamble sits above every heading.');
  });

  it('pops the heading path when a heading of the same or a higher level comes', async () => {
    const sections = await markdown('# A\na\n### A3\nx\n## B2\ny\n#### B4\nz\n# C\nc\n');
    expect(headings(sections)).toEqual(['A', 'A > A3', 'A > B2', 'A > B2 > B4', 'C']);
  });

  it('reads setext headings but not a --- after a list item', async () => {
    const sections = await markdown('Title\n=====\n\nintro\n\nSub part\n--------\ntext\n\n- item\n---\nafter');
    expect(headings(sections)).toEqual(['Title', 'Title > Sub part']);
    expect(sections[1]?.text).toContain('- item\n---\nafter');
  });

  it('cleans inline markup and closing hashes from headings', async () => {
    const sections = await markdown('## The `config` [file](http://x.y) **really** ##\nbody\n#hashtag is text\n');
    expect(sections).toEqual([{ heading: 'The config file really', text: 'body\n#hashtag is text' }]);
  });

  it('treats an unclosed fence as code to the end', async () => {
    const sections = await markdown('# Top\n```\n# inside\n## still inside\n');
    expect(headings(sections)).toEqual(['Top']);
  });

  it('handles CRLF and drops empty sections', async () => {
    const sections = await markdown('# One\r\n\r\n# Two\r\ntext two\r\n');
    expect(sections).toEqual([{ heading: 'Two', text: 'text two' }]);
  });
});

describe('plain text', () => {
  it('is one section without a heading, paragraphs kept', async () => {
    const sections = await parseDocument('text', fixture('notes.txt'));
    expect(sections).toHaveLength(1);
    expect(sections[0]?.heading).toBeNull();
    expect(sections[0]?.text).toContain('aurora borealis');
    expect(sections[0]?.text).toContain('achievable.\n\nAction items');
  });

  it('normalises newlines and blank-line runs, and drops a BOM', async () => {
    const sections = await parseDocument('text', new Uint8Array([0xef, 0xbb, 0xbf, ...utf8('a  \r\n\r\n\r\n\r\nb\r\n')]));
    expect(sections).toEqual([{ heading: null, text: 'a\n\nb' }]);
  });

  it('refuses invalid UTF-8 with a ParseError', async () => {
    await expect(parseDocument('text', new Uint8Array([0xff, 0xfe, 0x00]))).rejects.toMatchObject({ name: 'ParseError' });
  });
});

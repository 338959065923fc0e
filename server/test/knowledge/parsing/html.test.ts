import { describe, expect, it } from 'vitest';
import { parseDocument, type Section } from '../../../src/modules/knowledge/parsing/index.js';
import { fixture, utf8 } from './fixtures.js';

const html = (text: string): Promise<Section[]> => parseDocument('html', utf8(text));
const allText = (sections: readonly Section[]): string => sections.map((s) => `${s.heading ?? ''}\n${s.text}`).join('\n');

describe('HTML', () => {
  it('sections by heading with heading paths', async () => {
    const sections = await parseDocument('html', fixture('page.html'));
    expect(sections.map((s) => s.heading)).toEqual([null, 'Handbook', 'Handbook > Getting started', 'Handbook > Getting started > Tables', 'Handbook > Support']);
  });

  it('has no script, style, noscript or template text, and no tags', async () => {
    const text = allText(await parseDocument('html', fixture('page.html')));
    for (const marker of ['secretScriptMarker', 'secondScriptMarker', 'secret-style-marker', 'font-family', 'noscriptMarker', 'templateMarker']) {
      expect(text).not.toContain(marker);
    }
    expect(text).not.toMatch(/<\/?[a-z]+[^>]*>/i);
  });

  it('decodes entities and turns blocks into lines', async () => {
    const sections = await parseDocument('html', fixture('page.html'));
    expect(sections[1]?.text).toBe('Keel is a self-hosted backend & more. Café owners love it.');
    expect(sections[2]?.text).toBe('First, create an account.\nThen create an API key.\n\n- Install the CLI\n- Run keel serve');
    expect(sections[3]?.text).toBe('Plan | Price\nHobby | Free');
    expect(sections[4]?.text).toContain('Write to the lighthouse keeper.');
    expect(sections[4]?.text).toContain('  line one\n    indented line two');
  });

  it('uses the <title> as the root heading when there is no h1', async () => {
    const sections = await html('<html><head><title>Release &amp; Notes</title></head><body><p>Intro</p><h2>v2</h2><p>Faster.</p></body></html>');
    expect(sections).toEqual([
      { heading: 'Release & Notes', text: 'Intro' },
      { heading: 'Release & Notes > v2', text: 'Faster.' },
    ]);
  });

  it('copes with fragments, unclosed tags and svg titles', async () => {
    const sections = await html('<div>one<p>two<p>three<svg><title>icon</title><text>drawn</text></svg></div>');
    expect(sections).toEqual([{ heading: null, text: 'one\n\ntwo\n\nthree' }]);
  });
});

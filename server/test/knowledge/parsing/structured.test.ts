import { describe, expect, it } from 'vitest';
import { ParseError, parseDocument } from '../../../src/modules/knowledge/parsing/index.js';
import { fixture, utf8 } from './fixtures.js';

describe('JSON', () => {
  it('becomes key.path: value lines, one section per top-level key', async () => {
    const sections = await parseDocument('json', fixture('config.json'));
    expect(sections.map((s) => s.heading)).toEqual(['server', 'database', 'features', 'retention']);
    expect(sections[0]?.text).toBe('server.host: 0.0.0.0\nserver.port: 8080\nserver.tls.enabled: true\nserver.tls.certificate: /etc/keel/cert.pem');
    expect(sections[2]?.text).toBe('features: chat, retrieval, sync');
    expect(sections[3]?.text).toContain('retention["archive.bucket"]: cold-storage-walrus');
  });

  it('gives each element of a top-level array of objects a section, named when it has a name', async () => {
    const sections = await parseDocument('json', utf8('[{"name": "alpha", "v": [1, {"x": null}]}, {"v": {}}]'));
    expect(sections).toEqual([
      { heading: '[0] alpha', text: '[0].name: alpha\n[0].v[0]: 1\n[0].v[1].x: null' },
      { heading: '[1]', text: '[1].v: {}' },
    ]);
  });

  it('keeps a scalar document as text', async () => {
    expect(await parseDocument('json', utf8('"just a string"'))).toEqual([{ heading: null, text: 'just a string' }]);
  });

  it('bounds very deep nesting', async () => {
    const deep = `${'{"a":'.repeat(100)}1${'}'.repeat(100)}`;
    const [section] = await parseDocument('json', utf8(deep));
    expect(section?.text).toMatch(/: …$/);
  });

  it('throws ParseError for invalid JSON', async () => {
    await expect(parseDocument('json', utf8('{oops'))).rejects.toBeInstanceOf(ParseError);
  });
});

describe('YAML', () => {
  it('flattens with anchors and merge keys resolved', async () => {
    const sections = await parseDocument('yaml', fixture('settings.yaml'));
    expect(sections.map((s) => s.heading)).toEqual(['defaults', 'production', 'staging']);
    const production = sections[1]?.text ?? '';
    expect(production).toContain('production.region: eu-west-1');
    expect(production).toContain('production.replicas: 5');
    expect(production).toContain('production.alerts[1].severity: warning');
    expect(sections[2]?.text).toContain('staging.description: The staging environment mirrors production\nwith fewer replicas.');
  });

  it('reads every document of a stream', async () => {
    const sections = await parseDocument('yaml', utf8('a: 1\n---\nb: 2\n'));
    expect(sections).toEqual([
      { heading: 'a', text: 'a: 1' },
      { heading: 'b', text: 'b: 2' },
    ]);
  });

  it('throws ParseError for invalid YAML and for alias bombs', async () => {
    await expect(parseDocument('yaml', utf8('a: [1, 2\nb: c: d'))).rejects.toBeInstanceOf(ParseError);
    const bomb = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
    for (let i = 0; i < 8; i++) bomb.push(`${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(10).fill(`*${String.fromCharCode(97 + i)}`).join(', ')}]`);
    await expect(parseDocument('yaml', utf8(bomb.join('\n')))).rejects.toBeInstanceOf(ParseError);
  });
});

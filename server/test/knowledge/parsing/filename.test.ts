import { describe, expect, it } from 'vitest';
import { extensionOf, sanitizeFilename } from '../../../src/modules/knowledge/parsing/index.js';

describe('sanitizeFilename', () => {
  it.each([
    ['../../etc/passwd', 'passwd'],
    ['..\\..\\windows\\win.ini', 'win.ini'],
    ['a/b/c.md', 'c.md'],
    ['C:\\Users\\me\\Desktop\\Notes.TXT', 'Notes.TXT'],
    ['dir/', 'dir'],
    ['..', 'document'],
    ['../..', 'document'],
    ['.hidden', 'hidden'],
    ['...triple.md', 'triple.md'],
    ['trailing dots...', 'trailing dots'],
    ['  spaced   out  name.md  ', 'spaced out name.md'],
    ['', 'document'],
    ['   ', 'document'],
    ['/', 'document'],
    ['report\u0000.md', 'report.md'],
    ['evil\u202Etxt.exe', 'eviltxt.exe'],
    ['tab\tand\nnewline.md', 'tab and newline.md'],
    ['bell\u0007\u001b[31mred.md', 'bell[31mred.md'],
    ['ünïcödé résumé.pdf', 'ünïcödé résumé.pdf'],
  ])('%j → %j', (input, expected) => {
    expect(sanitizeFilename(input)).toBe(expected);
  });

  it('caps long names at 200 characters and keeps the extension', () => {
    const name = sanitizeFilename(`${'a'.repeat(500)}.Markdown`);
    expect(name).toHaveLength(200);
    expect(name.endsWith('.Markdown')).toBe(true);
    expect(sanitizeFilename(`dir/${'b'.repeat(250)}`)).toBe('b'.repeat(200));
  });

  it('counts characters, not UTF-16 units, and never cuts an emoji in half', () => {
    const name = sanitizeFilename(`${'😀'.repeat(300)}.txt`);
    expect(Array.from(name)).toHaveLength(200);
    expect(name.endsWith('😀.txt')).toBe(true);
    expect(name).not.toMatch(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])/);
  });

  it('never returns a path, a dot-name or control characters', () => {
    const nasty = ['../x', 'a\\..\\..\\b', '\u0000', '.', '....', '././.', '\u0085\u009f', 'x/.y', 'con:stream\u0000/..\\.env'];
    for (const input of nasty) {
      const out = sanitizeFilename(input);
      expect(out).not.toMatch(/[/\\]/);
      expect(out.startsWith('.')).toBe(false);
      // eslint-disable-next-line no-control-regex
      expect(out).not.toMatch(/[\u0000-\u001f\u007f-\u009f]/);
      expect(out.length).toBeGreaterThan(0);
    }
  });
});

describe('extensionOf', () => {
  it.each([
    ['guide.md', 'md'],
    ['Guide.MD', 'md'],
    ['archive.tar.gz', 'gz'],
    ['dir.d/readme', ''],
    ['.env', ''],
    ['..md', ''],
    ['noext', ''],
    ['trailing.', ''],
    ['spec.openapi.yaml', 'yaml'],
    ['a\\b\\c.Json', 'json'],
    ['name.with space', ''],
    ['', ''],
  ])('%j → %j', (input, expected) => {
    expect(extensionOf(input)).toBe(expected);
  });
});

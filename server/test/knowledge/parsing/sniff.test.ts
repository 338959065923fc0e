import { describe, expect, it } from 'vitest';
import { AppError } from '../../../src/platform/errors.js';
import { detectKind } from '../../../src/modules/knowledge/parsing/index.js';
import { ALLOWED, fixture, utf8 } from './fixtures.js';

const PNG = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52, 0, 0, 0, 1]);

/** The 415 AppError detectKind throws, for checking its message. */
function refusal(filename: string, bytes: Uint8Array, allowed: readonly string[] = ALLOWED): AppError {
  try {
    detectKind(filename, bytes, allowed);
  } catch (err) {
    expect(err).toBeInstanceOf(AppError);
    const e = err as AppError;
    expect(e.statusCode).toBe(415);
    expect(e.code).toBe('unsupported_media_type');
    return e;
  }
  throw new Error(`detectKind accepted ${filename}`);
}

describe('detectKind', () => {
  it.each([
    ['guide.md', 'markdown', 'text/markdown'],
    ['notes.txt', 'text', 'text/plain'],
    ['config.json', 'json', 'application/json'],
    ['settings.yaml', 'yaml', 'application/yaml'],
    ['petstore.yaml', 'openapi', 'application/vnd.oai.openapi'],
    ['petstore-swagger2.json', 'openapi', 'application/vnd.oai.openapi+json'],
    ['page.html', 'html', 'text/html'],
    ['sample.pdf', 'pdf', 'application/pdf'],
  ])('recognises %s as %s', (name, kind, mediaType) => {
    expect(detectKind(name, fixture(name), ALLOWED)).toEqual({ kind, mediaType });
  });

  it('goes by the extension case-insensitively and accepts allowed entries with dots or capitals', () => {
    expect(detectKind('GUIDE.MD', utf8('# Hi'), ['.MD']).kind).toBe('markdown');
    expect(detectKind('x.yml', utf8('a: 1'), ['yml']).kind).toBe('yaml');
    expect(detectKind('x.htm', utf8('<p>hi</p>'), ['htm']).kind).toBe('html');
  });

  it('accepts a UTF-8 byte order mark', () => {
    const bom = [0xef, 0xbb, 0xbf];
    expect(detectKind('a.md', new Uint8Array([...bom, ...utf8('# Title\n')]), ALLOWED).kind).toBe('markdown');
    expect(detectKind('a.json', new Uint8Array([...bom, ...utf8('{"a": 1}')]), ALLOWED).kind).toBe('json');
    expect(detectKind('a.yaml', new Uint8Array([...bom, ...utf8('openapi: 3.1.0\npaths: {}\n')]), ALLOWED).kind).toBe('openapi');
  });

  it('refuses PNG bytes named .md', () => {
    expect(refusal('image.md', PNG).message).toMatch(/not UTF-8 text|binary/);
  });

  it('refuses text with NUL bytes or other binary control characters', () => {
    expect(refusal('a.md', utf8('hello\u0000world')).message).toMatch(/binary data \(control character U\+0000\)/);
    expect(refusal('a.txt', utf8('ok\u0001\u0002')).message).toMatch(/U\+0001/);
    const random = new Uint8Array(256).map((_, i) => (i * 37) % 256);
    expect(refusal('random.txt', random).message).toMatch(/named \.txt but/);
  });

  it('keeps tabs, form feeds and CRLF as text', () => {
    expect(detectKind('a.txt', utf8('col\tcol\r\nnext\fpage'), ALLOWED).kind).toBe('text');
  });

  it('refuses extensions that are not allowed, or unknown, or missing', () => {
    expect(refusal('setup.exe', utf8('MZ')).message).toMatch(/\.exe are not accepted; accepted types: \.md/);
    expect(refusal('bundle.zip', new Uint8Array([0x50, 0x4b, 3, 4])).message).toMatch(/\.zip are not accepted/);
    expect(refusal('page.html', utf8('<p>x</p>'), ['md', 'txt']).message).toMatch(/\.html are not accepted; accepted types: \.md, \.txt\./);
    expect(refusal('README', utf8('hi')).message).toMatch(/no extension/);
    expect(refusal('doc.docx', utf8('x'), ['docx']).message).toMatch(/cannot be read/);
  });

  it('refuses invalid JSON named .json and invalid YAML named .yaml', () => {
    expect(refusal('config.json', utf8('{"a": 1,')).message).toMatch(/^The file is named \.json but is not valid JSON: /);
    expect(refusal('x.yaml', utf8('a: [1, 2\nb: c: d')).message).toMatch(/not valid YAML/);
  });

  it('refuses a non-PDF named .pdf, and an empty file', () => {
    expect(refusal('paper.pdf', utf8('just text')).message).toMatch(/not a PDF/);
    expect(refusal('paper.pdf', PNG).message).toMatch(/%PDF-/);
    expect(refusal('empty.md', new Uint8Array()).message).toMatch(/empty/);
    expect(refusal('blank.txt', utf8(' \n\n ')).message).toMatch(/no text/);
  });

  it('refuses .html without markup', () => {
    expect(refusal('page.html', utf8('no tags here, just words')).message).toMatch(/does not look like HTML/);
  });

  it('refuses text in another encoding', () => {
    const latin1 = new Uint8Array([0x63, 0x61, 0x66, 0xe9]); // "café" in Latin-1
    expect(refusal('menu.txt', latin1).message).toMatch(/not UTF-8/);
  });

  it('tells OpenAPI from other JSON and YAML', () => {
    expect(detectKind('a.json', utf8('{"openapi": "3.1.0", "info": {}}'), ALLOWED).kind).toBe('json');
    expect(detectKind('a.json', utf8('{"swagger": "2.0", "paths": {}}'), ALLOWED).kind).toBe('openapi');
    expect(detectKind('a.yaml', utf8('paths: {}\n'), ALLOWED).kind).toBe('yaml');
  });
});

import { AppError } from '../../../platform/errors.js';
import { extensionOf } from './filename.js';
import { isOpenApiDocument, loadJson, loadYaml } from './structured.js';
import { decodeUtf8 } from './text.js';
import type { DocumentKind } from './types.js';

const KIND_BY_EXTENSION: Readonly<Record<string, DocumentKind>> = {
  md: 'markdown',
  markdown: 'markdown',
  txt: 'text',
  text: 'text',
  json: 'json',
  yaml: 'yaml',
  yml: 'yaml',
  html: 'html',
  htm: 'html',
  pdf: 'pdf',
};

const MEDIA_TYPES: Readonly<Record<DocumentKind, string>> = {
  markdown: 'text/markdown',
  text: 'text/plain',
  json: 'application/json',
  yaml: 'application/yaml',
  openapi: 'application/vnd.oai.openapi',
  html: 'text/html',
  pdf: 'application/pdf',
};

/** The extensions detectKind understands, for building an `allowed` list. */
export const KNOWN_EXTENSIONS: readonly string[] = Object.freeze(Object.keys(KIND_BY_EXTENSION));

// C0 controls other than tab, line feed, vertical tab, form feed and carriage return; DEL.
// eslint-disable-next-line no-control-regex
const BINARY_CONTROL = /[\u0000-\u0008\u000e-\u001f\u007f]/;
const MARKUP = /<(?:!doctype\s+html|!--|\/?[a-z][a-z0-9-]*(?:\s[^<>]*)?\/?>)/i;

/**
 * Decides what an upload is from its content, not only its name: the extension must be in `allowed`
 * (case-insensitive, with or without a dot) and the bytes must be what it says. PDF starts with
 * `%PDF-`; the text formats are valid UTF-8 (a BOM is fine) without NUL or other binary control
 * characters; JSON and YAML must parse; HTML must contain markup. JSON or YAML with a top-level
 * `openapi`/`swagger` version and `paths` is 'openapi'. Anything else throws a 415
 * `unsupported_media_type` AppError whose message says why.
 */
export function detectKind(filename: string, bytes: Uint8Array, allowed: readonly string[]): { kind: DocumentKind; mediaType: string } {
  const ext = extensionOf(filename);
  const accepted = new Set(allowed.map((a) => a.trim().replace(/^\./, '').toLowerCase()).filter(Boolean));
  const list = [...accepted].map((a) => `.${a}`).join(', ') || 'none';
  if (!ext) refuse(`The file name has no extension, so its type is unknown; accepted types: ${list}.`);
  if (!accepted.has(ext)) refuse(`Files of type .${ext.slice(0, 16)} are not accepted; accepted types: ${list}.`);
  const kind = KIND_BY_EXTENSION[ext];
  if (!kind) refuse(`Files of type .${ext} cannot be read as documents; readable types: ${KNOWN_EXTENSIONS.map((e) => `.${e}`).join(', ')}.`);
  if (bytes.length === 0) refuse('The file is empty.');

  if (kind === 'pdf') {
    if (!startsWith(bytes, '%PDF-')) refuse(`The file is named .${ext} but is not a PDF (it does not start with %PDF-).`);
    return { kind, mediaType: MEDIA_TYPES.pdf };
  }

  const text = decodeUtf8(bytes);
  if (text === null) refuse(`The file is named .${ext} but is not UTF-8 text (it looks binary or uses another encoding).`);
  const control = BINARY_CONTROL.exec(text);
  if (control) {
    const code = control[0].charCodeAt(0).toString(16).padStart(4, '0').toUpperCase();
    refuse(`The file is named .${ext} but contains binary data (control character U+${code}), so it is not a text file.`);
  }
  if (text.trim() === '') refuse('The file has no text (it is empty or only whitespace).');

  switch (kind) {
    case 'json': {
      const value = attempt(() => loadJson(text), `The file is named .${ext} but is not valid JSON`);
      return isOpenApiDocument(value) ? { kind: 'openapi', mediaType: `${MEDIA_TYPES.openapi}+json` } : { kind, mediaType: MEDIA_TYPES.json };
    }
    case 'yaml': {
      const values = attempt(() => loadYaml(text), `The file is named .${ext} but is not valid YAML`);
      return isOpenApiDocument(values[0]) ? { kind: 'openapi', mediaType: MEDIA_TYPES.openapi } : { kind, mediaType: MEDIA_TYPES.yaml };
    }
    case 'html':
      if (!MARKUP.test(text)) refuse(`The file is named .${ext} but does not look like HTML (no markup found).`);
      return { kind, mediaType: MEDIA_TYPES.html };
    default:
      return { kind, mediaType: MEDIA_TYPES[kind] };
  }
}

function attempt<T>(fn: () => T, prefix: string): T {
  try {
    return fn();
  } catch (err) {
    const reason = (err as Error).message.replace(/^the (JSON|YAML) is invalid: /, '');
    refuse(`${prefix}: ${reason.slice(0, 200)}.`);
  }
}

function refuse(message: string): never {
  throw new AppError('unsupported_media_type', message, 415);
}

function startsWith(bytes: Uint8Array, prefix: string): boolean {
  if (bytes.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[i] !== prefix.charCodeAt(i)) return false;
  return true;
}

import { parseHtml } from './html.js';
import { parseMarkdown } from './markdown.js';
import { parsePdf } from './pdf.js';
import { parseJson, parseOpenApi, parseYaml } from './structured.js';
import { decodeText, parseText } from './text.js';
import type { DocumentKind, Section } from './types.js';

/**
 * A document's text as sections (see Section), empty ones dropped. Throws ParseError when the bytes
 * cannot be read as `kind`: invalid UTF-8, JSON or YAML; a corrupt or encrypted PDF; a PDF without a
 * text layer.
 */
export async function parseDocument(kind: DocumentKind, bytes: Uint8Array): Promise<Section[]> {
  switch (kind) {
    case 'markdown':
      return parseMarkdown(decodeText(bytes));
    case 'text':
      return parseText(decodeText(bytes));
    case 'json':
      return parseJson(bytes);
    case 'yaml':
      return parseYaml(bytes);
    case 'openapi':
      return parseOpenApi(bytes);
    case 'html':
      return parseHtml(decodeText(bytes));
    case 'pdf':
      return parsePdf(bytes);
  }
}

import { createRequire } from 'node:module';
import path from 'node:path';
import type * as PdfJsModule from 'pdfjs-dist/legacy/build/pdf.mjs';
import type { TextItem } from 'pdfjs-dist/types/src/display/api.js';
import { ParseError, type Section } from './types.js';

type PdfJs = typeof PdfJsModule;

let pdfjs: Promise<PdfJs> | null = null;

/** pdf.js loads on first use (it is large); in Node it runs its worker in-process, no thread needed. */
function loadPdfJs(): Promise<PdfJs> {
  pdfjs ??= import('pdfjs-dist/legacy/build/pdf.mjs');
  return pdfjs;
}

// CMaps (for CJK fonts) and the standard fonts ship with pdfjs-dist; Node reads them from disk.
const pdfjsRoot = path.dirname(createRequire(import.meta.url).resolve('pdfjs-dist/package.json'));

/**
 * The text layer of a PDF, one section per page headed "Page N", items joined into lines and lines
 * into paragraphs by their positions. A PDF that cannot be opened, is encrypted, or has no text at
 * all (a scan) is a ParseError.
 */
export async function parsePdf(bytes: Uint8Array): Promise<Section[]> {
  const { getDocument, VerbosityLevel } = await loadPdfJs();
  const task = getDocument({
    // pdf.js transfers (detaches) the buffer it is given and refuses Node Buffers: hand it a plain
    // Uint8Array copy (a Buffer's own slice() is a view, not a copy).
    data: new Uint8Array(bytes),
    verbosity: VerbosityLevel.ERRORS,
    isEvalSupported: false,
    disableFontFace: true,
    useSystemFonts: false,
    useWorkerFetch: false,
    isOffscreenCanvasSupported: false,
    isImageDecoderSupported: false,
    enableXfa: false,
    stopAtErrors: false,
    cMapUrl: `${path.join(pdfjsRoot, 'cmaps')}${path.sep}`,
    cMapPacked: true,
    standardFontDataUrl: `${path.join(pdfjsRoot, 'standard_fonts')}${path.sep}`,
  });
  try {
    let doc;
    try {
      doc = await task.promise;
    } catch (err) {
      const name = (err as Error | undefined)?.name;
      if (name === 'PasswordException') throw new ParseError('this PDF is password-protected', { cause: err });
      throw new ParseError('this PDF is corrupt or unreadable', { cause: err });
    }
    const sections: Section[] = [];
    let failures = 0;
    for (let n = 1; n <= doc.numPages; n++) {
      try {
        const page = await doc.getPage(n);
        const content = await page.getTextContent();
        const text = pageText(content.items.filter((item): item is TextItem => 'str' in item));
        page.cleanup();
        if (text.trim()) sections.push({ heading: `Page ${n}`, text });
      } catch {
        failures++;
      }
    }
    if (sections.length === 0) {
      if (failures > 0) throw new ParseError('this PDF is corrupt or unreadable');
      throw new ParseError('this PDF has no text layer (scanned?)');
    }
    return sections;
  } finally {
    await task.destroy();
  }
}

interface Line {
  text: string;
  y: number;
  height: number;
}

/** Text items in content order → lines (by baseline) → paragraphs (by a larger vertical gap). */
function pageText(items: readonly TextItem[]): string {
  const lines: Line[] = [];
  let current: Line | null = null;
  let lastEnd = 0;
  for (const item of items) {
    const x = Number(item.transform[4]) || 0;
    const y = Number(item.transform[5]) || 0;
    const height = Math.abs(item.height) || Math.abs(Number(item.transform[3])) || 10;
    if (current && current.text !== '' && Math.abs(y - current.y) > Math.max(height, current.height) * 0.5) {
      lines.push(current);
      current = null;
    }
    if (!current) {
      current = { text: '', y, height };
    } else if (item.str && current.text && x - lastEnd > height * 0.15 && !/\s/.test(current.text.slice(-1)) && !/^\s/.test(item.str)) {
      current.text += ' ';
    }
    current.text += item.str;
    current.height = Math.max(current.height, height);
    lastEnd = x + item.width;
    if (item.hasEOL) {
      if (current.text.trim()) lines.push(current);
      current = null;
    }
  }
  if (current?.text.trim()) lines.push(current);

  let out = '';
  let previous: Line | null = null;
  for (const line of lines) {
    if (previous) {
      const gap = previous.y - line.y;
      out += gap < 0 || gap > Math.max(previous.height, line.height) * 1.6 ? '\n\n' : '\n';
    }
    out += line.text.replace(/\s+/g, ' ').trim();
    previous = line;
  }
  return out.trim();
}

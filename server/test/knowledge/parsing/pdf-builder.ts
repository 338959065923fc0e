import { deflateSync } from 'node:zlib';

/** One page: lines of text set in Helvetica 12pt from the top-left margin (blank lines allowed), or raw drawing operators. */
export type PdfPage = { lines: readonly string[] } | { operators: string };

export interface PdfOptions {
  /** FlateDecode-compress the content streams, as most real PDFs do. */
  compress?: boolean;
  /** The document information dictionary's /Title. */
  title?: string;
}

/**
 * A minimal, valid PDF 1.4: a catalog, a page tree, the standard Helvetica Type1 font (no embedding),
 * one content stream per page and a cross-reference table with exact byte offsets. Only
 * Latin-1 text is supported (WinAnsiEncoding), which is all the tests need.
 */
export function buildPdf(pages: readonly PdfPage[], options: PdfOptions = {}): Uint8Array {
  const objects: Buffer[] = [];
  const add = (body: Buffer | string): number => {
    objects.push(typeof body === 'string' ? Buffer.from(body, 'latin1') : body);
    return objects.length;
  };
  const stream = (content: string): Buffer => {
    const raw = Buffer.from(content, 'latin1');
    const data = options.compress ? deflateSync(raw) : raw;
    const filter = options.compress ? ' /Filter /FlateDecode' : '';
    return Buffer.concat([Buffer.from(`<< /Length ${data.length}${filter} >>\nstream\n`, 'latin1'), data, Buffer.from('\nendstream', 'latin1')]);
  };

  const catalog = add('<< /Type /Catalog /Pages 2 0 R >>');
  add('PLACEHOLDER');
  const font = add('<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>');
  const kids: number[] = [];
  for (const page of pages) {
    const contents = add(stream('operators' in page ? page.operators : textOperators(page.lines)));
    kids.push(add(`<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 ${font} 0 R >> >> /Contents ${contents} 0 R >>`));
  }
  objects[1] = Buffer.from(`<< /Type /Pages /Kids [${kids.map((k) => `${k} 0 R`).join(' ')}] /Count ${kids.length} >>`, 'latin1');
  const info = options.title ? add(`<< /Title (${escapePdfString(options.title)}) /Producer (keel test pdf builder) >>`) : null;

  const chunks: Buffer[] = [Buffer.from('%PDF-1.4\n%\xe2\xe3\xcf\xd3\n', 'latin1')];
  let offset = chunks[0]?.length ?? 0;
  const offsets: number[] = [];
  objects.forEach((body, i) => {
    offsets.push(offset);
    const obj = Buffer.concat([Buffer.from(`${i + 1} 0 obj\n`, 'latin1'), body, Buffer.from('\nendobj\n', 'latin1')]);
    chunks.push(obj);
    offset += obj.length;
  });
  const xref = [`xref\n0 ${objects.length + 1}\n`, '0000000000 65535 f \n', ...offsets.map((o) => `${String(o).padStart(10, '0')} 00000 n \n`)].join('');
  const trailer = `trailer\n<< /Size ${objects.length + 1} /Root ${catalog} 0 R${info ? ` /Info ${info} 0 R` : ''} >>\nstartxref\n${offset}\n%%EOF\n`;
  chunks.push(Buffer.from(xref + trailer, 'latin1'));
  return new Uint8Array(Buffer.concat(chunks));
}

function textOperators(lines: readonly string[]): string {
  const ops = ['BT', '/F1 12 Tf', '14 TL', '72 720 Td'];
  lines.forEach((line, i) => {
    if (i > 0) ops.push('T*');
    if (line) ops.push(`(${escapePdfString(line)}) Tj`);
  });
  ops.push('ET');
  return ops.join('\n');
}

function escapePdfString(text: string): string {
  return text.replace(/[\\()]/g, (c) => `\\${c}`);
}

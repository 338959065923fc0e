import { buildPdf } from './pdf-builder.js';

/**
 * The pages of fixtures/knowledge/sample.pdf, which is samplePdf()'s output. To regenerate it (from the repo root):
 * node --import tsx --input-type=module -e "import { writeFileSync } from 'node:fs'; import { samplePdf } from './server/test/knowledge/parsing/pdf-fixture.ts'; writeFileSync('server/test/fixtures/knowledge/sample.pdf', samplePdf());"
 */
export const SAMPLE_PDF_PAGES = [
  {
    lines: [
      'Keel PDF Handbook',
      '',
      'The first page talks about the tangerine dashboard',
      'and how operators (and admins) configure it.',
      '',
      'A second paragraph mentions the heliotrope switch.',
    ],
  },
  { lines: ['Page two is about the obsidian archive.', 'It keeps backups for ninety days.'] },
] as const;

export function samplePdf(): Uint8Array {
  return buildPdf(SAMPLE_PDF_PAGES, { compress: true, title: 'Keel PDF Handbook' });
}

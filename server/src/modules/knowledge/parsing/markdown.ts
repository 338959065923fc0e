import { isObject } from './json.js';
import { flatten, loadYaml } from './structured.js';
import { tidySections } from './text.js';
import type { Section } from './types.js';

const FENCE = /^ {0,3}(`{3,}|~{3,})(.*)$/;
const ATX = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$/;
const SETEXT = /^ {0,3}(=+|-+)[ \t]*$/;
// A line that starts a block a setext underline cannot turn into a heading.
// Longer lines are never headings (and the heading patterns then never see pathological input).
const MAX_HEADING_LINE = 1000;
const MAX_HEADING_CHARS = 300;
const NOT_PARAGRAPH = /^(?: {4,}|\t| {0,3}(?:[-*+]|\d{1,9}[.)])(?:[ \t]|$)| {0,3}>| {0,3}\||\s*<)/;

/**
 * Markdown as sections, one per heading (ATX `#` and setext), headed by the path of headings above
 * it ("Guide > Install > Linux"). Lines inside fenced code blocks are never headings. YAML front
 * matter is kept as `key: value` lines at the top of the first section.
 */
export function parseMarkdown(source: string): Section[] {
  const lines = source.replace(/\r\n?/g, '\n').split('\n');
  const sections: Section[] = [];
  const stack: { level: number; text: string }[] = [];
  let body: string[] = [];
  let paragraph = 0;
  let fence: { char: string; length: number } | null = null;

  let start = 0;
  const front = frontMatter(lines);
  if (front) {
    body.push(...front.lines, '');
    start = front.end;
  }

  const flush = (): void => {
    sections.push({ heading: stack.length > 0 ? stack.map((h) => h.text).join(' > ') : null, text: body.join('\n') });
    body = [];
    paragraph = 0;
  };
  const openHeading = (level: number, text: string): void => {
    flush();
    while (stack.length > 0 && (stack.at(-1)?.level ?? 0) >= level) stack.pop();
    stack.push({ level, text: text.slice(0, MAX_HEADING_CHARS) || '(untitled)' });
  };

  for (let i = start; i < lines.length; i++) {
    const line = lines[i] ?? '';
    if (fence) {
      body.push(line);
      const close = FENCE.exec(line);
      if (close?.[1] && close[1][0] === fence.char && close[1].length >= fence.length && (close[2] ?? '').trim() === '') fence = null;
      continue;
    }
    const open = FENCE.exec(line);
    if (open?.[1] && !(open[1][0] === '`' && (open[2] ?? '').includes('`'))) {
      fence = { char: open[1][0] ?? '`', length: open[1].length };
      body.push(line);
      paragraph = 0;
      continue;
    }
    const atx = line.length <= MAX_HEADING_LINE ? ATX.exec(line) : null;
    if (atx?.[1]) {
      openHeading(atx[1].length, inlineText((atx[2] ?? '').replace(/(?:^|[ \t]+)#+$/, '')));
      continue;
    }
    const setext = line.length <= MAX_HEADING_LINE ? SETEXT.exec(line) : null;
    if (setext?.[1] && paragraph > 0) {
      const paraLines = body.splice(body.length - paragraph, paragraph);
      if (!NOT_PARAGRAPH.test(paraLines[0] ?? '')) {
        openHeading(setext[1].startsWith('=') ? 1 : 2, inlineText(paraLines.join(' ').slice(0, MAX_HEADING_LINE)));
        continue;
      }
      body.push(...paraLines);
    }
    body.push(line);
    paragraph = line.trim() === '' ? 0 : paragraph + 1;
  }
  flush();
  return tidySections(sections);
}

/** Leading `---` YAML front matter as `key: value` lines (raw when it is not a YAML mapping). */
function frontMatter(lines: readonly string[]): { lines: string[]; end: number } | null {
  if (lines[0]?.trimEnd() !== '---') return null;
  const close = lines.findIndex((l, i) => i > 0 && (l.trimEnd() === '---' || l.trimEnd() === '...'));
  if (close < 0) return null;
  const raw = lines.slice(1, close);
  let out = raw;
  try {
    const [value] = loadYaml(raw.join('\n'));
    if (isObject(value)) {
      out = [];
      for (const [key, child] of Object.entries(value)) flatten(child, key, out, 1);
    }
  } catch {
    // not YAML after all: keep the lines as they are
  }
  return { lines: out, end: close + 1 };
}

/** A heading's text without inline markup: links and images to their text, no emphasis or code marks. */
export function inlineText(text: string): string {
  return text
    .replace(/!\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/\[([^\]]*)\]\[[^\]]*\]/g, '$1')
    .replace(/<[^>]+>/g, '')
    .replace(/(\*\*|__)(.+?)\1/g, '$2')
    .replace(/(^|[^\w*])\*(\S(?:.*?\S)?)\*(?!\w)/g, '$1$2')
    .replace(/`+([^`]*)`+/g, '$1')
    .replace(/\\([\\`*_{}[\]()#+\-.!])/g, '$1')
    .replace(/\s+/g, ' ')
    .trim();
}

import { Parser } from 'htmlparser2';
import { tidySections } from './text.js';
import type { Section } from './types.js';

const SKIPPED = new Set(['script', 'style', 'noscript', 'template', 'svg', 'math', 'canvas', 'iframe', 'object', 'select', 'head']);
const PARAGRAPH_BLOCKS = new Set([
  'p', 'pre', 'blockquote', 'table', 'ul', 'ol', 'dl', 'section', 'article', 'aside', 'header', 'footer',
  'nav', 'main', 'figure', 'figcaption', 'form', 'fieldset', 'details', 'summary', 'address', 'hr', 'body', 'html',
]);
const LINE_BLOCKS = new Set(['br', 'div', 'li', 'tr', 'dt', 'dd', 'caption', 'thead', 'tbody', 'tfoot', 'option', 'legend', 'label']);
const HEADING = /^h([1-6])$/;
const MAX_HEADING_CHARS = 300;

/**
 * The text being written for the current section. Separators are held back (`newlines`, `space`)
 * until the next text arrives, so the output never has to be inspected or trimmed.
 */
interface Output {
  parts: string[];
  /** Line breaks owed before the next text: 0, 1 (a block) or 2 (a paragraph). */
  newlines: number;
  /** A space is owed before the next text. */
  space: boolean;
  atLineStart: boolean;
}

interface State {
  sections: { path: string[]; text: string }[];
  stack: { level: number; text: string }[];
  out: Output;
  /** Depth inside elements whose content is dropped. */
  skip: number;
  inHead: boolean;
  pre: number;
  title: string | null;
  inTitle: boolean;
  heading: { level: number; text: string } | null;
  sawH1: boolean;
}

const emptyOutput = (): Output => ({ parts: [], newlines: 0, space: false, atLineStart: true });

/**
 * HTML as text, not tags: headings h1–h6 start sections headed by the path of headings above them
 * (like markdown), block elements become line breaks, entities are decoded, and script, style,
 * noscript and template contents are dropped. Without an h1, the `<title>` heads the path.
 */
export function parseHtml(source: string): Section[] {
  const st: State = {
    sections: [], stack: [], out: emptyOutput(), skip: 0, inHead: false, pre: 0, title: null, inTitle: false, heading: null, sawH1: false,
  };

  const parser = new Parser(
    {
      onopentag(name, attribs) {
        if (name === 'head') st.inHead = true;
        if (name === 'title' && st.title === null && (st.skip === 0 || (st.skip === 1 && st.inHead))) {
          st.inTitle = true;
          st.title = '';
        }
        if (SKIPPED.has(name)) {
          st.skip++;
          return;
        }
        if (st.skip > 0) return;
        const h = HEADING.exec(name);
        if (h) {
          st.heading = { level: Number(h[1]), text: '' };
          return;
        }
        if (name === 'pre') st.pre++;
        if (PARAGRAPH_BLOCKS.has(name)) lineBreak(st.out, 2);
        else if (LINE_BLOCKS.has(name)) lineBreak(st.out, 1);
        if (name === 'li') write(st.out, '- ');
        if ((name === 'td' || name === 'th') && !st.out.atLineStart && st.out.newlines === 0) write(st.out, ' | ');
        if (name === 'img' && attribs.alt?.trim()) text(st, ` ${attribs.alt} `);
      },
      ontext(data) {
        if (st.inTitle) st.title = (st.title ?? '') + data;
        else if (st.skip > 0) return;
        else if (st.heading) st.heading.text += data;
        else text(st, data);
      },
      onclosetag(name) {
        if (name === 'title') st.inTitle = false;
        if (name === 'head') st.inHead = false;
        if (SKIPPED.has(name)) {
          if (st.skip > 0) st.skip--;
          return;
        }
        if (st.skip > 0) return;
        if (HEADING.test(name) && st.heading) {
          closeHeading(st);
          return;
        }
        if (name === 'pre' && st.pre > 0) st.pre--;
        if (PARAGRAPH_BLOCKS.has(name)) lineBreak(st.out, 2);
        else if (LINE_BLOCKS.has(name)) lineBreak(st.out, 1);
      },
    },
    { decodeEntities: true },
  );
  parser.write(source);
  parser.end();
  flush(st);

  const title = (st.title ?? '').replace(/\s+/g, ' ').trim().slice(0, MAX_HEADING_CHARS);
  const root = !st.sawH1 && title ? [title] : [];
  return tidySections(
    st.sections.map((s) => {
      const path = [...root, ...s.path];
      return { heading: path.length > 0 ? path.join(' > ') : null, text: s.text };
    }),
  );
}

function closeHeading(st: State): void {
  const { level, text: raw } = st.heading ?? { level: 1, text: '' };
  st.heading = null;
  const heading = raw.replace(/\s+/g, ' ').trim().slice(0, MAX_HEADING_CHARS);
  if (!heading) return;
  if (level === 1) st.sawH1 = true;
  flush(st);
  while (st.stack.length > 0 && (st.stack.at(-1)?.level ?? 0) >= level) st.stack.pop();
  st.stack.push({ level, text: heading });
}

function flush(st: State): void {
  st.sections.push({ path: st.stack.map((h) => h.text), text: st.out.parts.join('') });
  st.out = emptyOutput();
}

/** Text content: whitespace collapsed to single spaces, except inside <pre>. */
function text(st: State, data: string): void {
  if (st.pre > 0) {
    write(st.out, data.replace(/\r\n?/g, '\n'));
    return;
  }
  const collapsed = data.replace(/\s+/g, ' ');
  if (collapsed === ' ' || collapsed === '') {
    if (collapsed === ' ') st.out.space = true;
    return;
  }
  if (collapsed.startsWith(' ')) st.out.space = true;
  write(st.out, collapsed.trim());
  if (collapsed.endsWith(' ')) st.out.space = true;
}

/** Writes text after any separators owed (none at the very start of a section). */
function write(out: Output, value: string): void {
  if (value === '') return;
  if (out.parts.length > 0) {
    if (out.newlines > 0) out.parts.push('\n'.repeat(out.newlines));
    else if (out.space && !out.atLineStart) out.parts.push(' ');
  }
  out.parts.push(value);
  out.newlines = 0;
  out.space = false;
  out.atLineStart = value.endsWith('\n');
}

function lineBreak(out: Output, count: 1 | 2): void {
  out.newlines = Math.max(out.newlines, count);
  out.space = false;
}

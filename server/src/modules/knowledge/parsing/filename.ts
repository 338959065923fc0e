const MAX_NAME_CHARS = 200;
const MAX_EXTENSION_CHARS = 16;
const FALLBACK_NAME = 'document';
const MAX_INPUT_CHARS = 4096;

// C0/C1 controls and DEL; bidirectional overrides and isolates (they make "evil‮txt.exe" display as
// "evilexe.txt"); zero-width characters; line and paragraph separators; the BOM.
// eslint-disable-next-line no-control-regex
const INVISIBLE = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2028\u2029\u2060-\u2064\u2066-\u2069\ufeff]/g;

/**
 * A safe display name for an uploaded file: its basename only (no directories, `..`, NUL, control
 * or bidi characters, leading dots), whitespace collapsed, at most 200 characters with the extension
 * kept, never empty ("document"). It is never used as a path: storage names are made by the server.
 */
export function sanitizeFilename(name: string): string {
  if (typeof name !== 'string') return FALLBACK_NAME;
  // The basename is at the end; a megabyte of path in front of it is not worth looking at.
  const trimmed = name.trimEnd();
  const tail = trimmed.length > MAX_INPUT_CHARS ? trimmed.slice(-MAX_INPUT_CHARS) : trimmed;
  const cleaned = tail.normalize('NFC').replace(/[\t\n\v\f\r]/g, ' ').replace(INVISIBLE, '');
  const base = cleaned.split(/[/\\]+/).filter((part) => part.trim() !== '').pop() ?? '';
  let result = trimDotsAndSpaces(base.replace(/\s+/g, ' '));
  if (result === '') return FALLBACK_NAME;
  const chars = Array.from(result);
  if (chars.length > MAX_NAME_CHARS) {
    // The extension as written (not lower-cased), so "Report.PDF" stays "….PDF".
    const ext = extensionOf(result) ? result.slice(result.lastIndexOf('.') + 1) : '';
    const extChars = ext ? Array.from(ext).length + 1 : 0;
    const stem = trimDotsAndSpaces(chars.slice(0, MAX_NAME_CHARS - extChars).join(''));
    result = ext ? `${stem || FALLBACK_NAME}.${ext}` : stem;
  }
  return result || FALLBACK_NAME;
}

/** Without leading and trailing dots and spaces (a loop: /[\s.]+$/ is quadratic on long runs). */
function trimDotsAndSpaces(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && (text[start] === '.' || text[start] === ' ')) start++;
  while (end > start && (text[end - 1] === '.' || text[end - 1] === ' ')) end--;
  return text.slice(start, end);
}

/**
 * The extension of a file name, lower-case and without the dot ("Guide.MD" → "md"), or '' when there
 * is none (no dot, a dotfile such as ".env", a trailing dot, or something that cannot be an extension).
 */
export function extensionOf(filename: string): string {
  if (typeof filename !== 'string') return '';
  const base = filename.split(/[/\\]/).pop()?.trim() ?? '';
  const dot = base.lastIndexOf('.');
  if (dot <= 0 || /^\.+$/.test(base.slice(0, dot))) return '';
  const ext = base.slice(dot + 1).toLowerCase();
  if (ext === '' || ext.length > MAX_EXTENSION_CHARS || !/^[\p{L}\p{N}_+-]+$/u.test(ext)) return '';
  return ext;
}

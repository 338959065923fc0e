import { readFileSync } from 'node:fs';

/** The bytes of a file in server/test/fixtures/knowledge/. */
export function fixture(name: string): Uint8Array {
  return new Uint8Array(readFileSync(new URL(`../../fixtures/knowledge/${name}`, import.meta.url)));
}

export const utf8 = (text: string): Uint8Array => new TextEncoder().encode(text);

/** The extensions an upload route would accept. */
export const ALLOWED = ['md', 'markdown', 'txt', 'json', 'yaml', 'yml', 'html', 'htm', 'pdf'] as const;

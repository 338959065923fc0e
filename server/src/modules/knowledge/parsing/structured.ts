import { parseAllDocuments } from 'yaml';
import { isObject, type JsonObject } from './json.js';
import { openApiSections } from './openapi.js';
import { decodeText, tidySections } from './text.js';
import { ParseError, type Section } from './types.js';

const MAX_DEPTH = 32;
// Lenient where YAML tools usually are (duplicate keys: last wins; `<<` merge keys), strict about syntax.
const YAML_OPTIONS = { uniqueKeys: false, merge: true, prettyErrors: false } as const;

/** Parses JSON; throws ParseError with the parser's reason. */
export function loadJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new ParseError(`the JSON is invalid: ${(err as Error).message}`, { cause: err });
  }
}

/** Parses every document of a YAML stream; throws ParseError with the first error. */
export function loadYaml(text: string): unknown[] {
  const values: unknown[] = [];
  try {
    const docs = parseAllDocuments(text, YAML_OPTIONS);
    if (!Array.isArray(docs)) return [];
    for (const doc of docs) {
      const error = doc.errors[0];
      if (error) throw new ParseError(`the YAML is invalid: ${firstLine(error.message)}`);
      values.push(doc.toJS({ maxAliasCount: 100 }));
    }
  } catch (err) {
    if (err instanceof ParseError) throw err;
    // Alias bombs, absurd nesting (a RangeError from the stack) and the like.
    throw new ParseError(`the YAML is invalid: ${firstLine((err as Error).message)}`, { cause: err });
  }
  return values;
}

/** JSON first (so duplicate keys behave as in JSON.parse), then YAML, of which JSON is nearly a subset. */
export function loadJsonOrYaml(text: string): unknown[] {
  const trimmed = text.trimStart();
  if (trimmed.startsWith('{') || trimmed.startsWith('[')) {
    try {
      return [JSON.parse(text) as unknown];
    } catch {
      // fall through to YAML (flow style, comments, trailing commas are still YAML-ish)
    }
  }
  return loadYaml(text);
}

/** An OpenAPI 3.x or Swagger 2.0 document: a top-level `openapi` or `swagger` version and a `paths` object. */
export function isOpenApiDocument(value: unknown): value is JsonObject {
  if (!isObject(value) || !isObject(value.paths)) return false;
  const version = value.openapi ?? value.swagger;
  return typeof version === 'string' || typeof version === 'number';
}

/** JSON: an OpenAPI document becomes its operations, anything else flattened `key.path: value` lines. */
export function parseJson(bytes: Uint8Array): Section[] {
  return structuredSections([loadJson(decodeText(bytes))]);
}

/** YAML (every document of the stream), like parseJson. */
export function parseYaml(bytes: Uint8Array): Section[] {
  return structuredSections(loadYaml(decodeText(bytes)));
}

/** OpenAPI or Swagger in JSON or YAML. */
export function parseOpenApi(bytes: Uint8Array): Section[] {
  const values = loadJsonOrYaml(decodeText(bytes));
  return structuredSections(values);
}

function structuredSections(values: readonly unknown[]): Section[] {
  const sections: Section[] = [];
  for (const value of values) {
    if (isOpenApiDocument(value)) sections.push(...openApiSections(value));
    else sections.push(...flattenedSections(value));
  }
  return tidySections(sections);
}

/** One section per top-level key (heading = the key) or array element, of `key.path: value` lines. */
export function flattenedSections(value: unknown): Section[] {
  if (isObject(value)) {
    return Object.entries(value).map(([key, child]) => {
      const lines: string[] = [];
      flatten(child, pathOf('', key), lines, 1);
      return { heading: key, text: lines.join('\n') };
    });
  }
  if (Array.isArray(value) && value.some((v) => isObject(v) || Array.isArray(v))) {
    return value.map((child, i) => {
      const lines: string[] = [];
      flatten(child, `[${i}]`, lines, 1);
      const label = isObject(child) ? labelOf(child) : null;
      return { heading: label ? `[${i}] ${label}` : `[${i}]`, text: lines.join('\n') };
    });
  }
  const lines: string[] = [];
  flatten(value, '', lines, 0);
  return [{ heading: null, text: lines.join('\n') }];
}

/** Flattened `path: value` lines of a JSON value. */
export function flatten(value: unknown, path: string, lines: string[], depth: number): void {
  const prefix = path ? `${path}: ` : '';
  if (depth > MAX_DEPTH) {
    lines.push(`${prefix}…`);
  } else if (Array.isArray(value)) {
    if (value.length === 0) lines.push(`${prefix}[]`);
    else if (value.every((v) => !isObject(v) && !Array.isArray(v))) lines.push(prefix + value.map(scalar).join(', '));
    else value.forEach((child, i) => flatten(child, `${path}[${i}]`, lines, depth + 1));
  } else if (isObject(value)) {
    const entries = Object.entries(value);
    if (entries.length === 0) lines.push(`${prefix}{}`);
    for (const [key, child] of entries) flatten(child, pathOf(path, key), lines, depth + 1);
  } else {
    lines.push(prefix + scalar(value));
  }
}

function pathOf(parent: string, key: string): string {
  const plain = key !== '' && !/[.[\]\n\r:]/.test(key) && key.trim() === key;
  if (plain) return parent ? `${parent}.${key}` : key;
  return `${parent}[${JSON.stringify(key)}]`;
}

function scalar(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (value instanceof Date) return value.toISOString();
  return JSON.stringify(value) ?? '';
}

function labelOf(obj: JsonObject): string | null {
  for (const key of ['title', 'name', 'id', 'key']) {
    const v = obj[key];
    if ((typeof v === 'string' && v.trim() && v.length <= 120) || typeof v === 'number') return String(v).trim();
  }
  return null;
}

function firstLine(message: string): string {
  return message.split('\n')[0] ?? message;
}

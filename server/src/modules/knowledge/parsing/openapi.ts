import { isObject, type JsonObject } from './json.js';
import type { Section } from './types.js';

const METHODS = new Set(['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace', 'query']);
const MAX_REF_HOPS = 16;
const MAX_SCHEMA_DEPTH = 4;
const MAX_LINES_PER_SCHEMA = 120;
const MAX_ENUM_VALUES = 20;

/**
 * An OpenAPI 3.x or Swagger 2.0 document as sections: one for the API's info (when it has any) and
 * exactly one per operation, headed "<METHOD> <path> · <operationId>". An operation's text names its
 * method, path, operationId, summary, description, tags, parameters, request body and responses, with
 * local `$ref`s resolved (cycles and depth bounded) into `field: type (required) — description` lines.
 */
export function openApiSections(doc: JsonObject): Section[] {
  const refs = new Refs(doc);
  const sections: Section[] = [];
  const info = infoSection(doc, refs);
  if (info) sections.push(info);
  const paths = isObject(doc.paths) ? doc.paths : {};
  for (const [path, rawItem] of Object.entries(paths)) {
    const item = refs.resolve(rawItem).value;
    if (!isObject(item)) continue;
    for (const [method, op] of Object.entries(item)) {
      if (!METHODS.has(method) || !isObject(op)) continue;
      sections.push(operationSection(doc, refs, path, method, item, op));
    }
  }
  return sections;
}

interface Resolved {
  value: unknown;
  /** The last `$ref` followed, e.g. "#/components/schemas/Pet". */
  ref: string | null;
  /** The name the last `$ref` points at, e.g. "Pet". */
  name: string | null;
  /** A `$ref` that could not be followed (external, missing, or a loop of refs). */
  unresolved: string | null;
}

/** Follows local JSON-pointer `$ref`s within the document. */
class Refs {
  constructor(private readonly root: unknown) {}

  resolve(value: unknown): Resolved {
    let current = value;
    let ref: string | null = null;
    let overrides: JsonObject = {};
    for (let hop = 0; isObject(current) && typeof current.$ref === 'string'; hop++) {
      const target = current.$ref;
      const { $ref: _ignored, ...siblings } = current;
      overrides = { ...siblings, ...overrides };
      const next = hop < MAX_REF_HOPS ? this.pointer(target) : undefined;
      if (next === undefined) return { value: undefined, ref: target, name: nameOf(target), unresolved: target };
      ref = target;
      current = next;
    }
    // OpenAPI 3.1 lets a $ref carry its own summary/description, which win over the target's.
    if (isObject(current) && Object.keys(overrides).length > 0) {
      const picked = Object.fromEntries(Object.entries(overrides).filter(([k]) => k === 'description' || k === 'summary'));
      if (Object.keys(picked).length > 0) current = { ...current, ...picked };
    }
    return { value: current, ref, name: ref ? nameOf(ref) : null, unresolved: null };
  }

  private pointer(ref: string): unknown {
    if (!ref.startsWith('#')) return undefined;
    let pointer = ref.slice(1);
    try {
      pointer = decodeURIComponent(pointer);
    } catch {
      // keep it as written
    }
    if (pointer === '') return this.root;
    if (!pointer.startsWith('/')) return undefined;
    let node: unknown = this.root;
    for (const raw of pointer.slice(1).split('/')) {
      const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
      if (Array.isArray(node) && /^\d+$/.test(key)) node = node[Number(key)];
      else if (isObject(node) && Object.hasOwn(node, key)) node = node[key];
      else return undefined;
    }
    return node;
  }
}

function nameOf(ref: string): string {
  const last = ref.split('/').pop() ?? ref;
  return last.replace(/~1/g, '/').replace(/~0/g, '~') || ref;
}

function infoSection(doc: JsonObject, refs: Refs): Section | null {
  const info = isObject(doc.info) ? doc.info : {};
  const title = str(info.title);
  const lines: string[] = [];
  const version = str(info.version);
  if (title) lines.push(version ? `${title} (version ${version})` : title);
  const spec = doc.openapi !== undefined ? `OpenAPI ${str(doc.openapi)}` : `Swagger ${str(doc.swagger)}`;
  lines.push(`${spec} API description`);
  if (str(info.summary)) lines.push(str(info.summary));
  if (str(info.description)) lines.push('', str(info.description), '');

  const servers = Array.isArray(doc.servers) ? doc.servers.filter(isObject).map((s) => str(s.url)).filter(Boolean) : [];
  if (typeof doc.host === 'string') {
    const schemes = Array.isArray(doc.schemes) && doc.schemes.length > 0 ? doc.schemes.map(String) : ['https'];
    for (const scheme of schemes) servers.push(`${scheme}://${doc.host}${str(doc.basePath)}`);
  } else if (str(doc.basePath)) {
    servers.push(str(doc.basePath));
  }
  if (servers.length > 0) lines.push(`Servers: ${servers.join(', ')}`);

  const tags = Array.isArray(doc.tags) ? doc.tags.filter(isObject) : [];
  if (tags.length > 0) {
    lines.push('Tags:');
    for (const tag of tags) lines.push(`- ${str(tag.name)}${oneLine(tag.description) ? ` — ${oneLine(tag.description)}` : ''}`);
  }

  const components = isObject(doc.components) ? doc.components : {};
  const schemes = isObject(components.securitySchemes) ? components.securitySchemes : isObject(doc.securityDefinitions) ? doc.securityDefinitions : {};
  const schemeLines = Object.entries(schemes).map(([name, raw]) => {
    const s = refs.resolve(raw).value;
    if (!isObject(s)) return `- ${name}`;
    const how = s.type === 'apiKey' ? `API key in ${str(s.in)} "${str(s.name)}"` : s.type === 'http' ? `HTTP ${str(s.scheme)}` : str(s.type);
    return `- ${name}: ${how}${oneLine(s.description) ? ` — ${oneLine(s.description)}` : ''}`;
  });
  if (schemeLines.length > 0) lines.push('Authentication:', ...schemeLines);

  if (!title && !str(info.description) && servers.length === 0 && tags.length === 0 && schemeLines.length === 0) return null;
  return { heading: title || 'API', text: lines.join('\n') };
}

function operationSection(doc: JsonObject, refs: Refs, path: string, method: string, item: JsonObject, op: JsonObject): Section {
  const METHOD = method.toUpperCase();
  const operationId = str(op.operationId);
  const summary = oneLine(op.summary);
  const lines: string[] = [`${METHOD} ${path}${summary ? ` — ${summary}` : ''}`];
  if (operationId) lines.push(`Operation ID: ${operationId}`);
  const tags = Array.isArray(op.tags) ? op.tags.map(String) : [];
  if (tags.length > 0) lines.push(`Tags: ${tags.join(', ')}`);
  if (op.deprecated === true) lines.push('Deprecated: yes');
  const description = str(op.description) || str(item.description);
  if (description) lines.push(`Description: ${description.trim()}`);

  const params = mergedParameters(refs, item.parameters, op.parameters);
  const swagger = doc.swagger !== undefined && doc.openapi === undefined;
  const ordinary = params.filter((p) => p.in !== 'body' && p.in !== 'formData');
  if (ordinary.length > 0) {
    lines.push('Parameters:');
    for (const p of ordinary) {
      const schema = swagger ? p : (p.schema ?? firstContentSchema(p.content));
      const flags = [`in ${str(p.in) || '?'}`, p.required === true ? 'required' : 'optional'];
      if (p.deprecated === true) flags.push('deprecated');
      const desc = oneLine(p.description);
      lines.push(`- ${str(p.name)} (${flags.join(', ')}): ${typeLabel(schema, refs)}${details(schema, refs)}${desc ? ` — ${desc}` : ''}`);
    }
  }

  if (swagger) swaggerRequestBody(doc, refs, op, params, lines);
  else openApiRequestBody(refs, op, lines);

  const responses = isObject(op.responses) ? op.responses : {};
  if (Object.keys(responses).length > 0) {
    lines.push('Responses:');
    const produces = mediaTypes(op.produces ?? doc.produces);
    for (const [status, raw] of Object.entries(responses)) {
      const response = refs.resolve(raw).value;
      if (!isObject(response)) {
        lines.push(`- ${status}`);
        continue;
      }
      const desc = oneLine(response.description);
      lines.push(`- ${status}${desc ? `: ${desc}` : ''}`);
      const headers = isObject(response.headers) ? response.headers : {};
      for (const [name, rawHeader] of Object.entries(headers)) {
        const header = refs.resolve(rawHeader).value;
        if (!isObject(header)) continue;
        const schema = swagger ? header : header.schema;
        const hdesc = oneLine(header.description);
        lines.push(`  header ${name}: ${typeLabel(schema, refs)}${hdesc ? ` — ${hdesc}` : ''}`);
      }
      if (swagger) {
        if (response.schema !== undefined) bodyLines(refs, produces.length > 0 ? produces.join(', ') : 'body', response.schema, '  ', lines);
      } else {
        contentLines(refs, response.content, '  ', lines);
      }
    }
  }

  const security = Array.isArray(op.security) ? op.security : Array.isArray(doc.security) ? doc.security : null;
  if (security) {
    const options = security.filter(isObject).map((req) =>
      Object.entries(req)
        .map(([name, scopes]) => (Array.isArray(scopes) && scopes.length > 0 ? `${name} (${scopes.map(String).join(', ')})` : name))
        .join(' + '),
    );
    lines.push(`Security: ${options.filter(Boolean).join(' or ') || 'none'}`);
  }

  return { heading: `${METHOD} ${path}${operationId ? ` · ${operationId}` : ''}`, text: lines.join('\n') };
}

/** Path-level parameters overridden by operation-level ones with the same name and location. */
function mergedParameters(refs: Refs, shared: unknown, own: unknown): JsonObject[] {
  const byKey = new Map<string, JsonObject>();
  for (const list of [shared, own]) {
    if (!Array.isArray(list)) continue;
    for (const raw of list) {
      const p = refs.resolve(raw).value;
      if (isObject(p)) byKey.set(`${str(p.in)}:${str(p.name)}`, p);
    }
  }
  return [...byKey.values()];
}

function openApiRequestBody(refs: Refs, op: JsonObject, lines: string[]): void {
  const body = refs.resolve(op.requestBody).value;
  if (!isObject(body)) return;
  const desc = oneLine(body.description);
  lines.push(`Request body (${body.required === true ? 'required' : 'optional'})${desc ? `: ${desc}` : ''}`);
  contentLines(refs, body.content, '  ', lines);
}

function swaggerRequestBody(doc: JsonObject, refs: Refs, op: JsonObject, params: JsonObject[], lines: string[]): void {
  const consumes = mediaTypes(op.consumes ?? doc.consumes);
  const body = params.find((p) => p.in === 'body');
  if (body) {
    const desc = oneLine(body.description);
    lines.push(`Request body (${body.required === true ? 'required' : 'optional'})${desc ? `: ${desc}` : ''}`);
    bodyLines(refs, consumes.length > 0 ? consumes.join(', ') : 'body', body.schema, '  ', lines);
  }
  const form = params.filter((p) => p.in === 'formData');
  if (form.length > 0) {
    const type = consumes.find((c) => c.includes('form')) ?? 'application/x-www-form-urlencoded';
    lines.push(`Request body (form fields, ${type}):`);
    for (const p of form) {
      const desc = oneLine(p.description);
      lines.push(`  ${str(p.name)}: ${typeLabel(p, refs)}${p.required === true ? ' (required)' : ''}${details(p, refs)}${desc ? ` — ${desc}` : ''}`);
    }
  }
}

/** `content` of a 3.x body or response: media types sharing one schema are listed together. */
function contentLines(refs: Refs, content: unknown, indent: string, lines: string[]): void {
  if (!isObject(content)) return;
  const groups = new Map<unknown, string[]>();
  for (const [mediaType, raw] of Object.entries(content)) {
    const media = isObject(raw) ? raw : {};
    const schema = media.schema;
    const key = isObject(schema) && typeof schema.$ref === 'string' ? schema.$ref : schema;
    const group = groups.get(key);
    if (group) group.push(mediaType);
    else groups.set(key, [mediaType]);
  }
  for (const mediaTypeList of groups.values()) {
    const first = content[mediaTypeList[0] ?? ''];
    const schema = isObject(first) ? first.schema : undefined;
    if (schema === undefined) lines.push(`${indent}${mediaTypeList.join(', ')}`);
    else bodyLines(refs, mediaTypeList.join(', '), schema, indent, lines);
  }
}

/** "<label>: <type>" then the schema's fields indented beneath. */
function bodyLines(refs: Refs, label: string, schema: unknown, indent: string, lines: string[]): void {
  lines.push(`${indent}${label}: ${typeLabel(schema, refs)}${details(schema, refs)}`);
  const state: RenderState = { lines, stack: new Set(), budget: MAX_LINES_PER_SCHEMA };
  const resolved = refs.resolve(schema);
  if (resolved.ref) state.stack.add(resolved.ref);
  fieldLines(refs, resolved.value, `${indent}  `, 1, state);
}

interface RenderState {
  lines: string[];
  /** The `$ref`s being expanded on the way down, to stop at cycles. */
  stack: Set<string>;
  budget: number;
}

/** The fields of an object schema (allOf merged), the items of an array, the options of oneOf/anyOf. */
function fieldLines(refs: Refs, schemaValue: unknown, indent: string, depth: number, state: RenderState): void {
  if (!isObject(schemaValue) || depth > MAX_SCHEMA_DEPTH) return;
  const s = schemaValue;
  if (s.type === 'array' || (s.items !== undefined && s.type === undefined && s.properties === undefined)) {
    expand(refs, s.items, indent, depth, state);
    return;
  }
  for (const key of ['oneOf', 'anyOf'] as const) {
    const variants = s[key];
    if (!Array.isArray(variants) || variants.length === 0) continue;
    variants.forEach((variant, i) => {
      if (!emit(state, `${indent}option ${i + 1}: ${typeLabel(variant, refs)}`)) return;
      expand(refs, variant, `${indent}  `, depth, state);
    });
  }
  const { properties, required } = collectProperties(refs, s);
  for (const [name, prop] of properties) {
    const resolved = refs.resolve(prop);
    const p = isObject(resolved.value) ? resolved.value : {};
    const flags = required.has(name) ? ' (required)' : '';
    const desc = oneLine(p.description);
    if (!emit(state, `${indent}${name}: ${typeLabel(prop, refs)}${flags}${details(prop, refs)}${desc ? ` — ${desc}` : ''}`)) return;
    expand(refs, prop, `${indent}  `, depth + 1, state);
  }
  const extra = s.additionalProperties;
  if (isObject(extra) && Object.keys(extra).length > 0) {
    if (!emit(state, `${indent}[any key]: ${typeLabel(extra, refs)}`)) return;
    expand(refs, extra, `${indent}  `, depth + 1, state);
  }
}

/** Renders a sub-schema's fields when it has any, unless it is already being expanded higher up. */
function expand(refs: Refs, schema: unknown, indent: string, depth: number, state: RenderState): void {
  const resolved = refs.resolve(schema);
  if (!hasFields(refs, resolved.value)) return;
  if (resolved.ref && state.stack.has(resolved.ref)) {
    emit(state, `${indent}(${resolved.name ?? 'schema'} again: recursive, fields listed above)`);
    return;
  }
  if (depth > MAX_SCHEMA_DEPTH) {
    emit(state, `${indent}…`);
    return;
  }
  if (resolved.ref) state.stack.add(resolved.ref);
  fieldLines(refs, resolved.value, indent, depth, state);
  if (resolved.ref) state.stack.delete(resolved.ref);
}

function hasFields(refs: Refs, value: unknown, hops = 0): boolean {
  if (!isObject(value) || hops > 3) return false;
  if (isObject(value.properties) && Object.keys(value.properties).length > 0) return true;
  if (Array.isArray(value.allOf) || Array.isArray(value.oneOf) || Array.isArray(value.anyOf)) return true;
  if (isObject(value.additionalProperties) && Object.keys(value.additionalProperties).length > 0) return true;
  if (value.items !== undefined) return hasFields(refs, refs.resolve(value.items).value, hops + 1);
  return false;
}

function emit(state: RenderState, line: string): boolean {
  if (state.budget <= 0) return false;
  state.budget--;
  state.lines.push(state.budget === 0 ? line.replace(/\S.*$/, '… (more fields omitted)') : line);
  return state.budget > 0;
}

/** Properties and required names of a schema with its allOf parts merged in (bounded, cycle-safe). */
function collectProperties(refs: Refs, schema: JsonObject): { properties: Map<string, unknown>; required: Set<string> } {
  const properties = new Map<string, unknown>();
  const required = new Set<string>();
  const seen = new Set<unknown>();
  const visit = (value: unknown, level: number): void => {
    if (!isObject(value) || seen.has(value) || level > 8) return;
    seen.add(value);
    if (Array.isArray(value.allOf)) for (const part of value.allOf) visit(refs.resolve(part).value, level + 1);
    if (isObject(value.properties)) for (const [k, v] of Object.entries(value.properties)) properties.set(k, v);
    if (Array.isArray(value.required)) for (const r of value.required) if (typeof r === 'string') required.add(r);
  };
  visit(schema, 0);
  return { properties, required };
}

/** A compact type: "string", "integer(int64)", "Pet", "array of Pet", "one of Cat | Dog", "string | null". */
function typeLabel(schema: unknown, refs: Refs, depth = 0): string {
  const resolved = refs.resolve(schema);
  if (resolved.unresolved) return nameOf(resolved.unresolved);
  const s = resolved.value;
  if (!isObject(s)) return resolved.name ?? 'any';
  let base: string;
  const types = (Array.isArray(s.type) ? s.type : s.type === undefined ? [] : [s.type]).map(String);
  const nonNull = types.filter((t) => t !== 'null');
  if (Array.isArray(s.allOf) && depth < 3 && nonNull.length === 0 && s.properties === undefined) {
    base = s.allOf.map((part) => typeLabel(part, refs, depth + 1)).join(' & ') || 'object';
  } else if ((Array.isArray(s.oneOf) || Array.isArray(s.anyOf)) && depth < 3 && nonNull.length === 0) {
    const variants = (Array.isArray(s.oneOf) ? s.oneOf : (s.anyOf as unknown[])).map((v) => typeLabel(v, refs, depth + 1));
    base = `one of ${variants.join(' | ')}`;
  } else if (nonNull.includes('array') || (nonNull.length === 0 && s.items !== undefined)) {
    base = depth < 3 ? `array of ${typeLabel(s.items, refs, depth + 1)}` : 'array';
  } else if (nonNull.length > 0) {
    base = nonNull.map((t) => (t !== 'object' && typeof s.format === 'string' ? `${t}(${s.format})` : t)).join(' | ');
  } else if (s.properties !== undefined || s.additionalProperties !== undefined) {
    base = 'object';
  } else if (s.enum !== undefined) {
    base = 'enum';
  } else {
    base = 'any';
  }
  if (resolved.name) base = base === 'object' || base === 'any' || Array.isArray(s.allOf) ? resolved.name : `${resolved.name} (${base})`;
  if (types.includes('null') || s.nullable === true || s['x-nullable'] === true) base += ' | null';
  return base;
}

/** ", one of: a, b", ", default: x", ", read-only" and the like. */
function details(schema: unknown, refs: Refs): string {
  const s = refs.resolve(schema).value;
  if (!isObject(s)) return '';
  const parts: string[] = [];
  if (Array.isArray(s.enum) && s.enum.length > 0) {
    const shown = s.enum.slice(0, MAX_ENUM_VALUES).map((v) => JSON.stringify(v) ?? String(v));
    parts.push(`one of: ${shown.join(', ')}${s.enum.length > MAX_ENUM_VALUES ? ', …' : ''}`);
  }
  if (s.default !== undefined) parts.push(`default: ${JSON.stringify(s.default)}`);
  const min = fmt(s.minimum);
  const max = fmt(s.maximum);
  if (min && max) parts.push(`range: ${min}..${max}`);
  else if (min) parts.push(`minimum: ${min}`);
  else if (max) parts.push(`maximum: ${max}`);
  if (fmt(s.maxLength)) parts.push(`max length: ${fmt(s.maxLength)}`);
  if (s.readOnly === true) parts.push('read-only');
  if (s.writeOnly === true) parts.push('write-only');
  if (s.deprecated === true) parts.push('deprecated');
  return parts.length > 0 ? `, ${parts.join(', ')}` : '';
}

function firstContentSchema(content: unknown): unknown {
  if (!isObject(content)) return undefined;
  const first = Object.values(content)[0];
  return isObject(first) ? first.schema : undefined;
}

function mediaTypes(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
}

function str(value: unknown): string {
  return typeof value === 'string' ? value : typeof value === 'number' ? String(value) : '';
}

function oneLine(value: unknown): string {
  return str(value).replace(/\s+/g, ' ').trim();
}

function fmt(value: unknown): string {
  return typeof value === 'number' || typeof value === 'string' ? String(value) : '';
}

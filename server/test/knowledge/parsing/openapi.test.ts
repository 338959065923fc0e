import { describe, expect, it } from 'vitest';
import { chunkSections, DEFAULT_CHUNKING, parseDocument, type Section } from '../../../src/modules/knowledge/parsing/index.js';
import { fixture, utf8 } from './fixtures.js';

const OPERATION = /^(GET|PUT|POST|DELETE|OPTIONS|HEAD|PATCH|TRACE) \//;
const operations = (sections: readonly Section[]): Section[] => sections.filter((s) => s.heading !== null && OPERATION.test(s.heading));
const byHeading = (sections: readonly Section[], heading: string): string => {
  const section = sections.find((s) => s.heading === heading);
  if (!section) throw new Error(`no section ${heading}; have ${sections.map((s) => s.heading).join(', ')}`);
  return section.text;
};

describe('OpenAPI 3', () => {
  it('gives exactly one section per operation plus one for the info', async () => {
    const sections = await parseDocument('openapi', fixture('petstore.yaml'));
    expect(sections.map((s) => s.heading)).toEqual([
      'Swagger Petstore',
      'GET /pets · listPets',
      'POST /pets · createPet',
      'GET /pets/{petId} · showPetById',
      'PATCH /pets/{petId} · updatePet',
      'DELETE /pets/{petId} · deletePet',
      'GET /health',
    ]);
    expect(operations(sections)).toHaveLength(6);
  });

  it('describes the API in the info section', async () => {
    const [info] = await parseDocument('openapi', fixture('petstore.yaml'));
    expect(info?.text).toContain('Swagger Petstore (version 1.2.0)');
    expect(info?.text).toContain('demonstrate features');
    expect(info?.text).toContain('Servers: https://petstore.example.com/v1');
    expect(info?.text).toContain('- pets — Everything about your pets');
    expect(info?.text).toContain('api_key: API key in header "X-API-Key"');
  });

  it('spells out createPet: method, path, id, summary, description, tags and the $ref-resolved body', async () => {
    const text = byHeading(await parseDocument('openapi', fixture('petstore.yaml')), 'POST /pets · createPet');
    expect(text).toContain('POST /pets — Create a pet');
    expect(text).toContain('Operation ID: createPet');
    expect(text).toContain('Tags: pets');
    expect(text).toContain('Description: Adds a new pet to the store.');
    // requestBodies/NewPet → schemas/NewPet → properties, with required flags and descriptions
    expect(text).toContain('Request body (required): The pet to add');
    expect(text).toContain('  application/json: NewPet');
    expect(text).toContain("    name: string (required) — The pet's name, unique within a household");
    expect(text).toContain('    tag: string — A free-form label such as a breed');
    expect(text).toContain('    birthday: string(date)');
    // a nested $ref, expanded one level down
    expect(text).toContain('    owner: Owner\n      email: string(email) — Where the vet sends reminders');
    // responses: status + description + schema (allOf merged), and a components/responses $ref
    expect(text).toContain('- 201: The pet was created\n  application/json: Pet\n');
    expect(text).toContain('    id: integer(int64) (required), read-only — Server-assigned identifier');
    expect(text).toContain('- 409: A pet with this name already exists');
    expect(text).toContain('- default: unexpected error\n  application/json: Error\n    code: integer(int32) (required)\n    message: string (required)');
    expect(text).toContain('Security: api_key');
    expect(text).not.toContain('$ref');
  });

  it('resolves parameter $refs, path-level parameters and enums', async () => {
    const sections = await parseDocument('openapi', fixture('petstore.yaml'));
    const list = byHeading(sections, 'GET /pets · listPets');
    expect(list).toContain('- limit (in query, optional): integer(int32), maximum: 100 — How many items to return at one time (max 100)');
    expect(list).toContain('- species (in query, optional): string, one of: "dog", "cat", "bird" — Only pets of this species');
    expect(list).toContain('header x-next: string — A link to the next page of responses');
    expect(list).toContain('application/json: Pets (array of Pet)\n    name: string (required)');
    expect(byHeading(sections, 'GET /pets/{petId} · showPetById')).toContain('- petId (in path, required): string — The id of the pet to retrieve');
    expect(byHeading(sections, 'DELETE /pets/{petId} · deletePet')).toContain('Security: none');
    expect(byHeading(sections, 'PATCH /pets/{petId} · updatePet')).toContain('application/json, application/xml: NewPet');
  });

  it('stops at recursive schemas', async () => {
    const text = byHeading(await parseDocument('openapi', fixture('petstore.yaml')), 'POST /pets · createPet');
    expect(text).toContain('parent: Category');
    expect(text).toContain('(Category again: recursive, fields listed above)');
  });

  it('survives reference cycles, missing and external refs', async () => {
    const doc = {
      openapi: '3.1.0',
      paths: {
        '/loop': {
          post: {
            operationId: 'loop',
            requestBody: { content: { 'application/json': { schema: { $ref: '#/components/schemas/A' } } } },
            responses: { '200': { $ref: '#/components/responses/Missing' }, '400': { $ref: 'other.yaml#/Err' } },
          },
        },
      },
      components: { schemas: { A: { $ref: '#/components/schemas/B' }, B: { $ref: '#/components/schemas/A' } } },
    };
    const sections = await parseDocument('openapi', utf8(JSON.stringify(doc)));
    expect(sections.map((s) => s.heading)).toEqual(['POST /loop · loop']);
    expect(sections[0]?.text).toContain('- 200\n- 400');
  });

  it('bounds the rendering of huge schemas', async () => {
    const properties = Object.fromEntries(Array.from({ length: 500 }, (_, i) => [`field${i}`, { type: 'string' }]));
    const doc = { openapi: '3.0.0', paths: { '/big': { get: { responses: { '200': { description: 'ok', content: { 'application/json': { schema: { type: 'object', properties } } } } } } } } };
    const [op] = await parseDocument('openapi', utf8(JSON.stringify(doc)));
    expect(op?.text).toContain('field0: string');
    expect(op?.text).toContain('… (more fields omitted)');
    expect(op?.text).not.toContain('field499');
  });

  it('keeps each operation that fits in one chunk, found by its heading', async () => {
    const sections = await parseDocument('openapi', fixture('petstore.yaml'));
    const chunks = chunkSections(sections, DEFAULT_CHUNKING);
    expect(chunks).toHaveLength(sections.length);
    const create = chunks.filter((c) => c.heading === 'POST /pets · createPet');
    expect(create).toHaveLength(1);
    expect(create[0]?.text).toBe(byHeading(sections, 'POST /pets · createPet'));
  });
});

describe('Swagger 2.0', () => {
  it('gives one section per operation, with body and formData parameters as request bodies', async () => {
    const sections = await parseDocument('openapi', fixture('petstore-swagger2.json'));
    expect(sections.map((s) => s.heading)).toEqual([
      'Legacy Petstore',
      'GET /pets · findPets',
      'POST /pets · addPet',
      'DELETE /pets/{id} · deletePet',
      'POST /pets/{id}/photo · uploadPhoto',
    ]);
    expect(sections[0]?.text).toContain('Servers: https://legacy.petstore.example/api');

    const add = byHeading(sections, 'POST /pets · addPet');
    expect(add).toContain('Request body (required): Pet to add to the store\n  application/json: NewPet\n    name: string (required) — The pet\'s name');
    expect(add).toContain('- 200: pet response\n  application/json: Pet\n');
    expect(add).toContain('    id: integer(int64) (required)');

    const find = byHeading(sections, 'GET /pets · findPets');
    expect(find).toContain('- tags (in query, optional): array of string — Tags to filter by');
    expect(find).toContain('- limit (in query, optional): integer(int32) — maximum number of results to return');
    expect(find).toContain('application/json: array of Pet\n    name: string (required)');
    expect(find).toContain('- default: unexpected error\n  application/json: ErrorModel');

    const upload = byHeading(sections, 'POST /pets/{id}/photo · uploadPhoto');
    expect(upload).toContain('Request body (form fields, multipart/form-data):\n  file: file (required) — The photo, JPEG or PNG\n  caption: string');
  });

  it('reads the same document from YAML', async () => {
    const json = JSON.parse(new TextDecoder().decode(fixture('petstore-swagger2.json'))) as unknown;
    const { stringify } = await import('yaml');
    const fromYaml = await parseDocument('openapi', utf8(stringify(json)));
    expect(fromYaml).toEqual(await parseDocument('openapi', fixture('petstore-swagger2.json')));
  });
});

describe('OpenAPI through the json and yaml kinds', () => {
  it('is still split per operation', async () => {
    const sections = await parseDocument('yaml', fixture('petstore.yaml'));
    expect(operations(sections)).toHaveLength(6);
  });
});

import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { generateOpenApi } from '../helpers/openapi.js';

describe('OpenAPI document', () => {
  it('docs/openapi.json is what the code generates (run `npm run openapi` after changing routes)', async () => {
    const committed: unknown = JSON.parse(readFileSync(new URL('../../../docs/openapi.json', import.meta.url), 'utf8'));
    expect(JSON.parse(JSON.stringify(await generateOpenApi()))).toEqual(committed);
  });

  it('is OpenAPI 3.1 and documents the error shape on readiness', async () => {
    const doc = (await generateOpenApi()) as { openapi: string; paths: Record<string, Record<string, { responses: Record<string, unknown> }>> };
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.paths['/ready']?.get?.responses['503']).toBeDefined();
  });
});

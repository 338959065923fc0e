// Writes the OpenAPI document the server generates to docs/openapi.json, so the contract is
// reviewable in diffs and the SDK can be generated from it; a test fails when the two drift.
import { writeFileSync } from 'node:fs';
import { generateOpenApi } from '../server/test/helpers/openapi.js';

const doc = await generateOpenApi();
writeFileSync(new URL('../docs/openapi.json', import.meta.url), `${JSON.stringify(doc, null, 2)}\n`);
process.stdout.write('wrote docs/openapi.json\n');

import { Ajv, type Options } from 'ajv';
import addFormatsModule from 'ajv-formats';
import type { FastifySchema, FastifySchemaCompiler } from 'fastify';

// ajv-formats is CommonJS with a default export; under NodeNext its callable sits on `.default`.
const addFormats = addFormatsModule as unknown as { default: (ajv: Ajv) => Ajv };

function makeAjv(options: Options): Ajv {
  const ajv = new Ajv({ removeAdditional: false, useDefaults: true, allErrors: true, strict: false, ...options });
  addFormats.default(ajv);
  return ajv;
}

/**
 * Bodies are validated strictly (a string where a number belongs is a 400, not silently coerced);
 * query strings, path parameters and headers arrive as text, so they are coerced to the schema's types.
 */
export function schemaCompiler(): FastifySchemaCompiler<FastifySchema> {
  const strict = makeAjv({ coerceTypes: false });
  const coercing = makeAjv({ coerceTypes: 'array' });
  return (route) => {
    const { schema, httpPart } = route;
    // A multipart body is read part by part by its route (files stream in under a size limit); its
    // schema documents the form fields in OpenAPI and is not applied to the (absent) parsed body.
    if (httpPart === 'body' && (route as { contentType?: string }).contentType?.startsWith('multipart/')) return () => true;
    return (httpPart === 'body' ? strict : coercing).compile(schema as object);
  };
}

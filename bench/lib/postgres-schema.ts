import { randomBytes } from 'node:crypto';
import pg from 'pg';

/** keel_bench_<16 hex>: a name no one else uses, so the run starts on empty tables and drops only its own. */
export function benchSchemaName(): string {
  return `keel_bench_${randomBytes(8).toString('hex')}`;
}

/** `select version()` of the server the benchmark uses; also proves it is reachable. */
export async function postgresVersion(url: string): Promise<string> {
  return withClient(url, async (client) => {
    const { rows } = await client.query<{ version: string }>('select version() as version');
    return rows[0]?.version ?? 'unknown';
  });
}

export async function createSchema(url: string, schema: string): Promise<void> {
  await withClient(url, async (client) => {
    await client.query(`create schema ${quoteIdent(schema)}`);
  });
}

export async function dropSchema(url: string, schema: string): Promise<void> {
  await withClient(url, async (client) => {
    await client.query(`drop schema if exists ${quoteIdent(schema)} cascade`);
  });
}

/** The URL with any password replaced, for logs and RESULTS.md. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== '') parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(unparsable URL)';
  }
}

async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

function quoteIdent(name: string): string {
  if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`refusing an unusual schema name: ${name}`);
  return `"${name}"`;
}

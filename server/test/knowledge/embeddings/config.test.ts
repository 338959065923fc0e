import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EMBEDDINGS_VARIABLES, EmbeddingsConfigError, readEmbeddingsConfig } from '../../../src/modules/knowledge/embeddings/index.js';

const LLM = { baseUrl: 'http://llm.example:11434/v1/', apiKey: 'sk-llm-key' };
const dir = mkdtempSync(path.join(tmpdir(), 'keel-embeddings-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function problemsOf(env: Record<string, string>, llm: { baseUrl?: string; apiKey?: string } = {}): string[] {
  try {
    readEmbeddingsConfig(env, llm, { cwd: dir });
    return [];
  } catch (err) {
    if (err instanceof EmbeddingsConfigError) return [...err.problems];
    throw err;
  }
}

describe('readEmbeddingsConfig', () => {
  it('is off by default, with the documented batch size and timeout, frozen', () => {
    const config = readEmbeddingsConfig({}, LLM);
    expect(config).toEqual({ kind: 'none', batchSize: 64, timeoutMs: 30_000 });
    expect(Object.isFrozen(config)).toBe(true);
    // LLM_BASE_URL alone does not turn embeddings on: API.md says unset → lexical search only.
    expect(readEmbeddingsConfig({ EMBEDDINGS_MODEL: '  ' }, LLM).kind).toBe('none');
  });

  it('falls back to LLM_BASE_URL and LLM_API_KEY when only EMBEDDINGS_MODEL is set', () => {
    expect(readEmbeddingsConfig({ EMBEDDINGS_MODEL: 'nomic-embed-text' }, LLM)).toEqual({
      kind: 'openai', model: 'nomic-embed-text', baseUrl: 'http://llm.example:11434/v1', apiKey: 'sk-llm-key', batchSize: 64, timeoutMs: 30_000,
    });
    expect(readEmbeddingsConfig({ EMBEDDINGS_MODEL: 'm', EMBEDDINGS_API_KEY: 'sk-own' }, LLM)).toMatchObject({ baseUrl: 'http://llm.example:11434/v1', apiKey: 'sk-own' });
  });

  it('uses its own server and key, and never sends the LLM key to another server', () => {
    const env = { EMBEDDINGS_MODEL: 'text-embedding-3-small', EMBEDDINGS_BASE_URL: 'https://api.openai.com/v1/', EMBEDDINGS_DIMENSIONS: '256', EMBEDDINGS_BATCH_SIZE: '16', EMBEDDINGS_TIMEOUT_MS: '5000' };
    expect(readEmbeddingsConfig({ ...env, EMBEDDINGS_API_KEY: 'sk-openai' }, LLM)).toEqual({
      kind: 'openai', model: 'text-embedding-3-small', baseUrl: 'https://api.openai.com/v1', apiKey: 'sk-openai', dimensions: 256, batchSize: 16, timeoutMs: 5000,
    });
    expect(readEmbeddingsConfig(env, LLM).apiKey).toBeUndefined();
  });

  it('reports every invalid number at once, naming the variable', () => {
    const problems = problemsOf({ EMBEDDINGS_MODEL: 'm', EMBEDDINGS_BATCH_SIZE: 'lots', EMBEDDINGS_TIMEOUT_MS: '0', EMBEDDINGS_DIMENSIONS: '-3' }, LLM);
    expect(problems).toHaveLength(3);
    for (const name of ['EMBEDDINGS_BATCH_SIZE', 'EMBEDDINGS_TIMEOUT_MS', 'EMBEDDINGS_DIMENSIONS']) expect(problems.join('\n')).toContain(name);
    expect(problemsOf({ EMBEDDINGS_BATCH_SIZE: '2.5' })).toEqual([expect.stringContaining('whole number')]);
  });

  it.each([
    [{ EMBEDDINGS_MODEL: 'm' }, 'neither EMBEDDINGS_BASE_URL nor LLM_BASE_URL'],
    [{ EMBEDDINGS_BASE_URL: 'http://e/v1' }, 'EMBEDDINGS_MODEL is not'],
    [{ EMBEDDINGS_API_KEY: 'k', EMBEDDINGS_DIMENSIONS: '8' }, 'EMBEDDINGS_API_KEY, EMBEDDINGS_DIMENSIONS are set but EMBEDDINGS_MODEL is not'],
    [{ EMBEDDINGS_MODEL: 'm', EMBEDDINGS_BASE_URL: 'not a url' }, 'EMBEDDINGS_BASE_URL is not a URL'],
    [{ EMBEDDINGS_MODEL: 'm', EMBEDDINGS_BASE_URL: 'ftp://e/v1' }, 'http:// or https://'],
    [{ EMBEDDINGS_MODEL: 'm', EMBEDDINGS_BASE_URL: 'https://user:secret@e/v1' }, 'put the key in EMBEDDINGS_API_KEY'],
    [{ EMBEDDINGS_LOCAL_MODEL_DIR: 'missing-model' }, 'is not a directory'],
  ])('refuses %j', (env, message) => {
    expect(problemsOf(env)).toEqual([expect.stringContaining(message)]);
  });

  it('reads a local model directory, relative to cwd, and refuses it together with a server or dimensions', () => {
    const model = path.join(dir, 'all-MiniLM-L6-v2');
    writeFileSync(path.join(dir, 'not-a-dir'), '');
    mkdirSync(model);
    const local = readEmbeddingsConfig({ EMBEDDINGS_LOCAL_MODEL_DIR: path.basename(model) }, {}, { cwd: dir });
    expect(local).toEqual({ kind: 'local', localModelDir: model, batchSize: 64, timeoutMs: 30_000 });
    expect(problemsOf({ EMBEDDINGS_LOCAL_MODEL_DIR: 'not-a-dir' })).toEqual([expect.stringContaining('is not a directory')]);
    const both = problemsOf({ EMBEDDINGS_LOCAL_MODEL_DIR: model, EMBEDDINGS_BASE_URL: 'http://e/v1', EMBEDDINGS_DIMENSIONS: '8' });
    expect(both).toEqual([expect.stringContaining('not both'), expect.stringContaining('EMBEDDINGS_DIMENSIONS applies')]);
  });

  it('lists every variable it reads, in the CONFIG_VARIABLES shape', () => {
    expect(EMBEDDINGS_VARIABLES.map((v) => v.name)).toEqual([
      'EMBEDDINGS_MODEL', 'EMBEDDINGS_BASE_URL', 'EMBEDDINGS_API_KEY', 'EMBEDDINGS_DIMENSIONS', 'EMBEDDINGS_BATCH_SIZE', 'EMBEDDINGS_TIMEOUT_MS', 'EMBEDDINGS_LOCAL_MODEL_DIR',
    ]);
    for (const v of EMBEDDINGS_VARIABLES) expect(Object.keys(v).sort()).toEqual(['default', 'description', 'name']);
  });
});

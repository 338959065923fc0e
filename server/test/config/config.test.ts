import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CONFIG_VARIABLES, ConfigError, loadConfig, readEnvironment, secretProblem } from '../../src/config.js';

const STRONG = '8f3a1c9e5b7d2f4a6c8e0b1d3f5a7c9e2b4d6f8a0c1e3b5d7f9a2c4e6b8d0f1a';
const tmp = () => mkdtempSync(path.join(tmpdir(), 'keel-config-'));

function problemsOf(env: Record<string, string>): string[] {
  try {
    loadConfig(env, { cwd: tmp(), persistDevSecret: false });
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
}

describe('configuration', () => {
  it('has working defaults for development with nothing set', () => {
    const cwd = tmp();
    const c = loadConfig({}, { cwd });
    expect(c.env).toBe('development');
    expect(c.host).toBe('127.0.0.1');
    expect(c.port).toBe(8000);
    expect(c.database).toMatchObject({ kind: 'sqlite', url: path.join(cwd, 'data', 'keel.db'), migrateOnStart: true });
    expect(c.accessTokenExpireMinutes).toBe(15);
    expect(c.refreshTokenExpireDays).toBe(30);
    expect(c.maxUploadSizeMb).toBe(10);
    expect(c.allowedExtensions).toEqual(['json', 'yaml', 'yml', 'md', 'txt', 'pdf', 'html']);
    expect(c.docsEnabled).toBe(true);
    expect(Object.isFrozen(c) && Object.isFrozen(c.database)).toBe(true);
  });

  it('generates a development secret once, keeps it in the data directory (0600), and reuses it', () => {
    const cwd = tmp();
    const first = loadConfig({}, { cwd });
    expect(first.secretKeySource).toBe('generated');
    const file = path.join(cwd, 'data', 'secret.key');
    expect(readFileSync(file, 'utf8').trim()).toBe(first.secretKey);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const second = loadConfig({}, { cwd });
    expect(second.secretKeySource).toBe('file');
    expect(second.secretKey).toBe(first.secretKey);
  });

  it('reads DATABASE_URL as a file path or a postgres URL', () => {
    const cwd = tmp();
    expect(loadConfig({ DATABASE_URL: 'sqlite:./x.db' }, { cwd, persistDevSecret: false }).database).toMatchObject({ kind: 'sqlite', url: path.join(cwd, 'x.db') });
    expect(loadConfig({ DATABASE_URL: 'postgresql://u:p@db:5432/keel?sslmode=require' }, { cwd, persistDevSecret: false }).database.kind).toBe('postgres');
    expect(problemsOf({ DATABASE_URL: 'mysql://db/keel' })).toEqual([expect.stringContaining('DATABASE_URL scheme is not supported')]);
  });

  it('accepts ALLOWED_ORIGINS as an alias of CORS_ORIGINS, and CORS_ORIGINS wins', () => {
    const base = { cwd: tmp(), persistDevSecret: false };
    expect(loadConfig({ ALLOWED_ORIGINS: 'https://a.example' }, base).corsOrigins).toEqual(['https://a.example']);
    expect(loadConfig({ ALLOWED_ORIGINS: 'https://a.example', CORS_ORIGINS: 'https://b.example/' }, base).corsOrigins).toEqual(['https://b.example']);
  });

  it('reports every bad value at once, naming each variable', () => {
    const problems = problemsOf({ PORT: 'eighty', LOG_LEVEL: 'loud', DOCS_ENABLED: 'maybe', CORS_ORIGINS: 'https://ok.example,not an origin' });
    expect(problems).toHaveLength(4);
    for (const name of ['PORT', 'LOG_LEVEL', 'DOCS_ENABLED', 'CORS_ORIGINS']) expect(problems.join('\n')).toContain(name);
  });

  describe('production refuses to start on', () => {
    const good = { NODE_ENV: 'production', SECRET_KEY: STRONG, DATABASE_URL: 'postgres://keel@db/keel', CORS_ORIGINS: 'https://app.example.com' };

    it('nothing, when everything is right', () => {
      expect(problemsOf(good)).toEqual([]);
    });

    it.each([
      ['a missing secret', { SECRET_KEY: '' }, 'SECRET_KEY is not set'],
      ['a short secret', { SECRET_KEY: 'a1b2c3d4e5f6g7h8' }, 'SECRET_KEY is too short'],
      ['a short placeholder', { SECRET_KEY: 'change-me' }, 'SECRET_KEY is a well-known placeholder'],
      ['a placeholder secret', { SECRET_KEY: 'change-me-in-production-please-0123456789' }, 'placeholder'],
      ['seed 002\'s placeholder', { SECRET_KEY: 'PASTE_YOUR_GENERATED_KEY_HERE_0123456789abcdef' }, 'placeholder'],
      ['a low-entropy secret', { SECRET_KEY: 'a'.repeat(64) }, 'placeholder'],
      ['a * CORS origin', { CORS_ORIGINS: '*' }, 'CORS_ORIGINS contains "*"'],
      ['no DATABASE_URL', { DATABASE_URL: '' }, 'DATABASE_URL is not set'],
    ])('%s', (_name, change, message) => {
      const problems = problemsOf({ ...good, ...change });
      expect(problems).toEqual([expect.stringContaining(message)]);
    });

    it('and lists every problem in one message', () => {
      const problems = problemsOf({ NODE_ENV: 'production', SECRET_KEY: 'change-me', CORS_ORIGINS: '*' });
      expect(problems).toHaveLength(3);
      const message = new ConfigError(problems).message;
      for (const name of ['SECRET_KEY', 'CORS_ORIGINS', 'DATABASE_URL']) expect(message).toContain(name);
    });
  });

  it('secretProblem accepts what gen-secret produces', () => {
    expect(secretProblem(STRONG)).toBeUndefined();
  });

  it('reads .env beneath the real environment, which wins', () => {
    const cwd = tmp();
    writeFileSync(path.join(cwd, '.env'), 'PORT=9001\nLOG_LEVEL=debug\n# comment\nHOST="0.0.0.0"\n');
    const env = readEnvironment(cwd, { LOG_LEVEL: 'warn' });
    const c = loadConfig(env, { cwd, persistDevSecret: false });
    expect([c.port, c.logLevel, c.host]).toEqual([9001, 'warn', '0.0.0.0']);
    expect(existsSync(path.join(cwd, 'data'))).toBe(false);
  });

  it('docs/configuration.md documents every variable Keel reads, with its default', () => {
    const doc = readFileSync(new URL('../../../docs/configuration.md', import.meta.url), 'utf8');
    for (const v of CONFIG_VARIABLES) {
      const row = doc.split('\n').find((line) => line.startsWith(`| \`${v.name}\``));
      expect(row, `${v.name} is missing from docs/configuration.md`).toBeDefined();
      expect(row).toContain(v.default.replace(/\|/g, '\\|'));
    }
  });

  it('reads no variable that CONFIG_VARIABLES does not list', () => {
    const source = readFileSync(new URL('../../src/config.ts', import.meta.url), 'utf8');
    const read = new Set([...source.matchAll(/get\('([A-Z_]+)'\)|(?:int|bool)\('([A-Z_]+)'/g)].map((m) => m[1] ?? m[2]));
    const listed = new Set(CONFIG_VARIABLES.map((v) => v.name));
    expect([...read].filter((n) => n && !listed.has(n))).toEqual([]);
  });
});
